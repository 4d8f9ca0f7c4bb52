#!/usr/bin/env bash
# The GPU check: every figure a GPU machine can tell us, in one time-boxed run (issue 14).
#
#   bash scripts/gpu/check.sh               on the GPU machine (NVIDIA, CUDA 13, no Rust, no registry), with
#                                           gpu-kit/ (scripts/gpu/pack.sh) beside the working tree; ~8 min
#   bash scripts/gpu/check.sh --rehearse    the same steps here on lavapipe and the CPU, small sizes, < 15 min
#
# Writes $OUT/gpu_report.json, $OUT/gpu_report.md and $OUT/gpu_check.log (OUT defaults to ./gpu-out).
# The report: {"rehearsal", "figures": {...}, "why": {...}, "conditions", "extra", "steps", "log_tail"};
# every figure is a number, or null with its reason in "why". Each step runs under `timeout`, so one
# failure or hang costs only its own box; steps left when the time budget runs out are reported as such.
#
# Options:
#   --rehearse          lavapipe/CPU, small sizes; CUDA steps run only to check that they fail cleanly
#   --kit DIR           the kit (default: gpu-kit/ in the repository root)
#   --binary PATH       use this difix3d binary instead of the kit's (the kit is then optional)
#   --only LIST         comma-separated steps (setup always runs): fix_golden_cuda, fix_golden_wgpu,
#                       fix_golden_cpu, render_parity, gpu_tests, model, bench_fix_cuda, torch_fix,
#                       bench_fix_wgpu, bench_conv_wgpu, bench_render, web_splat, bench_train, bench_live,
#                       nerfacto_render, nerfacto_train
#   --budget SECONDS    total time budget (default 450; rehearsal 840)
# Environment: OUT; CHECK_PYTHON (the Python with torch for the reference: default python3 on the GPU
# machine, with the kit's wheels first on PYTHONPATH; ~/.cache/difix-venv/bin/python when rehearsing);
# DIFIX_FULL_MODEL (the full-size random-weight model folder; generated when missing).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
MODE=real
KIT="$REPO/gpu-kit"
BIN=""
ONLY=""
BUDGET=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rehearse) MODE=rehearse; shift ;;
        --kit) KIT="$2"; shift 2 ;;
        --binary) BIN="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
        --only) ONLY=",$2,"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ "$MODE" = rehearse ] && REHEARSAL=true || REHEARSAL=false
[ -n "$BUDGET" ] || { [ "$MODE" = rehearse ] && BUDGET=840 || BUDGET=450; }
case "$BUDGET" in '' | *[!0-9]*) echo "check.sh: --budget needs whole seconds" >&2; exit 2 ;; esac

OUT="${OUT:-$REPO/gpu-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
STEPS="$WORK/steps"
mkdir -p "$STEPS" "$WORK/logs" "$WORK/bin"
LOG="$OUT/gpu_check.log"
: >"$LOG"
START=$(date +%s)
DEADLINE=$((START + BUDGET))
PY=python3 # standard library only: scripts/gpu/gpu_check.py
command -v "$PY" >/dev/null || { echo "check.sh: python3 is needed" >&2; exit 1; }
HELP="$REPO/scripts/gpu/gpu_check.py"

log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }
left() { echo $((DEADLINE - $(date +%s))); }
wanted() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }
record() { "$PY" "$HELP" step "$STEPS" "$@"; } # NAME STATUS SECONDS [group.key=value ...]
# The last line of a log that says what went wrong (for "why"), one line, at most 300 characters.
reason() {
    local r
    r="$(grep -iE 'error|panick|fail|not |cannot|no such|unsupported' "$1" 2>/dev/null | tail -n 1 || true)"
    [ -n "$r" ] || r="$(grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 || true)"
    [ -n "$r" ] || r="(no output)"
    printf '%s' "$r" | tr -d '\r' | cut -c1-300
}

# run NAME BOX CMD... : runs CMD under `timeout` (BOX seconds, less if the budget is short), its output in
# $WORK/logs/NAME.log and the main log. Sets RC and SECS. RC 124 = timed out, 125 = not started (no time).
run() {
    local name="$1" box="$2"
    shift 2
    local l
    l=$(left)
    [ "$box" -gt $((l - 15)) ] && box=$((l - 15))
    SECS=0
    if [ "$box" -lt 10 ]; then
        RC=125
        log "$name: skipped, $l s of the budget left"
        return 0
    fi
    log "$name: $* (timeout ${box}s)"
    local t0
    t0=$(date +%s)
    set +e
    timeout -k 5 "$box" "$@" >"$WORK/logs/$name.log" 2>&1
    RC=$?
    set -e
    SECS=$(($(date +%s) - t0))
    sed 's/^/    /' "$WORK/logs/$name.log" | tail -n 40 >>"$LOG"
    log "$name: exit $RC after ${SECS}s"
}
# why_of NAME: the reason of a failed run, for the report.
why_of() {
    case "$RC" in
        124 | 137) echo "$1 timed out after ${SECS}s" ;;
        125) echo "$1 not run: the time budget ($BUDGET s) was spent" ;;
        *) echo "$1 failed (exit $RC): $(reason "$WORK/logs/$1.log")" ;;
    esac
}
# failure_why NAME BACKEND: why_of NAME, marked when it panicked (every failure must be a clean error),
# and saying so when a CUDA step fails in a rehearsal (no NVIDIA GPU here).
failure_why() {
    local why
    why="$(why_of "$1")"
    if [ "$RC" != 0 ] && grep -q 'panicked' "$WORK/logs/$1.log"; then why="PANIC (not a clean error): $why"; fi
    [ "$MODE" = rehearse ] && [ "$2" = cuda ] && why="rehearsal (no NVIDIA GPU here); $why"
    echo "$why"
}
status_of() { case "$RC" in 0) echo ok ;; 124 | 137) echo timeout ;; 125) echo skipped ;; *) echo failed ;; esac; }
json_field() { "$PY" -c $'import json, sys\nv = json.loads(sys.argv[1])\nfor k in sys.argv[2:]:\n    v = v[int(k)] if isinstance(v, list) else v[k]\nprint(json.dumps(v))' "$@"; }

