#!/usr/bin/env bash
# Packs gpu-kit/ (git-ignored): everything scripts/gpu/check.sh needs on the GPU machine that is not in
# the working tree, within the device's limits (gpu-kit <= 64 MiB less the tree and 1 MiB; tracked + untracked-not-ignored
# files + kit <= 64 MiB).
#
#   scripts/gpu/pack.sh [--no-tests] [--kit DIR] [--binary FILE] [--test-binary FILE]
#
#   --binary/--test-binary take prebuilt binaries of `cargo build --release --features cuda` /
#   `cargo test --release --features cuda --test it --no-run` instead of building (a release build from
#   scratch takes over an hour on two cores).
#
#   difix3d.xz     `cargo build --release --features cuda`, stripped copy, xz -9
#   it.xz          the integration-test binary of the same build (`cargo test --release --features cuda
#                  --test it --no-run`), stripped, xz -9: the in-process golden tests (rasterizer
#                  gradients, render parity, the tiny Difix on wgpu); left out with --no-tests, or
#                  when the kit would not fit beside the tree with it
#   gl/*.deb       Debian's Vulkan/EGL/GL loaders (libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0
#                  libgles2; apt-get download for amd64), unpacked into / there when no loader is found
#   site-cp312.tar.xz  the reference's pinned Python packages for the GPU machine's Python 3.12, which has
#                  torch, numpy, accelerate, safetensors, einops but transformers 5 / huggingface_hub 1
#                  and no diffusers: diffusers 0.25.1, transformers 4.38.0, tokenizers 0.15.2,
#                  huggingface-hub 0.25.1, peft 0.9.0 (installed here with pip --target for cp312, packed
#                  as one tar.xz; unpacked there into a folder placed first on PYTHONPATH for the
#                  reference only)
#   assets/        bonsai-7k-mini.splat (the real scene of the render benches and parity goldens) and
#                  maupertuis/ (the training bench's dataset), from scripts/fetch_assets.sh
#   web_splat_timing.xz  web-splat's timing binary (benches/render_vs_websplat.sh), when built here
#                  (WEB_SPLAT_BIN, default ~/.cache/web-splat/target/release/difix3d_timing)
#   manifest.json  commit, sizes, sha256s, the paths the test binary was built with
#
# The full-size random-weight Difix model is NOT packed (GBs): check.sh generates it there with
# tests/golden/difix/make_full_difix.py (numpy only).
# Environment: CARGO_TARGET_DIR (default target/), PYTHON (default python3; needs pip).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
KIT="$REPO/gpu-kit"
TESTS=1
PREBUILT=""
PREBUILT_TESTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-tests) TESTS=0; shift ;;
        --binary) PREBUILT="$2"; shift 2 ;;
        --test-binary) PREBUILT_TESTS="$2"; shift 2 ;;
        --kit) KIT="$2"; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "pack.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-python3}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
TREE_LIMIT=$((64 * 1024 * 1024))
WHEELS=(diffusers==0.25.1 transformers==4.38.0 tokenizers==0.15.2 huggingface-hub==0.25.1 peft==0.9.0)
DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

die() { echo "pack.sh: ERROR: $*" >&2; exit 1; }
say() { echo "pack.sh: $*" >&2; }
for tool in cargo strip xz apt-get git; do command -v "$tool" >/dev/null || die "'$tool' not found"; done
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PYTHON"

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# ---------------------------------------------------------------- binaries
if [ -n "$PREBUILT" ]; then
    BIN="$PREBUILT"
    [ -x "$BIN" ] || die "--binary $BIN is not an executable"
    say "using the prebuilt $BIN (it must be a release build with --features cuda)"
else
    say "cargo build --release --features cuda (target: $TARGET)"
    timeout 7200 cargo build --release --features cuda
    BIN="$TARGET/release/difix3d"
    [ -x "$BIN" ] || die "$BIN was not built"
fi
strip -o "$STAGE/difix3d" "$BIN"
say "xz -9 of the stripped binary ($(du -m "$STAGE/difix3d" | cut -f1) MiB)"
xz -T0 -9 -c "$STAGE/difix3d" >"$STAGE/difix3d.xz"
rm "$STAGE/difix3d"

