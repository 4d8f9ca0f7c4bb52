#!/usr/bin/env python3
"""Builds the synthetic COLMAP case that `benches/train_vs_gsplat.sh` trains on: views of a
known 3DGS scene (assets/luigi.ply by default) rendered by `difix3d render` from cameras on a
sphere around it, a PINHOLE COLMAP text model of those cameras, and a sparse "SfM" cloud of
noisy points drawn from the scene's splats (positions jittered, colours from the DC term).

Defaults give the issue-22 case: 24 views at 128x96 (20 image_train_*, 4 image_eval_*), 300
points with 2% positional noise, black background. Needs numpy (the gsplat peer's venv has it):

  python benches/make_train_case.py --difix3d target/release/difix3d --out /tmp/luigi24
  ~/.cache/peer-venv/bin/python benches/make_train_case.py --peer ../shared/tools/gsplat-peer --out /tmp/luigi24
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

SH_C0 = 0.28209479177387814


def read_ply(path):
    """Means, opacities and DC colours of an INRIA-layout binary little-endian PLY."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        sys.exit(f"{path}: only binary little-endian PLY files are supported")
    props = [l.split()[-1] for l in header if l.startswith("property float")]
    if len(props) != sum(1 for l in header if l.startswith("property")):
        sys.exit(f"{path}: every property must be a float")
    table = np.frombuffer(data[end:], dtype="<f4").reshape(-1, len(props))
    col = {p: table[:, i] for i, p in enumerate(props)}
    means = np.stack([col["x"], col["y"], col["z"]], -1).astype(np.float64)
    opacity = 1.0 / (1.0 + np.exp(-col["opacity"].astype(np.float64)))
    dc = np.stack([col["f_dc_0"], col["f_dc_1"], col["f_dc_2"]], -1).astype(np.float64)
    rgb = np.clip(dc * SH_C0 + 0.5, 0.0, 1.0)
    return means, opacity, rgb


def look_at(eye, target, up):
    """Camera-to-world 4x4 (COLMAP/OpenCV axes: x right, y down, z forward)."""
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, fwd, eye
    return m


def rotmat_to_qvec(r):
    """COLMAP qvec (w, x, y, z) of a rotation matrix."""
    t = np.trace(r)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    return q / np.linalg.norm(q)