log "GPU check ($MODE), repo $REPO, kit $KIT, out $OUT, budget ${BUDGET}s"

# ================================================================ setup: unpack the kit, find the libraries
if [ -f "$KIT/manifest.json" ]; then
    log "kit: $(tr -d '\n' <"$KIT/manifest.json" | cut -c1-400)"
fi
if [ -z "$BIN" ]; then
    [ -f "$KIT/difix3d.xz" ] || { echo "check.sh: $KIT/difix3d.xz missing: run scripts/gpu/pack.sh here first (or pass --binary)" >&2; exit 1; }
    mkdir -p "$WORK/bin"
    BIN="$WORK/bin/difix3d"
    if command -v xz >/dev/null; then xz -dc "$KIT/difix3d.xz" >"$BIN"; else
        "$PY" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$KIT/difix3d.xz" "$BIN"
    fi
    chmod +x "$BIN"
fi
[ -x "$BIN" ] || { echo "check.sh: $BIN is not an executable" >&2; exit 1; }
EXTRA_SETUP=()
# Data from the kit where the tree has none (assets/ is git-ignored, so it travels only in the kit).
for a in bonsai-7k-mini.splat maupertuis; do
    if [ ! -e "$REPO/assets/$a" ] && [ -e "$KIT/assets/$a" ]; then
        mkdir -p "$REPO/assets" && ln -s "$KIT/assets/$a" "$REPO/assets/$a" && log "assets: $a from the kit"
    fi
done

if [ "$MODE" = real ]; then
    # Vulkan and EGL loaders (device README: unpack Debian's .debs into / when the loader is missing).
    if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
        if ls "$KIT"/gl/*.deb >/dev/null 2>&1; then
            for f in "$KIT"/gl/*.deb; do dpkg -x "$f" /; done
            ldconfig
            log "vulkan: unpacked $(ls "$KIT"/gl/*.deb | wc -l) loader .debs"
        else
            log "vulkan: no libvulkan.so.1 and no $KIT/gl/*.deb"
        fi
    fi
    if ! grep -qsil nvidia /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json \
        && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
        log "vulkan: VK_DRIVER_FILES=$VK_DRIVER_FILES"
    fi
fi

# CUDA: cudarc loads libcuda.so.1 and libnvrtc.so(.13) at run time by name (dlopen). The driver's library
# is on the loader path; NVRTC may only be in the CUDA toolkit folder or in the pip nvidia-cuda-nvrtc wheel
# (torch's), which are not: put the first folder that has it on LD_LIBRARY_PATH.
NVRTC_DIR=""
if ldconfig -p 2>/dev/null | grep -q 'libnvrtc.so.13'; then
    NVRTC_DIR="(loader cache)"
else
    nvrtc_dirs="$("$PY" - <<'EOF' 2>/dev/null || true
import glob, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
for r in dict.fromkeys(roots):
    for lib in sorted(glob.glob(f"{r}/nvidia/*/lib/libnvrtc.so.13*")):
        print(lib.rsplit("/", 1)[0])
EOF
    )"
    # the bindings are CUDA 13's: only NVRTC 13 (the driver is 580 = CUDA 13.0 there)
    for d in $nvrtc_dirs /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
        if ls "$d"/libnvrtc.so.13* >/dev/null 2>&1; then NVRTC_DIR="$d"; break; fi
    done
    if [ -n "$NVRTC_DIR" ]; then export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
fi
log "cuda: nvrtc from ${NVRTC_DIR:-nowhere (not found)}; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo 'no nvidia-smi')"
# cubecl-cuda compiles its kernels with NVRTC against the toolkit's headers: CUDA_PATH/include (and
# include/cccl for cuda/barrier, nv/target), default /usr/local/cuda, and panics when there is none. The
# pip nvidia/cu13/include lacks crt/ and cccl, so only nvcc's toolkit will do.
if [ -z "${CUDA_PATH:-}" ] && [ ! -f /usr/local/cuda/include/cuda_fp16.h ]; then
    for d in "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")")" /opt/cuda /usr/local/cuda-13*; do
        if [ -f "$d/include/cuda_fp16.h" ]; then export CUDA_PATH="$d"; break; fi
    done
