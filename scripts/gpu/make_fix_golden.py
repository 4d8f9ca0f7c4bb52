#!/usr/bin/env python3
"""Writes scripts/gpu/data/fix_input.png and fix_expected.json: the tiny Difix model's golden for `difix3d fix`.

The Difix goldens (tests/fixtures/difix/goldens.safetensors) are float tensors, which the integration tests
compare in-process. The GPU check compares what the CLI writes instead (scripts/gpu/check.sh runs the
packed binary, not the tests): `pipe.input` rounded to 8 bits is the input PNG, and the expected output is
the reference forward pass (tests/golden/difix/reference_difix.py, float64 from the fp32 weights) of exactly
that 8-bit input, before the output's own 8-bit rounding (so a perfect backend is off by <= 0.5/255).

Run with the golden venv (tests/golden/difix/requirements.txt):
    ~/.cache/difix-venv/bin/python scripts/gpu/make_fix_golden.py
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "golden" / "difix"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402
import reference_difix as ref  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    golden = load_file(str(REPO / "tests" / "fixtures" / "difix" / "goldens.safetensors"))
    x = golden["pipe.input"][0]  # [3, H, W] in [0, 1]
    q = (x.double() * 255).round().clamp(0, 255).to(torch.uint8)
    _, h, w = q.shape
    DATA.mkdir(exist_ok=True)
    gpu_check.write_png_rgb(DATA / "fix_input.png", w, h, q.permute(1, 2, 0).contiguous().numpy().tobytes())
    # read back through the same decoder the check uses
    _, _, px = gpu_check.rgb(DATA / "fix_input.png")
    assert px == q.permute(1, 2, 0).contiguous().numpy().tobytes()

    models = ref.load_models(REPO / "tests" / "fixtures" / "difix" / "tiny")
    torch.set_default_dtype(torch.float64)  # as make_goldens.py: transformers' causal mask in float64
    models.to(torch.float64)
    with torch.inference_mode():
        out, _ = ref.difix_forward(models, (q.double() / 255)[None])
    hwc = out[0].permute(1, 2, 0).reshape(-1).tolist()
    (DATA / "fix_expected.json").write_text(json.dumps({
        "about": "reference_difix.py forward (float64) of fix_input.png with tests/fixtures/difix/tiny, "
                 "timestep 199, prompt 'remove degradation'; HWC RGB in [0, 1], not rounded to 8 bits",
        "height": h, "width": w, "hwc": [round(v, 8) for v in hwc]}) + "\n")
    print(f"wrote {DATA}/fix_input.png and fix_expected.json ({h}x{w}; output mean {out.mean().item():.4f})")


if __name__ == "__main__":
    main()
