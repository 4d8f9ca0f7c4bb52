#!/usr/bin/env python3
"""Difix inference speed: difix3d against the reference PyTorch code path, same model, size and GPU.

The PyTorch side is tests/golden/difix/reference_difix.py (diffusers' UNet2DConditionModel and
AutoencoderKL, transformers' CLIP text model, with Difix3D's own VAE forwards, skip convs, LoRA and
reference-view attention, as src/model.py runs them; diffusers picks torch's scaled-dot-product
attention). Like the reference pipeline it encodes the prompt on every call. The difix3d side is
`difix3d bench fix` (its prompt embedding is cached). Both time a warmed-up forward pass of one image
(plus its reference with --ref) and report milliseconds per image.

    python benches/fix_vs_diffusers.py --model checkpoints/difix_ref --size 576x1024 --ref \
        --precision fp16 --device cuda --difix3d target/release/difix3d [--append-md BENCHMARKS.md]

On a machine without a GPU it runs both on the CPU (--device cpu; difix3d's --backend cpu, burn-flex;
torch uses all cores, as difix3d does), which is how it is tested with the tiny model. Needs the
packages of tests/golden/difix/requirements.txt.

The full-size comparison (SD-Turbo sizes, random weights; ~1 minute and 5.2 GB to write):

    python3 tests/golden/difix/make_full_difix.py --out ~/.cache/difix-full
    python benches/fix_vs_diffusers.py --model ~/.cache/difix-full --size 256x256 --device cpu --iters 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "golden" / "difix"))
import reference_difix as ref  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_torch(model: Path, h: int, w: int, with_ref: bool, precision: str, device: str, iters: int) -> dict:
    models = ref.load_models(model).to(DTYPES[precision])
    for m in (models.text_encoder, models.unet, models.vae):
        m.to(device)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, h, w, generator=gen).to(device)
    reference = torch.rand(1, 3, h, w, generator=gen).to(device) if with_ref else None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for _ in range(2):  # warm-up: cuDNN autotuning, allocator
            ref.difix_forward(models, image, reference)
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            out, _ = ref.difix_forward(models, image, reference)
        sync(device)
        ms = (time.perf_counter() - start) * 1e3 / iters
    assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"ms": ms, "peak_gpu_mib": peak, "torch": torch.__version__, "threads": torch.get_num_threads()}


def time_difix3d(binary: str, model: Path, h: int, w: int, with_ref: bool, precision: str, backend: str,
                 iters: int) -> dict:
    cmd = [binary, "bench", "fix", "--model", str(model), "--size", f"{h}x{w}", "--precision", precision,
           "--backend", backend, "--iters", str(iters)] + (["--ref"] if with_ref else [])
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"difix3d bench fix failed ({' '.join(cmd)}):\n{run.stderr}")
    text = run.stdout
    report = json.loads(text[text.index("{"): text.rindex("}") + 1])
    return {"ms": report["mean_ms"], "encode_ms": report["encode_ms"], "unet_ms": report["unet_ms"],
            "decode_ms": report["decode_ms"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "checkpoints" / "difix_ref")
    p.add_argument("--size", default="576x1024", help="HEIGHTxWIDTH")
    p.add_argument("--ref", action="store_true", help="with a reference view (difix_ref)")
    p.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--difix3d", default=str(REPO / "target" / "release" / "difix3d"), help="the difix3d binary")
    p.add_argument("--append-md", type=Path, help="append the result row to this markdown file")
    a = p.parse_args()
    h, w = (int(v) for v in a.size.lower().split("x"))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    if device == "cpu" and a.precision != "fp32":
        sys.exit("--precision fp16/bf16 needs --device cuda (the CPU path runs fp32)")
    backend = "cuda" if device == "cuda" else "cpu"

    theirs = time_torch(a.model, h, w, a.ref, a.precision, device, a.iters)
    ours = time_difix3d(a.difix3d, a.model, h, w, a.ref, a.precision, backend, a.iters)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    report = {"size": f"{h}x{w}", "reference": a.ref, "precision": a.precision, "device": gpu,
              "pytorch_ms": theirs["ms"], "difix3d_ms": ours["ms"], "speedup": theirs["ms"] / ours["ms"],
              "pytorch": theirs, "difix3d": ours}
    print(json.dumps(report, indent=2))
    row = (f"| {datetime.date.today()} | fix vs PyTorch | {a.model.name} | {h}x{w} | {'yes' if a.ref else 'no'} "
           f"| {a.precision} | {gpu} ({backend}) | {theirs['ms']:.1f} | {ours['ms']:.1f} "
           f"| {theirs['ms'] / ours['ms']:.2f}x |")
    print(row)
    if a.append_md:
        with open(a.append_md, "a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
