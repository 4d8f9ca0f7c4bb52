#!/usr/bin/env python3
"""Write a TINY random-weight Difix model in the published diffusers layout.

Output: tests/fixtures/difix/tiny/ (model_index.json, scheduler/, tokenizer/, text_encoder/, unet/, vae/)
and tests/fixtures/difix/tokenizer_cases.json.

Everything is built locally from configs (no model hub access). The architecture is exactly
SD-Turbo / SD 2.1 + Difix's VAE additions (nv-tlabs/Difix3D src/model.py), only narrower:

* text encoder: CLIPTextModel, hidden 32, 2 layers, 4 heads, MLP 64, GELU, 77 positions,
  vocab = a truncated but self-consistent CLIP BPE vocabulary (first 1000 merges, 1514 entries).
* UNet: UNet2DConditionModel, SD 2.1 block types, block_out_channels (16, 16, 32, 32),
  norm_num_groups 8, attention_head_dim [2, 2, 4, 4] (= number of heads, as in SD 2.x),
  cross_attention_dim 32.
* VAE: AutoencoderKL, block_out_channels (16, 16, 32, 32), norm_num_groups 8, + decoder.skip_conv_1..4
  + PEFT LoRA adapter "vae_skip" (r=4, lora_alpha=8 = PEFT default) on the same decoder modules the
  reference selects; saved UNMERGED (base_layer / lora_A / lora_B keys) with random, non-zero lora_B.

Run (see README.md):  /tmp/difix-venv/bin/python tests/golden/difix/make_tiny_difix.py
The output is deterministic for the pinned versions in requirements.txt.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "difix"
TINY = FIXTURES / "tiny"

SEED = 20250611
NUM_MERGES = 1000
OPEN_CLIP_PIN = "open_clip_torch==3.3.0"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

# Decoder module-name suffixes that the reference wraps with LoRA (src/model.py, Difix.__init__).
REFERENCE_VAE_TARGET_SUFFIXES = [
    "conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
    "skip_conv_1", "skip_conv_2", "skip_conv_3", "skip_conv_4",
    "to_k", "to_q", "to_v", "to_out.0",
]
LORA_RANK = 4
LORA_ADAPTER = "vae_skip"

# Tiny sizes.
TEXT_HIDDEN = 32
TEXT_LAYERS = 2
TEXT_HEADS = 4
TEXT_MLP = 64
UNET_BLOCKS = (16, 16, 32, 32)
UNET_HEADS = [2, 2, 4, 4]
UNET_GROUPS = 8
VAE_BLOCKS = (16, 16, 32, 32)
VAE_GROUPS = 8

TOKENIZER_PROMPTS = [
    "remove degradation",
    "",
    "REMOVE Degradation",
    "a photo of a cat, sitting on a mat.",
    "hello world!",
    "wow!!! amazing?!",
    "it's a dog's life, isn't it? we'll see; they'd've I'M",
    "café naïve résumé Ünïcödé",
    "  multiple   spaces\tand\nnew\n\nlines  ",
    "numbers 12345 and 3.14159, 2024-01-01",
    "<|startoftext|>special<|endoftext|> tokens",
    "日本語 and 中文 text",
    "emoji \U0001F600 \U0001F44D\U0001F3FD and symbols \u00a9 \u00ae \u2122 \u00b0",
    "Hyphen-ated words & under_scores / slashes \\ back `ticks` \"quotes\"",
    "control\x00chars\x07here\u200bzero width",
    "mixed CaSe HTTP://Example.COM/path?q=1",
    " ".join(["remove degradation"] * 40),
]


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map (same order as open_clip and transformers)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def find_bpe_gz(explicit: str | None) -> Path:
    """The real CLIP BPE merges file, from the PyPI wheel of open_clip_torch (pip download, no install)."""
    if explicit:
        return Path(explicit)
    cache = Path(tempfile.gettempdir()) / "difix-open-clip-wheel"
    cache.mkdir(exist_ok=True)
    wheels = sorted(cache.glob("open_clip_torch-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), OPEN_CLIP_PIN],
            check=True,
        )
        wheels = sorted(cache.glob("open_clip_torch-*.whl"))
    out = cache / "bpe_simple_vocab_16e6.txt.gz"
    with zipfile.ZipFile(wheels[-1]) as z:
        out.write_bytes(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
    return out


def write_tokenizer(bpe_gz: Path, out_dir: Path) -> dict:
    raw = bpe_gz.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != BPE_SHA256:
        raise SystemExit(f"unexpected sha256 of {bpe_gz}: {sha}")
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    # Line 0 is the header ("#version: 0.2", prefixed with the tar member name in this file).
    merges = [tuple(m.split()) for m in lines[1: 1 + NUM_MERGES]]
    assert all(len(m) == 2 for m in merges)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab), "duplicate vocab entries"
    encoder = {t: i for i, t in enumerate(vocab)}

    out_dir.mkdir(parents=True, exist_ok=True)
    # Same serialisation as transformers' CLIPTokenizer.save_vocabulary.
    (out_dir / "vocab.json").write_text(
        json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(out_dir / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")

    bos, eos = encoder["<|startoftext|>"], encoder["<|endoftext|>"]
    special = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    # The SD 2.x / SD-Turbo (OpenCLIP ViT-H) tokenizer: pad token "!" (id 0), bos/eos/unk as in CLIP.
    special_tokens_map = {
        "bos_token": {"content": "<|startoftext|>", **special},
        "eos_token": {"content": "<|endoftext|>", **special},
        "pad_token": "!",
        "unk_token": {"content": "<|endoftext|>", **special},
    }
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "0": {"content": "!", "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True},
            str(bos): {"content": "<|startoftext|>", **special, "special": True},
            str(eos): {"content": "<|endoftext|>", **special, "special": True},
        },
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": "!",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_tokens_map, indent=2) + "\n")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return {"vocab_size": len(vocab), "bos": bos, "eos": eos, "pad": encoder["!"], "bpe_sha256": sha}


def write_tokenizer_cases(tok_dir: Path, out: Path) -> list:
    try:
        import ftfy  # noqa: F401
        raise SystemExit("ftfy is installed: the goldens are defined for transformers' fallback cleaner")
    except ImportError:
        pass
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    slow = CLIPTokenizer.from_pretrained(str(tok_dir))
    assert slow.fix_text is None  # BasicTokenizer fallback, not ftfy
    fast = CLIPTokenizerFast.from_pretrained(str(tok_dir), from_slow=True)
    cases = []
    for text in TOKENIZER_PROMPTS:
        ids = slow(text, padding="max_length", max_length=77, truncation=True).input_ids
        ids_fast = fast(text, padding="max_length", max_length=77, truncation=True).input_ids
        assert len(ids) == 77
        cases.append({
            "text": text,
            "ids": ids,
            # What the slow tokenizer saw: BasicTokenizer(strip_accents=False, do_split_on_punc=False) output,
            # then the CLIP regex pieces and their BPE tokens.
            "cleaned": " ".join(slow.nlp.tokenize(text)),
            "tokens": slow.tokenize(text),
            # CLIPTokenizerFast (what AutoTokenizer returns, used by src/model.py) for comparison only.
            "ids_fast_equal": ids_fast == ids,
            **({} if ids_fast == ids else {"ids_fast": ids_fast}),
        })
    out.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return cases


# ----------------------------------------------------------------------------------------------
# Random init with sensible scales
# ----------------------------------------------------------------------------------------------

def init_module(module: torch.nn.Module, gen: torch.Generator, embed_std: float = 0.3,
                lora_b_std: float = 0.1) -> None:
    """Deterministic init in named_parameters() order.

    * 1-D ``*.weight`` (GroupNorm / LayerNorm scales): 1 + 0.1 N(0,1)
    * 1-D ``*.bias``: 0.1 N(0,1)
    * embeddings: embed_std N(0,1)
    * ``lora_B``: lora_b_std N(0,1) (PEFT would init zeros; non-zero so the merge is really tested)
    * other weights (conv / linear / lora_A): N(0,1) / sqrt(fan_in)
    """
    with torch.no_grad():
        for name, p in module.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim == 1 and name.endswith("weight"):
                v = 1.0 + 0.1 * n
            elif p.ndim == 1:
                v = 0.1 * n
            elif name.endswith(("token_embedding.weight", "position_embedding.weight")):
                v = embed_std * n
            elif "lora_B" in name:
                v = lora_b_std * n
            else:
                fan_in = math.prod(p.shape[1:])
                v = n / math.sqrt(fan_in)
            p.copy_(v.to(p.dtype))


# ----------------------------------------------------------------------------------------------
# Components
# ----------------------------------------------------------------------------------------------

def text_encoder_config(vocab_size: int) -> dict:
    # Key set of stabilityai/sd-turbo text_encoder/config.json (= SD 2.1's); sizes tiny.
    return {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_size": TEXT_HIDDEN,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": TEXT_MLP,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": TEXT_HEADS,
        "num_hidden_layers": TEXT_LAYERS,
        "pad_token_id": 1,
        "projection_dim": TEXT_HIDDEN,
        "torch_dtype": "float32",
        "transformers_version": "4.38.0",
        "vocab_size": vocab_size,
    }


def unet_config() -> dict:
    # SD 2.1 / SD-Turbo UNet config, sizes tiny. Everything else is what sd-turbo has.
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        center_input_sample=False,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        only_cross_attention=False,
        block_out_channels=UNET_BLOCKS,
        layers_per_block=2,
        downsample_padding=1,
        mid_block_scale_factor=1,
        dropout=0.0,
        act_fn="silu",
        norm_num_groups=UNET_GROUPS,
        norm_eps=1e-05,
        cross_attention_dim=TEXT_HIDDEN,
        transformer_layers_per_block=1,
        attention_head_dim=UNET_HEADS,
        num_attention_heads=None,
        dual_cross_attention=False,
        use_linear_projection=True,
        class_embed_type=None,
        num_class_embeds=None,
        upcast_attention=None,
        resnet_time_scale_shift="default",
        time_embedding_type="positional",
        conv_in_kernel=3,
        conv_out_kernel=3,
    )


def vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=VAE_BLOCKS,
        layers_per_block=2,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=VAE_GROUPS,
        sample_size=512,
        scaling_factor=0.18215,
        force_upcast=True,
    )


# Extra keys of the published custom VAE config (nvidia/difix vae/config.json) [assumed names].
VAE_EXTRA_CONFIG = {"lora_rank": LORA_RANK, "gamma": 1.0, "ignore_skip": False}


def skip_conv_channels(block_out_channels) -> list[tuple[int, int]]:
    """(in, out) of skip_conv_1..4, generalising the reference's SD numbers.

    Encoder skip s_k is the activation entering down block k: s0, s1 have b0 channels, s2 b1, s3 b2.
    skip_conv_{i+1} maps s_{3-i} to the channels entering decoder up block i: b3, b3, b2, b1.
    For SD (128, 256, 512, 512) this gives (512,512), (256,512), (128,512), (128,256) = src/model.py.
    """
    b = list(block_out_channels)
    skip_ch = [b[0], b[0], b[1], b[2]]
    dec_in = [b[3], b[3], b[2], b[1]]
    return [(skip_ch[3 - i], dec_in[i]) for i in range(4)]


def add_difix_vae_parts(vae, lora_rank: int = LORA_RANK):
    """Reproduces Difix.__init__ (src/model.py): skip convs, ignore_skip, LoRA targets, add_adapter."""
    from peft import LoraConfig

    assert skip_conv_channels((128, 256, 512, 512)) == [(512, 512), (256, 512), (128, 512), (128, 256)]
    for i, (cin, cout) in enumerate(skip_conv_channels(vae.config.block_out_channels)):
        setattr(vae.decoder, f"skip_conv_{i + 1}",
                torch.nn.Conv2d(cin, cout, kernel_size=(1, 1), stride=(1, 1), bias=False))
    vae.decoder.ignore_skip = False
    target_modules = []
    for name, _ in vae.named_modules():
        if "decoder" in name and any(name.endswith(x) for x in REFERENCE_VAE_TARGET_SUFFIXES):
            target_modules.append(name)
    vae_lora_config = LoraConfig(r=lora_rank, init_lora_weights="gaussian", target_modules=target_modules)
    vae.add_adapter(vae_lora_config, adapter_name=LORA_ADAPTER)
    vae.decoder.gamma = 1
    return target_modules


def save_safetensors(state: dict, path: Path) -> None:
    from safetensors.torch import save_file
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    save_file(state, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpe", help="path to bpe_simple_vocab_16e6.txt.gz (default: pip download open_clip_torch)")
    args = ap.parse_args()

    torch.manual_seed(SEED)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if TINY.exists():
        shutil.rmtree(TINY)
    TINY.mkdir(parents=True)

    # tokenizer
    tok_info = write_tokenizer(find_bpe_gz(args.bpe), TINY / "tokenizer")
    cases = write_tokenizer_cases(TINY / "tokenizer", FIXTURES / "tokenizer_cases.json")
    print(f"tokenizer: {tok_info}, {len(cases)} cases")

    # scheduler: DDPMScheduler with SD-Turbo's schedule values.
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        trained_betas=None, variance_type="fixed_small", clip_sample=False, prediction_type="epsilon",
        thresholding=False, timestep_spacing="trailing", steps_offset=1, rescale_betas_zero_snr=False,
    )
    sched.save_config(str(TINY / "scheduler"))

    # text encoder
    te_dir = TINY / "text_encoder"
    te_dir.mkdir()
    te_cfg = text_encoder_config(tok_info["vocab_size"])
    (te_dir / "config.json").write_text(json.dumps(te_cfg, indent=2, sort_keys=True) + "\n")
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(te_dir))).eval()
    init_module(text_encoder, torch.Generator().manual_seed(SEED + 1))
    save_safetensors(text_encoder.state_dict(), te_dir / "model.safetensors")

    # unet
    unet = UNet2DConditionModel(**unet_config()).eval()
    init_module(unet, torch.Generator().manual_seed(SEED + 2))
    (TINY / "unet").mkdir()
    unet.save_config(str(TINY / "unet"))
    save_safetensors(unet.state_dict(), TINY / "unet" / "diffusion_pytorch_model.safetensors")

    # vae (+ Difix skips and LoRA)
    vae = AutoencoderKL(**vae_config()).eval()
    targets = add_difix_vae_parts(vae)
    init_module(vae, torch.Generator().manual_seed(SEED + 3))
    with torch.no_grad():
        # SD-like latent statistics: posterior mean ~ N(0, 5^2) so that mean * 0.18215 is O(1) like the UNet
        # input of the real model, and the decoder undoes it (post_quant_conv sees z / 0.18215).
        vae.quant_conv.weight[:4] *= 5.0
        vae.quant_conv.bias[:4] *= 5.0
        vae.post_quant_conv.weight *= 0.2
        # keep most decoded pixels inside [-1, 1] so the final clamp hides little
        vae.decoder.conv_out.base_layer.weight *= 0.6
        vae.decoder.conv_out.lora_B.vae_skip.weight *= 0.6
    (TINY / "vae").mkdir()
    vae.save_config(str(TINY / "vae"))
    cfg = json.loads((TINY / "vae" / "config.json").read_text())
    cfg.update(VAE_EXTRA_CONFIG)
    (TINY / "vae" / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_safetensors(vae.state_dict(), TINY / "vae" / "diffusion_pytorch_model.safetensors")
    (FIXTURES / "vae_lora_targets.json").write_text(json.dumps(targets, indent=1) + "\n")

    # model_index.json: as the published nvidia/difix would be (custom pipeline + custom VAE class).
    model_index = {
        "_class_name": ["pipeline_difix", "DifixPipeline"],
        "_diffusers_version": "0.25.1",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["autoencoder_kl", "AutoencoderKL"],
    }
    (TINY / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")

    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"params: text_encoder {n(text_encoder)}, unet {n(unet)}, vae {n(vae)}; {len(targets)} LoRA targets")
    total = sum(f.stat().st_size for f in TINY.rglob("*") if f.is_file())
    print(f"wrote {TINY} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
