#!/usr/bin/env python3
"""Golden of one Difix fine-tuning step (nv-tlabs/Difix3D src/train_difix.py) on the tiny model.

What trains is what the reference trains: the whole UNet, and in the VAE the LoRA pairs and the skip
convs (`set_train`); text encoder and the rest of the VAE are frozen. One batch of one target with its
reference (views [target, ref]); the network decodes both views and the loss covers both, against
[clean target, ref], as `train_difix.py` does:
    loss = lambda_l2 * mse + lambda_lpips * LPIPS(vgg) + lambda_gram * gram_loss(VGG16 on a crop)
then `clip_grad_norm_(1.0)` and one `torch.optim.AdamW` step. Deterministic on purpose: the VAE
posterior MEAN (the reference samples it), a fixed crop (the reference picks a random 400x400 one),
and tiny random LPIPS/VGG networks from tests/fixtures/lpips/ (the real ones cannot be downloaded).

Writes tests/fixtures/difix/train_step/{input,target,ref}.png and golden.json: the three losses, the
global gradient norm before clipping, and the losses after the step on the same batch.

    /tmp/difix-venv/bin/python tests/golden/difix/make_train_step.py   # + lpips==0.1.4 torchvision==0.17.2
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import reference_difix as ref  # noqa: E402
import lpips_golden as lg  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "difix" / "train_step"
# 96: the tiny UNet's deepest level stays larger than 1x1 (torch 2.2's CPU GroupNorm backward refuses
# 1x1 maps, whose memory format is ambiguous).
SIZE = 96
CROP = {"top": 16, "left": 24, "size": 64}
LR = 1e-3
WEIGHT_DECAY = 1e-2
MAX_GRAD_NORM = 1.0


def image(seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = np.stack([np.sin(5 * x + seed), np.cos(4 * y - seed), np.sin(3 * (x + y) + seed)], -1) * 0.4 + 0.5
    return (np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1) * 255).round().astype(np.uint8)


def to_m11(img):
    return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    imgs = {"input": image(11), "target": image(12), "ref": image(13)}
    for k, v in imgs.items():
        Image.fromarray(v).save(OUT / f"{k}.png")
    t = {k: to_m11(np.asarray(Image.open(OUT / f"{k}.png"))) for k in imgs}

    models = ref.load_models(REPO / "tests" / "fixtures" / "difix" / "tiny")
    models.unet.requires_grad_(True)
    models.vae.requires_grad_(False)
    for name, p in models.vae.named_parameters():
        if "lora" in name or "skip_conv" in name:
            p.requires_grad = True
    params = [p for m in (models.unet, models.vae) for p in m.parameters() if p.requires_grad]

    # Tiny LPIPS (VGG) and the Gram loss's VGG16 from the LPIPS fixtures.
    fix = REPO / "tests" / "fixtures" / "lpips"
    features = lg.make_layers(lg.VGG_CFG)
    features.load_state_dict({k[len("features."):]: v for k, v in torch.load(fix / "vgg_tiny_backbone.pth").items()})
    net_lpips = lg.tiny_lpips("vgg", features, lg.VGG_SLICES, lg.VGG_TAPS)
    lins = torch.load(fix / "vgg_tiny_lin.pth")
    for k in range(5):
        net_lpips.lins[k].model[1].weight.data.copy_(lins[f"lin{k}.model.1.weight"])
    net_lpips.requires_grad_(False)
    features.requires_grad_(False)
    from torchvision import transforms
    renorm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    x_src = torch.cat([t["input"], t["ref"]])      # (b v) = [target view, ref view]
    x_tgt = torch.cat([t["target"], t["ref"]])
    ids, text_hidden = ref.encode_prompt(models, ref.PROMPT)
    text_hidden = text_hidden.detach().repeat(2, 1, 1)

    def forward():
        mean, _, skips = ref.vae_encode(models.vae, x_src)
        sf = models.vae.config.scaling_factor
        z = mean * sf
        eps = ref.unet_eps(models, z, text_hidden, 2)
        z0 = ref.ddpm_step(models.scheduler, eps, z)
        return ref.vae_decode(models.vae, z0 / sf, skips).clamp(-1, 1)

    def losses(pred):
        l2 = torch.nn.functional.mse_loss(pred, x_tgt, reduction="mean")
        lp = net_lpips(pred, x_tgt).mean()
        c = CROP
        crop = lambda x: x[:, :, c["top"]:c["top"] + c["size"], c["left"]:c["left"] + c["size"]].contiguous()
        gram = lg.gram_loss(crop(renorm(pred * 0.5 + 0.5)), crop(renorm(x_tgt * 0.5 + 0.5)), features)
        return l2, lp, gram

    l2, lp, gram = losses(forward())
    total = l2 + lp + gram
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), weight_decay=WEIGHT_DECAY, eps=1e-8)
    opt.step()
    with torch.no_grad():
        after = losses(forward())
    golden = {
        "size": SIZE, "crop": CROP, "lr": LR, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
        "lambdas": {"l2": 1.0, "lpips": 1.0, "gram": 1.0},
        "trainable_params": sum(p.numel() for p in params),
        "before": {"l2": l2.item(), "lpips": lp.item(), "gram": gram.item(), "total": total.item()},
        "grad_norm": norm.item(),
        "after": {"l2": after[0].item(), "lpips": after[1].item(), "gram": after[2].item(),
                  "total": sum(a.item() for a in after)},
    }
    (OUT / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps(golden))


if __name__ == "__main__":
    main()
