#!/usr/bin/env python3
"""Step-level golden of gsplat 1.5.3's default training recipe for `tests/it/train_parity.rs`.

Builds a tiny COLMAP dataset (3 training views of 32 splats at 32x24; the targets are renders of
a hidden "true" scene, the SfM points its jittered means) in `tests/fixtures/train_parity/`, then runs
the first 4 steps of `examples/simple_trainer.py`'s loop on it exactly as `difix3d train` is
configured by the test (`normalize_world_space=False`, `sh_degree=1`, `sh_degree_interval=2`,
`DefaultStrategy(refine_start_iter=2, refine_every=3, ...)`, so the 4th step (gsplat's step 3)
refines) and writes `golden.json`: the loss of every step, the parameters after each step, Adam's
first moment after each step before the refinement and both moments after the last, and the
densification's statistics and choices.

What is gsplat's own code: `DefaultStrategy` (its state update, growth and pruning, imported from
the installed gsplat==1.5.3) and the SH / projection helpers the peer imports. The rasteriser is the
gsplat peer's torch port of its 1.5.3 CUDA kernels (`train_gsplat_cpu.py`, with its `--selftest`
against brute force and autograd); SSIM is the peer's valid-padding SSIM (= `fused_ssim`'s).
What replays difix3d: only the random numbers, so the runs start from the same splats and see the
same views: the initial rotations and the view order come from a Python copy of
`crates/difix3d-scene/src/rng.rs` (SplitMix64; per-epoch Fisher-Yates shuffles, as gsplat's shuffling loader
visits the views).

  ~/.cache/peer-venv/bin/python tests/golden/train_step_golden.py [--peer ../shared/tools/gsplat-peer]
  ... --antialiased   (the same case trained as `simple_trainer.py --antialiased`: golden_antialiased.json)
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "train_parity")
W, H = 32, 24
N_TRUE, N_POINTS = 48, 32
SEED = 42  # TrainConfig.seed in the test
STEPS = 4
SH_DEGREE, SH_INTERVAL = 1, 2
REFINE_START, REFINE_EVERY = 2, 3
MASK64 = (1 << 64) - 1


class Rng:
    """crates/difix3d-scene/src/rng.rs."""

    def __init__(self, state):
        self.state = state & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        return np.float32((self.next_u64() >> 40) / float(1 << 24))

    def below(self, n):
        return self.next_u64() % max(n, 1)

    def permutation(self, n):
        order = list(range(n))
        for i in reversed(range(1, n)):
            j = self.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order


def look_at(eye, target):
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.array([0.0, -1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, fwd, eye
    return m


def rotmat_to_qvec(r):
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return np.array([w, x, y, z])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", default=os.path.join(REPO, "..", "shared", "tools", "gsplat-peer"))
    ap.add_argument("--antialiased", action="store_true",
                    help="train as simple_trainer.py --antialiased (rasterize_mode='antialiased'); "
                         "writes golden_antialiased.json")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.peer))
    import gsplat
    from gsplat.strategy import DefaultStrategy
    from PIL import Image
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci
    from train_gsplat_cpu import knn_dists, rasterization_cpu, rgb_to_sh, ssim_valid

    assert gsplat.__version__ == "1.5.3", gsplat.__version__
    torch.set_num_threads(2)
    gen = np.random.default_rng(7)

    # --- the hidden scene and its views -------------------------------------------------------
    true_means = gen.normal(0.0, 0.35, (N_TRUE, 3))
    true_scales = np.log(gen.uniform(0.05, 0.15, (N_TRUE, 3)))
    true_quats = gen.normal(size=(N_TRUE, 4))
    true_opac = gen.uniform(0.5, 0.95, N_TRUE)
    true_rgb = gen.uniform(0.1, 0.9, (N_TRUE, 3))
    f = 0.5 * H / math.tan(math.radians(50) / 2)
    cams = []
    for i, az in enumerate([0.0, 0.7, -0.6]):
        eye = np.array([2.2 * math.sin(az), -0.3 * (i - 1), -2.2 * math.cos(az)])
        cams.append((f"image_train_{i:03d}.png", look_at(eye, np.zeros(3))))
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=torch.float32)
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    sparse = os.path.join(OUT, "colmap", "sparse", "0")
    os.makedirs(sparse, exist_ok=True)
    with torch.no_grad():
        for name, c2w in cams:
            img, _, _ = rasterization_cpu(
                torch.tensor(true_means, dtype=torch.float32), torch.tensor(true_quats, dtype=torch.float32),
                torch.exp(torch.tensor(true_scales, dtype=torch.float32)),
                torch.tensor(true_opac, dtype=torch.float32),
                rgb_to_sh(torch.tensor(true_rgb, dtype=torch.float32))[:, None, :],
                torch.linalg.inv(torch.tensor(c2w, dtype=torch.float32))[None], K[None], W, H, 0)
            arr = (img[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(OUT, "images", name))
    with open(os.path.join(sparse, "cameras.txt"), "w") as fh:
        fh.write(f"1 PINHOLE {W} {H} {f!r} {f!r} {W / 2!r} {H / 2!r}\n")
    with open(os.path.join(sparse, "images.txt"), "w") as fh:
        for i, (name, c2w) in enumerate(cams):
            w2c = np.linalg.inv(c2w)
            q = rotmat_to_qvec(w2c[:3, :3])
            fh.write(f"{i + 1} {' '.join(repr(float(v)) for v in q)} "
                     f"{' '.join(repr(float(v)) for v in w2c[:3, 3])} 1 {name}\n\n")
    pick = gen.choice(N_TRUE, N_POINTS, replace=False)
    points = true_means[pick] + gen.normal(0.0, 0.05, (N_POINTS, 3))
    colours = np.round(true_rgb[pick] * 255).astype(int)
    with open(os.path.join(sparse, "points3D.txt"), "w") as fh:
        for i, (x, c) in enumerate(zip(points, colours)):
            fh.write(f"{i + 1} {float(x[0])!r} {float(x[1])!r} {float(x[2])!r} {c[0]} {c[1]} {c[2]} 0.5\n")

    # --- what both trainers read back -----------------------------------------------------------
    def parse_floats(path, cols):
        rows = []
        with open(path) as fh:
            for line in fh:
                if line.strip() and not line.startswith("#"):
                    rows.append([float(v) for v in line.split()[cols]])
        return rows

    pts = torch.tensor(parse_floats(os.path.join(sparse, "points3D.txt"), slice(1, 4)), dtype=torch.float32)
    rgbs = torch.tensor(parse_floats(os.path.join(sparse, "points3D.txt"), slice(4, 7)), dtype=torch.float32) / 255.0
    c2ws = torch.tensor(np.stack([c for _, c in cams]), dtype=torch.float32)
    images = [torch.from_numpy(np.array(Image.open(os.path.join(OUT, "images", n)).convert("RGB"))).float() / 255.0
              for n, _ in cams]
    centres = c2ws[:, :3, 3].double().numpy()
    scene_scale = float(np.max(np.linalg.norm(centres - centres.mean(0), axis=1))) * 1.1

    # --- create_splats_with_optimizers (init_type="sfm"), rotations from difix3d's Rng ---------
    n = pts.shape[0]
    dist_avg = torch.sqrt((knn_dists(pts, 4)[:, 1:] ** 2).mean(dim=-1))
    rng = Rng(SEED)
    quats = torch.tensor([[rng.uniform() for _ in range(4)] for _ in range(n)], dtype=torch.float32)
    colors = torch.zeros((n, (SH_DEGREE + 1) ** 2, 3))
    colors[:, 0, :] = rgb_to_sh(rgbs)
    params = [
        ("means", pts.clone(), 1.6e-4 * scene_scale),
        ("scales", torch.log(dist_avg).unsqueeze(-1).repeat(1, 3), 5e-3),
        ("quats", quats, 1e-3),
        ("opacities", torch.logit(torch.full((n,), 0.1)), 5e-2),
        ("sh0", colors[:, :1, :], 2.5e-3),
        ("shN", colors[:, 1:, :], 2.5e-3 / 20),
    ]

    def fresh():
        """simple_trainer's splats, Adam per group (batch size 1) and the means' ExponentialLR."""
        splats = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v, _ in params})
        optimizers = {k: torch.optim.Adam([{"params": splats[k], "lr": lr, "name": k}], eps=1e-15,
                                          betas=(0.9, 0.999))
                      for k, _, lr in params}
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=0.01 ** (1.0 / STEPS))
        return splats, optimizers, scheduler

    def ours(t):
        """Our layout: means, log_scales, rotations, opacity_logits [N, 1], sh [N, K*3]."""
        return {
            "means": t["means"], "log_scales": t["scales"], "rotations": t["quats"],
            "opacity_logits": t["opacities"][:, None],
            "sh": torch.cat([t["sh0"], t["shN"]], 1).reshape(t["sh0"].shape[0], -1),
        }

    def dump(d):
        return {k: v.detach().double().numpy().round(9).tolist() for k, v in d.items()}

    # --- the densification thresholds: between the statistics, far from any of them ------------
    def pick_threshold(values):
        v = np.sort(np.asarray(values, np.float64))
        gaps = v[1:] - v[:-1]
        mid = len(v) // 2
        lo, hi = mid // 2, mid + (len(v) - mid) // 2
        k = lo + int(np.argmax(gaps[lo:hi]))
        return float(0.5 * (v[k] + v[k + 1])), float(gaps[k])

    def run(grow_grad2d, grow_scale3d, record):
        """Runs the first STEPS steps from the initial splats."""
        splats, optimizers, scheduler = fresh()
        strategy = DefaultStrategy(refine_start_iter=REFINE_START, refine_every=REFINE_EVERY,
                                   grow_grad2d=grow_grad2d, grow_scale3d=grow_scale3d)
        state = strategy.initialize_state(scene_scale=scene_scale)
        seen = {}
        grow, prune = strategy._grow_gs, strategy._prune_gs

        def grow_spy(params_, optimizers_, state_, step):
            grads = state_["grad2d"] / state_["count"].clamp_min(1)
            seen["grad2d"] = state_["grad2d"].clone()
            seen["count"] = state_["count"].clone()
            seen["max_scale"] = torch.exp(params_["scales"]).max(dim=-1).values.detach().clone()
            high = grads > grow_grad2d
            small = seen["max_scale"] <= grow_scale3d * scene_scale
            seen["clone"] = (high & small).clone()
            seen["split"] = (high & ~small).clone()
            return grow(params_, optimizers_, state_, step)

        def prune_spy(params_, optimizers_, state_, step):
            seen["pruned"] = int((torch.sigmoid(params_["opacities"]) < strategy.prune_opa).sum())
            return prune(params_, optimizers_, state_, step)

        strategy._grow_gs, strategy._prune_gs = grow_spy, prune_spy
        view_rng = Rng(SEED ^ 0x5EED ^ 0)
        order, pos = [], 0
        log = {"loss": [], "views": [], "lr_means": [], "params": [], "m_steps": []}
        for step in range(STEPS):
            if pos >= len(order):
                order, pos = view_rng.permutation(len(cams)), 0
            index = order[pos]
            pos += 1
            sh_use = min(step // SH_INTERVAL, SH_DEGREE)
            log["lr_means"].append(optimizers["means"].param_groups[0]["lr"])
            viewmats = torch.linalg.inv(c2ws[index : index + 1])
            opacities = torch.sigmoid(splats["opacities"])
            if args.antialiased:
                # gsplat's rasterization(rasterize_mode="antialiased"): the projection's compensations
                # (gsplat's own torch implementation of them) scale the opacities, which the
                # projection's culling and opacity-aware box and the compositing all then use.
                covars, _ = _quat_scale_to_covar_preci(splats["quats"], torch.exp(splats["scales"]), True, False,
                                                       triu=False)
                *_, compensations = _fully_fused_projection(splats["means"], covars, viewmats, K[None], W, H,
                                                            eps2d=0.3, calc_compensations=True)
                opacities = opacities * compensations[0]
            renders, _, info = rasterization_cpu(
                splats["means"], splats["quats"], torch.exp(splats["scales"]), opacities,
                torch.cat([splats["sh0"], splats["shN"]], 1), viewmats, K[None], W, H, sh_use)
            strategy.step_pre_backward(splats, optimizers, state, step, info)
            pixels = images[index][None]
            l1 = torch.nn.functional.l1_loss(renders, pixels)
            ssim = ssim_valid(renders.permute(0, 3, 1, 2), pixels.permute(0, 3, 1, 2))
            loss = l1 * 0.8 + (1.0 - ssim) * 0.2
            loss.backward()
            for o in optimizers.values():
                o.step()
                o.zero_grad(set_to_none=True)
            scheduler.step()
            strategy.step_post_backward(splats, optimizers, state, step, info, packed=False)
            log["loss"].append(loss.item())
            log["views"].append(index)
            log["params"].append(dump(ours(splats)))
            if step < STEPS - 1:
                st = {k: optimizers[k].state[splats[k]]["exp_avg"] for k in splats}
                log.setdefault("m_steps", []).append(dump(ours(st)))
        if record:
            moments = {}
            for name, key in [("m", "exp_avg"), ("v", "exp_avg_sq")]:
                st = {k: optimizers[k].state[splats[k]][key] for k in splats}
                moments[name] = dump(ours(st))
            log["moments"] = moments
        log["splats_after"] = len(splats["means"])
        return log, seen

    # A dry run with thresholds nobody reaches gives the statistics; then choose thresholds in their
    # widest middle gaps so the choices do not hinge on float rounding.
    _, seen = run(1e9, 1e9, False)
    grads = (seen["grad2d"] / seen["count"].clamp_min(1)).numpy()
    grow_grad2d, grad_gap = pick_threshold(grads[seen["count"].numpy() > 0])
    high = grads > grow_grad2d
    grow_scale3d, scale_gap = pick_threshold(seen["max_scale"].numpy()[high] / scene_scale)
    log, seen = run(grow_grad2d, grow_scale3d, True)
    assert int(seen["clone"].sum()) > 0 and int(seen["split"].sum()) > 0, "want both clones and splits"
    golden = {
        "source": "tests/golden/train_step_golden.py (gsplat 1.5.3 DefaultStrategy, torch "
                  f"{torch.__version__}, peer rasteriser)",
        "antialiased": args.antialiased,
        "seed": SEED, "steps": STEPS, "max_sh_degree": SH_DEGREE, "sh_degree_interval": SH_INTERVAL,
        "refine_start": REFINE_START, "refine_every": REFINE_EVERY,
        "grow_grad2d": grow_grad2d, "grow_grad2d_gap": grad_gap,
        "grow_scale3d": grow_scale3d, "grow_scale3d_gap": scale_gap * scene_scale,
        "scene_scale": scene_scale,
        "initial": dump(ours({k: v for k, v, _ in params})),
        **log,
        "densify": {
            "grad2d": seen["grad2d"].double().numpy().tolist(),
            "count": seen["count"].double().numpy().tolist(),
            "clone": seen["clone"].numpy().astype(int).tolist(),
            "split": seen["split"].numpy().astype(int).tolist(),
            "pruned": seen["pruned"],
        },
    }
    name = "golden_antialiased.json" if args.antialiased else "golden.json"
    with open(os.path.join(OUT, name), "w") as fh:
        json.dump(golden, fh)
    print(f"losses {log['loss']}; views {log['views']}; {int(seen['clone'].sum())} cloned, "
          f"{int(seen['split'].sum())} split, {seen['pruned']} pruned -> {log['splats_after']} splats; "
          f"grow_grad2d {grow_grad2d:.3g} (gap {grad_gap:.2g}), grow_scale3d {grow_scale3d:.3g}")


if __name__ == "__main__":
    main()