TEST_BIN=""
if [ -n "$PREBUILT_TESTS" ]; then
    TEST_BIN="$PREBUILT_TESTS"
    [ -x "$TEST_BIN" ] || die "--test-binary $TEST_BIN is not an executable"
elif [ "$TESTS" = 1 ]; then
    say "cargo test --release --features cuda --test it --no-run"
    TEST_BIN="$(timeout 7200 cargo test --release --features cuda --test it --no-run --message-format=json 2>/dev/null \
        | "$PYTHON" -c 'import json,sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "it":
        print(m["executable"])' | tail -n 1)"
    [ -n "$TEST_BIN" ] && [ -x "$TEST_BIN" ] || die "the test binary was not built (run: cargo test --release --features cuda --test it --no-run)"
fi
if [ -n "$TEST_BIN" ]; then
    strip -o "$STAGE/it" "$TEST_BIN"
    say "xz -9 of the stripped test binary ($(du -m "$STAGE/it" | cut -f1) MiB)"
    xz -T0 -9 -c "$STAGE/it" >"$STAGE/it.xz"
    rm "$STAGE/it"
fi

# web-splat's timing binary, if benches/render_vs_websplat.sh has built it here
WS_BIN="${WEB_SPLAT_BIN:-$HOME/.cache/web-splat/target/release/difix3d_timing}"
if [ -x "$WS_BIN" ]; then
    strip -o "$STAGE/web_splat_timing" "$WS_BIN"
    xz -T0 -9 -c "$STAGE/web_splat_timing" >"$STAGE/web_splat_timing.xz"
    rm "$STAGE/web_splat_timing"
    say "web-splat timing binary from $WS_BIN"
else
    say "no web-splat timing binary ($WS_BIN): render_ms_web_splat_1080p will be null"
fi

# ---------------------------------------------------------------- Vulkan/EGL loaders (device README recipe)
mkdir -p "$STAGE/gl" "$STAGE/apt/lists/partial"
APT=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$STAGE/apt/lists")
say "apt-get download ${DEBS[*]}"
timeout 300 apt-get "${APT[@]}" update -qq >/dev/null 2>&1 || die "apt-get update failed"
(cd "$STAGE/gl" && timeout 300 apt-get "${APT[@]}" download "${DEBS[@]}" >/dev/null 2>&1) || die "apt-get download ${DEBS[*]} failed"
rm -rf "$STAGE/apt"
[ "$(ls "$STAGE"/gl/*.deb | wc -l)" = "${#DEBS[@]}" ] || die "expected ${#DEBS[@]} .debs, got: $(ls "$STAGE/gl")"

# ---------------------------------------------------------------- Python packages for CPython 3.12 x86-64
# Installed here with --target for the GPU machine's platform, then packed as one solid tar.xz (6 MB
# instead of 14 MB of wheels); check.sh unpacks it and puts it first on PYTHONPATH for the reference.
say "pip download + install --target ${WHEELS[*]} (cp312 manylinux)"
PLATFORMS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --only-binary=:all:)
timeout 600 "$PYTHON" -m pip download -q --no-deps "${PLATFORMS[@]}" -d "$STAGE/wheels" "${WHEELS[@]}" \
    || die "pip download failed"
