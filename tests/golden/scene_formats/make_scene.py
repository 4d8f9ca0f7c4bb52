"""Writes the small test scene `small.ply` (SH degree 3, 500 splats: one full chunk of 256 and a
partial one) and, with torch, the gsplat checkpoints `ckpt_500_rank0.pt` / `ckpt_500_rank1.pt` of the
same splats split across two ranks, as gsplat's simple_trainer saves them
(`torch.save({"step": step, "splats": self.splats.state_dict()})` of a ParameterDict), with the
quaternions scaled by random factors (gsplat never normalises them). Run by make_fixtures.sh.
"""

import sys

import numpy as np
import torch

out = sys.argv[1]
rng = np.random.default_rng(17)
n = 500
means = rng.uniform(-1.0, 1.0, (n, 3)).astype(np.float32) * np.array([1.0, 0.7, 0.5], np.float32)
scales = np.log(rng.uniform(0.02, 0.12, (n, 3))).astype(np.float32)
quats = rng.normal(size=(n, 4)).astype(np.float32)
quats /= np.linalg.norm(quats, axis=1, keepdims=True)
opacities = rng.uniform(-2.0, 4.0, n).astype(np.float32)
opacities[:10] = 9.0  # alpha rounds to 255 in 8 bits: splat-transform decodes these as +inf
sh0 = rng.normal(0.0, 0.8, (n, 1, 3)).astype(np.float32)
sh_n = rng.normal(0.0, 0.15, (n, 15, 3)).astype(np.float32)

# The float PLY in the INRIA layout (f_rest channel-major).
names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
names += [f"f_rest_{i}" for i in range(45)]
names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
rest = sh_n.transpose(0, 2, 1).reshape(n, 45)
rows = np.concatenate(
    [means, np.zeros((n, 3), np.float32), sh0[:, 0, :], rest, opacities[:, None], scales, quats], axis=1
).astype("<f4")
header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
header += "".join(f"property float {p}\n" for p in names) + "end_header\n"
with open(f"{out}/small.ply", "wb") as f:
    f.write(header.encode())
    f.write(rows.tobytes())

# The same splats as a two-rank gsplat checkpoint, quaternions unnormalised.
factors = rng.uniform(0.3, 3.0, (n, 1)).astype(np.float32)
split = 300
for rank, part in enumerate([slice(0, split), slice(split, n)]):
    splats = torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(torch.from_numpy(means[part].copy())),
            "scales": torch.nn.Parameter(torch.from_numpy(scales[part].copy())),
            "quats": torch.nn.Parameter(torch.from_numpy((quats * factors)[part].copy())),
            "opacities": torch.nn.Parameter(torch.from_numpy(opacities[part].copy())),
            "sh0": torch.nn.Parameter(torch.from_numpy(sh0[part].copy())),
            "shN": torch.nn.Parameter(torch.from_numpy(sh_n[part].copy())),
        }
    )
    torch.save({"step": 500, "splats": splats.state_dict()}, f"{out}/ckpt_500_rank{rank}.pt")
