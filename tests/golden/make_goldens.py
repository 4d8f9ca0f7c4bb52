#!/usr/bin/env python3
"""Generate the render goldens in tests/fixtures/render/ with reference_render.py.

Run from anywhere (paths are relative to the repository root), after
scripts/fetch_assets.sh has filled assets/:

    python tests/golden/make_goldens.py            # all cases
    python tests/golden/make_goldens.py --only bonsai

See README.md in this folder.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_render import SH_C0, Camera, Scene, look_at, quat_to_rotmat, render  # noqa: E402

REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT_REL = "tests/fixtures/render"
OUT = os.path.join(REPO, OUT_REL)
BONSAI_REL = "assets/bonsai-7k-mini.splat"
MAUP_SPARSE_REL = "assets/maupertuis/colmap/sparse/0"
MAUP_PLY_REL = OUT_REL + "/maupertuis_sh3.ply"


# ----------------------------------------------------------------------------- loaders


def load_splat(path):
    """antimatter15 .splat: 32 bytes/splat = pos f32x3, scale f32x3 (linear),
    rgba u8x4, rot u8x4 (w,x,y,z as (b-128)/128). Conversions in float32, exactly
    as the Rust loader does them; returns a float32 Scene (SH degree 0)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 32:
        raise ValueError(f"{path}: size {raw.size} is not a multiple of 32")
    raw = raw.reshape(-1, 32)
    f32 = np.float32
    pos = raw[:, 0:12].copy().view("<f4").reshape(-1, 3).astype(f32)
    scale = raw[:, 12:24].copy().view("<f4").reshape(-1, 3).astype(f32)
    rgba = raw[:, 24:28].astype(f32)
    rot = raw[:, 28:32].astype(f32)

    log_scales = np.log(np.maximum(scale, f32(1e-8)))
    f_dc = (rgba[:, :3] / f32(255.0) - f32(0.5)) / f32(SH_C0)
    a = np.clip(rgba[:, 3] / f32(255.0), f32(0.5 / 255.0), f32(1.0 - 0.5 / 255.0))
    opacity_logits = np.log(a / (f32(1.0) - a))
    q = (rot - f32(128.0)) / f32(128.0)
    q = q / np.sqrt(np.sum(q * q, axis=1, keepdims=True, dtype=f32))
    for arr in (log_scales, f_dc, opacity_logits, q):
        assert arr.dtype == np.float32
    return Scene(pos, log_scales, q, opacity_logits, f_dc[:, None, :])


PLY_PROPS_SH3 = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] +
                 [f"f_rest_{i}" for i in range(45)] +
                 ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_inria_ply(path, scene):
    """INRIA 3DGS binary little-endian PLY (float properties); f_rest is
    channel-major: f_rest[c*(K-1) + (k-1)] = sh[k, c]."""
    n, K = scene.sh.shape[0], scene.sh.shape[1]
    assert K == 16
    rest = np.transpose(scene.sh[:, 1:, :], (0, 2, 1)).reshape(n, 3 * (K - 1))
    cols = [scene.means, np.zeros((n, 3)), scene.sh[:, 0, :], rest, scene.opacity_logits[:, None],
            scene.log_scales, scene.quats]
    data = np.concatenate([np.asarray(c, dtype=np.float64) for c in cols], axis=1).astype("<f4")
    assert data.shape[1] == len(PLY_PROPS_SH3)
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
    header += "".join(f"property float {p}\n" for p in PLY_PROPS_SH3) + "end_header\n"
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())