[ "$(ls "$STAGE"/wheels/*.whl | wc -l)" = "${#WHEELS[@]}" ] || die "expected ${#WHEELS[@]} wheels, got: $(ls "$STAGE/wheels")"
timeout 600 "$PYTHON" -m pip install -q --no-deps --no-compile --no-index "${PLATFORMS[@]}" --target "$STAGE/site" \
    "$STAGE"/wheels/*.whl 2>/dev/null || die "pip install --target of the wheels failed"
rm -rf "$STAGE/site/bin" "$STAGE/wheels"
(cd "$STAGE/site" && ls -d *.dist-info | sed 's/.dist-info$//' >&2)
tar -C "$STAGE/site" -cf - . | xz -T0 -9 >"$STAGE/site-cp312.tar.xz"
rm -rf "$STAGE/site"

# ---------------------------------------------------------------- data
if [ ! -f assets/bonsai-7k-mini.splat ] || [ ! -d assets/maupertuis ]; then
    say "assets missing: scripts/fetch_assets.sh"
    timeout 1200 scripts/fetch_assets.sh >&2 || die "scripts/fetch_assets.sh failed"
fi
mkdir -p "$STAGE/assets"
cp assets/bonsai-7k-mini.splat "$STAGE/assets/"
cp -r assets/maupertuis "$STAGE/assets/"

# ---------------------------------------------------------------- manifest
CUDA_VERSION="$(cat "$TARGET"/release/build/cudarc-*/output 2>/dev/null | sed -n 's/^cargo:rustc-env=CUDA_\(MAJOR\|MINOR\)_VERSION=//p' | paste -sd. - | cut -d. -f1,2 || true)"
"$PYTHON" - "$STAGE" "$REPO" "$TARGET/release/difix3d" "$TEST_BIN" "$CUDA_VERSION" <<'EOF'
import hashlib, json, subprocess, sys, time
from pathlib import Path
stage, repo, bin_path, test_bin, cuda = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
files = {str(p.relative_to(stage)): {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
         for p in sorted(stage.rglob("*")) if p.is_file()}
git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True).stdout.strip()
manifest = {
    "commit": git("rev-parse", "HEAD"),
    "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "packed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "build": "cargo build --release --features cuda",
    "cudarc_cuda_bindings": cuda or "unknown",
    # The test binary finds fixtures under the repository path and the binary under the target path it was
    # built with (env! at compile time): check.sh links these to the copies there.
    "manifest_dir": repo,
    "bin_path": bin_path,  # CARGO_BIN_EXE_difix3d of the test binary
    "test_binary": bool(test_bin),
    "files": files,
}
(stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
EOF

# ---------------------------------------------------------------- sizes, then swap in
KIT_BYTES="$(du -sb "$STAGE" | cut -f1)"
TREE_BYTES="$(git ls-files -z --cached --others --exclude-standard | "$PYTHON" -c 'import os,sys
print(sum(os.path.getsize(p) for p in sys.stdin.buffer.read().decode().split("\0") if p and os.path.isfile(p) and not os.path.islink(p)))')"
# The kit gets what the tree leaves of the 64 MiB that travel, less 1 MiB for files made meanwhile.
KIT_LIMIT=$((TREE_LIMIT - TREE_BYTES - 1024 * 1024))
say "kit $((KIT_BYTES / 1024)) KiB (limit $((KIT_LIMIT / 1024))); tree $((TREE_BYTES / 1024)) KiB; together $(((KIT_BYTES + TREE_BYTES) / 1024)) KiB (limit $((TREE_LIMIT / 1024)))"
if [ "$KIT_BYTES" -gt "$KIT_LIMIT" ] && [ -f "$STAGE/it.xz" ]; then
    say "the kit is over $((KIT_LIMIT / 1048576)) MiB with the test binary ($(du -m "$STAGE/it.xz" | cut -f1) MiB): leaving it out"
    rm "$STAGE/it.xz"
    "$PYTHON" - "$STAGE/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["left_out"] = {"it.xz": m["files"].pop("it.xz")["bytes"], "why": "over the kit's limit (64 MiB less the tree)"}
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF
    KIT_BYTES="$(du -sb "$STAGE" | cut -f1)"
fi
[ "$KIT_BYTES" -le "$KIT_LIMIT" ] || die "the kit is $KIT_BYTES bytes, over $KIT_LIMIT"
[ $((KIT_BYTES + TREE_BYTES)) -le "$TREE_LIMIT" ] || die "tree + kit is $((KIT_BYTES + TREE_BYTES)) bytes, over 64 MiB"
rm -rf "$KIT"
mkdir -p "$(dirname "$KIT")"
cp -r "$STAGE" "$KIT"
du -ab "$KIT" | sort -k2 | sed "s|$REPO/||" >&2
say "wrote $KIT; on the GPU machine: bash scripts/gpu/check.sh (carry gpu-kit), here: scripts/gpu/check.sh --rehearse"
