#!/usr/bin/env python3
"""A faithful torch reference of the Difix forward pass (nv-tlabs/Difix3D, src/model.py,
src/pipeline_difix.py, src/mv_unet.py), loading a model directory in the published diffusers layout.

Differences from the published pipeline, on purpose (see ../../../shared/docs/difix-reference.md):
* the VAE posterior MEAN is used (the pipeline samples mean + std * noise);
* with references, every target is paired with its own reference: views are ordered
  [t0, r0, t1, r1, ...] (consecutive pairs), as src/model.py does with (b v) batches.

Everything else is the reference's code path: the encoder forward that records skips
(``my_vae_encoder_fwd``), the decoder forward with skip convs (``my_vae_decoder_fwd``), the one-step DDPM
step at t = 199 (DDPMScheduler.step, prev timestep < 0 so alpha_prod_t_prev = 1), the text encoding
(``CLIPTokenizer`` + ``CLIPTextModel(...)[0]``) and the multi-view self-attention of mv_unet.py.
The VAE LoRA is kept UNMERGED (PEFT forward: base(x) + lora_B(lora_A(x)) * lora_alpha / r); this is
mathematically what a merged weight computes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import types
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from einops import rearrange

TIMESTEP = 199
PROMPT = "remove degradation"


# ----------------------------------------------------------------------------------------------
# VAE forwards, copied from src/model.py (only the names of helpers differ)
# ----------------------------------------------------------------------------------------------

def my_vae_encoder_fwd(self, sample):
    sample = self.conv_in(sample)
    l_blocks = []
    # down
    for down_block in self.down_blocks:
        l_blocks.append(sample)
        sample = down_block(sample)
    # middle
    sample = self.mid_block(sample)
    sample = self.conv_norm_out(sample)
    sample = self.conv_act(sample)
    sample = self.conv_out(sample)
    self.current_down_blocks = l_blocks
    return sample


def my_vae_decoder_fwd(self, sample, latent_embeds=None):
    sample = self.conv_in(sample)
    upscale_dtype = next(iter(self.up_blocks.parameters())).dtype
    # middle
    sample = self.mid_block(sample, latent_embeds)
    sample = sample.to(upscale_dtype)
    if not self.ignore_skip:
        skip_convs = [self.skip_conv_1, self.skip_conv_2, self.skip_conv_3, self.skip_conv_4]
        # up
        for idx, up_block in enumerate(self.up_blocks):
            skip_in = skip_convs[idx](self.incoming_skip_acts[::-1][idx] * self.gamma)
            # add skip
            sample = sample + skip_in
            sample = up_block(sample, latent_embeds)
    else:
        for idx, up_block in enumerate(self.up_blocks):
            sample = up_block(sample, latent_embeds)
    # post-process
    if latent_embeds is None:
        sample = self.conv_norm_out(sample)
    else:
        sample = self.conv_norm_out(sample, latent_embeds)
    sample = self.conv_act(sample)
    sample = self.conv_out(sample)
    return sample


# ----------------------------------------------------------------------------------------------
# Multi-view BasicTransformerBlock.forward, copied from src/mv_unet.py with num_views a parameter
# (the reference hard-codes num_views = 2 and patches the class globally; we patch instances).
# ----------------------------------------------------------------------------------------------

def mv_basic_transformer_forward(
    self,
    hidden_states,
    attention_mask=None,
    encoder_hidden_states=None,
    encoder_attention_mask=None,
    timestep=None,
    cross_attention_kwargs: Dict[str, Any] = None,
    class_labels=None,
    added_cond_kwargs=None,
    *,
    num_views: int = 2,
):
    from diffusers.models.attention import _chunked_feed_forward

    hidden_states = rearrange(hidden_states, "(b v) n d -> b (v n) d", v=num_views)
    batch_size = hidden_states.shape[0]

    if self.use_ada_layer_norm:
        norm_hidden_states = self.norm1(hidden_states, timestep)
    elif self.use_ada_layer_norm_zero:
        norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(
            hidden_states, timestep, class_labels, hidden_dtype=hidden_states.dtype
        )
    elif self.use_layer_norm:
        norm_hidden_states = self.norm1(hidden_states)
    elif self.use_ada_layer_norm_continuous:
        norm_hidden_states = self.norm1(hidden_states, added_cond_kwargs["pooled_text_emb"])
    elif self.use_ada_layer_norm_single:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + timestep.reshape(batch_size, 6, -1)
        ).chunk(6, dim=1)
        norm_hidden_states = self.norm1(hidden_states)
        norm_hidden_states = norm_hidden_states * (1 + scale_msa) + shift_msa
        norm_hidden_states = norm_hidden_states.squeeze(1)
    else:
        raise ValueError("Incorrect norm used")

    if self.pos_embed is not None:
        norm_hidden_states = self.pos_embed(norm_hidden_states)

    lora_scale = cross_attention_kwargs.get("scale", 1.0) if cross_attention_kwargs is not None else 1.0
    cross_attention_kwargs = cross_attention_kwargs.copy() if cross_attention_kwargs is not None else {}
    gligen_kwargs = cross_attention_kwargs.pop("gligen", None)

    attn_output = self.attn1(
        norm_hidden_states,
        encoder_hidden_states=encoder_hidden_states if self.only_cross_attention else None,
        attention_mask=attention_mask,
        **cross_attention_kwargs,
    )
    if self.use_ada_layer_norm_zero:
        attn_output = gate_msa.unsqueeze(1) * attn_output
    elif self.use_ada_layer_norm_single:
        attn_output = gate_msa * attn_output

    hidden_states = attn_output + hidden_states
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.squeeze(1)

    if gligen_kwargs is not None:
        hidden_states = self.fuser(hidden_states, gligen_kwargs["objs"])

    hidden_states = rearrange(hidden_states, "b (v n) d -> (b v) n d", v=num_views)

    if self.attn2 is not None:
        if self.use_ada_layer_norm:
            norm_hidden_states = self.norm2(hidden_states, timestep)
        elif self.use_ada_layer_norm_zero or self.use_layer_norm:
            norm_hidden_states = self.norm2(hidden_states)
        elif self.use_ada_layer_norm_single:
            norm_hidden_states = hidden_states
        elif self.use_ada_layer_norm_continuous:
            norm_hidden_states = self.norm2(hidden_states, added_cond_kwargs["pooled_text_emb"])
        else:
            raise ValueError("Incorrect norm")

        if self.pos_embed is not None and self.use_ada_layer_norm_single is False:
            norm_hidden_states = self.pos_embed(norm_hidden_states)

        attn_output = self.attn2(
            norm_hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
            **cross_attention_kwargs,
        )
        hidden_states = attn_output + hidden_states

    if self.use_ada_layer_norm_continuous:
        norm_hidden_states = self.norm3(hidden_states, added_cond_kwargs["pooled_text_emb"])
    elif not self.use_ada_layer_norm_single:
        norm_hidden_states = self.norm3(hidden_states)

    if self.use_ada_layer_norm_zero:
        norm_hidden_states = norm_hidden_states * (1 + scale_mlp[:, None]) + shift_mlp[:, None]

    if self.use_ada_layer_norm_single:
        norm_hidden_states = self.norm2(hidden_states)
        norm_hidden_states = norm_hidden_states * (1 + scale_mlp) + shift_mlp

    if self._chunk_size is not None:
        ff_output = _chunked_feed_forward(
            self.ff, norm_hidden_states, self._chunk_dim, self._chunk_size, lora_scale=lora_scale
        )
    else:
        ff_output = self.ff(norm_hidden_states, scale=lora_scale)

    if self.use_ada_layer_norm_zero:
        ff_output = gate_mlp.unsqueeze(1) * ff_output
    elif self.use_ada_layer_norm_single:
        ff_output = gate_mlp * ff_output

    hidden_states = ff_output + hidden_states
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.squeeze(1)

    return hidden_states


@contextlib.contextmanager
def multiview(unet, num_views: int):
    """Within the block, every BasicTransformerBlock of ``unet`` attends jointly over ``num_views``
    consecutive batch elements in its self-attention (num_views = 1: the plain diffusers forward)."""
    from diffusers.models.attention import BasicTransformerBlock

    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    if num_views > 1:
        for m in blocks:
            m.forward = types.MethodType(functools.partial(mv_basic_transformer_forward, num_views=num_views), m)
    try:
        yield
    finally:
        for m in blocks:
            m.__dict__.pop("forward", None)


# ----------------------------------------------------------------------------------------------
# Loading a model directory (published layout)
# ----------------------------------------------------------------------------------------------

class DifixModels:
    def __init__(self, tokenizer, text_encoder, unet, vae, scheduler):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler

    def to(self, dtype):
        for m in (self.text_encoder, self.unet, self.vae):
            m.to(dtype)
        return self


def build_difix_vae(vae_dir: Path):
    """AutoencoderKL + the reference's skip convs, patched forwards and LoRA adapter, weights loaded
    strictly from ``vae/diffusion_pytorch_model.safetensors`` (unmerged PEFT keys)."""
    from diffusers import AutoencoderKL
    from peft import LoraConfig
    from safetensors.torch import load_file

    cfg = json.loads((vae_dir / "config.json").read_text())
    extra = {k: cfg.pop(k) for k in ("lora_rank", "gamma", "ignore_skip") if k in cfg}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    vae = AutoencoderKL(**cfg)
    vae.encoder.forward = my_vae_encoder_fwd.__get__(vae.encoder, vae.encoder.__class__)
    vae.decoder.forward = my_vae_decoder_fwd.__get__(vae.decoder, vae.decoder.__class__)
    state = load_file(str(vae_dir / "diffusion_pytorch_model.safetensors"))
    for i in range(4):
        w = state[f"decoder.skip_conv_{i + 1}.base_layer.weight"]
        setattr(vae.decoder, f"skip_conv_{i + 1}",
                torch.nn.Conv2d(w.shape[1], w.shape[0], kernel_size=(1, 1), stride=(1, 1), bias=False))
    vae.decoder.ignore_skip = bool(extra.get("ignore_skip", False))
    # The wrapped modules are exactly those with lora_A keys (= the reference's target list).
    targets = sorted({k.split(".lora_A.")[0] for k in state if ".lora_A." in k})
    rank = state[f"{targets[0]}.lora_A.vae_skip.weight"].shape[0]
    vae.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets), adapter_name="vae_skip")
    vae.load_state_dict(state, strict=True)
    vae.decoder.gamma = extra.get("gamma", 1)
    return vae.eval()


def load_models(model_dir: Path) -> DifixModels:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    model_dir = Path(model_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(model_dir / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(model_dir / "text_encoder")).eval()
    unet = UNet2DConditionModel.from_pretrained(str(model_dir / "unet")).eval()
    vae = build_difix_vae(model_dir / "vae")
    scheduler = DDPMScheduler.from_pretrained(str(model_dir / "scheduler"))
    for m in (text_encoder, unet, vae):
        m.requires_grad_(False)
    return DifixModels(tokenizer, text_encoder, unet, vae, scheduler)


# ----------------------------------------------------------------------------------------------
# Pieces of the forward pass
# ----------------------------------------------------------------------------------------------

def tokenize(models: DifixModels, prompt: str) -> torch.Tensor:
    tok = models.tokenizer
    return tok(prompt, max_length=tok.model_max_length, padding="max_length", truncation=True,
               return_tensors="pt").input_ids


def encode_prompt(models: DifixModels, prompt: str):
    ids = tokenize(models, prompt)
    # last_hidden_state, no attention mask (causal only); the ids on the text encoder's device, as
    # the reference pipeline moves them
    return ids, models.text_encoder(ids.to(models.text_encoder.device))[0]


def ddpm_z0_coefficients(scheduler, t: int = TIMESTEP):
    """z0 = a * z - b * eps as DDPMScheduler.step computes it for a single step at t
    (previous timestep < 0, so alpha_prod_t_prev = 1 and prev_sample = pred_original_sample)."""
    abar = scheduler.alphas_cumprod[t]
    return abar, 1.0 / abar.sqrt(), (1.0 - abar).sqrt() / abar.sqrt()


def ddpm_step(scheduler, eps, z, t: int = TIMESTEP):
    """DDPMScheduler.step's arithmetic for a one-step schedule ending at t (no variance noise, whose std
    there is sqrt(1e-20) = 1e-10): pred_original_sample = (z - sqrt(1-abar) eps) / sqrt(abar)."""
    abar = scheduler.alphas_cumprod[t].to(z.dtype)
    return (z - (1 - abar) ** 0.5 * eps) / abar ** 0.5


def vae_encode(vae, x):
    """x in [-1,1], NCHW -> (mean, logvar (clamped), skips s0..s3)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    h = vae.encoder(x)
    skips = list(vae.encoder.current_down_blocks)
    posterior = DiagonalGaussianDistribution(vae.quant_conv(h))
    return posterior.mean, posterior.logvar, skips