fi
CUDA_HEADERS="${CUDA_PATH:-/usr/local/cuda}"
if [ -f "$CUDA_HEADERS/include/cuda_fp16.h" ]; then
    CUDA_HEADERS="$CUDA_HEADERS/include ($( [ -d "$CUDA_HEADERS/include/cccl" ] && echo "with cccl/" || echo "no cccl/"))"
else
    CUDA_HEADERS="none found (CUDA_PATH, /usr/local/cuda, nvcc's folder): cubecl-cuda cannot compile kernels"
fi
log "cuda: toolkit headers $CUDA_HEADERS"
EXTRA_SETUP+=("extra.cuda_headers=$CUDA_HEADERS")
# What difix3d's CUDA backend will find, as dlopen sees it with this environment.
CUDA_LIBS="$("$PY" - <<'EOF' 2>&1 | tr '\n' ';' || true
import ctypes
for name in ("libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"):
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        continue
    a, b = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
    print(f"{name}: NVRTC {a.value}.{b.value}")
    break
else:
    print("NVRTC not loadable (libnvrtc.so / .so.13)")
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    v = ctypes.c_int()
    cuda.cuDriverGetVersion(ctypes.byref(v))
    print(f"libcuda.so.1: driver API {v.value // 1000}.{v.value % 1000 // 10}")
except OSError:
    print("libcuda.so.1 not loadable (no NVIDIA driver)")
EOF
)"
log "cuda libraries: $CUDA_LIBS"
EXTRA_SETUP+=("extra.cuda_libraries=$CUDA_LIBS")
EXTRA_SETUP+=("extra.nvrtc_dir=${NVRTC_DIR:-not found}")
EXTRA_SETUP+=("extra.gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo none)")

# The reference's Python: torch there, plus the kit's pinned diffusers/transformers/hub/tokenizers/peft.
if [ -n "${CHECK_PYTHON:-}" ]; then
    PYREF="$CHECK_PYTHON"
elif [ "$MODE" = rehearse ] && [ -x "$HOME/.cache/difix-venv/bin/python" ]; then
    PYREF="$HOME/.cache/difix-venv/bin/python"
else
    PYREF=python3
fi
PYREF_PATH=""
if [ -f "$KIT/site-cp312.tar.xz" ]; then
    have_py="$("$PYREF" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null || echo none)"
    if [ "$have_py" = 312 ]; then
        mkdir -p "$WORK/site"
        if "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$KIT/site-cp312.tar.xz" "$WORK/site" >>"$LOG" 2>&1; then
            PYREF_PATH="$WORK/site"
            log "python: the kit's packages unpacked into $WORK/site for $PYREF"
        else
            log "python: unpacking $KIT/site-cp312.tar.xz failed (see above)"
        fi
    else
        log "python: the kit's packages are for CPython 3.12, $PYREF is cp$have_py: using its own packages"
    fi
fi
pyref() { PYTHONPATH="$PYREF_PATH${PYTHONPATH:+:$PYTHONPATH}" "$PYREF" "$@"; }
TORCH_INFO="$(pyref -c 'import torch, diffusers, transformers; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, cuda {torch.cuda.is_available()}")' 2>&1 | tail -1 || true)"
log "python: $PYREF: $TORCH_INFO"
EXTRA_SETUP+=("extra.python_reference=$PYREF: $TORCH_INFO")
EXTRA_SETUP+=("extra.difix3d=$("$BIN" --version 2>&1 | head -1 || true)")
record setup ok $(($(date +%s) - START)) "${EXTRA_SETUP[@]}"

# ================================================================ sizes
TINY="$REPO/tests/fixtures/difix/tiny"
SCENE="$REPO/assets/bonsai-7k-mini.splat"
DATA="$REPO/assets/maupertuis"
if [ "$MODE" = real ]; then
    FULL="${DIFIX_FULL_MODEL:-/tmp/difix-full-fp16}"
    FULL_DTYPE=fp16
    # fp16 on cuda and in torch; difix3d's wgpu backend runs fp32 only ("Fp16 on wgpu is not yet supported")
    FIX_SIZE=576x1024; FIX_MODEL="$FULL"; FIX_PREC=fp16; WGPU_PREC=fp32; FIX_ITERS=5; TORCH_DEV=cuda
    RENDER_SIZE=1920x1080; RENDER_FRAMES=100
    TRAIN_FACTOR=1; TRAIN_STEPS=300
    LIVE_FRAMES=40
    NF_RENDER_SIZE=320x180; NF_STEPS=30; NF_MODEL_ARGS=() # the ns-train nerfacto model
    CONV_ARGS=(--iters 5) # bench conv's default cases: the third is 256 channels at 64x64
