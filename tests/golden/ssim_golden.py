"""SSIM golden for crates/difix3d-nn/src/metrics/ssim.rs: torch float64 SSIM (11x11 Gaussian, sigma 1.5, valid region) of two random
images and its gradient, cross-checked against scikit-image. Run from the repo root:
    /tmp/gs-venv/bin/python tests/golden/ssim_golden.py"""
import json, torch, numpy as np
import torch.nn.functional as F
torch.manual_seed(3)
def window(c):
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-x**2 / (2 * 1.5**2)); g = g / g.sum()
    w = torch.outer(g, g)
    return w.expand(c, 1, 11, 11).contiguous()
def ssim(a, b):
    c = a.shape[1]; w = window(c)
    blur = lambda x: F.conv2d(x, w, groups=c)
    mu_a, mu_b = blur(a), blur(b)
    sa = blur(a*a) - mu_a**2; sb = blur(b*b) - mu_b**2; sab = blur(a*b) - mu_a*mu_b
    C1, C2 = 0.01**2, 0.03**2
    m = ((2*mu_a*mu_b + C1) * (2*sab + C2)) / ((mu_a**2 + mu_b**2 + C1) * (sa + sb + C2))
    return m.mean()
a = torch.rand(1, 3, 20, 27, dtype=torch.float64)
b = (a + 0.15 * torch.randn_like(a)).clamp(0, 1)
a = a.float().double(); b = b.float().double()
a.requires_grad_(True)
s = ssim(a, b); s.backward()
# cross-check with scikit-image if present
out = {"shape": list(a.shape), "a": a.detach().flatten().tolist(), "b": b.flatten().tolist(), "ssim": s.item(),
       "grad_a": a.grad.flatten().tolist()}
try:
    from skimage.metrics import structural_similarity
    an = a.detach()[0].permute(1,2,0).numpy(); bn = b[0].permute(1,2,0).numpy()
    sk = structural_similarity(an, bn, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    out["skimage_ssim"] = float(sk)
except ImportError:
    pass
json.dump(out, open("tests/fixtures/train/ssim_case.json", "w"))
print(s.item(), out.get("skimage_ssim"))
