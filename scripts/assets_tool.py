#!/usr/bin/env python3
"""Helper for scripts/fetch_assets.sh (standard library only).

Subcommands:
  sha256 FILE EXPECTED_HEX          exit 1 (with a message) if the digest differs
  extract GRADIO_SDIST KAPTURE_SDIST ASSETS_DIR
                                    unpack bonsai-7k-mini.splat, luigi.ply and the
                                    maupertuis COLMAP sample into ASSETS_DIR
  imgsize FILE                      print "WIDTH HEIGHT" of a JPEG or PNG
  verify ASSETS_DIR                 check counts and sizes of everything; exit 1 on error
  report ASSETS_DIR                 print the files and their sizes
"""

import fnmatch
import hashlib
import os
import shutil
import struct
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import colmap_text_to_bin as colmap  # noqa: E402

GRADIO_ROOT = "gradio_model3dgs-0.2.5/gradio_cached_examples/12/output/"
BONSAI_GLOB = GRADIO_ROOT + "*/bonsai-7k-mini.splat"
LUIGI_GLOB = GRADIO_ROOT + "*/luigi.ply"
MAUPERTUIS = "kapture-1.1.12/samples/maupertuis/colmap/"

# Expected content (the sdists on PyPI are immutable; these were checked by hand).
BONSAI_SPLATS = 272956
BONSAI_SHA256 = "9e67a38943cd02aa0388c5abf3cb0465a330b7b45ad8aa3d3decc82e5cc8fbb1"
LUIGI_SPLATS = 14526
LUIGI_SHA256 = "6971debf967bac924a4c8bd4457b354db66326792d1a300fd996c7eefede04aa"
MAUP_COUNTS = (1, 4, 1039)  # cameras, images, points3D
MAUP_IMAGES = ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]
MAUP_SIZE = (1919, 1079)
DOWNSCALES = (2, 4, 8)


class AssetError(Exception):
    pass


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cmd_sha256(path, expected):
    got = sha256_of(path)
    if got != expected:
        raise AssetError(f"sha256 mismatch for {path}:\n  expected {expected}\n  got      {got}\n"
                         f"Delete the file and run the script again.")


def _write_member(tar, member, dest):
    src = tar.extractfile(member)
    if src is None:
        raise AssetError(f"{member.name} is not a regular file in the archive")
    tmp = dest + ".tmp"
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, dest)


def _single(matches, what, archive):
    if len(matches) != 1:
        raise AssetError(f"{archive}: expected exactly one member matching {what}, found {len(matches)}")
    return matches[0]