else
    FULL="${DIFIX_FULL_MODEL:-$HOME/.cache/difix-full}"
    FULL_DTYPE=fp32
    # lavapipe and two shared cores: the tiny model, 64x64
    FIX_SIZE=64x64; FIX_MODEL="$TINY"; FIX_PREC=fp32; WGPU_PREC=fp32; FIX_ITERS=2; TORCH_DEV=cpu
    RENDER_SIZE=320x180; RENDER_FRAMES=5
    TRAIN_FACTOR=8; TRAIN_STEPS=10
    LIVE_FRAMES=6
    NF_RENDER_SIZE=64x36; NF_STEPS=2; NF_MODEL_ARGS=(--nerfacto-config "$REPO/tests/fixtures/nerfacto/config.json")
    CONV_ARGS=(--iters 1 --cases 32x16,64x16,256x8,64x16/2)
fi

# The full-size model is generated in the background (numpy; CPU and disk) while the GPU checks run.
MODEL_PID=""
if wanted model || wanted bench_fix_cuda || wanted bench_fix_wgpu || wanted torch_fix || wanted bench_live; then
    if [ "$MODE" = real ] || wanted model; then
        log "model: generating $FULL ($FULL_DTYPE) in the background"
        ( if "$PY" -c 'import numpy' 2>/dev/null; then gen_py="$PY"; else gen_py="$PYREF"; fi
          PYTHONPATH="$PYREF_PATH${PYTHONPATH:+:$PYTHONPATH}" timeout 300 "$gen_py" "$REPO/tests/golden/difix/make_full_difix.py" \
              --out "$FULL" --dtype "$FULL_DTYPE" ) >"$WORK/logs/model.log" 2>&1 &
        MODEL_PID=$!
    fi
fi
MODEL_STATUS=""
wait_model() { # sets MODEL_OK
    if [ -n "$MODEL_PID" ] && [ -z "$MODEL_STATUS" ]; then
        local t0 rc
        t0=$(date +%s)
        set +e; wait "$MODEL_PID"; rc=$?; set -e
        MODEL_STATUS=$rc
        sed 's/^/    /' "$WORK/logs/model.log" >>"$LOG"
        log "model: generator exit $rc (waited $(($(date +%s) - t0))s)"
        if [ "$rc" = 0 ]; then record model ok $(($(date +%s) - START)) "extra.full_model=$FULL ($FULL_DTYPE)"
        else RC=$rc SECS=0; record model failed 0 "extra.full_model_error=$(reason "$WORK/logs/model.log")"; fi
    fi
    [ -f "$FULL/model_index.json" ] && [ "${MODEL_STATUS:-0}" = 0 ]
}

# ================================================================ 1. correctness
fix_golden() { # BACKEND FIGURE
    local backend="$1" figure="$2" name="fix_golden_$1"
    run "$name" 120 "$BIN" fix --model "$TINY" --input scripts/gpu/data/fix_input.png --native \
        --backend "$backend" --out "$WORK/$name"
    if [ "$RC" = 0 ] && d="$("$PY" "$HELP" fix-diff scripts/gpu/data/fix_expected.json "$WORK/$name/fix_input.png" 2>>"$LOG")"; then
        record "$name" ok "$SECS" "figures.$figure=$(json_field "$d" max_abs)" \
            "conditions.$figure=tiny model 32x48 fp32 via \`difix3d fix\` on $backend; 8-bit output, so >= 0 and a perfect backend is <= $(json_field "$d" quantisation_floor)"
    else
        local why
        why="$(failure_why "$name" "$backend")"
        record "$name" "$(status_of)" "$SECS" "figures.$figure=null" "why.$figure=$why"
    fi
}
wanted fix_golden_cuda && fix_golden cuda difix_cuda_max_abs_vs_golden
wanted fix_golden_wgpu && fix_golden wgpu difix_wgpu_max_abs_vs_golden
wanted fix_golden_cpu && fix_golden cpu difix_cpu_max_abs_vs_golden

if wanted render_parity; then
    run render_parity 90 "$PY" "$HELP" render-parity "$BIN" "$WORK/render_parity"
    if [ "$RC" = 0 ]; then
        r="$(tail -n 1 "$WORK/logs/render_parity.log")"
        record render_parity ok "$SECS" "figures.render_psnr_vs_golden_db=$(json_field "$r" min_psnr_db)" \
            "extra.render_parity=$r" \
            "conditions.render_psnr_vs_golden_db=min colour PSNR over the golden views of tests/fixtures/render (\`difix3d render --camera-json\`, 8-bit PNGs; the tests ask >= 45 dB)"
    else
        record render_parity "$(status_of)" "$SECS" "figures.render_psnr_vs_golden_db=null" "why.render_psnr_vs_golden_db=$(why_of render_parity)"
    fi
fi