def read_inria_ply(path):
    """Reads back an INRIA PLY (float32 properties) as a float32 Scene."""
    with open(path, "rb") as f:
        buf = f.read()
    end = buf.index(b"end_header\n") + len(b"end_header\n")
    lines = buf[:end].decode("ascii").splitlines()
    n = int(next(l for l in lines if l.startswith("element vertex")).split()[2])
    props = [l.split()[2] for l in lines if l.startswith("property")]
    data = np.frombuffer(buf, dtype="<f4", offset=end, count=n * len(props)).reshape(n, len(props))
    col = {p: data[:, i] for i, p in enumerate(props)}
    rest = sorted((p for p in props if p.startswith("f_rest_")), key=lambda p: int(p[7:]))
    K = len(rest) // 3 + 1
    sh = np.zeros((n, K, 3), dtype=np.float32)
    for c in range(3):
        sh[:, 0, c] = col[f"f_dc_{c}"]
        for k in range(1, K):
            sh[:, k, c] = col[f"f_rest_{c * (K - 1) + k - 1}"]
    stack = lambda names: np.stack([col[p] for p in names], axis=1)  # noqa: E731
    return Scene(stack(["x", "y", "z"]), stack(["scale_0", "scale_1", "scale_2"]),
                 stack(["rot_0", "rot_1", "rot_2", "rot_3"]), col["opacity"].copy(), sh)


