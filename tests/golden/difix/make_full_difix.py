#!/usr/bin/env python3
"""Write a FULL-SIZE random-weight Difix model in the published diffusers layout (for benchmarks).

Same layout, class names, config keys and key names as tests/fixtures/difix/tiny/ (make_tiny_difix.py), at
the real SD-Turbo / nvidia/difix sizes:

* text encoder: CLIPTextModel, hidden 1024, 23 layers, 16 heads, MLP 4096, vocab 49408 (340 M parameters);
* UNet: block_out_channels (320, 640, 1280, 1280), attention_head_dim [5, 10, 20, 20], cross 1024,
  norm_num_groups 32 (866 M parameters);
* VAE: (128, 256, 512, 512), groups 32, + decoder.skip_conv_1..4 + the rank-4 PEFT LoRA "vae_skip" (84 M).

The tokenizer is the tiny model's (tests/fixtures/difix/tiny/tokenizer, 1514 entries, bos 1512, eos 1513):
its ids fit the 49408-row embedding, and the timings do not depend on the vocabulary. The weights are
random (same scheme as make_tiny_difix.py: conv/linear N(0,1)/sqrt(fan_in), norm scales 1 + 0.1 N, biases
0.1 N, embeddings 0.3 N, lora_B 0.1 N, SD-like VAE latent scale), so the outputs mean nothing: this model is
for SPEED, never for quality. About 5.2 GB in fp32, 2.6 GB with --dtype fp16.

Two steps:

1. ``spec`` (needs diffusers/transformers/peft, i.e. tests/golden/difix/requirements.txt): builds the three
   models on torch's meta device and writes ``full_difix_spec.json`` beside this script (configs, and every
   tensor's name and shape in state_dict order). It is committed; re-run only when the layout changes.
2. the default (``--out DIR``): writes the model from that spec with numpy only (no torch, no diffusers),
   streaming each safetensors file tensor by tensor, so it runs on any machine with Python 3 and numpy
   (the GPU machine of scripts/gpu/check.sh too). Deterministic for a given --seed (numpy PCG64).

    python3 tests/golden/difix/make_full_difix.py --out ~/.cache/difix-full            # ~1 min, 5.2 GB
    ~/.cache/difix-venv/bin/python tests/golden/difix/make_full_difix.py spec          # regenerate the spec
    ~/.cache/difix-venv/bin/python tests/golden/difix/make_full_difix.py verify DIR    # strict load + forward
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SPEC = HERE / "full_difix_spec.json"
TINY_TOKENIZER = REPO / "tests" / "fixtures" / "difix" / "tiny" / "tokenizer"
TINY_SCHEDULER = REPO / "tests" / "fixtures" / "difix" / "tiny" / "scheduler"
TINY_INDEX = REPO / "tests" / "fixtures" / "difix" / "tiny" / "model_index.json"

SEED = 20251203

# The real sizes (stabilityai/sd-turbo, nvidia/difix).
TEXT = dict(hidden=1024, layers=23, heads=16, mlp=4096, vocab=49408, projection=512)
UNET_BLOCKS = (320, 640, 1280, 1280)
UNET_HEADS = [5, 10, 20, 20]
UNET_GROUPS = 32
VAE_BLOCKS = (128, 256, 512, 512)
VAE_GROUPS = 32

FILES = {
    "text_encoder": "text_encoder/model.safetensors",
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
}


# ----------------------------------------------------------------------------------------------
# spec (diffusers side)
# ----------------------------------------------------------------------------------------------

def make_spec() -> None:
    import torch

    sys.path.insert(0, str(HERE))
    import make_tiny_difix as mt

    # make_tiny_difix.py reads its sizes from module globals when it builds a config.
    mt.TEXT_HIDDEN, mt.TEXT_LAYERS, mt.TEXT_HEADS, mt.TEXT_MLP = (
        TEXT["hidden"], TEXT["layers"], TEXT["heads"], TEXT["mlp"])
    mt.UNET_BLOCKS, mt.UNET_HEADS, mt.UNET_GROUPS = UNET_BLOCKS, UNET_HEADS, UNET_GROUPS
    mt.VAE_BLOCKS, mt.VAE_GROUPS = VAE_BLOCKS, VAE_GROUPS

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    te_cfg = mt.text_encoder_config(TEXT["vocab"])
    te_cfg["projection_dim"] = TEXT["projection"]
    with torch.device("meta"):
        text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg))
        unet = UNet2DConditionModel(**mt.unet_config())
        vae = AutoencoderKL(**mt.vae_config())
        targets = mt.add_difix_vae_parts(vae)

    def tensors(module) -> list:
        return [[k, list(v.shape)] for k, v in module.state_dict().items()]

    unet_json = json.loads(unet.to_json_string())
    vae_json = json.loads(vae.to_json_string())
    vae_json.update(mt.VAE_EXTRA_CONFIG)
    spec = {
        "about": "written by make_full_difix.py spec: configs and state_dict (name, shape) of the full-size "
                 "random-weight Difix model",
        "configs": {"text_encoder": te_cfg, "unet": unet_json, "vae": vae_json},
        "vae_lora_targets": len(targets),
        "tensors": {"text_encoder": tensors(text_encoder), "unet": tensors(unet), "vae": tensors(vae)},
    }
    # Configs indented, one tensor per line (small diffs when the layout changes).
    head = json.dumps({k: v for k, v in spec.items() if k != "tensors"}, indent=1, sort_keys=True)
    body = ",\n".join(f'  "{part}": [\n' + ",\n".join("   " + json.dumps(e) for e in entries) + "\n  ]"
                      for part, entries in spec["tensors"].items())
    SPEC.write_text(head[:-2] + ',\n "tensors": {\n' + body + "\n }\n}\n")
    json.loads(SPEC.read_text())  # still valid JSON
    n = {k: sum(math.prod(s) for _, s in v) for k, v in spec["tensors"].items()}
    print(f"wrote {SPEC}: " + ", ".join(f"{k} {len(spec['tensors'][k])} tensors {n[k] / 1e6:.1f} M"
                                         for k in n) + f"; {len(targets)} LoRA targets")


# ----------------------------------------------------------------------------------------------
# generate (numpy only)
# ----------------------------------------------------------------------------------------------

def init_values(rng, name: str, shape: list, part: str, np):
    """make_tiny_difix.init_module's scheme (and its VAE rescaling), for one tensor."""
    n = rng.standard_normal(size=math.prod(shape), dtype=np.float32).reshape(shape)
    if len(shape) == 1 and name.endswith("weight"):
        v = 1.0 + 0.1 * n
    elif len(shape) == 1:
        v = 0.1 * n
    elif name.endswith(("token_embedding.weight", "position_embedding.weight")):
        v = 0.3 * n
    elif "lora_B" in name:
        v = 0.1 * n
    else:
        v = n * np.float32(1.0 / math.sqrt(math.prod(shape[1:])))
    if part == "vae":
        if name in ("quant_conv.weight", "quant_conv.bias"):
            v[:4] *= 5.0
        elif name == "post_quant_conv.weight":
            v *= 0.2
        elif name in ("decoder.conv_out.base_layer.weight", "decoder.conv_out.lora_B.vae_skip.weight"):
            v *= 0.6
    return v