# The integration tests that compare with goldens in-process (rasterizer gradients, render parity,
# the tiny Difix on wgpu), when pack.sh put the test binary into the kit.
if wanted gpu_tests; then
    if [ -f "$KIT/it.xz" ] && [ -f "$KIT/manifest.json" ]; then
        mkdir -p "$WORK/bin"
        xz -dc "$KIT/it.xz" >"$WORK/bin/it" && chmod +x "$WORK/bin/it"
        # The tests find their fixtures through the repository path they were built in.
        manifest_dir="$(json_field "$(cat "$KIT/manifest.json")" manifest_dir | tr -d '"')"
        if [ ! -e "$manifest_dir" ]; then mkdir -p "$(dirname "$manifest_dir")" && ln -s "$REPO" "$manifest_dir"; fi
        bin_path="$(json_field "$(cat "$KIT/manifest.json")" bin_path | tr -d '"')"
        if [ ! -e "$bin_path" ]; then mkdir -p "$(dirname "$bin_path")" && ln -s "$BIN" "$bin_path"; fi
        run gpu_tests 150 "$WORK/bin/it" --test-threads 1 grad_parity render_parity difix::tiny_difix_matches_the_reference_on_wgpu
        t="$("$PY" "$HELP" tests "$WORK/logs/gpu_tests.log")"
        passed="$(json_field "$t" passed)"; failed="$(json_field "$t" failed)"
        if [ "$RC" = 0 ]; then
            record gpu_tests ok "$SECS" "figures.gpu_tests_passed=$passed" "figures.gpu_tests_failed=$failed" \
                "conditions.gpu_tests_passed=integration tests grad_parity, render_parity, difix::tiny_difix_matches_the_reference_on_wgpu on the default wgpu adapter"
        else
            record gpu_tests "$(status_of)" "$SECS" "figures.gpu_tests_passed=$passed" "figures.gpu_tests_failed=$failed" \
                "extra.gpu_tests_failures=$(grep -E '^test .* FAILED|panicked' "$WORK/logs/gpu_tests.log" | head -5 | tr '\n' ' ' | cut -c1-600)"
        fi
    else
        record gpu_tests skipped 0 "figures.gpu_tests_passed=null" "why.gpu_tests_passed=the kit has no test binary (pack.sh --no-tests)"
    fi
fi

# ================================================================ 2. speed
if [ "$MODE" = rehearse ] && wanted model; then
    # Check that difix3d loads the full-size model (one small pass on the CPU).
    if wait_model; then
        run bench_fix_full_cpu 300 "$BIN" bench fix --model "$FULL" --size 64x64 --backend cpu --iters 1
        if [ "$RC" = 0 ] && j="$("$PY" "$HELP" bench-json "$WORK/logs/bench_fix_full_cpu.log")"; then
            record bench_fix_full_cpu ok "$SECS" "figures.fix_ms_full_cpu_64x64=$(json_field "$j" mean_ms)" \
                "conditions.fix_ms_full_cpu_64x64=full-size random-weight model, 64x64 fp32, --backend cpu"
        else
            record bench_fix_full_cpu "$(status_of)" "$SECS" "figures.fix_ms_full_cpu_64x64=null" "why.fix_ms_full_cpu_64x64=$(why_of bench_fix_full_cpu)"
        fi
    fi
fi

bench_fix() { # BACKEND FIGURE
    local backend="$1" figure="$2" name="bench_fix_$1" prec="$FIX_PREC" model="$FIX_MODEL"
    [ "$backend" = wgpu ] && prec="$WGPU_PREC"
    if [ "$MODE" = real ] && ! wait_model; then
        record "$name" skipped 0 "figures.$figure=null" "why.$figure=the full-size model could not be generated: $(reason "$WORK/logs/model.log")"
        return
    fi
    # burn's autotune (the cuda build) times candidate kernels for every new shape on the first call
    # and caches the choice under target/ (the working directory is this Cargo project): one call
    # first, timed as the tuning cost, so that the timed run measures tuned calls.
    if [ "$MODE" = real ]; then
        run "${name}_tune" 240 "$BIN" bench fix --model "$model" --size "$FIX_SIZE" --precision "$prec" --backend "$backend" --iters 1
        if [ "$RC" = 0 ]; then
            record "${name}_tune" ok "$SECS" "figures.${figure}_first_run_s=$SECS" \
                "conditions.${figure}_first_run_s=wall seconds of a first \`bench fix --iters 1\` (model load, kernel compilation and autotuning, a warm-up and one timed call)"
        else
            record "${name}_tune" "$(status_of)" "$SECS" "figures.${figure}_first_run_s=null" "why.${figure}_first_run_s=$(why_of "${name}_tune")"
        fi
    fi
    run "$name" 240 "$BIN" bench fix --model "$model" --size "$FIX_SIZE" --precision "$prec" --backend "$backend" --iters "$FIX_ITERS"
    if [ "$RC" = 0 ] && j="$("$PY" "$HELP" bench-json "$WORK/logs/$name.log")"; then
        record "$name" ok "$SECS" "figures.$figure=$(json_field "$j" mean_ms)" "extra.$name=$j" \
            "conditions.$figure=$(basename "$model") $FIX_SIZE $prec, --backend $backend, mean of $FIX_ITERS after a warm-up"
    else
        local why
        why="$(failure_why "$name" "$backend")"
        record "$name" "$(status_of)" "$SECS" "figures.$figure=null" "why.$figure=$why"
    fi
}
wanted bench_fix_cuda && bench_fix cuda fix_ms_cuda_fp16_576x1024

