#!/usr/bin/env python3
"""Float64 numpy reference of the 3DGS forward rasterizer used by difix3d.

The Rust/WGSL renderer implements exactly the same equations in f32; the
goldens in tests/fixtures/render/ are made with this file (see make_goldens.py
and README.md in this folder for the equations).

    python reference_render.py --selftest     # vectorised vs per-pixel loop
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

TILE = 16
NEAR = 0.01
FAR = 1e10
DILATION = 0.3
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658,
         0.3731763325901154, -0.4570457994644658, 1.445305721320277,
         -0.5900435899266435)


@dataclass
class Scene:
    means: np.ndarray           # [N,3]
    log_scales: np.ndarray      # [N,3]
    quats: np.ndarray           # [N,4] (w,x,y,z), normalised by the renderer
    opacity_logits: np.ndarray  # [N]
    sh: np.ndarray              # [N,K,3], K=(d+1)^2, k=0 is DC

    @property
    def sh_degree(self):
        k = self.sh.shape[1]
        d = int(round(math.sqrt(k))) - 1
        assert (d + 1) ** 2 == k, f"bad SH coefficient count {k}"
        return d

    def __len__(self):
        return self.means.shape[0]

    def astype(self, dtype):
        return Scene(*(np.asarray(a, dtype=dtype) for a in
                       (self.means, self.log_scales, self.quats, self.opacity_logits, self.sh)))


@dataclass
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_from_camera: np.ndarray  # 4x4, OpenCV axes (+x right, +y down, +z forward)
    name: str = ""

    def to_json(self):
        return {"name": self.name, "width": int(self.width), "height": int(self.height),
                "fx": float(self.fx), "fy": float(self.fy), "cx": float(self.cx), "cy": float(self.cy),
                "world_from_camera": [[float(v) for v in row] for row in np.asarray(self.world_from_camera)]}


# ----------------------------------------------------------------------------- math


def quat_to_rotmat(q):
    """q [...,4] (w,x,y,z), normalised here. Returns [...,3,3]."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    q = q / np.where(n > 0, n, 1.0)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    r = np.empty(q.shape[:-1] + (3, 3))
    r[..., 0, 0] = 1 - 2 * (y * y + z * z)
    r[..., 0, 1] = 2 * (x * y - w * z)
    r[..., 0, 2] = 2 * (x * z + w * y)
    r[..., 1, 0] = 2 * (x * y + w * z)
    r[..., 1, 1] = 1 - 2 * (x * x + z * z)
    r[..., 1, 2] = 2 * (y * z - w * x)
    r[..., 2, 0] = 2 * (x * z - w * y)
    r[..., 2, 1] = 2 * (y * z + w * x)
    r[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def eval_sh(deg, sh, dirs):
    """INRIA's eval_sh (utils/sh_utils.py). sh [N,K,3] (K >= (deg+1)^2), dirs [N,3] unit."""
    result = SH_C0 * sh[:, 0]
    if deg > 0:
        x, y, z = dirs[:, 0:1], dirs[:, 1:2], dirs[:, 2:3]
        result = (result - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3])
        if deg > 1:
            xx, yy, zz = x * x, y * y, z * z
            xy, yz, xz = x * y, y * z, x * z
            result = (result +
                      SH_C2[0] * xy * sh[:, 4] +
                      SH_C2[1] * yz * sh[:, 5] +
                      SH_C2[2] * (2.0 * zz - xx - yy) * sh[:, 6] +
                      SH_C2[3] * xz * sh[:, 7] +
                      SH_C2[4] * (xx - yy) * sh[:, 8])
            if deg > 2:
                result = (result +
                          SH_C3[0] * y * (3 * xx - yy) * sh[:, 9] +
                          SH_C3[1] * xy * z * sh[:, 10] +
                          SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11] +
                          SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12] +
                          SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13] +
                          SH_C3[5] * z * (xx - yy) * sh[:, 14] +
                          SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15])
    return result


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- projection


