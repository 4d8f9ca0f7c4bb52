#!/usr/bin/env python3
"""Convert a COLMAP text model (cameras.txt, images.txt, points3D.txt) to the
COLMAP binary model format (cameras.bin, images.bin, points3D.bin).

Standard library only. The binary layout is exactly the one written by COLMAP
and by COLMAP's scripts/python/read_write_model.py (all little-endian):

  cameras.bin : u64 num_cameras, then per camera
                i32 camera_id, i32 model_id, u64 width, u64 height, f64 params[n]
  images.bin  : u64 num_images, then per image
                i32 image_id, f64 qvec[4] (w,x,y,z), f64 tvec[3], i32 camera_id,
                name bytes + NUL, u64 num_points2D, then (f64 x, f64 y, i64 point3D_id)
  points3D.bin: u64 num_points, then per point
                u64 point3D_id, f64 xyz[3], u8 rgb[3], f64 error,
                u64 track_length, then (i32 image_id, i32 point2D_idx)

Usage:
  colmap_text_to_bin.py TEXT_DIR BIN_DIR         convert (and verify round trip)
  colmap_text_to_bin.py --check-bin BIN_DIR      print the counts of a binary model
"""

import os
import struct
import sys

# COLMAP camera models: name -> (model_id, number of params)
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (0, 3),
    "PINHOLE": (1, 4),
    "SIMPLE_RADIAL": (2, 4),
    "RADIAL": (3, 5),
    "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8),
    "FULL_OPENCV": (6, 12),
    "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5),
    "THIN_PRISM_FISHEYE": (10, 12),
}
MODEL_ID_TO_NPARAMS = {mid: n for (mid, n) in CAMERA_MODELS.values()}


class ColmapError(Exception):
    pass


# --------------------------------------------------------------------------- text


def _data_lines(path):
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def read_cameras_text(path):
    cameras = []
    for line in _data_lines(path):
        e = line.split()
        cam_id, model, width, height = int(e[0]), e[1], int(e[2]), int(e[3])
        if model not in CAMERA_MODELS:
            raise ColmapError(f"{path}: unknown camera model {model!r}")
        model_id, nparams = CAMERA_MODELS[model]
        params = [float(x) for x in e[4:]]
        if len(params) != nparams:
            raise ColmapError(f"{path}: camera {cam_id} ({model}) has {len(params)} params, expected {nparams}")
        cameras.append((cam_id, model_id, width, height, params))
    return cameras


def read_images_text(path):
    """Two lines per image; the POINTS2D line may be empty (so empty lines are
    significant right after an image line, as in COLMAP's own reader)."""
    images = []
    with open(path, "r", encoding="utf-8") as f:
        while True:
            line = f.readline()
            if not line:
                break
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            e = line.split()
            if len(e) < 10:
                raise ColmapError(f"{path}: malformed image line: {line[:80]!r}")
            image_id = int(e[0])
            qvec = [float(x) for x in e[1:5]]
            tvec = [float(x) for x in e[5:8]]
            camera_id = int(e[8])
            name = " ".join(e[9:])  # COLMAP names have no spaces, but be lenient
            p = f.readline().split()  # "" at EOF or for an image without points
            if len(p) % 3 != 0:
                raise ColmapError(f"{path}: image {image_id}: POINTS2D line has {len(p)} fields (not a multiple of 3)")
            points2d = [(float(p[i]), float(p[i + 1]), int(p[i + 2])) for i in range(0, len(p), 3)]
            images.append((image_id, qvec, tvec, camera_id, name, points2d))
    return images


def read_points3d_text(path):
    points = []
    for line in _data_lines(path):
        e = line.split()
        pid = int(e[0])
        xyz = [float(x) for x in e[1:4]]
        rgb = [int(x) for x in e[4:7]]
        error = float(e[7])
        t = e[8:]
        if len(t) % 2 != 0:
            raise ColmapError(f"{path}: point {pid}: odd track length")
        track = [(int(t[i]), int(t[i + 1])) for i in range(0, len(t), 2)]
        points.append((pid, xyz, rgb, error, track))
    return points


# --------------------------------------------------------------------------- binary


def write_cameras_bin(cameras, path):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(cameras)))
        for cam_id, model_id, width, height, params in cameras:
            f.write(struct.pack("<iiQQ", cam_id, model_id, width, height))
            f.write(struct.pack("<" + "d" * len(params), *params))


def write_images_bin(images, path):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for image_id, qvec, tvec, camera_id, name, points2d in images:
            f.write(struct.pack("<idddddddi", image_id, *qvec, *tvec, camera_id))
            f.write(name.encode("utf-8") + b"\x00")
            f.write(struct.pack("<Q", len(points2d)))
            for x, y, pid in points2d:
                f.write(struct.pack("<ddq", x, y, pid))