if wanted torch_fix; then
    if [ "$MODE" = real ] && ! wait_model; then
        record torch_fix skipped 0 "figures.fix_ms_torch_fp16_576x1024=null" "why.fix_ms_torch_fp16_576x1024=no full-size model"
    else
        h="${FIX_SIZE%x*}"; w="${FIX_SIZE#*x}"
        tprec="$FIX_PREC"; [ "$TORCH_DEV" = cpu ] && tprec=fp32
        run torch_fix 240 env PYTHONPATH="$PYREF_PATH${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "$PYREF" -c '
import json, sys
sys.path.insert(0, "benches")
import fix_vs_diffusers as f
from pathlib import Path
r = f.time_torch(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), False, sys.argv[4], sys.argv[5], int(sys.argv[6]))
print(json.dumps(r))' "$FIX_MODEL" "$h" "$w" "$tprec" "$TORCH_DEV" "$FIX_ITERS"
        if [ "$RC" = 0 ]; then
            j="$(tail -n 1 "$WORK/logs/torch_fix.log")"
            record torch_fix ok "$SECS" "figures.fix_ms_torch_fp16_576x1024=$(json_field "$j" ms)" "extra.torch_fix=$j" \
                "conditions.fix_ms_torch_fp16_576x1024=benches/fix_vs_diffusers.py time_torch: $(basename "$FIX_MODEL") $FIX_SIZE $tprec on $TORCH_DEV, mean of $FIX_ITERS after 2 warm-ups ($TORCH_INFO)"
        else
            record torch_fix "$(status_of)" "$SECS" "figures.fix_ms_torch_fp16_576x1024=null" "why.fix_ms_torch_fp16_576x1024=$(why_of torch_fix)"
        fi
    fi
fi

if wanted bench_render; then
    if [ -f "$SCENE" ]; then
        run bench_render 90 "$BIN" bench render --scene "$SCENE" --size "$RENDER_SIZE" --frames "$RENDER_FRAMES"
        if [ "$RC" = 0 ] && j="$("$PY" "$HELP" bench-json "$WORK/logs/bench_render.log")"; then
            record bench_render ok "$SECS" "figures.render_ms_1080p=$(json_field "$j" mean_ms)" "extra.bench_render=$j" \
                "conditions.render_ms_1080p=bonsai-7k-mini.splat $RENDER_SIZE, $RENDER_FRAMES orbit frames, $(json_field "$j" adapter)"
        else
            record bench_render "$(status_of)" "$SECS" "figures.render_ms_1080p=null" "why.render_ms_1080p=$(why_of bench_render)"
        fi
    else
        record bench_render skipped 0 "figures.render_ms_1080p=null" "why.render_ms_1080p=$SCENE missing (scripts/fetch_assets.sh; pack.sh packs it)"
    fi
fi

# web-splat (github.com/KeKsBoTer/web-splat) at the same camera, when pack.sh found its timing binary
# (benches/render_vs_websplat.sh builds it); difix3d is timed at that camera too, for the ratio.
if wanted web_splat; then
    if [ -f "$KIT/web_splat_timing.xz" ] && [ -f "$SCENE" ]; then
        xz -dc "$KIT/web_splat_timing.xz" >"$WORK/bin/web_splat_timing" && chmod +x "$WORK/bin/web_splat_timing"
        w="${RENDER_SIZE%x*}"; h="${RENDER_SIZE#*x}"
        # benches/render_vs_websplat.sh's bonsai view (eye, target, focal 1000 at 1280x720), at this size
        "$PY" - "$w" "$h" >"$WORK/ws_camera.json" <<'EOF'
