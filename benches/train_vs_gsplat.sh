#!/usr/bin/env bash
# Training trajectory of `difix3d train` next to gsplat 1.5.3's default recipe (the gsplat peer,
# ../shared/tools/gsplat-peer or $GSPLAT_PEER) on one dataset: eval PSNR and splat count after steps
# 500, 1000 and 1500 (or $EVAL_STEPS), one run each, back to back, printed as a Markdown table.
#
#   benches/train_vs_gsplat.sh DATASET OUT_DIR [--factor N] [--seed S] [--backend cpu|wgpu|cuda]
#
# DATASET: a COLMAP text model + images (e.g. made by benches/make_train_case.py). The peer runs with
# $PEER_PYTHON (default ~/.cache/peer-venv/bin/python); ours with $DIFIX3D (default the release build).
# Set SKIP_PEER=1 or SKIP_OURS=1 to reuse an earlier run's results in OUT_DIR.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,11p' "$0"
    exit 2
fi
data=$1
out=$2
shift 2
factor=1
seed=42
backend=cpu
while [ $# -gt 0 ]; do
    case $1 in
        --factor) factor=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
peer=${GSPLAT_PEER:-$here/../shared/tools/gsplat-peer}
python=${PEER_PYTHON:-$HOME/.cache/peer-venv/bin/python}
difix3d=${DIFIX3D:-${CARGO_TARGET_DIR:-$here/target}/release/difix3d}
steps=${EVAL_STEPS:-500 1000 1500}
max=$(echo "$steps" | tr ' ' '\n' | sort -n | tail -1)
mkdir -p "$out"

if [ "${SKIP_OURS:-0}" != 1 ]; then
    start=$(date +%s)
    "$difix3d" train --data "$data" --factor "$factor" --steps "$max" --seed "$seed" --backend "$backend" \
        --eval-steps "$(echo "$steps" | tr ' ' ',')" --out "$out/ours" > "$out/ours.log" 2>&1
    echo $(( $(date +%s) - start )) > "$out/ours.seconds"
fi
if [ "${SKIP_PEER:-0}" != 1 ]; then
    start=$(date +%s)
    "$python" "$peer/train_gsplat_cpu.py" --data "$data" --factor "$factor" --out "$out/peer" \
        --max_steps "$max" --eval_steps $steps --seed "$seed" > "$out/peer.log" 2>&1
    echo $(( $(date +%s) - start )) > "$out/peer.seconds"
fi

"$python" - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
ours = {e["step"]: e for e in json.load(open(os.path.join(out, "ours", "summary.json")))["evals"]}
peer = {e["step"]: e for e in json.load(open(os.path.join(out, "peer", "log.json")))["evals"]}
print("| step | ours PSNR (dB) | ours splats | gsplat PSNR (dB) | gsplat splats | ours − gsplat (dB) |")
print("|---:|---:|---:|---:|---:|---:|")
for step in sorted(set(ours) | set(peer)):
    o, p = ours.get(step), peer.get(step)
    cell = lambda e, k, f: (f % e[k]) if e else "–"
    diff = "%+.2f" % (o["psnr"] - p["psnr_mean"]) if o and p else "–"
    print(f"| {step} | {cell(o, 'psnr', '%.2f')} | {cell(o, 'splats', '%d')} | "
          f"{cell(p, 'psnr_mean', '%.2f')} | {cell(p, 'num_GS', '%d')} | {diff} |")
EOF