def vae_decode(vae, z, skips):
    """z: the argument of vae.decode (latent / scaling_factor); skips: s0..s3 of the same views."""
    vae.decoder.incoming_skip_acts = skips
    return vae.decode(z).sample


def unet_eps(models: DifixModels, z, text_hidden, num_views: int = 1, t: int = TIMESTEP):
    timesteps = torch.tensor([t], dtype=torch.long, device=z.device)
    with multiview(models.unet, num_views):
        return models.unet(z, timesteps, encoder_hidden_states=text_hidden).sample


def difix_forward(models: DifixModels, image01, ref01=None, prompt: str = PROMPT, t: int = TIMESTEP):
    """image01: [B,3,H,W] in [0,1]; ref01: optional [B,3,H,W] (one reference per target).
    Returns the fixed targets [B,3,H,W] in [0,1] and a dict of intermediates."""
    dtype = next(models.unet.parameters()).dtype
    b = image01.shape[0]
    if ref01 is None:
        views, num_views = image01, 1
    else:
        views = rearrange(torch.stack([image01, ref01], dim=1), "b v c h w -> (b v) c h w")
        num_views = 2
    x = (views * 2 - 1).to(dtype)
    ids, text_hidden = encode_prompt(models, prompt)
    text_hidden = text_hidden.to(dtype).repeat(x.shape[0], 1, 1)
    mean, logvar, skips = vae_encode(models.vae, x)
    sf = models.vae.config.scaling_factor
    z = mean * sf
    eps = unet_eps(models, z, text_hidden, num_views, t)
    z0 = ddpm_step(models.scheduler, eps, z, t)
    dec = vae_decode(models.vae, z0 / sf, skips)
    out = (dec.clamp(-1, 1) * 0.5 + 0.5)
    out = rearrange(out, "(b v) c h w -> b v c h w", v=num_views)[:, 0]
    inter = {"ids": ids, "text_hidden": text_hidden[:1], "z": z, "eps": eps, "z0": z0, "decoded": dec,
             "skips": skips, "mean": mean, "logvar": logvar}
    assert out.shape[0] == b
    return out, inter