def cmd_extract(gradio_sdist, kapture_sdist, assets):
    # gradio-model3dgs: two example scenes
    with tarfile.open(gradio_sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(GRADIO_ROOT)]
        bonsai = _single([m for m in members if fnmatch.fnmatch(m.name, BONSAI_GLOB)], BONSAI_GLOB, gradio_sdist)
        luigi = _single([m for m in members if fnmatch.fnmatch(m.name, LUIGI_GLOB)], LUIGI_GLOB, gradio_sdist)
        _write_member(tar, bonsai, os.path.join(assets, "bonsai-7k-mini.splat"))
        print(f"  {bonsai.name} -> assets/bonsai-7k-mini.splat")
        _write_member(tar, luigi, os.path.join(assets, "luigi.ply"))
        print(f"  {luigi.name} -> assets/luigi.ply")

    # kapture: the maupertuis COLMAP sample, re-laid out as a Difix3D dataset
    maup = os.path.join(assets, "maupertuis")
    if os.path.lexists(maup):
        shutil.rmtree(maup)
    wanted = {MAUPERTUIS + "reconstruction/" + n: os.path.join(maup, "colmap", "sparse", "0", n)
              for n in ("cameras.txt", "images.txt", "points3D.txt")}
    wanted.update({MAUPERTUIS + "images/" + n: os.path.join(maup, "images", n) for n in MAUP_IMAGES})
    found = set()
    with tarfile.open(kapture_sdist, "r:gz") as tar:
        for m in tar:  # streaming: one pass over the 54 MB archive
            if m.isfile() and m.name in wanted:
                _write_member(tar, m, wanted[m.name])
                found.add(m.name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise AssetError(f"{kapture_sdist}: missing members: {', '.join(missing)}")
    print(f"  {MAUPERTUIS}{{reconstruction/*.txt,images/*.jpg}} -> assets/maupertuis/"
          f"{{colmap/sparse/0,images}}/")


def image_size(path):
    """(width, height) of a JPEG (SOFn marker) or PNG (IHDR)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        raise AssetError(f"{path}: not a JPEG or PNG")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise AssetError(f"{path}: bad JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seglen,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seglen
    raise AssetError(f"{path}: no JPEG frame header found")


def ply_header(path):
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        raise AssetError(f"{path}: not a PLY file")
    lines = head[:end].decode("ascii").splitlines()
    fmt, count, props = None, None, []
    for line in lines:
        e = line.split()
        if e[:1] == ["format"]:
            fmt = e[1]
        elif e[:2] == ["element", "vertex"]:
            count = int(e[2])
        elif e[:1] == ["property"] and count is not None:
            props.append((e[1], e[-1]))
    return fmt, count, props, end + len(b"end_header\n")


def cmd_verify(assets):
    errors = []

    def check(cond, msg):
        if not cond:
            errors.append(msg)
        return cond

    # bonsai .splat: 32 bytes per splat
    p = os.path.join(assets, "bonsai-7k-mini.splat")
    if check(os.path.isfile(p), f"missing {p}"):
        size = os.path.getsize(p)
        check(size == BONSAI_SPLATS * 32, f"{p}: {size} bytes, expected {BONSAI_SPLATS} splats * 32 = {BONSAI_SPLATS * 32}")
        check(sha256_of(p) == BONSAI_SHA256, f"{p}: sha256 mismatch")

    # luigi .ply: binary little-endian, 14526 vertices of float properties
    p = os.path.join(assets, "luigi.ply")
    if check(os.path.isfile(p), f"missing {p}"):
        fmt, count, props, hlen = ply_header(p)
        check(fmt == "binary_little_endian", f"{p}: format {fmt}")
        check(count == LUIGI_SPLATS, f"{p}: {count} vertices, expected {LUIGI_SPLATS}")
        names = [n for _, n in props]
        for n in ("x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0"):
            check(n in names, f"{p}: no property {n}")
        check(all(t == "float" for t, _ in props), f"{p}: non-float properties")
        if count is not None:
            check(os.path.getsize(p) == hlen + count * 4 * len(props), f"{p}: size does not match header")
        check(sha256_of(p) == LUIGI_SHA256, f"{p}: sha256 mismatch")

    # maupertuis (text) and maupertuis-bin (binary)
    for name, kind in (("maupertuis", "txt"), ("maupertuis-bin", "bin")):
        root = os.path.join(assets, name)
        sparse = os.path.join(root, "colmap", "sparse", "0")
        files = [os.path.join(sparse, f"{n}.{kind}") for n in ("cameras", "images", "points3D")]
        if not all(check(os.path.isfile(f), f"missing {f}") for f in files):
            continue
        try:
            if kind == "txt":
                cams = colmap.read_cameras_text(files[0])
                imgs = colmap.read_images_text(files[1])
                pts = colmap.read_points3d_text(files[2])
            else:
                cams = colmap.read_cameras_bin(files[0])
                imgs = colmap.read_images_bin(files[1])
                pts = colmap.read_points3d_bin(files[2])
        except (colmap.ColmapError, OSError, ValueError, struct.error) as exc:
            errors.append(f"{sparse}: {exc}")
            continue
        counts = (len(cams), len(imgs), len(pts))
        check(counts == MAUP_COUNTS, f"{sparse}: (cameras, images, points3D) = {counts}, expected {MAUP_COUNTS}")
        check(sorted(i[4] for i in imgs) == MAUP_IMAGES, f"{sparse}: image names {sorted(i[4] for i in imgs)}")
        check(all((c[2], c[3]) == MAUP_SIZE for c in cams), f"{sparse}: camera size is not {MAUP_SIZE}")
        for folder, factor in [("images", 1)] + [(f"images_{f}", f) for f in DOWNSCALES]:
            for img in MAUP_IMAGES:
                f = os.path.join(root, folder, img)
                if not check(os.path.isfile(f), f"missing {f}"):
                    continue
                try:
                    w, h = image_size(f)
                except AssetError as exc:
                    errors.append(str(exc))
                    continue
                ew, eh = MAUP_SIZE[0] / factor, MAUP_SIZE[1] / factor
                check(abs(w - ew) <= 1 and abs(h - eh) <= 1,
                      f"{f}: {w}x{h}, expected about {ew:g}x{eh:g}")

    if errors:
        raise AssetError("asset verification failed:\n  " + "\n  ".join(errors))
    print("verify: OK (bonsai 272956 splats, luigi 14526 splats, maupertuis + maupertuis-bin: "
          "1 camera, 4 images x 4 resolutions, 1039 points)")


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def cmd_report(assets):
    total = 0
    for dirpath, dirnames, filenames in os.walk(assets):
        dirnames.sort()
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            rel = os.path.relpath(p, os.path.dirname(assets))
            if fn == "README.md" and dirpath == assets:
                continue
            size = os.path.getsize(p)
            total += size
            extra = ""
            if fn.endswith(".jpg"):
                extra = "  (%dx%d)" % image_size(p)
            print(f"  {size:>10}  {rel}{extra}")
    print(f"  {total:>10}  total ({_human(total)})")


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "sha256":
            cmd_sha256(argv[2], argv[3])
        elif len(argv) == 5 and argv[1] == "extract":
            cmd_extract(argv[2], argv[3], argv[4])
        elif len(argv) == 3 and argv[1] == "imgsize":
            print("%d %d" % image_size(argv[2]))
        elif len(argv) == 3 and argv[1] == "verify":
            cmd_verify(argv[2])
        elif len(argv) == 3 and argv[1] == "report":
            cmd_report(argv[2])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (AssetError, OSError, tarfile.TarError, EOFError) as exc:
        print(f"assets_tool: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
