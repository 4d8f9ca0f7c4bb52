#!/usr/bin/env bash
# Packs the tiny-cuda-nn sources that its PyTorch bindings need (no GPU needed here) into
# target/tcnn-src/ (git-ignored through /target), for scripts/gpu/tcnn/build_and_check.sh to build
# on the GPU machine, which has no internet. Prints the kit's size.
#
#   scripts/gpu/tcnn/pack.sh [--out DIR] [--tar]
#
#   --out DIR   where to put the sources (default target/tcnn-src; keep it git-ignored)
#   --tar       also write DIR.tar.xz (one file, ~2 MiB) and print its size
#
# Sources, pinned (the torch bindings' own file list: bindings/torch/setup.py:161-176, 210-234):
#   NVlabs/tiny-cuda-nn  6ee3546bda615f51abe684ce9edefeb414689135 (2026-04-01): CMakeLists.txt (setup.py
#                        reads VERSION from it), include/, src/, bindings/torch/,
#                        dependencies/{json,pcg32,pybind11_json}
#   NVIDIA/cutlass       the submodule commit recorded in that tree (82f5075946e2...):
#                        include/ (cutlass/ and cute/) and tools/util/include/
#   fmtlib/fmt           the submodule commit recorded in that tree (fa2eb2d2e3ec...): include/, src/
#   (dependencies/cmrc is only used with -DTCNN_CMRC, which setup.py does not set: rtc_kernel.cu:34-37.)
#
# Git repositories are taken from TCNN_GIT / CUTLASS_GIT / FMT_GIT (paths to clones or bare
# repositories), else from /work/.mirror/<owner>+<name>/repo when that exists, else cloned
# (blobless) from GitHub into ~/.cache/tcnn-pack/.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$REPO"
OUTDIR="$REPO/target/tcnn-src"
TAR=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUTDIR="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        --tar) TAR=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "pack.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

TCNN_COMMIT=6ee3546bda615f51abe684ce9edefeb414689135
say() { echo "pack.sh: $*" >&2; }
die() { echo "pack.sh: ERROR: $*" >&2; exit 1; }
command -v git >/dev/null || die "git not found"

# repo_dir VAR owner name -> a git dir holding the commits we need
repo_dir() {
    local var="$1" owner="$2" name="$3" dir
    dir="${!var:-}"
    if [ -z "$dir" ] && [ -d "/work/.mirror/$owner+$name/repo" ]; then dir="/work/.mirror/$owner+$name/repo"; fi
    if [ -z "$dir" ]; then
        dir="$HOME/.cache/tcnn-pack/$name.git"
        if [ ! -d "$dir" ]; then
            say "cloning https://github.com/$owner/$name (bare, blobless) into $dir"
            git clone --bare --filter=blob:none "https://github.com/$owner/$name" "$dir" >&2
        fi
    fi
    echo "$dir"
}

TCNN_GIT="$(repo_dir TCNN_GIT NVlabs tiny-cuda-nn)"
git -C "$TCNN_GIT" cat-file -e "$TCNN_COMMIT^{commit}" 2>/dev/null || die "$TCNN_GIT lacks tiny-cuda-nn commit $TCNN_COMMIT"
CUTLASS_COMMIT="$(git -C "$TCNN_GIT" ls-tree "$TCNN_COMMIT" dependencies/cutlass | awk '{print $3}')"
FMT_COMMIT="$(git -C "$TCNN_GIT" ls-tree "$TCNN_COMMIT" dependencies/fmt | awk '{print $3}')"
[ -n "$CUTLASS_COMMIT" ] && [ -n "$FMT_COMMIT" ] || die "could not read the submodule commits from tiny-cuda-nn's tree"
CUTLASS_GIT="$(repo_dir CUTLASS_GIT NVIDIA cutlass)"
FMT_GIT="$(repo_dir FMT_GIT fmtlib fmt)"
for pair in "$CUTLASS_GIT:$CUTLASS_COMMIT" "$FMT_GIT:$FMT_COMMIT"; do
    g="${pair%:*}"; c="${pair##*:}"
    if ! git -C "$g" cat-file -e "$c^{commit}" 2>/dev/null; then
        say "fetching $c into $g"
        git -C "$g" fetch --filter=blob:none origin "$c" >&2 || die "$g lacks commit $c"
    fi
