#!/usr/bin/env python3
"""Golden outputs of the tiny Difix model (tests/fixtures/difix/tiny) for the Rust implementation.

Writes tests/fixtures/difix/goldens.safetensors (F32 tensors; token ids and timesteps I64) and
tests/fixtures/difix/goldens.json (meaning, shape, dtype and layout of every entry, scalars, and the
largest |fp32 - fp64| of every entry as a guide for tolerances).

The goldens are computed in float64 from the fp32 weights (exact promotion) and rounded to fp32; the same
graph is also run in fp32 and the difference is recorded. Inputs are drawn from torch.Generator with fixed
seeds. Re-running gives bit-identical files with the pinned versions (requirements.txt).

Run:  /tmp/difix-venv/bin/python tests/golden/difix/make_goldens.py
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_difix as ref  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "difix"
MODEL_DIR = FIXTURES / "tiny"
H, W = 32, 48
SEED = 1234

# module paths of the intermediate (module-level) goldens
UNET_RESNET = "up_blocks.3.resnets.0"            # 4x6, in 32 -> out 16 channels: conv_shortcut + temb
UNET_TRANSFORMER = "down_blocks.0.attentions.0"  # Transformer2DModel at 4x6 (24 tokens), 2 heads
UNET_UPSAMPLE = "up_blocks.1.upsamplers.0"       # 1x2 -> 2x3: upsample to the skip's exact size
VAE_ENC_ATTN = "encoder.mid_block.attentions.0"
VAE_DEC_ATTN = "decoder.mid_block.attentions.0"  # wrapped by LoRA (to_q/k/v, to_out.0)
VAE_DEC_RESNET = "decoder.up_blocks.2.resnets.0"  # LoRA-wrapped conv1/conv2/conv_shortcut, 32 -> 16 ch

DESCRIPTIONS: dict[str, str] = {}


def describe(name: str, text: str) -> None:
    DESCRIPTIONS[name] = text


def smooth_image(gen: torch.Generator, b: int) -> torch.Tensor:
    """A smooth random RGB image in [0,1]: bicubic-upsampled coarse noise + fine noise, squashed."""
    coarse = torch.randn((b, 3, 4, 6), generator=gen)
    fine = torch.randn((b, 3, H, W), generator=gen)
    img = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)
    return torch.sigmoid(1.5 * img + 0.3 * fine)


class Capture:
    """Records (args, kwargs, output) of named submodules during a forward."""

    def __init__(self, root: torch.nn.Module, names: list[str]):
        self.handles, self.calls = [], {}
        mods = dict(root.named_modules())
        for n in names:
            self.handles.append(mods[n].register_forward_hook(self._hook(n), with_kwargs=True))

    def _hook(self, name):
        def fn(module, args, kwargs, output):
            self.calls.setdefault(name, (args, kwargs, output))
        return fn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED)
    d = OrderedDict()
    d["vae.input"] = smooth_image(g, 1) * 2 - 1
    d["vae.dec.input"] = torch.randn((1, 4, H // 8, W // 8), generator=g)
    d["unet.sample"] = torch.randn((1, 4, H // 8, W // 8), generator=g)
    d["unet.encoder_hidden_states"] = torch.randn((1, 77, 32), generator=g)
    d["unet.mv.sample"] = torch.randn((2, 4, H // 8, W // 8), generator=g)
    d["unet.mv2.sample"] = torch.randn((4, 4, H // 8, W // 8), generator=g)
    d["pipe.input"] = smooth_image(g, 1)
    d["pipe.ref.input"] = smooth_image(g, 1)
    d["pipe.ref.ref"] = smooth_image(g, 1)
    d["pipe.ref2.input"] = smooth_image(g, 2)
    d["pipe.ref2.ref"] = smooth_image(g, 2)
    return d


def compute(models: ref.DifixModels, inp: dict, dtype: torch.dtype) -> "OrderedDict[str, torch.Tensor]":
    models.to(dtype)
    c = lambda t: t.to(dtype)  # noqa: E731
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    t = ref.TIMESTEP

    # --- scheduler -------------------------------------------------------------------------
    abar, ca, cb = ref.ddpm_z0_coefficients(models.scheduler, t)
    out["sched.alphas_cumprod_199"] = abar.reshape(1)
    out["sched.z0_coef_sample"] = ca.reshape(1)
    out["sched.z0_coef_eps"] = cb.reshape(1)
    describe("sched.alphas_cumprod_199", "[1] alphas_cumprod[199] of the scheduler (scaled_linear betas "
             "0.00085..0.012, 1000 steps), as diffusers computes it in fp32 (torch.cumprod of 1 - betas)")
    describe("sched.z0_coef_sample", "[1] a = 1/sqrt(abar): z0 = a*z - b*eps")
    describe("sched.z0_coef_eps", "[1] b = sqrt(1-abar)/sqrt(abar): z0 = a*z - b*eps")

    # --- text encoder ----------------------------------------------------------------------
    with torch.no_grad(), Capture(models.text_encoder, ["text_model.embeddings"]) as cap:
        ids, hidden = ref.encode_prompt(models, ref.PROMPT)
    out["text.ids"] = ids
    out["text.embeddings"] = cap.calls["text_model.embeddings"][2]
    out["text.hidden"] = hidden
    describe("text.ids", f"[1,77] I64 token ids of {ref.PROMPT!r} (CLIPTokenizer, padding='max_length', "
             "max_length=77, truncation=True; pad id 0)")
    describe("text.embeddings", "[1,77,32] text_model.embeddings(ids): token_embedding + position_embedding")
    describe("text.hidden", "[1,77,32] CLIPTextModel(ids)[0] = last_hidden_state (after final_layer_norm), "
             "causal mask, no padding mask")

    # --- VAE encoder -----------------------------------------------------------------------
    vae = models.vae
    x = c(inp["vae.input"])
    with torch.no_grad(), Capture(vae, [VAE_ENC_ATTN]) as cap:
        mean, logvar, skips = ref.vae_encode(vae, x)
    out["vae.input"] = x
    out["vae.enc.mean"] = mean
    out["vae.enc.logvar"] = logvar
    for i, s in enumerate(skips):
        out[f"vae.enc.skip{i}"] = s
    a, k, o = cap.calls[VAE_ENC_ATTN]
    out["vae.enc.attn.in"], out["vae.enc.attn.out"] = a[0], o
    describe("vae.input", f"[1,3,{H},{W}] NCHW image in [-1,1] (smooth random)")
    describe("vae.enc.mean", f"[1,4,{H//8},{W//8}] posterior mean (quant_conv output channels 0..3), NOT "
             "multiplied by scaling_factor")
    describe("vae.enc.logvar", "[1,4,h,w] posterior log-variance (channels 4..7), clamped to [-30, 20]")
    for i, s in enumerate(skips):
        describe(f"vae.enc.skip{i}", f"{list(s.shape)} encoder activation entering down block {i} "
                 f"(skip{i} = conv_in output for i = 0)")
    describe("vae.enc.attn.in", f"input of vae.{VAE_ENC_ATTN} (Attention, 1 head, GroupNorm, residual) NCHW")
    describe("vae.enc.attn.out", f"output of vae.{VAE_ENC_ATTN} (includes the residual)")

    # --- VAE decoder -----------------------------------------------------------------------
    zdec = c(inp["vae.dec.input"])
    with torch.no_grad(), Capture(vae, [VAE_DEC_ATTN, VAE_DEC_RESNET]) as cap:
        dec = ref.vae_decode(vae, zdec, skips)
    out["vae.dec.input"] = zdec
    out["vae.dec.output"] = dec
    a, k, o = cap.calls[VAE_DEC_ATTN]
    out["vae.dec.attn.in"], out["vae.dec.attn.out"] = a[0], o
    a, k, o = cap.calls[VAE_DEC_RESNET]
    out["vae.dec.resnet.in"], out["vae.dec.resnet.out"] = a[0], o
    describe("vae.dec.input", "[1,4,4,6] argument of vae.decode (an UNSCALED latent, i.e. z / 0.18215): "
             "post_quant_conv is applied to it first")
    describe("vae.dec.output", "[1,3,32,48] vae.decode(vae.dec.input) with skips vae.enc.skip0..3 and "
             "gamma 1, LoRA active; NOT clamped")
    describe("vae.dec.attn.in", f"input of vae.{VAE_DEC_ATTN} during vae.dec.output (LoRA on to_q/k/v/out)")
    describe("vae.dec.attn.out", f"output of vae.{VAE_DEC_ATTN}")
    describe("vae.dec.resnet.in", f"input of vae.{VAE_DEC_RESNET} (ResnetBlock2D 32->16 ch, LoRA on conv1, "
             "conv2, conv_shortcut; no temb) during vae.dec.output")
    describe("vae.dec.resnet.out", f"output of vae.{VAE_DEC_RESNET}")

    # --- UNet, single view -----------------------------------------------------------------
    unet = models.unet
    ts = torch.tensor([t], dtype=torch.long)
    zs, ehs = c(inp["unet.sample"]), c(inp["unet.encoder_hidden_states"])
    with torch.no_grad(), Capture(unet, ["time_proj", "time_embedding", UNET_RESNET, UNET_TRANSFORMER,
                                         UNET_UPSAMPLE]) as cap:
        eps = ref.unet_eps(models, zs, ehs, 1, t)
    out["unet.sample"], out["unet.timestep"], out["unet.encoder_hidden_states"] = zs, ts, ehs
    out["unet.time_proj"] = cap.calls["time_proj"][2]
    out["unet.time_emb"] = cap.calls["time_embedding"][2]
    a, k, o = cap.calls[UNET_RESNET]
    out["unet.resnet.in"], out["unet.resnet.temb"], out["unet.resnet.out"] = a[0], a[1], o
    a, k, o = cap.calls[UNET_TRANSFORMER]
    out["unet.transformer.in"], out["unet.transformer.out"] = a[0], o[0]
    assert k["encoder_hidden_states"] is not None
    a, k, o = cap.calls[UNET_UPSAMPLE]
    out["unet.upsample.in"], out["unet.upsample.out"] = a[0], o
    out["unet.out"] = eps
    describe("unet.sample", "[1,4,4,6] UNet input latent (random N(0,1))")
    describe("unet.timestep", "[1] I64 timestep 199")
    describe("unet.encoder_hidden_states", "[1,77,32] random N(0,1) text states (independent of text.hidden)")
    describe("unet.time_proj", "[1,16] sinusoidal timestep features of t=199: flip_sin_to_cos -> [cos, sin], "
             "freq_shift 0, exponent -ln(10000) * i / 8")
    describe("unet.time_emb", "[1,64] time_embedding(time_proj): linear_1, SiLU, linear_2")
    describe("unet.resnet.in", f"input of unet.{UNET_RESNET} (ResnetBlock2D 32->16, conv_shortcut), NCHW")
    describe("unet.resnet.temb", f"temb argument of unet.{UNET_RESNET} (= unet.time_emb; SiLU + "
             "time_emb_proj are inside the block)")
    describe("unet.resnet.out", f"output of unet.{UNET_RESNET}")
    describe("unet.transformer.in", f"input of unet.{UNET_TRANSFORMER} (Transformer2DModel, linear proj_in/"
             "proj_out, 1 BasicTransformerBlock, 2 heads of dim 8), NCHW; encoder_hidden_states = "
             "unet.encoder_hidden_states")
    describe("unet.transformer.out", f"output of unet.{UNET_TRANSFORMER} (includes the residual)")
    describe("unet.upsample.in", f"input of unet.{UNET_UPSAMPLE} ([1,32,1,2])")
    describe("unet.upsample.out", f"output of unet.{UNET_UPSAMPLE}: nearest upsampling to the skip's size "
             "(2,3) (legacy nearest: src = floor(dst * in / out)), then 3x3 conv")
    describe("unet.out", "[1,4,4,6] UNet(unet.sample, 199, unet.encoder_hidden_states).sample")

    # --- UNet, reference mode (joint self-attention over the 2 views of one sample) ---------
    zmv = c(inp["unet.mv.sample"])
    ehs2 = ehs.repeat(2, 1, 1)
    with torch.no_grad(), Capture(unet, [UNET_TRANSFORMER]) as cap:
        eps_mv = ref.unet_eps(models, zmv, ehs2, 2, t)
    out["unet.mv.sample"], out["unet.mv.out"] = zmv, eps_mv
    a, k, o = cap.calls[UNET_TRANSFORMER]
    out["unet.mv.transformer.in"], out["unet.mv.transformer.out"] = a[0], o[0]
    describe("unet.mv.sample", "[2,4,4,6] (target, reference) of ONE sample, views consecutive")
    describe("unet.mv.out", "[2,4,4,6] reference-mode UNet output (self-attention of every "
             "BasicTransformerBlock over both views' tokens: (b*v, n, d) -> (b, v*n, d)); t=199, "
             "encoder_hidden_states = unet.encoder_hidden_states repeated for both views; row 0 = target")
    describe("unet.mv.transformer.in", f"[2,16,4,6] input of unet.{UNET_TRANSFORMER} in reference mode")
    describe("unet.mv.transformer.out", f"[2,16,4,6] output of unet.{UNET_TRANSFORMER} in reference mode")

    zmv2 = c(inp["unet.mv2.sample"])
    with torch.no_grad():
        out["unet.mv2.sample"] = zmv2
        out["unet.mv2.out"] = ref.unet_eps(models, zmv2, ehs.repeat(4, 1, 1), 2, t)
    describe("unet.mv2.sample", "[4,4,4,6] two samples with a reference each, ordered "
             "[target0, ref0, target1, ref1]")
    describe("unet.mv2.out", "[4,4,4,6] reference-mode UNet output (joint attention within each "
             "consecutive pair only), encoder_hidden_states = unet.encoder_hidden_states for all 4")

    # --- full pipeline ---------------------------------------------------------------------
    with torch.no_grad():
        o1, it = ref.difix_forward(models, c(inp["pipe.input"]))
    out["pipe.input"] = c(inp["pipe.input"])
    out["pipe.latent"], out["pipe.eps"], out["pipe.z0"] = it["z"], it["eps"], it["z0"]
    out["pipe.decoded"], out["pipe.output"] = it["decoded"], o1
    describe("pipe.input", "[1,3,32,48] image in [0,1]")
    describe("pipe.latent", "[1,4,4,6] z = posterior mean of (2*input-1) * 0.18215")
    describe("pipe.eps", "[1,4,4,6] UNet(z, 199, text.hidden)")
    describe("pipe.z0", "[1,4,4,6] z0 = (z - sqrt(1-abar) eps) / sqrt(abar)")
    describe("pipe.decoded", "[1,3,32,48] vae.decode(z0 / 0.18215) with the input's skips, before clamp")
    describe("pipe.output", "[1,3,32,48] clamp(decoded, -1, 1) * 0.5 + 0.5, in [0,1]")

    with torch.no_grad():
        o2, it = ref.difix_forward(models, c(inp["pipe.ref.input"]), c(inp["pipe.ref.ref"]))
    out["pipe.ref.input"], out["pipe.ref.ref"] = c(inp["pipe.ref.input"]), c(inp["pipe.ref.ref"])
    out["pipe.ref.eps"], out["pipe.ref.output"] = it["eps"], o2
    describe("pipe.ref.input", "[1,3,32,48] target image in [0,1]")
    describe("pipe.ref.ref", "[1,3,32,48] reference image in [0,1]")
    describe("pipe.ref.eps", "[2,4,4,6] reference-mode UNet output for views [target, ref]")
    describe("pipe.ref.output", "[1,3,32,48] fixed TARGET view only, in [0,1] (decoded with the target's "
             "own skips)")

    with torch.no_grad():
        o3, _ = ref.difix_forward(models, c(inp["pipe.ref2.input"]), c(inp["pipe.ref2.ref"]))
    out["pipe.ref2.input"], out["pipe.ref2.ref"] = c(inp["pipe.ref2.input"]), c(inp["pipe.ref2.ref"])
    out["pipe.ref2.output"] = o3
    describe("pipe.ref2.input", "[2,3,32,48] two target images in [0,1]")
    describe("pipe.ref2.ref", "[2,3,32,48] their references (ref2.ref[i] belongs to ref2.input[i])")
    describe("pipe.ref2.output", "[2,3,32,48] fixed targets; views run as [t0, r0, t1, r1] (each target "
             "paired with its own reference, NOT the published pipeline's list pairing)")

    for k_, v in out.items():
        out[k_] = v.detach()
    return out


def stats(t: torch.Tensor) -> dict:
    t = t.double()
    return {"mean": round(t.mean().item(), 6), "std": round(t.std().item(), 6) if t.numel() > 1 else 0.0,
            "min": round(t.min().item(), 6), "max": round(t.max().item(), 6)}


def main() -> None:
    from safetensors.torch import save_file

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    inp = inputs()
    models = ref.load_models(MODEL_DIR)
    # float64 default dtype so transformers' causal mask (torch.full(..., finfo(dtype).min)) can be built
    torch.set_default_dtype(torch.float64)
    g64 = compute(models, inp, torch.float64)
    torch.set_default_dtype(torch.float32)
    g32 = compute(models, inp, torch.float32)

    tensors, entries = OrderedDict(), OrderedDict()
    for name, v in g64.items():
        is_int = not v.is_floating_point()
        t = v.to(torch.int64 if is_int else torch.float32).contiguous()
        tensors[name] = t
        e = {"shape": list(t.shape), "dtype": "I64" if is_int else "F32",
             "layout": layout(name, t), "description": DESCRIPTIONS[name]}
        if not is_int:
            e["fp32_max_abs_diff"] = float(f"{(g32[name].double() - v.double()).abs().max().item():.3e}")
            e["stats"] = stats(v)
        entries[name] = e
    assert set(DESCRIPTIONS) == set(g64), set(DESCRIPTIONS) ^ set(g64)

    abar = models.scheduler.alphas_cumprod[ref.TIMESTEP].item()
    betas64 = [(math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * i / 999) ** 2 for i in range(1000)]
    abar64 = math.prod(1 - b for b in betas64[:ref.TIMESTEP + 1])
    meta = {
        "generator": "tests/golden/difix/make_goldens.py",
        "model_dir": "tests/fixtures/difix/tiny",
        "image_size_hw": [H, W],
        "timestep": ref.TIMESTEP,
        "prompt": ref.PROMPT,
        "computed_in": "float64 from the fp32 weights, stored as F32 (ids/timesteps I64)",
        "tolerance_hint": "fp32_max_abs_diff = max |fp32 torch run - fp64 run| per entry",
        "scalars": {
            "alphas_cumprod_199_fp32_diffusers": abar,
            "alphas_cumprod_199_fp64_exact": abar64,
            "z0_coef_sample_fp64": 1 / math.sqrt(abar64),
            "z0_coef_eps_fp64": math.sqrt(1 - abar64) / math.sqrt(abar64),
            "vae_scaling_factor": models.vae.config.scaling_factor,
            "lora_scale": 8 / 4,
        },
        "module_paths": {"unet.resnet": UNET_RESNET, "unet.transformer": UNET_TRANSFORMER,
                         "unet.upsample": UNET_UPSAMPLE, "vae.enc.attn": VAE_ENC_ATTN,
                         "vae.dec.attn": VAE_DEC_ATTN, "vae.dec.resnet": VAE_DEC_RESNET},
        "entries": entries,
    }
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / "goldens.safetensors"
    # a single metadata key: safetensors writes its metadata map in random (hash) order
    save_file(tensors, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)
    (FIXTURES / "goldens.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB, {len(tensors)} tensors)")
    worst = sorted(((e.get("fp32_max_abs_diff", 0), n) for n, e in entries.items()), reverse=True)[:5]
    print("largest fp32-vs-fp64 differences:", worst)
    for n in ("pipe.output", "pipe.ref.output", "pipe.decoded"):
        v = g64[n]
        print(n, stats(v), "fraction clamped:",
              round(((g64["pipe.decoded"].abs() > 1).double().mean().item()), 4) if n == "pipe.output" else "")


def layout(name: str, t: torch.Tensor) -> str:
    if name in ("text.ids",):
        return "[batch, token]"
    if name.startswith("text.") or name.endswith("encoder_hidden_states"):
        return "[batch, token, channel]"
    if name.startswith("sched.") or name == "unet.timestep":
        return "[1]"
    if name in ("unet.time_proj", "unet.time_emb", "unet.resnet.temb"):
        return "[batch, channel]"
    return "NCHW" if t.ndim == 4 else f"{t.ndim}-D"


if __name__ == "__main__":
    main()
