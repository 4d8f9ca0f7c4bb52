#!/usr/bin/env bash
# On the GPU machine (no internet): builds tiny-cuda-nn's PyTorch bindings from the sources that
# scripts/gpu/tcnn/pack.sh packed (carried as target/tcnn-src.tar.xz or target/tcnn-src), then runs
# scripts/gpu/tcnn/check_tcnn.py against tests/golden/nerfacto_tcnn/tcnn_reference.py.
#
#   bash scripts/gpu/tcnn/build_and_check.sh [--src TAR|DIR] [--prebuilt TAR] [--build-timeout S]
#                                            [--check-timeout S] [--trim] [--arch CC]
#
#   --src TAR|DIR      the kit (default: target/tcnn-src.tar.xz, else target/tcnn-src)
#   --prebuilt TAR     a tinycudann_*.tar.xz that an earlier run left in $OUT: skip the build
#                      (same machine image only: it is linked against that torch)
#   --build-timeout S  limit for the build (default 450)
#   --check-timeout S  limit for check_tcnn.py (default 100)
#   --trim             cut grid.h's factory down to 3D inputs with 2 features per level (all that
#                      nerfacto uses; the layout code is untouched): encoding.cu compiles faster.
#                      Off by default: fully_fused_mlp.cu, not encoding.cu, is the longest compile
#                      (nvcc 13.0, sm_90, one core each: fully_fused_mlp 172 s, cutlass_mlp 119 s,
#                      encoding 110 s, the rest <= 33 s; measured on a 2-core CPU machine)
#   --arch CC          compute capability (default: from torch, else 90)
#
# Writes to $OUT (default gpu-out/tcnn): tcnn_env.txt, tcnn_build.log, tcnn_check.log,
# tcnn_check.json, tcnn_check.npz and, when it is under 15 MiB, tinycudann_sm<CC>.tar.xz (the built
# module, for --prebuilt in a later session). Exit status: 0 all checks passed, 1 checks failed,
# 2 build failed, 3 setup failed. Run it with a device timeout_s of ~590 (build + check fit in 550 s).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$REPO"
SRC=""
PREBUILT=""
BUILD_TIMEOUT=450
CHECK_TIMEOUT=100
TRIM=0
ARCH=""
while [ $# -gt 0 ]; do
    case "$1" in
        --src) SRC="$2"; shift 2 ;;
        --prebuilt) PREBUILT="$2"; shift 2 ;;
        --build-timeout) BUILD_TIMEOUT="$2"; shift 2 ;;
        --check-timeout) CHECK_TIMEOUT="$2"; shift 2 ;;
        --trim) TRIM=1; shift ;;
        --arch) ARCH="$2"; shift 2 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_and_check.sh: unknown option '$1' (see --help)" >&2; exit 3 ;;
    esac
done
OUT="${OUT:-$REPO/gpu-out/tcnn}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
START=$(date +%s)
log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$OUT/tcnn_env.txt" >&2; }
: >"$OUT/tcnn_env.txt"
PY="${PYTHON:-python3}"
WORK="${TMPDIR:-/tmp}/tcnn-build"
rm -rf "$WORK"
mkdir -p "$WORK"

# ---------------------------------------------------------------- environment
{
    echo "== nvidia-smi"; nvidia-smi -L 2>&1 || true
    echo "== nvcc"; nvcc --version 2>&1 | tail -n 2 || true
    echo "== gcc"; gcc --version 2>&1 | head -n 1 || true
    echo "== ninja $(ninja --version 2>&1 || echo missing); cmake $(cmake --version 2>&1 | head -n 1 || true); nproc $(nproc)"
    echo "== python"; "$PY" -c 'import sys, torch, setuptools, numpy; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cc", torch.cuda.get_device_capability() if torch.cuda.is_available() else None, "setuptools", setuptools.__version__, "numpy", numpy.__version__)' 2>&1
} >>"$OUT/tcnn_env.txt" 2>&1
cat "$OUT/tcnn_env.txt" >&2
if [ -z "$ARCH" ]; then
    ARCH="$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(m * 10 + n)' 2>/dev/null || echo 90)"
fi
log "target compute capability $ARCH"