# ----------------------------------------------------------------------------------------------
# Self-test: LoRA merge formula, multiview(1) == plain forward
# ----------------------------------------------------------------------------------------------

def merge_vae_lora(state: dict, lora_alpha: float = 8.0, adapter: str = "vae_skip") -> dict:
    """The load-time merge a LoRA-unaware loader does: M.base_layer.* -> M.*, and
    W += (lora_alpha / r) * (B[out, r] @ A[r, in*kh*kw]).reshape(W.shape)."""
    out = {}
    for k, v in state.items():
        if ".lora_A." in k or ".lora_B." in k:
            continue
        if ".base_layer." in k:
            mod, leaf = k.split(".base_layer.")
            if leaf == "weight":
                a = state[f"{mod}.lora_A.{adapter}.weight"]
                b = state[f"{mod}.lora_B.{adapter}.weight"]
                r = a.shape[0]
                v = v + (lora_alpha / r) * (b.reshape(b.shape[0], r) @ a.reshape(r, -1)).reshape(v.shape)
            out[f"{mod}.{leaf}"] = v
        else:
            out[k] = v
    return out


def selftest(model_dir: Path) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    torch.manual_seed(0)
    models = load_models(model_dir)
    models.to(torch.float64)
    vae_dir = Path(model_dir) / "vae"
    state = {k: v.double() for k, v in load_file(str(vae_dir / "diffusion_pytorch_model.safetensors")).items()}
    merged = merge_vae_lora(state)
    cfg = json.loads((vae_dir / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("lora_rank", "gamma", "ignore_skip")}
    plain = AutoencoderKL(**cfg).double()
    plain.encoder.forward = my_vae_encoder_fwd.__get__(plain.encoder, plain.encoder.__class__)
    plain.decoder.forward = my_vae_decoder_fwd.__get__(plain.decoder, plain.decoder.__class__)
    for i in range(4):
        w = merged[f"decoder.skip_conv_{i + 1}.weight"]
        setattr(plain.decoder, f"skip_conv_{i + 1}", torch.nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False).double())
    plain.decoder.ignore_skip, plain.decoder.gamma = False, 1
    plain.load_state_dict(merged, strict=True)
    x = torch.rand(1, 3, 32, 48, dtype=torch.float64) * 2 - 1
    z = torch.randn(1, 4, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        m1, _, s1 = vae_encode(models.vae, x)
        m2, _, s2 = vae_encode(plain, x)
        d1 = vae_decode(models.vae, z, s1)
        d2 = vae_decode(plain, z, s2)
    assert (m1 - m2).abs().max() < 1e-12 and all((a - b).abs().max() < 1e-12 for a, b in zip(s1, s2))
    err = (d1 - d2).abs().max().item()
    print(f"LoRA: unmerged PEFT forward vs merged weights (alpha 8, r 4): max |diff| {err:.2e}")
    assert err < 1e-10
    lora_effect = (d1 - vae_decode_no_lora(models.vae, z, s1)).abs().max().item()
    print(f"LoRA changes the decoder output by up to {lora_effect:.3f} (non-zero lora_B)")
    assert lora_effect > 1e-2

    zs = torch.randn(2, 4, 4, 6, dtype=torch.float64)
    ehs = torch.randn(2, 77, 32, dtype=torch.float64)
    with torch.no_grad():
        e1 = unet_eps(models, zs, ehs, 1)
        e2 = models.unet(zs, torch.tensor([TIMESTEP]), encoder_hidden_states=ehs).sample
        e3 = unet_eps(models, zs, ehs, 2)
    assert (e1 - e2).abs().max() == 0
    print(f"multiview: 2 views jointly vs separately differ by {(e1 - e3).abs().max().item():.3f}")
    assert (e1 - e3).abs().max() > 1e-3
    print("selftest OK")


def vae_decode_no_lora(vae, z, skips):
    vae.disable_adapters()
    try:
        return vae_decode(vae, z, skips)
    finally:
        vae.enable_adapters()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--model-dir", default=str(Path(__file__).resolve().parents[2] / "fixtures" / "difix" / "tiny"))
    a = ap.parse_args()
    if a.selftest:
        selftest(Path(a.model_dir))
    else:
        ap.print_help()