def project(scene, cam, sh_degree=None):
    """Vectorised per-splat preprocessing. Returns a dict of float64 arrays over
    all N splats; `visible` marks splats that passed every cull and touch >= 1 tile."""
    n = len(scene)
    W, H = int(cam.width), int(cam.height)
    fx, fy, cx, cy = float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy)
    tiles_x, tiles_y = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    deg = scene.sh_degree if sh_degree is None else min(int(sh_degree), scene.sh_degree)

    wfc = np.asarray(cam.world_from_camera, dtype=np.float64)
    cfw = np.linalg.inv(wfc)
    R_cw, t_cw = cfw[:3, :3], cfw[:3, 3]
    means = np.asarray(scene.means, dtype=np.float64)

    p_c = means @ R_cw.T + t_cw
    x, y, z = p_c[:, 0], p_c[:, 1], p_c[:, 2]
    ok = (z >= NEAR) & (z <= FAR)
    zs = np.where(ok, z, 1.0)  # avoid division warnings on culled splats

    R = quat_to_rotmat(scene.quats)                         # [N,3,3]
    s = np.exp(np.asarray(scene.log_scales, dtype=np.float64))
    M = R * s[:, None, :]                                   # R S
    sigma3 = M @ np.swapaxes(M, 1, 2)                       # R S S^T R^T
    sigma_c = R_cw[None] @ sigma3 @ R_cw.T[None]

    tan_fovx, tan_fovy = 0.5 * W / fx, 0.5 * H / fy
    lim_x_pos = (W - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (H - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = zs * np.minimum(lim_x_pos, np.maximum(-lim_x_neg, x / zs))
    ty = zs * np.minimum(lim_y_pos, np.maximum(-lim_y_neg, y / zs))
    J = np.zeros((n, 2, 3))
    J[:, 0, 0] = fx / zs
    J[:, 0, 2] = -fx * tx / (zs * zs)
    J[:, 1, 1] = fy / zs
    J[:, 1, 2] = -fy * ty / (zs * zs)
    cov2d = J @ sigma_c @ np.swapaxes(J, 1, 2)
    a = cov2d[:, 0, 0] + DILATION
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + DILATION
    det = a * c - b * b
    ok &= det > 0
    dets = np.where(ok, det, 1.0)
    conic = np.stack([c / dets, -b / dets, a / dets], axis=1)

    mean2d = np.stack([fx * x / zs + cx, fy * y / zs + cy], axis=1)
    mid = 0.5 * (a + c)
    lam = mid + np.sqrt(np.maximum(0.01, mid * mid - det))
    radius = np.ceil(3.0 * np.sqrt(np.where(ok, lam, 0.0)))
    ok &= radius > 0
    ok &= ~((mean2d[:, 0] + radius <= 0) | (mean2d[:, 0] - radius >= W) |
            (mean2d[:, 1] + radius <= 0) | (mean2d[:, 1] - radius >= H))

    tmin_x = np.clip(np.floor((mean2d[:, 0] - radius) / TILE), 0, tiles_x).astype(np.int64)
    tmax_x = np.clip(np.ceil((mean2d[:, 0] + radius) / TILE), 0, tiles_x).astype(np.int64)
    tmin_y = np.clip(np.floor((mean2d[:, 1] - radius) / TILE), 0, tiles_y).astype(np.int64)
    tmax_y = np.clip(np.ceil((mean2d[:, 1] + radius) / TILE), 0, tiles_y).astype(np.int64)
    ok &= (tmax_x > tmin_x) & (tmax_y > tmin_y)
    zero = np.zeros_like(tmin_x)
    tmin_x, tmax_x = np.where(ok, tmin_x, zero), np.where(ok, tmax_x, zero)
    tmin_y, tmax_y = np.where(ok, tmin_y, zero), np.where(ok, tmax_y, zero)

    cam_centre = wfc[:3, 3]
    d = means - cam_centre
    dn = np.linalg.norm(d, axis=1, keepdims=True)
    d = d / np.where(dn > 0, dn, 1.0)
    sh = np.asarray(scene.sh, dtype=np.float64)
    colour = np.maximum(eval_sh(deg, sh, d) + 0.5, 0.0)
    opacity = sigmoid(np.asarray(scene.opacity_logits, dtype=np.float64))

    return dict(visible=ok, depth=z, mean2d=mean2d, conic=conic, radius=radius,
                colour=colour, opacity=opacity, tile_min=np.stack([tmin_x, tmin_y], 1),
                tile_max=np.stack([tmax_x, tmax_y], 1), tiles=(tiles_x, tiles_y), sh_degree_used=deg)


def tile_lists(proj):
    """Duplicate every visible splat into each tile it touches, sorted by
    (tile, depth, splat index). Returns (tile_ids, splat_ids, offsets[tiles+1])."""
    tiles_x, tiles_y = proj["tiles"]
    vis = np.nonzero(proj["visible"])[0]
    tmin, tmax = proj["tile_min"][vis], proj["tile_max"][vis]
    nx, ny = tmax[:, 0] - tmin[:, 0], tmax[:, 1] - tmin[:, 1]
    counts = nx * ny
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(vis)), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    local = np.arange(total) - start
    lx = local % np.repeat(nx, counts)
    ly = local // np.repeat(nx, counts)
    tile_ids = (tmin[owner, 1] + ly) * tiles_x + (tmin[owner, 0] + lx)
    splat_ids = vis[owner]
    order = np.lexsort((splat_ids, proj["depth"][splat_ids], tile_ids))
    tile_ids, splat_ids = tile_ids[order], splat_ids[order]
    offsets = np.searchsorted(tile_ids, np.arange(tiles_x * tiles_y + 1))
    return tile_ids, splat_ids, offsets


def _composite_tile(px, py, ids, proj, chunk0=256, chunk_max=16384):
    """Front-to-back compositing of the splats `ids` (already sorted) over the
    pixel centres (px, py). Returns colour [P,3], depth_acc [P], T [P]."""
    P = px.shape[0]
    T = np.ones(P)
    col = np.zeros((P, 3))
    dep = np.zeros(P)
    done = np.zeros(P, dtype=bool)
    m2d, conic = proj["mean2d"], proj["conic"]
    pos, chunk = 0, chunk0
    while pos < len(ids) and not done.all():
        sl = ids[pos:pos + chunk]
        pos += len(sl)
        chunk = min(chunk * 2, chunk_max)
        dx = m2d[sl, 0][None, :] - px[:, None]
        dy = m2d[sl, 1][None, :] - py[:, None]
        A, B, C = conic[sl, 0][None, :], conic[sl, 1][None, :], conic[sl, 2][None, :]
        sigma = 0.5 * (A * dx * dx + C * dy * dy) + B * dx * dy
        with np.errstate(over="ignore"):
            alpha = np.minimum(ALPHA_MAX, proj["opacity"][sl][None, :] * np.exp(-sigma))
        valid = (sigma >= 0) & (alpha >= ALPHA_MIN) & ~done[:, None]
        a = np.where(valid, alpha, 0.0)
        # cumprod of [T, 1-a0, 1-a1, ...] reproduces the sequential T updates exactly
        cp = np.cumprod(np.concatenate([T[:, None], 1.0 - a], axis=1), axis=1)
        t_before, t_after = cp[:, :-1], cp[:, 1:]
        stop = valid & (t_after <= T_MIN)
        has_stop = stop.any(axis=1)
        first = np.where(has_stop, np.argmax(stop, axis=1), stop.shape[1])
        contrib = valid & (np.arange(stop.shape[1])[None, :] < first[:, None])
        w = np.where(contrib, a * t_before, 0.0)
        col += w @ proj["colour"][sl]
        dep += w @ proj["depth"][sl]
        rows = np.arange(P)
        T_new = np.where(has_stop, t_before[rows, np.minimum(first, stop.shape[1] - 1)], t_after[:, -1])
        T = np.where(done, T, T_new)
        done |= has_stop
    return col, dep, T


def render(scene, cam, sh_degree=None, background=(0.0, 0.0, 0.0), return_stats=False, chunk=256):
    """Returns (rgb [H,W,3], alpha [H,W], depth [H,W]) float64, plus stats if asked.
    `chunk` is the first number of splats composited at once per tile (it doubles
    until every pixel of the tile has stopped); it does not change the result."""
    t0 = time.perf_counter()
    proj = project(scene, cam, sh_degree)
    W, H = int(cam.width), int(cam.height)
    tiles_x, tiles_y = proj["tiles"]
    _, splat_ids, offsets = tile_lists(proj)
    bg = np.asarray(background, dtype=np.float64)
    rgb = np.zeros((H, W, 3))
    alpha = np.zeros((H, W))
    depth = np.zeros((H, W))
    for ty in range(tiles_y):
        for tx in range(tiles_x):
            t = ty * tiles_x + tx
            x0, y0 = tx * TILE, ty * TILE
            x1, y1 = min(x0 + TILE, W), min(y0 + TILE, H)
            gx, gy = np.meshgrid(np.arange(x0, x1), np.arange(y0, y1))
            px, py = gx.ravel() + 0.5, gy.ravel() + 0.5
            ids = splat_ids[offsets[t]:offsets[t + 1]]
            col, dep, T = _composite_tile(px, py, ids, proj, chunk0=chunk)
            a = 1.0 - T
            rgb[y0:y1, x0:x1] = (col + T[:, None] * bg).reshape(y1 - y0, x1 - x0, 3)
            alpha[y0:y1, x0:x1] = a.reshape(y1 - y0, x1 - x0)
            depth[y0:y1, x0:x1] = (dep / np.maximum(a, 1e-10)).reshape(y1 - y0, x1 - x0)
    if not return_stats:
        return rgb, alpha, depth
    stats = {"num_splats": int(len(scene)), "num_rendered": int(proj["visible"].sum()),
             "num_tile_intersections": int(len(splat_ids)), "sh_degree_used": int(proj["sh_degree_used"]),
             "seconds": time.perf_counter() - t0}
    return rgb, alpha, depth, stats


# ----------------------------------------------------------------------------- slow reference


def render_loop(scene, cam, sh_degree=None, background=(0.0, 0.0, 0.0)):
    """Straightforward scalar implementation (python floats, per splat, per pixel).
    Only for small scenes: used by --selftest to check render()."""
    W, H = int(cam.width), int(cam.height)
    fx, fy, cx, cy = float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy)
    tiles_x, tiles_y = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    deg = scene.sh_degree if sh_degree is None else min(int(sh_degree), scene.sh_degree)
    wfc = np.asarray(cam.world_from_camera, dtype=np.float64)
    cfw = np.linalg.inv(wfc)
    Rcw = [[float(cfw[i, j]) for j in range(3)] for i in range(3)]
    tcw = [float(cfw[i, 3]) for i in range(3)]
    centre = [float(wfc[i, 3]) for i in range(3)]

    def matmul(A, B):
        return [[sum(A[i][k] * B[k][j] for k in range(len(B))) for j in range(len(B[0]))] for i in range(len(A))]

    def transpose(A):
        return [list(r) for r in zip(*A)]

    splats = []  # (z, index, mx, my, A, B, C, opacity, colour, tile rect)
    tan_fovx, tan_fovy = 0.5 * W / fx, 0.5 * H / fy
    for i in range(len(scene)):
        m = [float(v) for v in scene.means[i]]
        pc = [sum(Rcw[r][k] * m[k] for k in range(3)) + tcw[r] for r in range(3)]
        x, y, z = pc
        if z < NEAR or z > FAR:
            continue
        w_, qx, qy, qz = [float(v) for v in scene.quats[i]]
        qn = math.sqrt(w_ * w_ + qx * qx + qy * qy + qz * qz)
        w_, qx, qy, qz = w_ / qn, qx / qn, qy / qn, qz / qn
        R = [[1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w_ * qz), 2 * (qx * qz + w_ * qy)],
             [2 * (qx * qy + w_ * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w_ * qx)],
             [2 * (qx * qz - w_ * qy), 2 * (qy * qz + w_ * qx), 1 - 2 * (qx * qx + qy * qy)]]
        S = [[math.exp(float(scene.log_scales[i][j])) if j == k else 0.0 for k in range(3)] for j in range(3)]
        RS = matmul(R, S)
        sig3 = matmul(RS, transpose(RS))
        sigc = matmul(matmul(Rcw, sig3), transpose(Rcw))
        limxp = (W - cx) / fx + 0.3 * tan_fovx
        limxn = cx / fx + 0.3 * tan_fovx
        limyp = (H - cy) / fy + 0.3 * tan_fovy
        limyn = cy / fy + 0.3 * tan_fovy
        tx = z * min(limxp, max(-limxn, x / z))
        ty = z * min(limyp, max(-limyn, y / z))
        J = [[fx / z, 0.0, -fx * tx / (z * z)], [0.0, fy / z, -fy * ty / (z * z)]]
        cov = matmul(matmul(J, sigc), transpose(J))
        a, b, c = cov[0][0] + DILATION, cov[0][1], cov[1][1] + DILATION
        det = a * c - b * b
        if det <= 0:
            continue
        A, B, C = c / det, -b / det, a / det
        mx, my = fx * x / z + cx, fy * y / z + cy
        mid = 0.5 * (a + c)
        lam = mid + math.sqrt(max(0.01, mid * mid - det))
        r = math.ceil(3.0 * math.sqrt(lam))
        if r <= 0 or mx + r <= 0 or mx - r >= W or my + r <= 0 or my - r >= H:
            continue
        rect = (min(max(math.floor((mx - r) / TILE), 0), tiles_x), min(max(math.ceil((mx + r) / TILE), 0), tiles_x),
                min(max(math.floor((my - r) / TILE), 0), tiles_y), min(max(math.ceil((my + r) / TILE), 0), tiles_y))
        d = [m[k] - centre[k] for k in range(3)]
        dn = math.sqrt(sum(v * v for v in d))
        d = np.array([[v / dn for v in d]])
        col = np.maximum(eval_sh(deg, np.asarray(scene.sh[i:i + 1], dtype=np.float64), d)[0] + 0.5, 0.0)
        op = 1.0 / (1.0 + math.exp(-float(scene.opacity_logits[i])))
        splats.append((z, i, mx, my, A, B, C, op, [float(v) for v in col], rect))
    splats.sort(key=lambda s: (s[0], s[1]))

    rgb = np.zeros((H, W, 3))
    alpha = np.zeros((H, W))
    depth = np.zeros((H, W))
    stops = 0
    for yy in range(H):
        for xx in range(W):
            tx_, ty_ = xx // TILE, yy // TILE
            px, py = xx + 0.5, yy + 0.5
            T = 1.0
            col = [0.0, 0.0, 0.0]
            dep = 0.0
            for (z, i, mx, my, A, B, C, op, c, rect) in splats:
                if not (rect[0] <= tx_ < rect[1] and rect[2] <= ty_ < rect[3]):
                    continue
                dx, dy = mx - px, my - py
                sigma = 0.5 * (A * dx * dx + C * dy * dy) + B * dx * dy
                if sigma < 0:
                    continue
                al = min(ALPHA_MAX, op * math.exp(-sigma))
                if al < ALPHA_MIN:
                    continue
                nT = T * (1 - al)
                if nT <= T_MIN:
                    stops += 1
                    break
                for k in range(3):
                    col[k] += c[k] * al * T
                dep += z * al * T
                T = nT
            a = 1.0 - T
            rgb[yy, xx] = [col[k] + T * background[k] for k in range(3)]
            alpha[yy, xx] = a
            depth[yy, xx] = dep / max(a, 1e-10)
    return rgb, alpha, depth, {"num_rendered": len(splats), "rendered_ids": sorted(s[1] for s in splats),
                               "pixels_stopped": stops}


