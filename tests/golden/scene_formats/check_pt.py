"""Loads a `.pt` written by `difix3d convert` the way Difix3D's gsplat trainer does
(`torch.load(..., weights_only=True)`, then `ckpt["splats"][k]`) and compares it with the float PLY it
was converted from. Prints one JSON line; exits non-zero on a mismatch. Run by make_fixtures.sh."""

import json
import sys

import numpy as np
import torch

pt, ply = sys.argv[1], sys.argv[2]
ckpt = torch.load(pt, map_location="cpu", weights_only=True)
splats = ckpt["splats"]
with open(ply, "rb") as f:
    data = f.read()
end = data.index(b"end_header\n") + len(b"end_header\n")
rows = np.frombuffer(data[end:], "<f4").reshape(-1, 62)
n = rows.shape[0]
quats = rows[:, 58:62] / np.linalg.norm(rows[:, 58:62], axis=1, keepdims=True)
expected = {
    "means": rows[:, 0:3],
    "scales": rows[:, 55:58],
    "quats": quats,
    "opacities": rows[:, 54],
    "sh0": rows[:, 6:9].reshape(n, 1, 3),
    "shN": rows[:, 9:54].reshape(n, 3, 15).transpose(0, 2, 1),
}
errors = {}
for key, want in expected.items():
    got = splats[key]
    assert got.dtype == torch.float32, (key, got.dtype)
    assert tuple(got.shape) == want.shape, (key, tuple(got.shape), want.shape)
    errors[key] = float(np.abs(got.numpy() - want).max())
ok = ckpt["step"] == 0 and all(e <= 1e-6 for e in errors.values())
print(json.dumps({"file": pt.split("/")[-1], "torch": torch.__version__, "step": ckpt["step"],
                  "max_abs_error": errors, "ok": ok}))
sys.exit(0 if ok else 1)
