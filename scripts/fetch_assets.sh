#!/usr/bin/env bash
# Fetch the test/demo assets into assets/ (see assets/README.md).
#
# Usage: scripts/fetch_assets.sh
#   Environment: DIFIX3D_ASSET_CACHE  where the downloaded sdists are kept
#                                     (default: $HOME/.cache/difix3d-assets)
#                PYTHON               python interpreter (default: python3)
#
# Needs: python3 (standard library) + pip, and ImageMagick's `convert`.
# Idempotent: the sdists are downloaded only when not already in the cache;
# everything under assets/ (except README.md) is rebuilt from them on each run.
set -Eeuo pipefail

die() {
    echo "fetch_assets.sh: ERROR: $*" >&2
    exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
ASSETS="$REPO_ROOT/assets"
CACHE="${DIFIX3D_ASSET_CACHE:-$HOME/.cache/difix3d-assets}"
PYTHON="${PYTHON:-python3}"
TOOL="$SCRIPT_DIR/assets_tool.py"

# name==version, sdist file name, sha256 of the sdist on PyPI
GRADIO_REQ="gradio-model3dgs==0.2.5"
GRADIO_SDIST="gradio_model3dgs-0.2.5.tar.gz"
GRADIO_SHA256="2114171f719584852d82cebb19b076c17acf8505058af9be06192a9e69d1f971"
KAPTURE_REQ="kapture==1.1.12"
KAPTURE_SDIST="kapture-1.1.12.tar.gz"
KAPTURE_SHA256="1c3a4d5eaffe7d2df7135f8d8cf6f664ed7a4a4ac1d1f9cf3373934ddb7e4dba"
# LPIPS's calibrated linear layers (BSD-2-Clause) ship only in the wheel.
LPIPS_REQ="lpips==0.1.4"
LPIPS_WHEEL="lpips-0.1.4-py3-none-any.whl"
LPIPS_SHA256="fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e"

# ---------------------------------------------------------------- prerequisites
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found (python 3 is required)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || die "python >= 3.8 is required ($("$PYTHON" --version 2>&1))"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PYTHON (try: $PYTHON -m ensurepip)"
if command -v convert >/dev/null 2>&1 && convert -version 2>/dev/null | grep -q ImageMagick; then
    CONVERT=(convert)
elif command -v magick >/dev/null 2>&1; then
    CONVERT=(magick)
else
    die "ImageMagick 'convert' not found (Debian/Ubuntu: sudo apt-get install imagemagick)"
fi

echo "fetch_assets: repo   = $REPO_ROOT"
echo "fetch_assets: cache  = $CACHE"
mkdir -p "$CACHE" "$ASSETS"

# ---------------------------------------------------------------- download
fetch() { # sdist|wheel REQ FILE SHA256
    local kind="$1" req="$2" file="$3" sha="$4" format
    [[ "$kind" == wheel ]] && format=(--only-binary :all:) || format=(--no-binary :all:)
    if [[ -f "$CACHE/$file" ]]; then
        echo "fetch_assets: $file already in cache, not downloading"
    else
        echo "fetch_assets: downloading $req ($kind) ..."
        "$PYTHON" -m pip download --quiet --no-deps "${format[@]}" "$req" -d "$CACHE" \
            || die "pip download of $req failed (is PyPI reachable? proxy settings?)"
        [[ -f "$CACHE/$file" ]] || die "pip download of $req did not produce $CACHE/$file"
    fi
    "$PYTHON" "$TOOL" sha256 "$CACHE/$file" "$sha" || die "$CACHE/$file is corrupt or not the expected release"
    echo "fetch_assets: $file OK ($(wc -c <"$CACHE/$file") bytes, sha256 verified)"
}
fetch sdist "$GRADIO_REQ" "$GRADIO_SDIST" "$GRADIO_SHA256"
fetch wheel "$LPIPS_REQ" "$LPIPS_WHEEL" "$LPIPS_SHA256"
fetch sdist "$KAPTURE_REQ" "$KAPTURE_SDIST" "$KAPTURE_SHA256"

# ---------------------------------------------------------------- extract
echo "fetch_assets: extracting into $ASSETS"
"$PYTHON" "$TOOL" extract "$CACHE/$GRADIO_SDIST" "$CACHE/$KAPTURE_SDIST" "$ASSETS" \
    || die "extraction failed"

# LPIPS linear layers (v0.1) and their licence.
mkdir -p "$ASSETS/lpips"
"$PYTHON" - "$CACHE/$LPIPS_WHEEL" "$ASSETS/lpips" <<'PY' || die "extracting the LPIPS weights failed"
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for member, name in [("lpips/weights/v0.1/vgg.pth", "vgg.pth"), ("lpips/weights/v0.1/alex.pth", "alex.pth"),
                         ("lpips-0.1.4.dist-info/LICENSE", "LICENSE")]:
        with open(f"{out}/{name}", "wb") as f:
            f.write(z.read(member))
PY
echo "fetch_assets: lpips/ <- $LPIPS_WHEEL (vgg.pth, alex.pth, LICENSE)"

# ---------------------------------------------------------------- downscaled images
MAUP="$ASSETS/maupertuis"
for f in 2 4 8; do
    pct="$("$PYTHON" -c "print(f'{100 / $f:g}')")"
    mkdir -p "$MAUP/images_$f"
    for img in "$MAUP"/images/*.jpg; do
        # The sample JPEGs are stored at quality 1; ImageMagick would reuse that
        # estimate, so ask for a normal quality explicitly.
        "${CONVERT[@]}" "$img" -resize "$pct%" -quality 95 "$MAUP/images_$f/$(basename "$img")" \
            || die "ImageMagick failed to resize $img"
    done
    echo "fetch_assets: images_$f/ <- images/ resized to $pct% ($("$PYTHON" "$TOOL" imgsize "$MAUP/images_$f/00.jpg" | tr ' ' x))"
done

# ---------------------------------------------------------------- binary COLMAP copy
MBIN="$ASSETS/maupertuis-bin"
rm -rf "$MBIN"
mkdir -p "$MBIN/colmap/sparse/0"
"$PYTHON" "$SCRIPT_DIR/colmap_text_to_bin.py" "$MAUP/colmap/sparse/0" "$MBIN/colmap/sparse/0" \
    || die "COLMAP text -> binary conversion failed"
for d in images images_2 images_4 images_8; do
    cp -R "$MAUP/$d" "$MBIN/$d"
done
echo "fetch_assets: maupertuis-bin/ = maupertuis/ with colmap/sparse/0/*.bin (image folders copied)"

# ---------------------------------------------------------------- report + verify
echo "fetch_assets: contents of assets/:"
"$PYTHON" "$TOOL" report "$ASSETS"
"$PYTHON" "$TOOL" verify "$ASSETS" || die "verification failed (see above)"
echo "fetch_assets: done"
