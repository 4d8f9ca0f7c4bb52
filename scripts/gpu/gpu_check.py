#!/usr/bin/env python3
"""Helpers of scripts/gpu/check.sh. Standard library only (Python 3.9+), so they run on the GPU machine
and here alike.

    gpu_check.py fix-diff EXPECTED.json OUTPUT.png        max |output/255 - expected| of a `difix3d fix` output
    gpu_check.py render-parity BINARY OUTDIR              renders the golden cases, prints their PSNRs as JSON
    gpu_check.py bench-json LOG                           the last pretty-printed JSON object of a bench log
    gpu_check.py tests LOG                                passed/failed counts of a libtest log
    gpu_check.py step STEPS_DIR NAME STATUS SECONDS [FIELD=VALUE ...]   records one step's outcome
    gpu_check.py report STEPS_DIR OUT REHEARSAL LOG       writes OUT/gpu_report.json and OUT/gpu_report.md
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every figure the report must carry (a number, or null with its reason in "why").
FIGURES = [
    "difix_cuda_max_abs_vs_golden",
    "difix_wgpu_max_abs_vs_golden",
    "render_psnr_vs_golden_db",
    "fix_ms_cuda_fp16_576x1024",
    "fix_ms_wgpu_576x1024",
    "fix_ms_torch_fp16_576x1024",
    "live_fixed_fps_576x1024",
    "render_ms_1080p",
    "render_ms_web_splat_1080p",
    "train_it_per_s",
]


# ----------------------------------------------------------------------------------------------
# PNG (8-bit grey / grey+alpha / RGB / RGBA, non-interlaced: what difix3d and the goldens write)
# ----------------------------------------------------------------------------------------------

def read_png(path: Path):
    """-> (width, height, channels, bytes of rows without filter bytes)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise ValueError(f"{path}: no IHDR")
    width, height, depth, colour, _, _, interlace = ihdr
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"{path}: only 8-bit non-interlaced grey/RGB(A) PNGs are read here")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            elif f != 0:
                raise ValueError(f"{path}: bad filter type {f}")
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


def rgb(path: Path):
    w, h, ch, px = read_png(path)
    if ch == 3:
        return w, h, px
    if ch == 4:
        return w, h, bytes(v for i, v in enumerate(px) if i % 4 != 3)
    raise ValueError(f"{path}: expected an RGB(A) image, got {ch} channel(s)")