done

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/tcnn-src.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
# archive GITDIR COMMIT DEST PATH...: extracts those of PATH... that exist at COMMIT into DEST.
# (A mirror that lacks some large blobs elsewhere in the tree makes git archive print "invalid
# object" for them although it exits 0; that noise is dropped.)
archive() {
    local g="$1" c="$2" dest="$3" p present=()
    shift 3
    for p in "$@"; do
        [ -n "$(git -C "$g" ls-tree "$c" -- "$p")" ] && present+=("$p")
    done
    mkdir -p "$dest"
    git -C "$g" archive "$c" -- "${present[@]}" 2> >(grep -v '^error: invalid object' >&2) | tar -x -C "$dest"
}
say "tiny-cuda-nn $TCNN_COMMIT from $TCNN_GIT"
archive "$TCNN_GIT" "$TCNN_COMMIT" "$STAGE" CMakeLists.txt LICENSE.txt include src bindings/torch \
    dependencies/json dependencies/pcg32 dependencies/pybind11_json
say "cutlass $CUTLASS_COMMIT from $CUTLASS_GIT"
archive "$CUTLASS_GIT" "$CUTLASS_COMMIT" "$STAGE/dependencies/cutlass" LICENSE.txt include tools/util/include
say "fmt $FMT_COMMIT from $FMT_GIT"
archive "$FMT_GIT" "$FMT_COMMIT" "$STAGE/dependencies/fmt" LICENSE.rst LICENSE include src
for f in include/tiny-cuda-nn/encodings/grid.h src/fully_fused_mlp.cu bindings/torch/setup.py \
    dependencies/cutlass/include/cutlass/gemm/device/gemm.h dependencies/fmt/src/format.cc dependencies/json/json.hpp; do
    [ -s "$STAGE/$f" ] || die "the kit lacks $f"
done
cat >"$STAGE/TCNN_KIT.txt" <<EOF
tiny-cuda-nn $TCNN_COMMIT
cutlass $CUTLASS_COMMIT (include/, tools/util/include/)
fmt $FMT_COMMIT (include/, src/)
packed $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/gpu/tcnn/pack.sh
EOF

rm -rf "$OUTDIR"
mkdir -p "$(dirname "$OUTDIR")"
cp -r "$STAGE" "$OUTDIR"
chmod -R u+w,a+rX "$OUTDIR"
git check-ignore -q "$OUTDIR" 2>/dev/null || say "WARNING: $OUTDIR is not git-ignored: it would travel with the tree"
KIT_KIB="$(du -sk "$OUTDIR" | cut -f1)"
NFILES="$(find "$OUTDIR" -type f | wc -l)"
say "wrote $OUTDIR: $((KIT_KIB / 1024)) MiB ($KIT_KIB KiB), $NFILES files"
du -sk "$OUTDIR"/* "$OUTDIR"/dependencies/* 2>/dev/null | sort -k2 | sed "s|$REPO/||" >&2
if [ "$TAR" = 1 ]; then
    tar -C "$(dirname "$OUTDIR")" -cf - "$(basename "$OUTDIR")" | xz -T0 -9 >"$OUTDIR.tar.xz"
    say "wrote $OUTDIR.tar.xz: $(du -k "$OUTDIR.tar.xz" | cut -f1) KiB"
fi
TREE_BYTES="$(git ls-files -z --cached --others --exclude-standard | python3 -c 'import os,sys
print(sum(os.path.getsize(p) for p in sys.stdin.buffer.read().decode().split("\0") if p and os.path.isfile(p) and not os.path.islink(p)))')"
say "working tree that travels: $((TREE_BYTES / 1048576)) MiB; with the kit: $(((TREE_BYTES / 1024 + KIT_KIB) / 1024)) MiB (limit 64)"
echo "$OUTDIR"