import json, math, sys
w, h = int(sys.argv[1]), int(sys.argv[2])
eye, target, f = [-0.2, -1.4, -4.0], [-0.2, -0.1, 0.3], 1000.0 * w / 1280
norm = lambda v: [c / math.sqrt(sum(x * x for x in v)) for c in v]
cross = lambda a, b: [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
z = norm([t - e for t, e in zip(target, eye)])
x = norm(cross([0.0, 1.0, 0.0], z))
y = cross(z, x)
rows = [[x[i], y[i], z[i], eye[i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]
print(json.dumps({"name": "bench", "width": w, "height": h, "fx": f, "fy": f, "cx": w / 2, "cy": h / 2,
                  "world_from_camera": rows}))
EOF
        run web_splat 60 "$WORK/bin/web_splat_timing" "$SCENE" "$WORK/ws_camera.json" "$RENDER_FRAMES"
        if [ "$RC" = 0 ] && j="$(grep '^{' "$WORK/logs/web_splat.log" | tail -n 1)" && [ -n "$j" ]; then
            fields=("figures.render_ms_web_splat_1080p=$(json_field "$j" mean_ms)" "extra.web_splat=$j"
                "conditions.render_ms_web_splat_1080p=web-splat's timing binary (benches/render_vs_websplat.sh), bonsai, its fixed bonsai view at $RENDER_SIZE, $RENDER_FRAMES frames")
            run bench_render_ws_camera 60 "$BIN" bench render --scene "$SCENE" --camera-json "$WORK/ws_camera.json" --frames "$RENDER_FRAMES"
            if [ "$RC" = 0 ] && k="$("$PY" "$HELP" bench-json "$WORK/logs/bench_render_ws_camera.log")"; then
                fields+=("figures.render_ms_1080p_web_splat_camera=$(json_field "$k" mean_ms)"
                    "conditions.render_ms_1080p_web_splat_camera=difix3d bench render at web-splat's camera ($RENDER_SIZE)")
            fi
            record web_splat ok "$SECS" "${fields[@]}"
        else
            record web_splat "$(status_of)" "$SECS" "figures.render_ms_web_splat_1080p=null" "why.render_ms_web_splat_1080p=$(why_of web_splat)"
        fi
    else
        record web_splat skipped 0 "figures.render_ms_web_splat_1080p=null" \
            "why.render_ms_web_splat_1080p=web-splat's timing binary is not in the kit (pack.sh takes it from WEB_SPLAT_BIN or ~/.cache/web-splat/target/release/difix3d_timing, built by benches/render_vs_websplat.sh)"
    fi
fi

if wanted bench_train; then
    if [ -d "$DATA" ]; then
        # debug logs of our crate: each step's phases, so a run that stalls shows where
        run bench_train 120 env RUST_LOG=warn,difix3d=debug "$BIN" bench train --data "$DATA" --factor "$TRAIN_FACTOR" --steps "$TRAIN_STEPS" --backend wgpu
        if [ "$RC" = 0 ] && j="$("$PY" "$HELP" bench-json "$WORK/logs/bench_train.log")"; then
            record bench_train ok "$SECS" "figures.train_it_per_s=$(json_field "$j" its)" "extra.bench_train=$j" \
                "conditions.train_it_per_s=assets/maupertuis factor $TRAIN_FACTOR, $TRAIN_STEPS steps, --backend wgpu, $(json_field "$j" adapter)"
        else
            record bench_train "$(status_of)" "$SECS" "figures.train_it_per_s=null" "why.train_it_per_s=$(why_of bench_train)"
        fi
    else
        record bench_train skipped 0 "figures.train_it_per_s=null" "why.train_it_per_s=$DATA missing (scripts/fetch_assets.sh; pack.sh packs it)"
    fi
fi

if wanted bench_live; then
    live_backend=wgpu; live_flags=(--gpu-frames); live_prec="$WGPU_PREC"
    if [ "$MODE" = real ] && grep -qs '"status": "ok"' "$STEPS"/*bench_fix_cuda.json; then live_backend=cuda; live_flags=(); live_prec="$FIX_PREC"; fi
    if [ "$MODE" = real ] && ! wait_model; then
        record bench_live skipped 0 "figures.live_fixed_fps_576x1024=null" "why.live_fixed_fps_576x1024=no full-size model"
    elif [ ! -f "$SCENE" ]; then
        record bench_live skipped 0 "figures.live_fixed_fps_576x1024=null" "why.live_fixed_fps_576x1024=$SCENE missing"
    else
        run bench_live 150 "$BIN" bench live --scene "$SCENE" --model "$FIX_MODEL" --size "$FIX_SIZE" --precision "$live_prec" \
            --backend "$live_backend" "${live_flags[@]}" --frames "$LIVE_FRAMES"
        if [ "$RC" = 0 ] && j="$("$PY" "$HELP" bench-json "$WORK/logs/bench_live.log")"; then
            record bench_live ok "$SECS" "figures.live_fixed_fps_576x1024=$(json_field "$j" fixed_fps)" \
                "figures.live_e2e_ms_576x1024=$(json_field "$j" end_to_end_ms)" "extra.bench_live=$j" \
                "conditions.live_e2e_ms_576x1024=camera change to its fixed frame on screen, as live_fixed_fps_576x1024" \
                "conditions.live_fixed_fps_576x1024=$(basename "$FIX_MODEL") $FIX_SIZE $live_prec, --backend $live_backend ${live_flags[*]}, $LIVE_FRAMES frames, bonsai"
        else
            record bench_live "$(status_of)" "$SECS" "figures.live_fixed_fps_576x1024=null" "why.live_fixed_fps_576x1024=$(why_of bench_live)"
        fi
    fi
fi

wanted bench_fix_wgpu && bench_fix wgpu fix_ms_wgpu_576x1024

# One convolution on the wgpu adapter, burn's direct kernel against nn::tap_conv's matrix products
# (what bench_fix_wgpu runs for 64+ input channels), both in one run: the speed-up at 256 channels, 64².
if wanted bench_conv_wgpu; then
    run bench_conv_wgpu 90 "$BIN" bench conv --backend wgpu "${CONV_ARGS[@]}"
    if [ "$RC" = 0 ] && j="$("$PY" "$HELP" bench-json "$WORK/logs/bench_conv_wgpu.log")"; then
        record bench_conv_wgpu ok "$SECS" "figures.conv_speedup_wgpu_256ch=$(json_field "$j" cases 2 speedup)" \
            "extra.bench_conv_wgpu=$j" \
            "conditions.conv_speedup_wgpu_256ch=\`bench conv --backend wgpu ${CONV_ARGS[*]}\`, third case (3x3, 256 channels, fp32): burn's ms / tap_conv's ms (every case in extra)"
    else
        record bench_conv_wgpu "$(status_of)" "$SECS" "figures.conv_speedup_wgpu_256ch=null" "why.conv_speedup_wgpu_256ch=$(why_of bench_conv_wgpu)"
    fi
fi

# ================================================================ nerfacto (issue 18)
# The parity fixture's field (nerfstudio's own tiny checkpoint) rendered by each backend, against the
# CPU backend's render (which matches nerfstudio, tests/it/nerfacto.rs), with its speed; then nerfacto
# training speed on maupertuis (ns-train nerfacto's model on the GPU machine) on the GPU backends.
if wanted nerfacto_render; then
    nf_w="${NF_RENDER_SIZE%x*}"; nf_h="${NF_RENDER_SIZE#*x}"
    # 2 units out on -z of the model's frame, looking at its origin (as benches/nerfacto_vs_nerfstudio.py)
    echo "{\"name\": \"nerfacto.png\", \"width\": $nf_w, \"height\": $nf_h, \"fx\": $((nf_w * 4 / 5)), \"fy\": $((nf_w * 4 / 5)), \"cx\": $((nf_w / 2)), \"cy\": $((nf_h / 2)), \"world_from_camera\": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -2], [0, 0, 0, 1]]}" >"$WORK/nf_camera.json"
    for backend in cpu cuda wgpu; do
        name="nerfacto_render_$backend"
        run "$name" 120 "$BIN" nerfacto-render --checkpoint tests/fixtures/nerfacto/step-000000300.ckpt \
            --config tests/fixtures/nerfacto/config.json --camera-json "$WORK/nf_camera.json" --backend "$backend" \
            --rays-per-chunk 32768 --out "$WORK/$name"
        if [ "$RC" = 0 ] && r="$("$PY" "$HELP" rays-per-second "$WORK/logs/$name.log")"; then
            fields=("figures.nerfacto_render_rays_per_s_$backend=$(json_field "$r" rays_per_second)"
                "conditions.nerfacto_render_rays_per_s_$backend=tests/fixtures/nerfacto's tiny field at $NF_RENDER_SIZE, \`nerfacto-render --backend $backend\`, one camera, first run (kernel compilation included)")
            if [ "$backend" != cpu ] && d="$("$PY" "$HELP" image-diff "$WORK/nerfacto_render_cpu/nerfacto.png" "$WORK/$name/nerfacto.png" 2>>"$LOG")"; then
                fields+=("figures.nerfacto_render_${backend}_max_levels_vs_cpu=$(json_field "$d" max_levels)" "extra.nerfacto_render_${backend}_vs_cpu=$d"
                    "conditions.nerfacto_render_${backend}_max_levels_vs_cpu=largest 8-bit difference from the CPU backend's render of the same camera (0: identical; PSNR in extra)")
            fi
            record "$name" ok "$SECS" "${fields[@]}"
        else
            why="$(failure_why "$name" "$backend")"
            record "$name" "$(status_of)" "$SECS" "figures.nerfacto_render_rays_per_s_$backend=null" "why.nerfacto_render_rays_per_s_$backend=$why"
        fi
    done
fi
if wanted nerfacto_train; then
    for backend in cuda wgpu; do
        name="nerfacto_train_$backend"
        if [ ! -d "$DATA" ]; then
            record "$name" skipped 0 "figures.nerfacto_train_rays_per_s_$backend=null" "why.nerfacto_train_rays_per_s_$backend=$DATA missing"
            continue
        fi
        run "$name" 150 "$BIN" train --method nerfacto --data "$DATA" --factor 8 --steps "$NF_STEPS" "${NF_MODEL_ARGS[@]}" \
            --backend "$backend" --out "$WORK/$name"
        nf_model="ns-train nerfacto model"
        [ ${#NF_MODEL_ARGS[@]} -gt 0 ] && nf_model="${NF_MODEL_ARGS[*]}"
        if [ "$RC" = 0 ] && [ -f "$WORK/$name/summary.json" ]; then
            j="$(cat "$WORK/$name/summary.json")"
            record "$name" ok "$SECS" "figures.nerfacto_train_rays_per_s_$backend=$(json_field "$j" rays_per_second)" "extra.$name=$j" \
                "conditions.nerfacto_train_rays_per_s_$backend=assets/maupertuis factor 8, $NF_STEPS steps of 4096 rays, \`train --method nerfacto --backend $backend\`, $nf_model"
        else
            why="$(failure_why "$name" "$backend")"
            record "$name" "$(status_of)" "$SECS" "figures.nerfacto_train_rays_per_s_$backend=null" "why.nerfacto_train_rays_per_s_$backend=$why"
        fi
    done
fi

if [ -n "$MODEL_PID" ] && [ -z "$MODEL_STATUS" ]; then wait_model || true; fi

# ================================================================ 3. the report
log "done in $(($(date +%s) - START))s"
"$PY" "$HELP" report "$STEPS" "$OUT" "$REHEARSAL" "$LOG"
rm -rf "$WORK"