def write_points3d_bin(points, path):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(points)))
        for pid, xyz, rgb, error, track in points:
            f.write(struct.pack("<QdddBBBd", pid, *xyz, *rgb, error))
            f.write(struct.pack("<Q", len(track)))
            for image_id, p2d_idx in track:
                f.write(struct.pack("<ii", image_id, p2d_idx))


class _Reader:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        self.path = path

    def unpack(self, fmt):
        fmt = "<" + fmt
        n = struct.calcsize(fmt)
        if self.pos + n > len(self.buf):
            raise ColmapError(f"{self.path}: truncated at byte {self.pos}")
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def cstring(self):
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise ColmapError(f"{self.path}: unterminated name at byte {self.pos}")
        s = self.buf[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s

    def done(self):
        if self.pos != len(self.buf):
            raise ColmapError(f"{self.path}: {len(self.buf) - self.pos} trailing bytes")


def read_cameras_bin(path):
    r = _Reader(path)
    (n,) = r.unpack("Q")
    cameras = []
    for _ in range(n):
        cam_id, model_id, width, height = r.unpack("iiQQ")
        if model_id not in MODEL_ID_TO_NPARAMS:
            raise ColmapError(f"{path}: unknown model id {model_id}")
        params = list(r.unpack("d" * MODEL_ID_TO_NPARAMS[model_id]))
        cameras.append((cam_id, model_id, width, height, params))
    r.done()
    return cameras


def read_images_bin(path):
    r = _Reader(path)
    (n,) = r.unpack("Q")
    images = []
    for _ in range(n):
        v = r.unpack("idddddddi")
        name = r.cstring()
        (npts,) = r.unpack("Q")
        pts = [r.unpack("ddq") for _ in range(npts)]
        images.append((v[0], list(v[1:5]), list(v[5:8]), v[8], name, [tuple(p) for p in pts]))
    r.done()
    return images


def read_points3d_bin(path):
    r = _Reader(path)
    (n,) = r.unpack("Q")
    points = []
    for _ in range(n):
        v = r.unpack("QdddBBBd")
        (tl,) = r.unpack("Q")
        track = [r.unpack("ii") for _ in range(tl)]
        points.append((v[0], list(v[1:4]), list(v[4:7]), v[7], [tuple(t) for t in track]))
    r.done()
    return points


# --------------------------------------------------------------------------- main


def convert(text_dir, bin_dir):
    cams = read_cameras_text(os.path.join(text_dir, "cameras.txt"))
    imgs = read_images_text(os.path.join(text_dir, "images.txt"))
    pts = read_points3d_text(os.path.join(text_dir, "points3D.txt"))
    os.makedirs(bin_dir, exist_ok=True)
    write_cameras_bin(cams, os.path.join(bin_dir, "cameras.bin"))
    write_images_bin(imgs, os.path.join(bin_dir, "images.bin"))
    write_points3d_bin(pts, os.path.join(bin_dir, "points3D.bin"))
    # Round trip: the binary model must read back to exactly what the text said.
    if read_cameras_bin(os.path.join(bin_dir, "cameras.bin")) != cams:
        raise ColmapError("cameras.bin round trip mismatch")
    if read_images_bin(os.path.join(bin_dir, "images.bin")) != imgs:
        raise ColmapError("images.bin round trip mismatch")
    if read_points3d_bin(os.path.join(bin_dir, "points3D.bin")) != pts:
        raise ColmapError("points3D.bin round trip mismatch")
    nobs = sum(len(i[5]) for i in imgs)
    print(f"colmap_text_to_bin: {len(cams)} cameras, {len(imgs)} images ({nobs} 2D points), "
          f"{len(pts)} 3D points -> {bin_dir}")


def check_bin(bin_dir):
    cams = read_cameras_bin(os.path.join(bin_dir, "cameras.bin"))
    imgs = read_images_bin(os.path.join(bin_dir, "images.bin"))
    pts = read_points3d_bin(os.path.join(bin_dir, "points3D.bin"))
    print(f"{len(cams)} {len(imgs)} {len(pts)}")


def main(argv):
    try:
        if len(argv) == 3 and argv[1] == "--check-bin":
            check_bin(argv[2])
        elif len(argv) == 3 and not argv[1].startswith("-"):
            convert(argv[1], argv[2])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (OSError, ValueError, IndexError, struct.error, ColmapError) as exc:
        print(f"colmap_text_to_bin: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
