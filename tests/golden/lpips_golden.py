"""LPIPS and Gram-loss goldens: the `lpips` package (0.1.4) itself, and Difix3D's `gram_loss`
(`src/loss.py`, copied below verbatim), on tiny random-weight backbones.

The real metric uses torchvision's VGG16 / AlexNet ImageNet weights (which cannot be downloaded here)
and lpips's calibrated linear layers. The computation is the same at any width, so this script
builds `lpips.LPIPS(net=...)`, swaps its backbone slices for tiny random networks with torchvision's
exact layer indices (`torchvision.models.vgg.make_layers` for VGG, AlexNet's layout by hand) and its
`lin` layers for random non-negative ones of the matching widths, and records the metric on a few
image pairs. The weights are saved in the real file layouts (torchvision `features.N.weight`,
lpips `linK.model.1.weight`, both `torch.save` pickles), so the Rust loader is tested on them too.

The Gram loss uses the same tiny VGG16 (torchvision's `features` module, as Difix3D's training
does) on ImageNet-normalised images.

Writes tests/fixtures/lpips/: {vgg,alex}_tiny_backbone.pth, {vgg,alex}_tiny_lin.pth, a.png, b.png,
c.png and goldens.json. Run with the golden venv (see README.md) plus `lpips==0.1.4
torchvision==0.17.2`:

    tests/golden/.venv/bin/python tests/golden/lpips_golden.py
"""

import json
from pathlib import Path

import lpips
import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.vgg import make_layers

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "lpips"

# Tiny widths, same layer indices as torchvision's VGG16 `features` and AlexNet `features`.
VGG_CFG = [4, 4, "M", 8, 8, "M", 12, 12, 12, "M", 16, 16, 16, "M", 16, 16, 16, "M"]
VGG_SLICES = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
VGG_TAPS = [4, 8, 12, 16, 16]
ALEX_WIDTHS = [8, 12, 16, 12, 12]
ALEX_SLICES = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)]