def write_safetensors(path: Path, entries: list, dtype: str, make) -> int:
    """Streams a safetensors file: header first (offsets from the shapes), then each tensor as made."""
    import numpy as np

    st_dtype, np_dtype, size = {"fp32": ("F32", np.float32, 4), "fp16": ("F16", np.float16, 2)}[dtype]
    header, offset = {}, 0
    for name, shape in entries:
        nbytes = math.prod(shape) * size
        header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in entries:
            v = make(name, shape).astype(np_dtype, copy=False)
            if not np.isfinite(v).all():
                raise SystemExit(f"{name}: non-finite values in {dtype}")
            f.write(np.ascontiguousarray(v).tobytes())
    tmp.replace(path)
    return 8 + len(raw) + offset


def stamp_of(seed: int, dtype: str) -> dict:
    import hashlib
    return {"seed": seed, "dtype": dtype, "spec_sha256": hashlib.sha256(SPEC.read_bytes()).hexdigest()}


def generate(out: Path, seed: int, dtype: str, force: bool) -> None:
    import numpy as np

    spec = json.loads(SPEC.read_text())
    marker = out / "model_index.json"
    if out.exists() and any(out.iterdir()):
        if not force and not marker.exists():
            raise SystemExit(f"{out} exists and is not a Difix model folder: not overwriting it")
        stamp = out / ".make_full_difix.json"
        want = stamp_of(seed, dtype)
        if not force and stamp.exists() and json.loads(stamp.read_text()) == want:
            print(f"{out}: already written with {want}; use --force to rewrite")
            return
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("tokenizer", "scheduler"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    shutil.copytree(TINY_TOKENIZER, out / "tokenizer")
    shutil.copytree(TINY_SCHEDULER, out / "scheduler")
    shutil.copy(TINY_INDEX, out / "model_index.json")
    total = 0
    for i, part in enumerate(("text_encoder", "unet", "vae")):
        (out / part).mkdir(exist_ok=True)
        cfg = dict(spec["configs"][part])
        cfg["torch_dtype"] = "float16" if dtype == "fp16" else "float32"
        if part != "text_encoder":
            cfg.pop("torch_dtype")
        (out / part / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        rng = np.random.Generator(np.random.PCG64([seed, i]))
        total += write_safetensors(out / FILES[part], spec["tensors"][part], dtype,
                                   lambda name, shape: init_values(rng, name, shape, part, np))
        print(f"  {part}: {len(spec['tensors'][part])} tensors ({time.time() - start:.0f} s)", flush=True)
    (out / ".make_full_difix.json").write_text(
        json.dumps(stamp_of(seed, dtype)) + "\n")
    print(f"wrote {out} ({total / 1e9:.2f} GB, {dtype}) in {time.time() - start:.0f} s")


# ----------------------------------------------------------------------------------------------
# verify (diffusers side): strict load with the reference loader + a small forward pass
# ----------------------------------------------------------------------------------------------

def verify(model: Path, size: str) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    import reference_difix as ref

    h, w = (int(v) for v in size.lower().split("x"))
    start = time.time()
    models = ref.load_models(model)  # strict load_state_dict of the VAE; from_pretrained of the others
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"loaded in {time.time() - start:.0f} s: text_encoder {n(models.text_encoder) / 1e6:.1f} M, "
          f"unet {n(models.unet) / 1e6:.1f} M, vae {n(models.vae) / 1e6:.1f} M parameters")
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out, inter = ref.difix_forward(models, image)
    stats = {k: float(inter[k].abs().max()) for k in ("text_hidden", "z", "eps", "z0", "decoded")}
    print(f"forward {h}x{w} in {time.time() - start:.0f} s; max |.|: "
          + ", ".join(f"{k} {v:.3g}" for k, v in stats.items()))
    if not torch.isfinite(out).all() or max(stats.values()) > 6e4:
        raise SystemExit("non-finite output or activations beyond fp16's range")
    print("OK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", choices=["generate", "spec", "verify"], default="generate")
    ap.add_argument("model", nargs="?", type=Path, help="verify: the model folder")
    ap.add_argument("--out", type=Path, help="generate: the model folder to write (outside the repo: GBs)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--force", action="store_true", help="generate: rewrite even if already written")
    ap.add_argument("--size", default="64x64", help="verify: HEIGHTxWIDTH of the forward pass")
    a = ap.parse_args()
    if a.command == "spec":
        make_spec()
    elif a.command == "verify":
        if a.model is None:
            ap.error("verify needs the model folder")
        verify(a.model, a.size)
    else:
        if a.out is None:
            ap.error("--out DIR is required")
        if not SPEC.exists():
            raise SystemExit(f"{SPEC} is missing: run `make_full_difix.py spec` with the golden venv")
        generate(a.out.expanduser(), a.seed, a.dtype, a.force)


if __name__ == "__main__":
    main()
