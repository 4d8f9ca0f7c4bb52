#!/usr/bin/env python3
"""Runs tiny-cuda-nn's torch bindings with nerfstudio 1.1.5 nerfacto's tcnn configs on random inputs
and compares them with tests/golden/nerfacto_tcnn/tcnn_reference.py (the numpy transcription that
docs/tcnn-layout.md documents). Needs a CUDA GPU, torch and a built `tinycudann`
(scripts/gpu/tcnn/build_and_check.sh builds it and runs this).

    python3 scripts/gpu/tcnn/check_tcnn.py [--out DIR] [--n N]

Writes DIR/tcnn_check.json (every check with its figures, tolerances and pass/fail, versions, the
modules' hyperparams) and DIR/tcnn_check.npz (inputs, outputs and the small parameter vectors;
large hash-grid parameter vectors are regenerated from their seed: see `grid_params`). Exit
status 0 when every check passes.

Tolerances (outputs are fp16 on the default half-precision build):
  * grid, fp32 encoding (dtype=torch.float32): |tcnn - ref_fp32| <= 1e-5   (index/weight semantics)
  * grid, fp16 encoding (nerfstudio's default): |tcnn - ref_fp16| <= 2e-3 and |tcnn - ref_fp32| <= 5e-3
    with params in [-1, 1] (8 half fmas, each <= 2^-12 relative error at |result| <= 1)
  * SH: |tcnn - ref_fp32| <= 2e-3 (fp16 output, |values| <= 1.2)
  * MLPs (fp16 weights and a __half accumulator in tcnn): |tcnn - ref| <= 2e-2 * max(1, max|ref|)
    for linear outputs, <= 5e-3 after a sigmoid; ref is the fp16 emulation (the fp32 figure is
    reported too)
  * structural probes (padding value, row/column major, params order): exact up to 1e-2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "golden" / "nerfacto_tcnn"))
import tcnn_reference as R  # noqa: E402

import tinycudann as tcnn  # noqa: E402

DEV = torch.device(os.environ.get("TCNN_CHECK_DEVICE", "cuda"))  # "cpu" only for the rehearsal (rehearse/)
RESULTS: list[dict] = []
ARRAYS: dict[str, np.ndarray] = {}


def record(name: str, ok: bool, **figures):
    RESULTS.append({"name": name, "ok": bool(ok), **figures})
    fig = ", ".join(f"{k}={v:.3e}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {fig}", flush=True)


def grid_params(seed: int, n: int, lo=-1.0, hi=1.0) -> np.ndarray:
    """Deterministic fp32 parameters: np.random.default_rng(seed).uniform(lo, hi, n).astype(float32)."""
    return np.random.default_rng(seed).uniform(lo, hi, n).astype(np.float32)


def set_params(module, params: np.ndarray):
    with torch.no_grad():
        assert module.params.numel() == params.size, (module.params.numel(), params.size)
        module.params.copy_(torch.from_numpy(params).to(DEV))


def run(module, x: np.ndarray, grad: bool = False) -> np.ndarray:
    xt = torch.from_numpy(x).to(DEV)
    if grad:
        xt.requires_grad_(True)
        y = module(xt)
    else:
        with torch.no_grad():
            y = module(xt)
    return y.detach().float().cpu().numpy()


def inputs01(rng, n):
    """Uniform points in [0, 1)^3 plus edge cases: 0, values just below 1, exact vertices of level 0."""
    x = rng.uniform(0.0, 1.0, size=(n, 3)).astype(np.float32)
    special = np.array([[0, 0, 0], [0.999999, 0.999999, 0.999999], [0.5, 0.5, 0.5],
                        [1 / 15, 2 / 15, 3 / 15], [0.9667, 0.01, 0.99]], dtype=np.float32)
    return np.concatenate([x, special], 0)


def check_grid(name, cfg, seed, rng, n):
    pls = cfg["per_level_scale"]
    args = (cfg["n_levels"], cfg["n_features_per_level"], cfg["log2_hashmap_size"], cfg["base_resolution"], pls)
    want_n = R.grid_n_params_tcnn(*args)
    x = inputs01(rng, n)
    ARRAYS[f"{name}_x"] = x
    for dtype, tag in ((torch.float32, "fp32"), (None, "default")):
        enc = tcnn.Encoding(3, cfg, dtype=dtype).to(DEV)
        record(f"{name} [{tag}] n_params", enc.params.numel() == want_n, tcnn=int(enc.params.numel()), ref=want_n)
        record(f"{name} [{tag}] params dtype fp32 (master copy)", enc.params.dtype == torch.float32,
               dtype=str(enc.params.dtype))
        record(f"{name} [{tag}] n_output_dims (no padding)", enc.n_output_dims == cfg["n_levels"] * cfg["n_features_per_level"],
               n_output_dims=int(enc.n_output_dims))
        if enc.params.numel() != want_n:
            continue
        p = grid_params(seed, want_n)
        set_params(enc, p)
        y = run(enc, x)
        ARRAYS[f"{name}_{tag}_y"] = y
        ref32 = R.grid_encode(p, x, *args)
        if tag == "fp32":
            err = float(np.abs(y - ref32).max())
            record(f"{name} [fp32] vs reference fp32", err <= 1e-5, max_abs=err)
        else:
            ref16 = R.grid_encode(p, x, *args, precision="fp16").astype(np.float32)
            e16 = float(np.abs(y - ref16).max())
            e32 = float(np.abs(y - ref32).max())
            exact = float((y == ref16).mean())
            record(f"{name} [fp16] vs reference", e16 <= 2e-3 and e32 <= 5e-3, max_abs_vs_fp16=e16,
                   max_abs_vs_fp32=e32, fraction_bit_equal_fp16=exact)
            per_level = np.abs(y - ref32).reshape(len(x), cfg["n_levels"], -1).max(axis=(0, 2))
            print("    per-level max |tcnn - ref_fp32|:", " ".join(f"{v:.1e}" for v in per_level))
        print(f"    hyperparams: {enc.native_tcnn_module.hyperparams()}")


def check_sh(rng, n):
    cfg = {"otype": "SphericalHarmonics", "degree": 4}
    enc = tcnn.Encoding(3, cfg).to(DEV)
    record("SH n_params / n_output_dims", enc.params.numel() == 0 and enc.n_output_dims == 16,
           n_params=int(enc.params.numel()), n_output_dims=int(enc.n_output_dims))
    d = rng.normal(size=(n, 3))
    d = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
    x01 = ((d + 1) / 2).astype(np.float32)
    y = run(enc, x01)
    ARRAYS["sh_dirs"], ARRAYS["sh_y"] = d, y
    ref = R.sh_encode_tcnn(x01)
    err = float(np.abs(y - ref).max())
    record("SH (degree 4) vs reference (nerfacto's (d+1)/2 input)", err <= 2e-3, max_abs=err)
    enc32 = tcnn.Encoding(3, cfg, dtype=torch.float32).to(DEV)
    y32 = run(enc32, x01)
    err32 = float(np.abs(y32 - ref).max())
    record("SH fp32 encoding vs reference", err32 <= 1e-5, max_abs=err32)


def check_network(name, n_in, n_out, cfg, rng, n, x=None, scale=0.1):
    net = tcnn.Network(n_in, n_out, cfg).to(DEV)
    hidden = cfg["n_hidden_layers"]
    want = R.mlp_n_params(n_in, n_out, cfg["n_neurons"], hidden, cfg["otype"])
    record(f"{name} n_params", net.params.numel() == want, tcnn=int(net.params.numel()), ref=want,
           layout=str([(m["rows"], m["cols"]) for m in R.mlp_layout(n_in, n_out, cfg["n_neurons"], hidden, cfg["otype"])]))
    if net.params.numel() != want:
        return
    p = rng.normal(0.0, scale, size=want).astype(np.float32)
    set_params(net, p)
    if x is None:
        x = rng.uniform(-1.0, 1.0, size=(n, n_in)).astype(np.float32)
    y = run(net, x)
    y_train = run(net, x, grad=True)
    ARRAYS[f"{name}_params"], ARRAYS[f"{name}_x"], ARRAYS[f"{name}_y"] = p, x, y
    kw = dict(activation=cfg["activation"], output_activation=cfg["output_activation"], otype=cfg["otype"])
    ref16 = R.mlp_forward(p, x, n_in, n_out, cfg["n_neurons"], hidden, precision="fp16", **kw).astype(np.float32)
    ref32 = R.mlp_forward(p, x, n_in, n_out, cfg["n_neurons"], hidden, **kw)
    tol = 5e-3 if cfg["output_activation"] == "Sigmoid" else 2e-2 * max(1.0, float(np.abs(ref32).max()))
    e16, e32 = float(np.abs(y - ref16).max()), float(np.abs(y - ref32).max())
    record(f"{name} vs reference (pad 1.0, row-major (out,in), no bias)", e16 <= tol, max_abs_vs_fp16=e16,
           max_abs_vs_fp32=e32, tol=tol, max_abs_ref=float(np.abs(ref32).max()))
    e_alt = float(np.abs(y - R.mlp_forward(p, x, n_in, n_out, cfg["n_neurons"], hidden, pad_value=0.0, **kw)).max())
    print(f"    (the same with padding 0.0 instead of 1.0: max_abs={e_alt:.3e})")
    et = float(np.abs(y - y_train).max())
    record(f"{name} inference path == training path", et <= 1e-3, max_abs=et)
    print(f"    hyperparams: {net.native_tcnn_module.hyperparams()}")


def check_probes(rng):
    """Structural probes with hand-made weights on a width-16 FullyFusedMLP, 10 inputs, 1 hidden layer."""
    cfg = {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None", "n_neurons": 16,
           "n_hidden_layers": 1}
    net = tcnn.Network(10, 1, cfg).to(DEV)
    x = rng.uniform(0.1, 1.0, size=(512, 10)).astype(np.float32)
    # (a) padding value: W0 nonzero only on the padded columns 10..15 (0.1 each), W1 row 0 = 1/16.
    w0 = np.zeros((16, 16), np.float32)
    w0[:, 10:] = 0.1
    w1 = np.zeros((16, 16), np.float32)
    w1[0, :] = 1.0 / 16
    set_params(net, np.concatenate([w0.ravel(), w1.ravel()]))
    y = run(net, x)[:, 0]
    pad = float(np.median(y)) / 0.6  # 16 * relu(6 * 0.1 * pad) / 16 = 0.6 * pad
    record("probe: identity-encoding padding value of tcnn.Network inputs", abs(pad - 1.0) < 1e-2, pad_value=pad)
    # (b) row/column major: W0[o, i] = 1 iff o == i + 1 (i < 10), W1[0, 4] = 1 -> y = x[:, 3] when
    # element (out, in) is at out * n_in_padded + in; x[:, 5] if it were (in, out).
    w0 = np.zeros((16, 16), np.float32)
    for i in range(10):
        w0[i + 1, i] = 1.0
    w1 = np.zeros((16, 16), np.float32)
    w1[0, 4] = 1.0
    set_params(net, np.concatenate([w0.ravel(), w1.ravel()]))
    y = run(net, x)[:, 0]
    e_row = float(np.abs(y - x[:, 3]).max())
    e_col = float(np.abs(y - x[:, 5]).max())
    record("probe: weight element (out, in) at out * fan_in + in (row-major)", e_row < 1e-2, max_abs_row_major=e_row,
           max_abs_col_major=e_col)
    # (c) output padding rows are learnable params but sliced away: only row 0 of W1 matters.
    w1[1:, :] = 7.0
    set_params(net, np.concatenate([w0.ravel(), w1.ravel()]))
    y2 = run(net, x)[:, 0]
    record("probe: padded output rows do not affect output[:, :n_out]", float(np.abs(y2 - y).max()) < 1e-6,
           max_abs=float(np.abs(y2 - y).max()))


def check_network_with_grid(rng, n, seed):
    """nerfacto's field.mlp_base: NetworkWithInputEncoding(3, 16, grid, FullyFusedMLP 64, 1 hidden)."""
    m = next(mm for mm in R.nerfacto_tcnn_modules() if mm["key"] == "field.mlp_base.model.params")
    e, c = m["encoding_config"], m["network_config"]
    mod = tcnn.NetworkWithInputEncoding(3, m["n_output_dims"], e, c).to(DEV)
    record("mlp_base (NetworkWithInputEncoding) n_params", mod.params.numel() == m["n_params"],
           tcnn=int(mod.params.numel()), ref=m["n_params"], network_first=m["n_network_params"])
    if mod.params.numel() != m["n_params"]:
        return
    nn_ = m["n_network_params"]
    p = grid_params(seed, m["n_params"])
    p[:nn_] = rng.normal(0.0, 0.1, size=nn_).astype(np.float32)  # network part first (nwie.h:115-130)
    set_params(mod, p)
    x = inputs01(rng, n)
    y = run(mod, x)
    ARRAYS["mlp_base_x"], ARRAYS["mlp_base_y"], ARRAYS["mlp_base_network_params"] = x, y, p[:nn_]
    net_p, grid_p = R.split_network_with_input_encoding(p, nn_)
    args = (e["n_levels"], e["n_features_per_level"], e["log2_hashmap_size"], e["base_resolution"], e["per_level_scale"])
    enc16 = R.grid_encode(grid_p, x, *args, precision="fp16").astype(np.float32)
    ref16 = R.mlp_forward(net_p, enc16, 32, m["n_output_dims"], c["n_neurons"], c["n_hidden_layers"], precision="fp16",
                          pad_value=0.0).astype(np.float32)
    ref32 = R.mlp_forward(net_p, R.grid_encode(grid_p, x, *args), 32, m["n_output_dims"], c["n_neurons"],
                          c["n_hidden_layers"], pad_value=0.0)
    tol = 2e-2 * max(1.0, float(np.abs(ref32).max()))
    e16, e32 = float(np.abs(y - ref16).max()), float(np.abs(y - ref32).max())
    record("mlp_base vs reference (network params first, then grid)", e16 <= tol, max_abs_vs_fp16=e16,
           max_abs_vs_fp32=e32, tol=tol)
    # The other order, for contrast (grid first, network last):
    g2, n2 = p[:len(grid_p)], p[len(grid_p):]
    alt = R.mlp_forward(n2, R.grid_encode(g2, x, *args), 32, m["n_output_dims"], c["n_neurons"], c["n_hidden_layers"],
                        pad_value=0.0)
    print(f"    (grid-first order would give max_abs={float(np.abs(y - alt).max()):.3e})")
    print(f"    hyperparams: {mod.native_tcnn_module.hyperparams()}")