def render_with_peer(peer_dir, scene, cams, w, h, f, out_dir):
    """Renders the PLY (SH degree 0) with the peer's port of gsplat's rasteriser."""
    import torch
    from PIL import Image

    sys.path.insert(0, os.path.abspath(peer_dir))
    from train_gsplat_cpu import rasterization_cpu  # noqa: E402

    with open(scene, "rb") as fh:
        data = fh.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    props = [l.split()[-1] for l in data[:end].decode("ascii").splitlines() if l.startswith("property")]
    t = torch.from_numpy(np.frombuffer(data[end:], dtype="<f4").reshape(-1, len(props)).copy())
    c = {p: t[:, i] for i, p in enumerate(props)}
    means = torch.stack([c["x"], c["y"], c["z"]], -1)
    quats = torch.stack([c[f"rot_{i}"] for i in range(4)], -1)
    scales = torch.exp(torch.stack([c[f"scale_{i}"] for i in range(3)], -1))
    opac = torch.sigmoid(c["opacity"])
    sh = torch.stack([c["f_dc_0"], c["f_dc_1"], c["f_dc_2"]], -1)[:, None, :]
    K = torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=torch.float32)[None]
    with torch.no_grad():
        for name, c2w in cams:
            view = torch.linalg.inv(torch.from_numpy(c2w).float())[None]
            img, _, _ = rasterization_cpu(means, quats, scales, opac, sh, view, K, w, h, 0)
            arr = (img[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(out_dir, name))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--difix3d", help="render the views with this difix3d binary")
    who.add_argument("--peer", help="render them with the gsplat peer's torch rasteriser instead (the folder "
                     "holding train_gsplat_cpu.py; run this script with the peer's python)")
    ap.add_argument("--scene", default="assets/luigi.ply")
    ap.add_argument("--out", required=True)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--eval-every", type=int, default=6, help="every Nth view is an eval view")
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--fov-y", type=float, default=40.0, help="degrees")
    ap.add_argument("--distance", type=float, default=2.0, help="camera distance / scene radius")
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--noise", type=float, default=0.02, help="point jitter, fraction of the scene radius")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(args.seed)

    means, opacity, rgb = read_ply(args.scene)
    centre = np.median(means, 0)
    radius = float(np.percentile(np.linalg.norm(means - centre, axis=-1), 95))
    up = np.array([0.0, -1.0, 0.0])  # the scene's up is -y (COLMAP convention)
    fy = 0.5 * h / math.tan(math.radians(args.fov_y) / 2)
    cams = []
    for i in range(args.views):
        az = 2 * math.pi * i / args.views
        el = math.radians(10.0 + 20.0 * math.sin(3 * az))  # between -10 and 30 degrees
        d = args.distance * radius
        eye = centre + d * np.array([math.cos(el) * math.cos(az), -math.sin(el), math.cos(el) * math.sin(az)])
        split = "eval" if i % args.eval_every == args.eval_every // 2 else "train"
        cams.append((f"image_{split}_{i:04d}.png", look_at(eye, centre, up)))

    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    sparse = os.path.join(args.out, "colmap", "sparse", "0")
    os.makedirs(sparse, exist_ok=True)
    cam_json = [
        {"name": name, "width": w, "height": h, "fx": fy, "fy": fy, "cx": w / 2, "cy": h / 2,
         "world_from_camera": c2w.tolist()}
        for name, c2w in cams
    ]
    json_path = os.path.join(args.out, "cameras.json")
    with open(json_path, "w") as f:
        json.dump(cam_json, f, indent=1)
    if args.difix3d:
        tmp = os.path.join(args.out, "render_tmp")
        subprocess.run([args.difix3d, "render", "--scene", args.scene, "--camera-json", json_path,
                        "--out", tmp, "--background", "0,0,0"], check=True)
        for name, _ in cams:
            shutil.move(os.path.join(tmp, name), os.path.join(args.out, "images", name))
        shutil.rmtree(tmp)
    else:
        render_with_peer(args.peer, args.scene, cams, w, h, fy, os.path.join(args.out, "images"))

    with open(os.path.join(sparse, "cameras.txt"), "w") as f:
        f.write(f"1 PINHOLE {w} {h} {fy!r} {fy!r} {w / 2!r} {h / 2!r}\n")
    with open(os.path.join(sparse, "images.txt"), "w") as f:
        for i, (name, c2w) in enumerate(cams):
            w2c = np.linalg.inv(c2w)
            q = rotmat_to_qvec(w2c[:3, :3])
            t = w2c[:3, 3]
            f.write(f"{i + 1} {' '.join(repr(float(v)) for v in q)} {' '.join(repr(float(v)) for v in t)} 1 {name}\n\n")
    # SfM-like points: splats drawn with probability ~ opacity, jittered.
    p = opacity / opacity.sum()
    pick = rng.choice(len(means), size=args.points, replace=False, p=p)
    pts = means[pick] + rng.normal(0.0, args.noise * radius, size=(args.points, 3))
    cols = np.round(rgb[pick] * 255).astype(int)
    with open(os.path.join(sparse, "points3D.txt"), "w") as f:
        for i, (x, c) in enumerate(zip(pts, cols)):
            f.write(f"{i + 1} {float(x[0])!r} {float(x[1])!r} {float(x[2])!r} {c[0]} {c[1]} {c[2]} 0.5\n")
    print(f"{args.out}: {len(cams)} views {w}x{h}, {args.points} points, scene radius {radius:.3f}")


if __name__ == "__main__":
    main()