# The CUDA toolkit: nvcc's, else torch's pip packages (nvidia/cu13) for headers and libraries.
NVCC="$(command -v nvcc || true)"
[ -n "$NVCC" ] || { log "ERROR: nvcc not found"; exit 3; }
export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}"
TORCH_NV="$("$PY" -c 'import os, torch; p = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia"); print(p if os.path.isdir(p) else "")' 2>/dev/null || true)"
log "CUDA_HOME=$CUDA_HOME; torch's nvidia packages: ${TORCH_NV:-none}"
# Link and runtime paths for -lcuda and -lnvrtc (bindings/torch/setup.py:233): an unversioned
# libcuda.so / libnvrtc.so may be missing (driver mounts ship libcuda.so.1 only; pip ships
# libnvrtc.so.13 only), so link them from a folder of our own.
LIBS="$WORK/libs"
mkdir -p "$LIBS"
find_lib() { # name -> first match
    local cand
    for cand in "$CUDA_HOME/lib64/$1" "$CUDA_HOME/lib/$1" "$CUDA_HOME/targets/x86_64-linux/lib/$1" \
        /usr/local/nvidia/lib64/"$1" /usr/lib/x86_64-linux-gnu/"$1" /usr/lib64/"$1" \
        ${TORCH_NV:+"$TORCH_NV"/cu13/lib/"$1"} ${TORCH_NV:+"$TORCH_NV"/cuda_nvrtc/lib/"$1"} \
        "$CUDA_HOME/lib64/stubs/$1" "$CUDA_HOME/lib/stubs/$1" "$CUDA_HOME/targets/x86_64-linux/lib/stubs/$1"; do
        [ -e "$cand" ] && { echo "$cand"; return 0; }
    done
    ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n {print $NF; exit}'
}
for pair in "libcuda.so:libcuda.so libcuda.so.1" "libnvrtc.so:libnvrtc.so libnvrtc.so.13 libnvrtc.so.12" \
    "libcudart.so:libcudart.so libcudart.so.13 libcudart.so.12"; do
    name="${pair%%:*}"
    found=""
    for c in ${pair#*:}; do found="$(find_lib "$c")"; [ -n "$found" ] && break; done
    if [ -n "$found" ]; then ln -sf "$found" "$LIBS/$name"; log "$name -> $found"; else log "WARNING: $name not found"; fi
done
export LIBRARY_PATH="$LIBS${LIBRARY_PATH:+:$LIBRARY_PATH}"
# At run time the module needs libnvrtc.so.13 and libcudart.so.13 (its DT_NEEDED entries).
for l in libnvrtc.so libcudart.so; do
    d="$(dirname "$(readlink -f "$LIBS/$l" 2>/dev/null || echo /nonexistent/x)")"
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
# Headers the toolkit may lack: nvrtc.h (rtc_kernel.cu) and, for bindings.cpp through torch's
# ATen/cuda/CUDAContextLight.h, cusparse.h / cublas_v2.h / cusolverDn.h. torch's own nvidia wheels
# carry them; CPATH is searched after every -I folder, so the toolkit's headers still come first.
if [ -n "$TORCH_NV" ]; then
    for d in "$TORCH_NV"/cu13/include "$TORCH_NV"/cu12/include "$TORCH_NV"/*/include; do
        [ -d "$d" ] || continue
        case ":${CPATH:-}:" in *":$d:"*) ;; *) export CPATH="${CPATH:+$CPATH:}$d" ;; esac
    done
fi
for h in nvrtc.h cusparse.h cublas_v2.h; do
    if [ -e "$CUDA_HOME/include/$h" ]; then where="toolkit"; else
        where="$(for d in ${CPATH//:/ }; do [ -e "$d/$h" ] && { echo "$d"; break; }; done)"; fi
    log "$h: ${where:-NOT FOUND}"
done

# ---------------------------------------------------------------- the module: prebuilt or built
BIND="$WORK/src/bindings/torch"
if [ -n "$PREBUILT" ]; then
    mkdir -p "$BIND"
    tar -xJf "$PREBUILT" -C "$BIND" || { log "ERROR: could not unpack $PREBUILT"; exit 3; }
    log "using the prebuilt module $PREBUILT"
else
    if [ -z "$SRC" ]; then
        if [ -f target/tcnn-src.tar.xz ]; then SRC=target/tcnn-src.tar.xz; else SRC=target/tcnn-src; fi
    fi
    if [ -f "$SRC" ]; then
        tar -xJf "$SRC" -C "$WORK" && mv "$WORK/$(tar -tJf "$SRC" | head -n 1 | cut -d/ -f1)" "$WORK/src"
    elif [ -d "$SRC" ]; then
        cp -r "$SRC" "$WORK/src"
    else
        log "ERROR: no kit at '$SRC' (run scripts/gpu/tcnn/pack.sh --tar here and carry target/tcnn-src.tar.xz)"; exit 3
    fi
    [ -f "$BIND/setup.py" ] || { log "ERROR: $BIND/setup.py missing"; exit 3; }
    cat "$WORK/src/TCNN_KIT.txt" >>"$OUT/tcnn_env.txt" 2>/dev/null || true

    # setup.py imports pkg_resources (setup.py:5), gone from setuptools >= 82: a shim if needed.
    if ! "$PY" -c 'import pkg_resources' >/dev/null 2>&1; then
        mkdir -p "$WORK/shim"
        printf 'from packaging.version import parse as parse_version\n' >"$WORK/shim/pkg_resources.py"
        export PYTHONPATH="$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
        log "pkg_resources missing: shim with packaging.version.parse"
    fi
    # torch >= ~2.12 headers require C++20 (ATen.h: "#error C++20 or later ..."); setup.py pins 17
    # (setup.py:84/95/113/125). Only bindings.cpp (g++) includes torch: raise the host flags to
    # C++20 and leave nvcc at C++17, because tcnn's .cu files do not build as C++20 (fmt 9's
    # consteval format strings: "call to consteval function ... did not produce a valid constant
    # expression", gpu_memory.h:455, seen with nvcc 13.0 here).
    ATEN_H="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include", "ATen", "ATen.h"))')"
    if grep -q "C++20 or later" "$ATEN_H" 2>/dev/null; then
        sed -i 's/^\tbase_cflags = \[f"-std=c++{cpp_standard}"\]$/\tbase_cflags = ["-std=c++20"]/' "$BIND/setup.py"
        log "torch requires C++20: host flags patched ($(grep -c 'base_cflags = \["-std=c++20"\]' "$BIND/setup.py") line), nvcc stays C++17"
    fi
    if [ "$TRIM" = 1 ]; then
        # grid.h:1758-1767 and 1827-1833: keep the 3D / 2-features-per-level instantiations only.
        G="$WORK/src/include/tiny-cuda-nn/encodings/grid.h"
        before="$(grep -c 'return new GridEncodingTemplated<T, [24], N_FEATURES_PER_LEVEL, HASH_TYPE>' "$G")"
        sed -i -E 's@^(\t\tcase [24]: return new GridEncodingTemplated<T, [24], N_FEATURES_PER_LEVEL, HASH_TYPE>)@// trimmed \1@; s@^(\t\tcase [148]: return create_grid_encoding_templated_2<T, [148], HASH_TYPE>)@// trimmed \1@' "$G"
        log "grid trim: $(grep -c '^// trimmed' "$G") factory cases commented out (expected 5; before: $before 2D/4D cases)"
    fi

    # build_ext --inplace copies the module into tinycudann_bindings/, which the sources lack (it is
    # a namespace package): "error: could not create 'tinycudann_bindings/_90_C...so'" otherwise.
    mkdir -p "$BIND/tinycudann_bindings"
    log "building (TCNN_CUDA_ARCHITECTURES=$ARCH, MAX_JOBS=$(nproc), limit ${BUILD_TIMEOUT}s)"
    B0=$(date +%s)
    (cd "$BIND" && TCNN_CUDA_ARCHITECTURES="$ARCH" MAX_JOBS="$(nproc)" timeout "$BUILD_TIMEOUT" \
        "$PY" setup.py build_ext --inplace) >"$OUT/tcnn_build.log" 2>&1
    RC=$?
    log "build exit $RC after $(($(date +%s) - B0))s"
    if [ "$RC" != 0 ]; then
        grep -E 'error|Error|FAILED' "$OUT/tcnn_build.log" | head -n 30 >&2
        tail -n 30 "$OUT/tcnn_build.log" >&2
        exit 2
    fi
    SO="$(ls "$BIND"/tinycudann_bindings/*.so 2>/dev/null | head -n 1)"
    log "built $SO ($(du -k "$SO" | cut -f1) KiB)"
    # setup.py builds with -g: dropping the debug info halves the module (36 -> 20 MB here).
    command -v strip >/dev/null && strip --strip-debug "$SO" && log "stripped debug info: $(du -k "$SO" | cut -f1) KiB"
    tar -C "$BIND" -cf - tinycudann tinycudann_bindings | xz -T0 -6 >"$WORK/prebuilt.tar.xz"
    if [ "$(stat -c %s "$WORK/prebuilt.tar.xz")" -lt $((15 * 1024 * 1024)) ]; then
        cp "$WORK/prebuilt.tar.xz" "$OUT/tinycudann_sm$ARCH.tar.xz"
        log "saved $OUT/tinycudann_sm$ARCH.tar.xz ($(du -k "$OUT/tinycudann_sm$ARCH.tar.xz" | cut -f1) KiB) for --prebuilt"
    else
        log "the built module is $(du -k "$WORK/prebuilt.tar.xz" | cut -f1) KiB compressed: not saved (over 15 MiB)"
    fi
fi

# ---------------------------------------------------------------- the check
export PYTHONPATH="$BIND:$REPO/tests/golden/nerfacto_tcnn${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import tinycudann as t; print("tinycudann imported from", t.__file__)' 2>&1 | tee -a "$OUT/tcnn_env.txt" >&2
log "check_tcnn.py (limit ${CHECK_TIMEOUT}s)"
PYTHONUNBUFFERED=1 timeout "$CHECK_TIMEOUT" "$PY" scripts/gpu/tcnn/check_tcnn.py --out "$OUT" 2>&1 | tee "$OUT/tcnn_check.log"
RC=${PIPESTATUS[0]}
log "check exit $RC; total $(($(date +%s) - START))s"
[ "$RC" = 0 ] && exit 0 || exit 1