# ----------------------------------------------------------------------------- selftest


def look_at(eye, target, up):
    """world_from_camera for an OpenCV camera at `eye` looking at `target`;
    `up` is the world direction that should appear up (-y in the image)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, fwd, eye
    return m


def random_scene(rng, n, degree):
    means = rng.normal(size=(n, 3)) * [1.5, 1.0, 1.0] + [0, 0, 4.0]
    # a few special cases: behind the camera, inside the near plane, far off-screen
    means[0] = [0, 0, -1.0]
    means[1] = [0, 0, 0.005]
    means[2] = [30.0, 0, 4.0]
    means[3] = [-6.0, 3.0, 3.0]   # off-screen but large: exercises the Jacobian clamp
    log_scales = rng.uniform(-3.0, -0.8, size=(n, 3))
    log_scales[3] = [0.5, 0.5, 0.5]
    quats = rng.normal(size=(n, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    opl = rng.normal(size=n) * 2.0
    # an opaque cluster in the middle so that T drops below 1e-4 (early stop)
    k = slice(4, 24)
    means[k] = rng.normal(size=(20, 3)) * 0.05 + [0.1, -0.05, 3.0]
    log_scales[k] = np.log(0.3)
    opl[k] = 8.0
    sh = rng.uniform(-0.3, 0.3, size=(n, (degree + 1) ** 2, 3))
    sh[:, 0] = rng.normal(size=(n, 3))
    return Scene(means, log_scales, quats, opl, sh)


def selftest():
    rng = np.random.default_rng(1234)
    scene = random_scene(rng, 300, 3)
    cam = Camera(53, 37, 40.0, 42.0, 27.3, 17.9, np.eye(4), "selftest")
    cam2 = Camera(41, 33, 30.0, 30.0, 20.5, 16.5,
                  look_at([2.0, -1.0, 0.5], [0.0, 0.0, 4.0], [0.0, -1.0, 0.0]), "selftest2")
    worst = 0.0
    for c, deg, bg in ((cam, 3, (0.0, 0.0, 0.0)), (cam, 1, (0.2, 0.4, 0.6)), (cam2, 0, (1.0, 1.0, 1.0)),
                       (cam2, 2, (0.0, 0.0, 0.0))):
        t0 = time.perf_counter()
        rgb, alpha, depth, st = render(scene, c, deg, bg, return_stats=True)
        t1 = time.perf_counter()
        rgb_c, alpha_c, depth_c = render(scene, c, deg, bg, chunk=3)  # many chunk boundaries
        assert np.abs(rgb_c - rgb).max() < 1e-12 and np.abs(alpha_c - alpha).max() < 1e-12
        assert np.abs(depth_c - depth).max() < 1e-9
        rgb2, alpha2, depth2, st2 = render_loop(scene, c, deg, bg)
        t2 = time.perf_counter()
        err = max(np.abs(rgb - rgb2).max(), np.abs(alpha - alpha2).max(),
                  np.abs(depth - depth2).max() / max(1.0, np.abs(depth2).max()))
        worst = max(worst, err)
        print(f"selftest {c.name} {c.width}x{c.height} sh={deg} bg={bg}: max err {err:.3g}; "
              f"rendered {st['num_rendered']} vs {st2['num_rendered']}, "
              f"{st2['pixels_stopped']} px stopped early, alpha>0.5 on {(alpha > 0.5).mean():.0%}; "
              f"vectorised {t1 - t0:.2f}s, loop {t2 - t1:.2f}s")
        assert st["num_rendered"] == st2["num_rendered"], "culling differs"
        assert list(np.nonzero(project(scene, c, deg)["visible"])[0]) == st2["rendered_ids"], "culling differs"
        assert st2["pixels_stopped"] > 0 or c is cam2, "early stop not exercised"
    assert worst < 1e-9, f"vectorised render differs from the loop: {worst}"
    print(f"selftest OK (worst difference {worst:.3g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selftest", action="store_true", help="compare the vectorised renderer with a per-pixel loop")
    args = ap.parse_args()
    if args.selftest:
        selftest()
        return 0
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