def read_colmap_text(sparse_dir):
    cams = {}
    with open(os.path.join(sparse_dir, "cameras.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                e = line.split()
                cams[int(e[0])] = (e[1], int(e[2]), int(e[3]), [float(v) for v in e[4:]])
    images = []
    with open(os.path.join(sparse_dir, "images.txt")) as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        e = line.split()
        images.append((int(e[0]), [float(v) for v in e[1:5]], [float(v) for v in e[5:8]], int(e[8]), e[9]))
        i += 1  # skip the POINTS2D line
    pts, rgb = [], []
    with open(os.path.join(sparse_dir, "points3D.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                e = line.split()
                pts.append([float(v) for v in e[1:4]])
                rgb.append([int(v) for v in e[4:7]])
    return cams, sorted(images, key=lambda im: im[4]), np.array(pts), np.array(rgb)


# ----------------------------------------------------------------------------- scenes


def logit(p):
    return math.log(p / (1.0 - p))


def make_maupertuis_scene(points, rgb):
    """Degree-3 scene from the COLMAP points (float64; quantised to f32 by the PLY)."""
    n = len(points)
    rng = np.random.default_rng(0)
    f_dc = (rgb / 255.0 - 0.5) / SH_C0
    sh = np.zeros((n, 16, 3))
    sh[:, 0, :] = f_dc
    sh[:, 1:, :] = rng.uniform(-0.15, 0.15, size=(n, 15, 3))
    d2 = np.sum((points[:, None, :] - points[None, :, :]) ** 2, axis=-1)
    np.fill_diagonal(d2, np.inf)
    nn3 = np.sqrt(np.sort(d2, axis=1)[:, :3])
    base = 0.5 * nn3.mean(axis=1)
    log_scales = np.log(base[:, None] * np.array([1.0, 0.6, 0.3])[None, :])
    quats = rng.normal(size=(n, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    opl = np.full(n, logit(0.8))
    return Scene(points.astype(np.float64), log_scales, quats, opl, sh)


def maupertuis_cameras(cams, images, width, height):
    out = []
    for image_id, qvec, tvec, cam_id, name in images:
        model, w0, h0, params = cams[cam_id]
        assert model == "SIMPLE_PINHOLE", model
        f, cx, cy = params
        sx, sy = width / w0, height / h0
        R = quat_to_rotmat(np.array(qvec))  # world -> camera
        t = np.array(tvec)
        wfc = np.eye(4)
        wfc[:3, :3] = R.T
        wfc[:3, 3] = -R.T @ t
        out.append(Camera(width, height, f * sx, f * sy, cx * sx, cy * sy, wfc, name))
    return out


# Bonsai scene frame (COLMAP world of the Mip-NeRF 360 capture). Found with
# `--bonsai-frame`: the cloth-covered table top is the dominant plane (RANSAC on
# splats with opacity > 0.5), normal ~ -y; "up" is the side the tree is on.
# The centre is the horizontal median of the pot + tree splats, 1.0 above the
# table top (the pot sits on the table, the crown is ~1.3..2.0 above it).
BONSAI_UP = (0.0405, -0.9983, 0.0427)          # normalised in bonsai_cameras()
BONSAI_CENTRE = (-0.0235, -0.1600, 0.3892)
BONSAI_TABLE_POINT = (-0.5005, 0.8224, 0.3186)  # a point on the table-top plane
BONSAI_W, BONSAI_H = 320, 200                   # 200 is not a multiple of 16
BONSAI_VFOV_DEG = 50.0
# (name, azimuth deg, elevation deg, distance, sh_degree, background)
# Azimuth is measured in the horizontal plane from e1 = normalise(up x [1,0,0]).
BONSAI_VIEWS = [
    ("bonsai_az000_el20", 0.0, 20.0, 3.2, 0, (0.0, 0.0, 0.0)),
    ("bonsai_az135_el35", 135.0, 35.0, 3.0, 0, (0.0, 0.0, 0.0)),
    ("bonsai_az270_el10_bg", 270.0, 10.0, 3.4, 0, (0.2, 0.4, 0.6)),
]


def bonsai_cameras(width=BONSAI_W, height=BONSAI_H, vfov_deg=BONSAI_VFOV_DEG, views=BONSAI_VIEWS):
    f = 0.5 * height / math.tan(math.radians(vfov_deg) / 2)
    up = np.asarray(BONSAI_UP, dtype=np.float64)
    up /= np.linalg.norm(up)
    centre = np.asarray(BONSAI_CENTRE, dtype=np.float64)
    # an orthonormal frame (e1, e2) of the horizontal plane
    e1 = np.cross(up, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    cams = []
    for name, azim, elev, dist, _, _ in views:
        a, e = math.radians(azim), math.radians(elev)
        dirn = math.cos(e) * (math.cos(a) * e1 + math.sin(a) * e2) + math.sin(e) * up
        eye = centre + dist * dirn
        cams.append(Camera(width, height, f, f, width / 2, height / 2, look_at(eye, centre, up), name))
    return cams


def bonsai_frame(scene):
    """Estimate (up, table point, centre) from the splats; prints what it finds."""
    P = scene.means.astype(np.float64)
    op = 1.0 / (1.0 + np.exp(-scene.opacity_logits.astype(np.float64)))
    Q = P[op > 0.5]
    rng = np.random.default_rng(0)
    best = (-1, None, None)
    for _ in range(3000):
        a, b, c = Q[rng.choice(len(Q), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        cnt = int((np.abs((Q - a) @ n) < 0.02).sum())
        if cnt > best[0]:
            best = (cnt, n, a)
    cnt, n, a = best
    inl = Q[np.abs((Q - a) @ n) < 0.02]
    table = inl.mean(axis=0)
    n = np.linalg.svd(inl - table)[2][2]
    # up = the side of the table with the (dense) pot + tree near the table's middle
    h = (P - table) @ n
    r = np.linalg.norm((P - table) - np.outer(h, n), axis=1)
    if ((h > 0.1) & (h < 2.5) & (r < 1.2)).sum() < ((h < -0.1) & (h > -2.5) & (r < 1.2)).sum():
        n = -n
        h = -h
    m = (h > 0.1) & (h < 2.5) & (r < 1.2) & (op > 0.3)
    foot = np.median(P[m] - np.outer(h[m], n), axis=0)
    centre = foot + 1.0 * n
    print(f"bonsai frame: table plane inliers {cnt}, up {np.round(n, 4).tolist()}, "
          f"table point {np.round(table, 4).tolist()}, centre {np.round(centre, 4).tolist()} "
          f"(tree/pot splats: {int(m.sum())}, heights 5..95% {np.round(np.percentile(h[m], [5, 95]), 2).tolist()})")
    return n, table, centre


# ----------------------------------------------------------------------------- output


def save_case(name, rgb, alpha):
    img = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    a8 = np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(img).save(os.path.join(OUT, f"{name}.png"), optimize=True)
    Image.fromarray(a8).save(os.path.join(OUT, f"{name}_alpha.png"), optimize=True)


def run_case(name, scene_rel, scene, cam, sh_degree, background):
    rgb, alpha, depth, st = render(scene.astype(np.float64), cam, sh_degree, background, return_stats=True)
    save_case(name, rgb, alpha)
    covered = alpha > 0.5
    case = {
        "name": name, "scene": scene_rel, "camera": cam.to_json(), "sh_degree": int(sh_degree),
        "background": [float(v) for v in background], "image": f"{name}.png", "alpha": f"{name}_alpha.png",
        "num_splats": st["num_splats"], "num_rendered": st["num_rendered"],
        "num_tile_intersections": st["num_tile_intersections"],
        "mean_colour": [float(v) for v in rgb.reshape(-1, 3).mean(axis=0)],
        "mean_alpha": float(alpha.mean()),
        "mean_depth_where_alpha_gt_0.5": float(depth[covered].mean()) if covered.any() else None,
    }
    print(f"  {name}: {cam.width}x{cam.height} sh={sh_degree} bg={background} rendered "
          f"{st['num_rendered']}/{st['num_splats']} ({st['num_tile_intersections']} tile hits), "
          f"mean rgb {np.round(case['mean_colour'], 3).tolist()}, mean alpha {case['mean_alpha']:.3f}, "
          f"{st['seconds']:.1f}s", flush=True)
    return case


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["bonsai", "maupertuis"], help="regenerate only one group")
    ap.add_argument("--bonsai-frame", action="store_true",
                    help="only estimate and print the bonsai scene's up vector and centre")
    args = ap.parse_args()
    if args.bonsai_frame:
        bonsai_frame(load_splat(os.path.join(REPO, BONSAI_REL)))
        return 0
    os.makedirs(OUT, exist_ok=True)
    cases_path = os.path.join(OUT, "cases.json")
    old = []
    if args.only and os.path.exists(cases_path):
        with open(cases_path) as f:
            prev = json.load(f)
        if isinstance(prev, dict):  # an older layout: {"cases": [...]}
            prev = prev["cases"]
        old = [c for c in prev if not c["name"].startswith(args.only)]
    cases = []
    t0 = time.perf_counter()

    if args.only in (None, "bonsai"):
        print(f"bonsai: {BONSAI_REL}")
        scene = load_splat(os.path.join(REPO, BONSAI_REL))
        for cam, view in zip(bonsai_cameras(), BONSAI_VIEWS):
            cases.append(run_case(cam.name, BONSAI_REL, scene, cam, view[4], view[5]))

    if args.only in (None, "maupertuis"):
        print(f"maupertuis: {MAUP_SPARSE_REL} -> {MAUP_PLY_REL}")
        cams, images, pts, rgb = read_colmap_text(os.path.join(REPO, MAUP_SPARSE_REL))
        assert len(pts) == 1039 and len(images) == 4
        write_inria_ply(os.path.join(REPO, MAUP_PLY_REL), make_maupertuis_scene(pts, rgb))
        scene = read_inria_ply(os.path.join(REPO, MAUP_PLY_REL))  # render what the file holds (f32)
        W, H = round(1919 / 8), round(1079 / 8)
        mcams = maupertuis_cameras(cams, images, W, H)
        for cam in mcams:
            stem = os.path.splitext(cam.name)[0]
            cases.append(run_case(f"maupertuis_sh3_{stem}", MAUP_PLY_REL, scene, cam, 3, (0.0, 0.0, 0.0)))
        cam = mcams[2]
        cases.append(run_case(f"maupertuis_sh1_white_{os.path.splitext(cam.name)[0]}", MAUP_PLY_REL, scene,
                              cam, 1, (1.0, 1.0, 1.0)))

    all_cases = sorted(old + cases, key=lambda c: c["name"])
    # A top-level JSON array (tests/it/render_parity.rs reads Vec<Case>); the
    # conventions are documented in tests/golden/README.md.
    with open(cases_path, "w") as f:
        json.dump(all_cases, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, fn)) for fn in os.listdir(OUT))
    print(f"wrote {len(all_cases)} cases to {OUT_REL}/ ({total / 1024:.0f} KiB) in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