def alex_features(w):
    return nn.Sequential(
        nn.Conv2d(3, w[0], kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(w[0], w[1], kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(w[1], w[2], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(w[2], w[3], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(w[3], w[4], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def tiny_lpips(net, features, slices, taps):
    metric = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    for k, (lo, hi) in enumerate(slices):
        seq = nn.Sequential()
        for i in range(lo, hi):
            seq.add_module(str(i), features[i])
        setattr(metric.net, f"slice{k + 1}", seq)
    lins = []
    for k, c in enumerate(taps):
        lin = lpips.NetLinLayer(c, use_dropout=True)
        with torch.no_grad():
            lin.model[1].weight.copy_(torch.rand(1, c, 1, 1) * 0.2)
        setattr(metric, f"lin{k}", lin)
        lins.append(lin)
    metric.lins = nn.ModuleList(lins)
    metric.chns = taps
    return metric.eval()


# ---- Difix3D src/loss.py (nv-tlabs/Difix3D, HEAD c76edc5), verbatim apart from comments ----
STYLE_WEIGHTS = {
    'relu1_2': 1.0 / 2.6,
    'relu2_2': 1.0 / 4.8,
    'relu3_3': 1.0 / 3.7,
    'relu4_3': 1.0 / 5.6,
    'relu5_3': 10.0 / 1.5
}


def get_features(image, model, layers=None):
    if layers is None:
        layers = {
            '3': 'relu1_2',
            '8': 'relu2_2',
            '15': 'relu3_3',
            '22': 'relu4_3',
            '29': 'relu5_3'
        }
    features = {}
    x = image
    for name, layer in model._modules.items():
        x = layer(x)
        if name in layers:
            features[layers[name]] = x
    return features


def gram_matrix(tensor):
    b, d, h, w = tensor.size()
    tensor = tensor.view(b * d, h * w)
    gram = torch.mm(tensor, tensor.t())
    return gram


def gram_loss(style, target, model):
    style_features = get_features(style, model)
    target_features = get_features(target, model)
    style_grams = {layer: gram_matrix(style_features[layer]) for layer in style_features}
    total_loss = 0
    for layer, weight in STYLE_WEIGHTS.items():
        target_feature = target_features[layer]
        target_gram = gram_matrix(target_feature)
        style_gram = style_grams[layer]
        _, d, h, w = target_feature.shape
        layer_loss = weight * torch.mean((target_gram - style_gram) ** 2)
        total_loss += layer_loss / (d * h * w)
    return total_loss
# ---- end of src/loss.py ----


def image(seed, h=88, w=120):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(4 * (x + y))], -1) * 0.35 + 0.5
    noisy = base + rng.normal(0, 0.08, base.shape)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def to_tensor(img):
    return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    images = {"a": image(1), "b": image(2), "c": image(1)}
    # c: a with a blurred patch, so (a, c) is a small, structured difference.
    c = images["c"].astype(np.float32)
    patch = c[20:60, 30:90]
    c[20:60, 30:90] = (patch + np.roll(patch, 3, 0) + np.roll(patch, 3, 1)) / 3
    images["c"] = c.round().astype(np.uint8)
    for name, img in images.items():
        Image.fromarray(img).save(OUT / f"{name}.png")
    tensors = {k: to_tensor(np.asarray(Image.open(OUT / f"{k}.png"))) for k in images}

    goldens = {}
    nets = {
        "vgg": (make_layers(VGG_CFG), VGG_SLICES, VGG_TAPS),
        "alex": (alex_features(ALEX_WIDTHS), ALEX_SLICES, ALEX_WIDTHS),
    }
    for net, (features, slices, taps) in nets.items():
        metric = tiny_lpips(net, features, slices, taps)
        backbone = {f"features.{k}": v for k, v in features.state_dict().items()}
        torch.save(backbone, OUT / f"{net}_tiny_backbone.pth")
        lin = {f"lin{k}.model.1.weight": metric.lins[k].model[1].weight.detach().clone() for k in range(5)}
        torch.save(lin, OUT / f"{net}_tiny_lin.pth")
        cases = {}
        for pair in ["ab", "ac", "aa", "bc"]:
            x, y = tensors[pair[0]], tensors[pair[1]]
            with torch.no_grad():
                value, layers = metric(x, y, retPerLayer=True, normalize=True)
            cases[pair] = {"lpips": value.item(), "layers": [l.item() for l in layers]}
        # The gradient of LPIPS(a, b) with respect to a (for training with it as a loss).
        x = tensors["a"].clone().requires_grad_(True)
        metric(x, tensors["b"], normalize=True).sum().backward()
        g = x.grad[0]
        cases["ab"]["grad_a_sum_abs"] = g.abs().sum().item()
        cases["ab"]["grad_a_samples"] = [[int(ch), int(yy), int(xx), g[ch, yy, xx].item()] for ch, yy, xx in
                                         [(0, 10, 10), (1, 44, 60), (2, 80, 115), (0, 0, 0)]]
        goldens[net] = {
            "backbone": f"{net}_tiny_backbone.pth",
            "lin": f"{net}_tiny_lin.pth",
            "widths": taps if net == "vgg" else ALEX_WIDTHS,
            "cases": cases,
        }
    # Gram loss as Difix3D's training calls it: images in [0, 1], ImageNet-normalised, through the
    # tiny VGG16 `features`; the gradient with respect to the prediction.
    from torchvision import transforms
    renorm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    vgg = nets["vgg"][0].eval()
    gram = {"backbone": "vgg_tiny_backbone.pth", "cases": {}}
    for pair in ["ab", "ac"]:
        pred = tensors[pair[0]].clone().requires_grad_(True)
        value = gram_loss(renorm(pred), renorm(tensors[pair[1]]), vgg)
        value.backward()
        g = pred.grad[0]
        gram["cases"][pair] = {
            "loss": value.item(),
            "grad_sum_abs": g.abs().sum().item(),
            "grad_samples": [[c, y, x, g[c, y, x].item()] for c, y, x in [(0, 10, 10), (1, 44, 60), (2, 80, 115)]],
        }
    goldens["gram"] = gram
    goldens["versions"] = {"lpips": "0.1.4", "torch": torch.__version__}
    (OUT / "goldens.json").write_text(json.dumps(goldens, indent=1) + "\n")
    print(json.dumps({k: goldens[k]["cases"]["ab"] for k in ["vgg", "alex", "gram"]})[:400])


if __name__ == "__main__":
    main()