def check_grid_n_params_sweep():
    """n_params of many grid configs (rounding to 8, dense/hashed boundaries) against the formula."""
    bad, total, skipped = [], 0, 0
    configs = [(L, F, T, b, mx) for L in (1, 2, 5, 8, 16) for F in (1, 2, 4, 8) for T in (7, 12, 15, 17, 19)
               for b, mx in ((5, 100), (16, 2048), (16, 128), (7, 333))]
    for L, F, T, b, mx in configs[::3]:
        pls = R.per_level_scale_nerfstudio(L, b, mx) if L > 1 else 1.5
        cfg = {"otype": "HashGrid", "n_levels": L, "n_features_per_level": F, "log2_hashmap_size": T,
               "base_resolution": b, "per_level_scale": pls}
        try:
            enc = tcnn.Encoding(3, cfg, dtype=torch.float32)
        except RuntimeError as e:  # a build with the grid factory trimmed to F = 2 (build_and_check.sh)
            skipped += 1
            if skipped == 1:
                print(f"    skipped (not built?): {str(e)[:120]}")
            continue
        want = R.grid_n_params_tcnn(L, F, T, b, pls)
        total += 1
        if enc.params.numel() != want:
            bad.append((cfg, int(enc.params.numel()), want))
        del enc
    record("grid n_params sweep", not bad and total > 0, configs=total, skipped=skipped, mismatches=len(bad))
    for b in bad[:10]:
        print("    mismatch:", b)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    ap.add_argument("--n", type=int, default=5000)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rng = np.random.default_rng(2024)
    gpu = DEV.type == "cuda"
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name() if gpu else "cpu (rehearsal)",
           "capability": list(torch.cuda.get_device_capability()) if gpu else None,
           "tinycudann_file": tcnn.__file__, "tcnn_preferred_precision": str(tcnn.modules._C.preferred_precision()),
           "batch_size_granularity": int(tcnn.modules._C.batch_size_granularity())}
    print("environment:", json.dumps(env), flush=True)
    mods = R.nerfacto_tcnn_modules()
    steps = [
        ("grid field (nerfacto default)", lambda: check_grid("grid_field", mods[2]["encoding_config"], 11, rng, a.n)),
        ("grid proposal 0", lambda: check_grid("grid_prop0", mods[4]["encoding_config"], 12, rng, a.n)),
        ("grid proposal 1", lambda: check_grid("grid_prop1", mods[7]["encoding_config"], 13, rng, a.n)),
        ("SH", lambda: check_sh(rng, a.n)),
        ("mlp_head", lambda: check_network("mlp_head", 63, 3, mods[3]["network_config"], rng, a.n)),
        ("mlp_head_linear", lambda: check_network("mlp_head_linear_out", 63, 3,
                                                  dict(mods[3]["network_config"], output_activation="None"), rng, a.n)),
        ("proposal mlp", lambda: check_network("proposal_mlp", 10, 1, mods[6]["network_config"], rng, a.n,
                                               x=rng.uniform(-1e-2, 1e-2, size=(a.n, 10)).astype(np.float32), scale=0.3)),
        ("cutlass", lambda: check_network("cutlass_mlp_w48", 20, 5, {"otype": "CutlassMLP", "activation": "ReLU",
                                          "output_activation": "None", "n_neurons": 48, "n_hidden_layers": 2}, rng, a.n)),
        ("probes", lambda: check_probes(rng)),
        ("mlp_base", lambda: check_network_with_grid(rng, a.n, 14)),
        ("grid sweep", check_grid_n_params_sweep),
    ]
    for title, fn in steps:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            record(f"{title}: raised", False, error=repr(e)[:300])
    ok = all(r["ok"] for r in RESULTS)
    summary = {"ok": ok, "seconds": round(time.time() - t0, 1), "environment": env, "checks": RESULTS,
               "grid_params_generator": "np.random.default_rng(seed).uniform(-1, 1, n).astype(float32); seeds: "
                                        "field 11, proposal 0 12, proposal 1 13, mlp_base 14 (its first "
                                        "n_network_params replaced by the saved mlp_base_network_params)"}
    (out / "tcnn_check.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    np.savez_compressed(out / "tcnn_check.npz", **ARRAYS)
    print(f"\n{sum(r['ok'] for r in RESULTS)}/{len(RESULTS)} checks passed in {summary['seconds']} s; wrote "
          f"{out / 'tcnn_check.json'} and {out / 'tcnn_check.npz'} ({(out / 'tcnn_check.npz').stat().st_size // 1024} KiB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