def write_png_rgb(path: Path, width: int, height: int, px: bytes) -> None:
    rows = b"".join(b"\x00" + px[y * width * 3:(y + 1) * width * 3] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------

def fix_diff(expected_json: Path, output_png: Path) -> None:
    """expected: {"height", "width", "hwc": [...]} in [0, 1] (fp64 reference of the same 8-bit input)."""
    exp = json.loads(Path(expected_json).read_text())
    w, h, px = rgb(output_png)
    if (h, w) != (exp["height"], exp["width"]):
        raise SystemExit(f"{output_png}: {w}x{h}, expected {exp['width']}x{exp['height']}")
    diff = max(abs(v / 255.0 - e) for v, e in zip(px, exp["hwc"]))
    print(json.dumps({"max_abs": diff, "quantisation_floor": 0.5 / 255}))


def psnr(a: bytes, b: bytes) -> float:
    mse = sum((x - y) ** 2 for x, y in zip(a, b)) / len(a) / 255.0 ** 2
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def render_parity(binary: str, outdir: Path) -> None:
    """Renders every golden case of tests/fixtures/render whose scene is here; prints PSNRs (colour)."""
    fixtures = REPO / "tests" / "fixtures" / "render"
    cases = json.loads((fixtures / "cases.json").read_text())
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    result = {"cases": {}, "skipped": []}
    for case in cases:
        scene = REPO / case["scene"]
        if not scene.exists():
            result["skipped"].append(f"{case['name']}: {case['scene']} missing")
            continue
        out = outdir / case["name"]
        out.mkdir(exist_ok=True)
        cam = out / "camera.json"
        cam.write_text(json.dumps(case["camera"]))
        run = subprocess.run(
            [binary, "render", "--scene", str(scene), "--camera-json", str(cam), "--out", str(out),
             "--sh-degree", str(case["sh_degree"]), "--background", ",".join(str(v) for v in case["background"])],
            capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"render of {case['name']} failed ({run.returncode}):\n{run.stderr[-2000:]}")
        # `render` names each output after its camera's file stem
        w, h, ours = rgb(out / f"{Path(case['camera']['name']).stem or 'render'}.png")
        gw, gh, golden = rgb(fixtures / case["image"])
        if (w, h) != (gw, gh):
            raise SystemExit(f"{case['name']}: rendered {w}x{h}, golden {gw}x{gh}")
        result["cases"][case["name"]] = round(psnr(ours, golden), 3)
    if not result["cases"]:
        raise SystemExit("no render golden case could run: " + "; ".join(result["skipped"]))
    result["min_psnr_db"] = min(result["cases"].values())
    print(json.dumps(result))


def image_diff(a_png: Path, b_png: Path) -> None:
    """PSNR and largest channel difference (8-bit levels) between two RGB PNGs of one size."""
    aw, ah, a = rgb(a_png)
    bw, bh, b = rgb(b_png)
    if (aw, ah) != (bw, bh):
        raise SystemExit(f"{a_png}: {aw}x{ah}, but {b_png} is {bw}x{bh}")
    db = psnr(a, b)
    # JSON has no infinity: identical images have no PSNR (null) and 0 levels.
    print(json.dumps({"psnr_db": round(db, 3) if math.isfinite(db) else None,
                      "max_levels": max(abs(x - y) for x, y in zip(a, b))}))


def rays_per_second(log: Path) -> None:
    """The render speed `difix3d nerfacto-render` printed: "(N rays in T s: R rays/s)"."""
    import re
    match = re.search(r"\((\d+) rays in ([0-9.]+) s", Path(log).read_text(errors="replace"))
    if not match:
        raise SystemExit(f"{log}: no render timing")
    rays, seconds = int(match.group(1)), float(match.group(2))
    print(json.dumps({"rays": rays, "seconds": seconds, "rays_per_second": round(rays / seconds, 1)}))


def bench_json(log: Path) -> None:
    """The last JSON object printed by a `difix3d bench` command (a line "{" ... a line "}")."""
    lines = Path(log).read_text(errors="replace").splitlines()
    end = max((i for i, l in enumerate(lines) if l == "}"), default=None)
    start = max((i for i, l in enumerate(lines[:end] if end is not None else []) if l == "{"), default=None)
    if end is None or start is None:
        raise SystemExit(f"{log}: no JSON report in the output")
    print(json.dumps(json.loads("\n".join(lines[start:end + 1]))))


def tests(log: Path) -> None:
    text = Path(log).read_text(errors="replace")
    passed = failed = 0
    for line in text.splitlines():
        if line.startswith("test result:"):
            parts = line.replace(";", "").split()
            passed += int(parts[parts.index("passed") - 1])
            failed += int(parts[parts.index("failed") - 1])
    print(json.dumps({"passed": passed, "failed": failed}))


def step(steps_dir: Path, name: str, status: str, seconds: str, fields: list) -> None:
    """Records a step: FIELD=VALUE pairs; figure.KEY=NUMBER|null, why.KEY=TEXT, extra.KEY=JSON-or-text."""
    rec = {"name": name, "status": status, "seconds": float(seconds), "figures": {}, "why": {}, "extra": {}}
    for f in fields:
        key, _, value = f.partition("=")
        group, _, k = key.partition(".")
        if group not in ("figures", "why", "extra", "conditions"):
            raise SystemExit(f"bad field {key}")
        if group in ("figures", "extra"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                if group == "figures":
                    raise SystemExit(f"figure {k} is not a number: {value!r}")
        rec.setdefault(group, {})[k] = value
    path = Path(steps_dir) / f"{len(list(Path(steps_dir).glob('*.json'))):02d}_{name}.json"
    path.write_text(json.dumps(rec, indent=1))


def report(steps_dir: Path, out: Path, rehearsal: str, log: Path) -> None:
    steps = [json.loads(p.read_text()) for p in sorted(Path(steps_dir).glob("*.json"))]
    figures, why, extra, conditions = {}, {}, {}, {}
    for s in steps:
        for k, v in s["figures"].items():
            if v is not None and not isinstance(v, (int, float)):
                raise SystemExit(f"step {s['name']}: figure {k} is not a number")
            if v is not None and not math.isfinite(v):
                why[k] = f"{s['name']}: not finite ({v})"
                v = None
            figures[k] = v
        why.update(s["why"])
        extra.update(s["extra"])
        conditions.update(s.get("conditions", {}))
    for k in FIGURES:
        figures.setdefault(k, None)
        if figures[k] is None:
            why.setdefault(k, "not measured: its step was not run (--only) or the time budget ran out first")
    for k in list(why):
        if figures.get(k) is not None:
            del why[k]
    tail = Path(log).read_text(errors="replace").splitlines()[-80:] if Path(log).exists() else []
    rep = {
        "rehearsal": rehearsal == "true",
        "figures": {k: figures[k] for k in FIGURES} | {k: v for k, v in figures.items() if k not in FIGURES},
        "why": why,
        "conditions": conditions,
        "extra": extra,
        "steps": [{k: s[k] for k in ("name", "status", "seconds")} for s in steps],
        "log_tail": "\n".join(tail),
    }
    out = Path(out)
    (out / "gpu_report.json").write_text(json.dumps(rep, indent=1) + "\n")
    md = [f"# GPU check report{' (REHEARSAL: lavapipe/CPU, small sizes)' if rep['rehearsal'] else ''}", "",
          "| figure | value | measured as / why not |", "|---|---|---|"]
    for k, v in rep["figures"].items():
        md.append(f"| `{k}` | {'null' if v is None else f'{v:.4g}'} | "
                  f"{(why.get(k) if v is None else conditions.get(k, '')) or ''} |".replace("\n", " "))
    md += ["", "| step | status | seconds |", "|---|---|---|"]
    md += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} |" for s in rep["steps"]]
    if extra:
        md += ["", "```json", json.dumps(extra, indent=1), "```"]
    (out / "gpu_report.md").write_text("\n".join(md) + "\n")
    print(f"report: {out / 'gpu_report.json'} ({sum(v is not None for v in rep['figures'].values())} of "
          f"{len(rep['figures'])} figures measured)")


def main() -> None:
    cmd, args = sys.argv[1] if len(sys.argv) > 1 else "", sys.argv[2:]
    if cmd == "fix-diff" and len(args) == 2:
        fix_diff(Path(args[0]), Path(args[1]))
    elif cmd == "render-parity" and len(args) == 2:
        render_parity(args[0], Path(args[1]))
    elif cmd == "image-diff" and len(args) == 2:
        image_diff(Path(args[0]), Path(args[1]))
    elif cmd == "rays-per-second" and len(args) == 1:
        rays_per_second(Path(args[0]))
    elif cmd == "bench-json" and len(args) == 1:
        bench_json(Path(args[0]))
    elif cmd == "tests" and len(args) == 1:
        tests(Path(args[0]))
    elif cmd == "step" and len(args) >= 4:
        step(Path(args[0]), args[1], args[2], args[3], args[4:])
    elif cmd == "report" and len(args) == 4:
        report(Path(args[0]), Path(args[1]), args[2], Path(args[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
