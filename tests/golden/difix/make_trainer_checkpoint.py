#!/usr/bin/env python3
"""Write a tiny Difix *trainer checkpoint* (``.pkl``) equivalent to the tiny model, plus a broken one.

Output:
* ``tests/fixtures/difix/model_tiny.pkl``: what nv-tlabs/Difix3D ``src/model.py`` ``Difix.save_model`` writes
  for a model whose weights are exactly those of ``tests/fixtures/difix/tiny/``. A ``torch.save`` (default
  zip format) of the dict::

      vae_lora_target_modules  list[str]   the 42 decoder module names wrapped with LoRA (= vae_lora_targets.json)
      rank_vae                 int         4
      state_dict_unet          dict        UNet keys containing "lora" or "conv_in": conv_in.weight, conv_in.bias
      state_dict_vae           dict        VAE keys containing "lora" or "skip", PEFT names (88 tensors):
                                           M.lora_A.vae_skip.weight, M.lora_B.vae_skip.weight,
                                           decoder.skip_conv_N.base_layer.weight
      optimizer                dict        a real torch.optim.AdamW state_dict (see make_optimizer)

  Every tensor equals (torch.equal, fp32) the tensor of the same name in tiny/. The base weights of the
  LoRA-wrapped decoder modules are NOT in it (``...base_layer.weight`` contains neither "lora" nor "skip"):
  they come from the stock model the checkpoint is applied to.
* ``tests/fixtures/difix/model_tiny_bad.pkl``: the same, except ``state_dict_unet["conv_in.weight"]`` has one
  extra output channel ([17, 4, 3, 3] instead of [16, 4, 3, 3]); loading it must fail.

The "stock" model the checkpoint is meant for (an SD-Turbo-like directory) is the tiny model with every VAE
key containing "lora" or "skip" removed and ``.base_layer.`` stripped from the remaining names (and the
Difix-only keys lora_rank / gamma / ignore_skip removed from vae/config.json); its UNet is tiny/unet as is.

Verification (all in this script): the stock directory is written to a temp dir, and the model is rebuilt
the way ``Difix.__init__(pretrained_path=...)`` does (AutoencoderKL.from_pretrained + patched forwards +
skip convs + ``vae.add_adapter(LoraConfig(r=sd["rank_vae"], init_lora_weights="gaussian",
target_modules=sd["vae_lora_target_modules"]), adapter_name="vae_skip")``, then the checkpoint's keys
overwrite the model's state dict and ``load_state_dict`` (strict) loads it). The rebuilt VAE and UNet state
dicts must equal tiny/'s exactly, the decoder output and the full one-step forward must equal those of
tiny/ bit for bit and match the goldens, and the bad checkpoint must be refused.

Run (see README.md):  /tmp/difix-venv/bin/python tests/golden/difix/make_trainer_checkpoint.py
Deterministic: re-running gives byte-identical .pkl files with the pinned versions.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickletools
import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_difix as ref  # noqa: E402
from make_tiny_difix import LORA_ADAPTER, LORA_RANK, add_difix_vae_parts, skip_conv_channels  # noqa: E402

REPO = HERE.parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "difix"
TINY = FIXTURES / "tiny"
OUT = FIXTURES / "model_tiny.pkl"
OUT_BAD = FIXTURES / "model_tiny_bad.pkl"

SEED = 20250612
DIFIX_VAE_CONFIG_KEYS = ("lora_rank", "gamma", "ignore_skip")  # not in a stock SD-Turbo vae/config.json
MAX_PKL_BYTES = 1_000_000

# train_difix.py defaults (argparse): --learning_rate 5e-6, --adam_beta1 0.9, --adam_beta2 0.999,
# --adam_weight_decay 1e-2, --adam_epsilon 1e-08, --lr_scheduler constant, --lr_warmup_steps 500,
# --max_train_steps 10_000, --lr_num_cycles 1, --lr_power 1.0
TRAIN_ARGS = dict(learning_rate=5e-6, adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=1e-2,
                  adam_epsilon=1e-8, lr_scheduler="constant", lr_warmup_steps=500, max_train_steps=10_000,
                  lr_num_cycles=1, lr_power=1.0)
# The parameters that get a gradient (and hence AdamW state) in the one optimizer step taken here. All other
# trainable parameters are in param_groups[0]["params"] but have no state (their grad stayed None): keeping
# the state of all ~0.67 M trainable parameters would make the file ~5 MB.
GRAD_PARAMS = ("unet.conv_in.bias", "vae.decoder.conv_in.lora_A.vae_skip.weight",
               "vae.decoder.skip_conv_4.base_layer.weight")


def load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def quiet_diffusers() -> None:
    import diffusers
    import transformers
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


# ----------------------------------------------------------------------------------------------
# The stock (SD-Turbo-like) directory
# ----------------------------------------------------------------------------------------------

def stock_vae_state(tiny_vae: dict) -> dict:
    out = {}
    for k, v in tiny_vae.items():
        if "lora" in k or "skip" in k:
            continue
        name = k.replace(".base_layer.", ".")
        assert name not in out, name
        out[name] = v
    return out


def write_stock_dir(dst: Path) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    (dst / "vae").mkdir(parents=True)
    cfg = json.loads((TINY / "vae" / "config.json").read_text())
    for k in DIFIX_VAE_CONFIG_KEYS:
        cfg.pop(k)
    (dst / "vae" / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    state = stock_vae_state(load_safetensors(TINY / "vae" / "diffusion_pytorch_model.safetensors"))
    want = set(AutoencoderKL(**{k: v for k, v in cfg.items() if not k.startswith("_")}).state_dict())
    assert set(state) == want, (sorted(set(state) ^ want))[:10]
    save_file(state, str(dst / "vae" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    shutil.copytree(TINY / "unet", dst / "unet")


def stock_vae_with_skip_convs(stock: Path):
    """The part of Difix.__init__ before the branch on pretrained_path: stock VAE, patched forwards, skip
    convs (the reference hard-codes SD's channels; skip_conv_channels generalises them), ignore_skip."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(stock), subfolder="vae")
    vae.encoder.forward = ref.my_vae_encoder_fwd.__get__(vae.encoder, vae.encoder.__class__)
    vae.decoder.forward = ref.my_vae_decoder_fwd.__get__(vae.decoder, vae.decoder.__class__)
    for i, (cin, cout) in enumerate(skip_conv_channels(vae.config.block_out_channels)):
        setattr(vae.decoder, f"skip_conv_{i + 1}",
                torch.nn.Conv2d(cin, cout, kernel_size=(1, 1), stride=(1, 1), bias=False))
    vae.decoder.ignore_skip = False
    return vae


# ----------------------------------------------------------------------------------------------
# The "trained" model and its checkpoint (Difix.save_model)
# ----------------------------------------------------------------------------------------------

def trained_model(stock: Path):
    """Difix.__init__'s random-init branch (what train_difix.py builds), then "trained" to tiny/'s weights."""
    from diffusers import UNet2DConditionModel

    vae = stock_vae_with_skip_convs(stock)
    targets = add_difix_vae_parts(vae, LORA_RANK)  # same skip convs again, target search, add_adapter
    vae.load_state_dict(load_safetensors(TINY / "vae" / "diffusion_pytorch_model.safetensors"), strict=True)
    unet = UNet2DConditionModel.from_pretrained(str(TINY), subfolder="unet")
    return vae, unet, targets


def make_optimizer(vae, unet):
    """train_difix.py's optimizer (same parameter list, hyper-parameters and LR scheduler), on copies of the
    models, after one step in which only GRAD_PARAMS have a gradient."""
    from diffusers.optimization import get_scheduler

    vae, unet = copy.deepcopy(vae), copy.deepcopy(unet)
    # Difix.set_train
    unet.train()
    vae.train()
    unet.requires_grad_(True)
    for n, p in vae.named_parameters():
        if "lora" in n:
            p.requires_grad = True
    for i in range(1, 5):
        getattr(vae.decoder, f"skip_conv_{i}").requires_grad_(True)
    # train_difix.py "make the optimizer". skip_conv_N.parameters() includes the skip convs' own lora_A/B,
    # which the "lora" loop already added: the list has 8 duplicates, as in the reference.
    layers_to_opt = list(unet.parameters())
    for n, p in vae.named_parameters():
        if "lora" in n and "vae_skip" in n:
            assert p.requires_grad
            layers_to_opt.append(p)
    for i in range(1, 5):
        layers_to_opt += list(getattr(vae.decoder, f"skip_conv_{i}").parameters())
    a = TRAIN_ARGS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = torch.optim.AdamW(layers_to_opt, lr=a["learning_rate"], betas=(a["adam_beta1"], a["adam_beta2"]),
                                      weight_decay=a["adam_weight_decay"], eps=a["adam_epsilon"])
    assert any("duplicate parameters" in str(w.message) for w in caught)
    lr_scheduler = get_scheduler(a["lr_scheduler"], optimizer=optimizer, num_warmup_steps=a["lr_warmup_steps"],
                                 num_training_steps=a["max_train_steps"], num_cycles=a["lr_num_cycles"],
                                 power=a["lr_power"])
    named = {f"unet.{n}": p for n, p in unet.named_parameters()}
    named.update({f"vae.{n}": p for n, p in vae.named_parameters()})
    gen = torch.Generator().manual_seed(SEED)
    for name in GRAD_PARAMS:
        p = named[name]
        p.grad = torch.randn(p.shape, generator=gen)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    n_unique = len({id(p) for p in layers_to_opt})
    return optimizer, len(layers_to_opt), n_unique


def save_model_dict(vae, unet, targets, rank, optimizer) -> dict:
    """Difix.save_model, verbatim apart from the attribute names."""
    sd = {}
    sd["vae_lora_target_modules"] = targets
    sd["rank_vae"] = rank
    sd["state_dict_unet"] = {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k}
    sd["state_dict_vae"] = {k: v for k, v in vae.state_dict().items() if "lora" in k or "skip" in k}
    sd["optimizer"] = optimizer.state_dict()
    return sd


# ----------------------------------------------------------------------------------------------
# Loading, as Difix.__init__(pretrained_path=...) does
# ----------------------------------------------------------------------------------------------

def load_like_reference(stock: Path, pkl: Path, perturb_unet_conv_in: bool = False, apply_weights: bool = True):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    vae = stock_vae_with_skip_convs(stock)
    unet = UNet2DConditionModel.from_pretrained(str(stock), subfolder="unet")
    if perturb_unet_conv_in:  # a stock conv_in that differs from the fine-tuned one
        with torch.no_grad():
            unet.conv_in.weight.mul_(-0.5).add_(0.1)
            unet.conv_in.bias.add_(1.0)
    sd = torch.load(str(pkl), map_location="cpu")
    vae_lora_config = LoraConfig(r=sd["rank_vae"], init_lora_weights="gaussian", target_modules=sd["vae_lora_target_modules"])
    vae.add_adapter(vae_lora_config, adapter_name="vae_skip")
    if apply_weights:
        _sd_vae = vae.state_dict()
        for k in sd["state_dict_vae"]:
            _sd_vae[k] = sd["state_dict_vae"][k]
        vae.load_state_dict(_sd_vae)
        _sd_unet = unet.state_dict()
        for k in sd["state_dict_unet"]:
            _sd_unet[k] = sd["state_dict_unet"][k]
        unet.load_state_dict(_sd_unet)
    vae.decoder.gamma = 1
    for m in (vae, unet):
        m.eval().requires_grad_(False)
    return vae, unet


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

def check(cond: bool, msg: str) -> None:
    print(f"{'OK  ' if cond else 'FAIL'} {msg}")
    if not cond:
        raise SystemExit(1)


def same_state(got: dict, want: dict) -> tuple[bool, str]:
    if set(got) != set(want):
        return False, f"key sets differ: {sorted(set(got) ^ set(want))[:6]}"
    bad = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    return not bad, f"{len(want)} tensors" + (f", {len(bad)} differ: {bad[:4]}" if bad else ", all torch.equal")


def pickle_globals(pkl: Path) -> tuple[list[str], list[str]]:
    """(zip record names, GLOBAL / STACK_GLOBAL names used by data.pkl)."""
    with zipfile.ZipFile(pkl) as z:
        names = z.namelist()
        data = z.read(next(n for n in names if n.endswith("/data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
    return names, sorted(found)


def verify(stock: Path, sd: dict) -> None:
    tiny_vae = load_safetensors(TINY / "vae" / "diffusion_pytorch_model.safetensors")
    tiny_unet = load_safetensors(TINY / "unet" / "diffusion_pytorch_model.safetensors")

    # -- the file itself
    loaded = torch.load(str(OUT), map_location="cpu", weights_only=True)
    check(list(loaded) == ["vae_lora_target_modules", "rank_vae", "state_dict_unet", "state_dict_vae", "optimizer"],
          f"top-level keys {list(loaded)} (loads with weights_only=True)")
    check(loaded["rank_vae"] == LORA_RANK and type(loaded["rank_vae"]) is int, "rank_vae == 4")
    targets_json = json.loads((FIXTURES / "vae_lora_targets.json").read_text())
    check(loaded["vae_lora_target_modules"] == targets_json,
          f"vae_lora_target_modules == vae_lora_targets.json ({len(targets_json)} names)")
    check(list(loaded["state_dict_unet"]) == ["conv_in.weight", "conv_in.bias"], "state_dict_unet keys: conv_in.weight, conv_in.bias")
    ok, msg = same_state(loaded["state_dict_unet"], {k: tiny_unet[k] for k in loaded["state_dict_unet"]})
    check(ok, f"state_dict_unet == tiny/unet: {msg}")
    ok, msg = same_state(loaded["state_dict_vae"], {k: v for k, v in tiny_vae.items() if "lora" in k or "skip" in k})
    check(ok, f"state_dict_vae == tiny/vae's lora/skip keys: {msg}")
    tensors = list(loaded["state_dict_unet"].values()) + list(loaded["state_dict_vae"].values())
    check(all(t.untyped_storage().nbytes() == t.numel() * t.element_size() and t.storage_offset() == 0
              and t.is_contiguous() for t in tensors), "every weight tensor owns exactly its storage (contiguous, offset 0)")
    opt = loaded["optimizer"]
    check(set(opt) == {"state", "param_groups"} and len(opt["param_groups"]) == 1 and len(opt["state"]) == len(GRAD_PARAMS),
          f"optimizer: 1 param group, state for {len(opt['state'])} params")

    # -- the reference's load path
    vae, unet = load_like_reference(stock, OUT)
    ok, msg = same_state(vae.state_dict(), tiny_vae)
    check(ok, f"rebuilt VAE state_dict == tiny/vae: {msg}")
    ok, msg = same_state(unet.state_dict(), tiny_unet)
    check(ok, f"rebuilt UNet state_dict == tiny/unet: {msg}")
    _, unet_p = load_like_reference(stock, OUT, perturb_unet_conv_in=True)
    ok, msg = same_state(unet_p.state_dict(), tiny_unet)
    check(ok, f"rebuilt UNet == tiny/unet also when the stock conv_in differs: {msg}")

    # -- outputs: against the tiny model loaded from tiny/ (bit-exact) and against the goldens
    tiny = ref.load_models(TINY)
    rebuilt = ref.DifixModels(tiny.tokenizer, tiny.text_encoder, unet, vae, tiny.scheduler)
    gold = load_safetensors(FIXTURES / "goldens.safetensors")
    gen = torch.Generator().manual_seed(SEED)
    x = torch.rand(1, 3, 32, 48, generator=gen) * 2 - 1
    z = torch.randn(1, 4, 4, 6, generator=gen) * 3
    with torch.no_grad():
        _, _, skips = ref.vae_encode(tiny.vae, x)
        want = ref.vae_decode(tiny.vae, z, skips)
        got = ref.vae_decode(vae, z, skips)
        check(torch.equal(got, want), "decoder output (random latent + skips) == tiny/'s, bit-exact")
        gskips = [gold[f"vae.enc.skip{i}"] for i in range(4)]
        d = (ref.vae_decode(vae, gold["vae.dec.input"], gskips) - gold["vae.dec.output"]).abs().max().item()
        check(d <= 1e-4, f"decoder output vs golden vae.dec.output: max |diff| {d:.2e} (<= 1e-4)")
        out_t, _ = ref.difix_forward(tiny, gold["pipe.input"])
        out_r, _ = ref.difix_forward(rebuilt, gold["pipe.input"])
        check(torch.equal(out_r, out_t), "full one-step forward == tiny/'s, bit-exact")
        d = (out_r - gold["pipe.output"]).abs().max().item()
        check(d <= 1e-4, f"full one-step forward vs golden pipe.output: max |diff| {d:.2e} (<= 1e-4)")
        # sensitivity: without the checkpoint's weights (random skip convs, gaussian LoRA A, zero LoRA B)
        vae0, _ = load_like_reference(stock, OUT, apply_weights=False)
        d = (ref.vae_decode(vae0, z, skips) - want).abs().max().item()
        check(d > 0.1, f"(sensitivity) stock + fresh adapter, checkpoint not applied: decoder differs by {d:.2f}")

    # -- the broken checkpoint
    bad = torch.load(str(OUT_BAD), map_location="cpu", weights_only=True)
    diff = [k for k in loaded["state_dict_unet"] if not (bad["state_dict_unet"][k].shape == loaded["state_dict_unet"][k].shape)]
    check(diff == ["conv_in.weight"] and list(bad["state_dict_unet"]["conv_in.weight"].shape) == [17, 4, 3, 3],
          "model_tiny_bad.pkl: only state_dict_unet['conv_in.weight'] differs, shape [17, 4, 3, 3]")
    try:
        load_like_reference(stock, OUT_BAD)
    except RuntimeError as e:
        msg = str(e)
        check("size mismatch for conv_in.weight" in msg, "model_tiny_bad.pkl is refused by the reference's load path: "
              + msg.strip().splitlines()[-1].strip())
    else:
        check(False, "model_tiny_bad.pkl should be refused")


def main() -> None:
    quiet_diffusers()
    torch.manual_seed(SEED)  # the reference's gaussian LoRA init / Conv2d init (all overwritten)
    with tempfile.TemporaryDirectory() as tmp:
        stock = Path(tmp) / "stock"
        write_stock_dir(stock)
        vae, unet, targets = trained_model(stock)
        optimizer, n_list, n_unique = make_optimizer(vae, unet)
        print(f"optimizer: {n_list} entries in layers_to_opt ({n_unique} distinct parameters), "
              f"state for {len(optimizer.state)}")
        sd = save_model_dict(vae, unet, targets, LORA_RANK, optimizer)
        torch.save(sd, str(OUT))
        bad = dict(sd)
        bad["state_dict_unet"] = dict(sd["state_dict_unet"])
        w = sd["state_dict_unet"]["conv_in.weight"]
        bad["state_dict_unet"]["conv_in.weight"] = torch.cat([w, w[:1]], dim=0).contiguous()
        torch.save(bad, str(OUT_BAD))
        for p in (OUT, OUT_BAD):
            os.chmod(p, 0o644)
        verify(stock, sd)

    for p in (OUT, OUT_BAD):
        size = p.stat().st_size
        check(size < MAX_PKL_BYTES, f"{p.relative_to(REPO)}: {size} bytes, sha256 "
              f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}")
    names, globs = pickle_globals(OUT)
    print(f"zip records: {len(names)} ({names[0]}, ..., {names[-1]}); pickle globals: {', '.join(globs)}")


if __name__ == "__main__":
    main()
