#!/usr/bin/env python3
"""A numpy transcription of tiny-cuda-nn's forward passes as nerfstudio 1.1.5's nerfacto uses them
(implementation="tcnn"), to read and check checkpoints written with tcnn without a GPU.

Everything here transcribes NVlabs/tiny-cuda-nn at commit 6ee3546bda615f51abe684ce9edefeb414689135
(2026-04-01, "fix(pytorch bindings): update c++ standard to 17"); file:line references are to that
commit. docs/tcnn-layout.md gives the full fact sheet with citations; the short names used below:

    grid.h     include/tiny-cuda-nn/encodings/grid.h
    cdev.h     include/tiny-cuda-nn/common_device.h
    sh.h       include/tiny-cuda-nn/encodings/spherical_harmonics.h
    ident.h    include/tiny-cuda-nn/encodings/identity.h
    ffmlp.cu   src/fully_fused_mlp.cu
    cmlp.cu    src/cutlass_mlp.cu
    nwie.h     include/tiny-cuda-nn/network_with_input_encoding.h
    cpp_api.cu src/cpp_api.cu
    modules.py bindings/torch/tinycudann/modules.py

Functions (numpy only; float32 unless `precision="fp16"` asks for an emulation of tcnn's half
precision path, which is what the torch bindings run on any GPU of compute capability >= 75):

    grid_levels(...)        per level: scale, resolution, dense?, offset (entries), size (entries)
    grid_n_params_tcnn(...) the parameter count exactly as GridEncodingTemplated's constructor loops
    grid_encode(...)        [N, n_levels * n_features] (level-major: column = level * F + feature)
    mlp_layout(...)         the weight matrices' shapes and offsets in a FullyFused/Cutlass MLP's params
    mlp_forward(...)        [N, n_out], with tcnn.Network's identity-encoding input padding (1.0)
    sh_encode_tcnn(x01)     tcnn's SphericalHarmonics (degree 4) of inputs in [0, 1]^3
    sh_encode_nerfacto(d)   what NerfactoField's tcnn direction encoding computes for unit directions d
                            (alias sh_encode)
    nerfacto_tcnn_state(...) the tcnn state-dict keys and shapes of nerfacto (model + proposal nets)

`python3 tcnn_reference.py` runs the self-checks (see `main`); with nerfstudio importable
(~/.cache/ns-venv/bin/python) it also compares against nerfstudio's own code.
"""

from __future__ import annotations

import math
import sys

import numpy as np

F32 = np.float32

# ------------------------------------------------------------------------------------------------
# Hash grid
# ------------------------------------------------------------------------------------------------

# cdev.h:788-791, coherent_prime_hash: factors {1, 2654435761, 805459861, ...}; the default hash
# (grid.h:1839, encoding.value("hash", "CoherentPrime")).
PRIMES = (1, 2654435761, 805459861)
# cdev.h:854-866: the largest resolution per dimension count for which the dense stride does not
# overflow uint32 (index 3 = 3D).
MAX_BASES_3D = 0x659


def next_multiple(value: int, multiple: int) -> int:
    """tcnn's next_multiple (common.h): the smallest multiple of `multiple` >= value."""
    return (value + multiple - 1) // multiple * multiple


def per_level_scale_nerfstudio(num_levels: int, min_res: int, max_res: int) -> float:
    """nerfstudio field_components/encodings.py:344 (HashEncoding) and mlp.py:234
    (MLPWithHashEncoding): growth_factor = exp((log(max_res) - log(min_res)) / (num_levels - 1)),
    a float64 that nerfstudio passes to tcnn as "per_level_scale" (encodings.py:392)."""
    if num_levels <= 1:
        return 1.0
    return float(np.exp((np.log(max_res) - np.log(min_res)) / (num_levels - 1)))


def grid_scale(level: int, log2_per_level_scale: np.float32, base_resolution: int) -> np.float32:
    """cdev.h:886-891: exp2f(level * log2_per_level_scale) * base_resolution - 1.0f (float32).
    On the device the torch bindings compile with --use_fast_math (bindings/torch/setup.py:115),
    so exp2f there is the approximate ex2 instruction: it may differ from this by an ulp or two."""
    prod = F32(F32(level) * F32(log2_per_level_scale))
    return F32(F32(np.exp2(prod)) * F32(base_resolution) - F32(1.0))


def grid_resolution(scale: np.float32) -> int:
    """cdev.h:893-895: (uint32_t)ceilf(scale) + 1."""
    return int(np.ceil(scale)) + 1


def grid_levels(n_levels: int, n_features_per_level: int, log2_hashmap_size: int, base_resolution: int,
                per_level_scale: float, n_pos_dims: int = 3) -> list[dict]:
    """Per level, as GridEncodingTemplated's constructor (grid.h:692-730) and kernel_grid
    (grid.h:94-98) compute them: scale, resolution, whether the level is indexed densely, the level's
    first entry in the table (`offset`, in entries of n_features_per_level params) and its number of
    entries (`size`; kernel_grid's `hashmap_size` = offset_table[l+1] - offset_table[l]).

    per_level_scale is read by tcnn as a float (grid.h:1751, encoding.value(..., 2.0f)), its log2
    taken in float (grid.h:701, std::log2(float)). Dense rule: grid_index (cdev.h:847-884) hashes
    iff `hashmap_size < stride` with stride = resolution^3 (or 0xFFFFFFFF above MAX_BASES), which
    for power-of-two tables is `resolution^3 > 2^log2_hashmap_size`."""
    log2_pls = F32(np.log2(F32(per_level_scale)))
    table = 1 << log2_hashmap_size
    levels = []
    offset = 0
    for level in range(n_levels):
        scale = grid_scale(level, log2_pls, base_resolution)
        resolution = grid_resolution(scale)
        max_params = 0xFFFFFFFF // 2  # grid.h:703
        dense_params = resolution ** n_pos_dims
        params_in_level = max_params if float(F32(resolution)) ** n_pos_dims > float(max_params) else dense_params
        params_in_level = next_multiple(params_in_level, 8)  # grid.h:707
        params_in_level = min(params_in_level, table)  # grid.h:716 (GridType::Hash)
        stride = dense_params if resolution <= MAX_BASES_3D else 0xFFFFFFFF  # cdev.h:869-877
        dense = not (params_in_level < stride)  # cdev.h:879
        levels.append({
            "level": level,
            "scale": float(scale),
            "resolution": resolution,
            "dense": dense,
            "offset": offset,
            "size": params_in_level,
            # |scale - nearest integer|: a scale within float rounding of an integer may give the
            # device (fast-math exp2) a resolution one different from the host's.
            "scale_to_integer": float(abs(float(scale) - round(float(scale)))),
        })
        offset += params_in_level
    return levels


def grid_n_params_tcnn(n_levels: int, n_features_per_level: int, log2_hashmap_size: int, base_resolution: int,
                       per_level_scale: float, n_pos_dims: int = 3) -> int:
    """grid.h:692-730 line by line (a second transcription, kept independent of grid_levels):
    m_n_params = offset_table[n_levels] * N_FEATURES_PER_LEVEL."""
    offset = 0
    for i in range(n_levels):
        scale = F32(np.exp2(F32(F32(i) * F32(np.log2(F32(per_level_scale)))))) * F32(base_resolution) - F32(1.0)
        resolution = int(math.ceil(float(F32(scale)))) + 1
        max_params = (2 ** 32 - 1) // 2
        if float(np.power(F32(resolution), F32(n_pos_dims))) > float(F32(max_params)):
            params_in_level = max_params
        else:
            params_in_level = resolution ** n_pos_dims
        params_in_level = ((params_in_level + 7) // 8) * 8
        params_in_level = min(params_in_level, 1 << log2_hashmap_size)
        offset += params_in_level
    return offset * n_features_per_level


def grid_index(pos_grid: np.ndarray, resolution: int, hashmap_size: int, dense: bool) -> np.ndarray:
    """cdev.h:847-884 for 3D, CoherentPrime: pos_grid [..., 3] uint32 corners -> entry index.
    Dense: x + y * res + z * res^2 (x fastest), uint32 arithmetic; hashed: (x * 1) ^ (y * 2654435761)
    ^ (z * 805459861) mod 2^32 (cdev.h:767-791); both then `% hashmap_size` (the level's size)."""
    p = pos_grid.astype(np.uint64)
    if dense:
        index = (p[..., 0] + p[..., 1] * resolution + p[..., 2] * resolution * resolution) & 0xFFFFFFFF
    else:
        index = ((p[..., 0] * PRIMES[0]) & 0xFFFFFFFF) ^ ((p[..., 1] * PRIMES[1]) & 0xFFFFFFFF) \
            ^ ((p[..., 2] * PRIMES[2]) & 0xFFFFFFFF)
    return (index % np.uint64(hashmap_size)).astype(np.int64)


def _round_half(x):
    return np.asarray(x, dtype=np.float64).astype(np.float16)


def _fma_half(a16, b16, c16):
    """fma in __half: a*b+c exact in float64 (11-bit mantissas), one rounding to half."""
    return (a16.astype(np.float64) * b16.astype(np.float64) + c16.astype(np.float64)).astype(np.float16)


def _fmaf(a: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
    """fmaf in float32, emulated in float64 (the product is exact; one rounding to float32 but for
    rare double-rounding ties)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c).astype(np.float32)


def grid_encode(params_flat: np.ndarray, x01: np.ndarray, n_levels: int, n_features: int, log2_hashmap_size: int,
                base_resolution: int, per_level_scale: float, precision: str = "fp32",
                interpolation: str = "Linear") -> np.ndarray:
    """kernel_grid (grid.h:48-212), forward only, for 3D inputs `x01` [N, 3] (tcnn expects [0, 1]).

    Per level l (grid.h:94-98): the level's entries start at offset_table[l] * F in `params_flat`,
    each entry holding its F features contiguously (grid.h:117-118: index * N_FEATURES_PER_LEVEL).
    Per dimension (pos_fract, cdev.h:1031-1043): pos = fmaf(scale, x, 0.5f); pos_grid = floor(pos);
    pos -= pos_grid. Corners idx = 0..7 with bit d choosing pos_grid[d] + 1 (grid.h:147-160); weight
    = prod over d = 0, 1, 2 of (bit ? pos[d] : 1 - pos[d]) in float; result = fma((T)weight,
    value, result) in T (grid.h:162), corners accumulated in idx order. Output column
    level * F + f (grid.h:167, SoA `encoded_positions[i + (level * F + f) * num_elements]`; the
    torch binding returns it as a [N, L * F] row-major tensor: cpp_api.cu:83/95 a column-major
    GPUMatrix of height padded_output_width over the torch tensor, AoS layout so the grid transposes,
    grid.h:803-812). No padding columns: tcnn.Encoding is created with alignment 0
    (cpp_api.cu:167/170, encoding.cu:140-142).

    precision "fp32": params, weights and accumulation in float32. "fp16": tcnn's default torch
    path (modules.py:230 casts the fp32 master params to half each call): params and weights
    rounded to half, fma in half, half output."""
    assert interpolation in ("Linear", "Nearest", "Smoothstep")
    levels = grid_levels(n_levels, n_features, log2_hashmap_size, base_resolution, per_level_scale)
    n_params = levels[-1]["offset"] * n_features + levels[-1]["size"] * n_features
    params_flat = np.asarray(params_flat).reshape(-1)
    assert params_flat.size == n_params, (params_flat.size, n_params)
    half = precision == "fp16"
    table = _round_half(params_flat) if half else params_flat.astype(np.float32)
    x = np.asarray(x01, dtype=np.float32)
    n = x.shape[0]
    out = np.zeros((n, n_levels * n_features), dtype=np.float16 if half else np.float32)
    for lv in levels:
        scale = F32(lv["scale"])
        pos = _fmaf(np.full_like(x, scale), x, 0.5)  # [N, 3]
        tmp = np.floor(pos)
        pos_grid = tmp.astype(np.int64).astype(np.uint32)  # (uint32_t)(int)tmp
        pos = (pos - tmp).astype(np.float32)
        if interpolation == "Smoothstep":
            pos = (pos * pos * (F32(3.0) - F32(2.0) * pos)).astype(np.float32)
        base = lv["offset"] * n_features
        entries = table[base: base + lv["size"] * n_features].reshape(lv["size"], n_features)

        def val(corner):
            return entries[grid_index(corner, lv["resolution"], lv["size"], lv["dense"])]  # [N, F]

        cols = slice(lv["level"] * n_features, (lv["level"] + 1) * n_features)
        if interpolation == "Nearest":
            out[:, cols] = val(pos_grid)
            continue
        result = np.zeros((n, n_features), dtype=np.float16 if half else np.float32)
        for idx in range(8):
            weight = np.ones(n, dtype=np.float32)
            corner = pos_grid.copy()
            for d in range(3):
                if (idx >> d) & 1:
                    weight = (weight * pos[:, d]).astype(np.float32)
                    corner[:, d] = pos_grid[:, d] + np.uint32(1)
                else:
                    weight = (weight * (F32(1.0) - pos[:, d])).astype(np.float32)
            v = val(corner)
            if half:
                result = _fma_half(_round_half(weight)[:, None], v, result)
            else:
                result = (weight[:, None].astype(np.float64) * v + result).astype(np.float32)
        out[:, cols] = result
    return out


# ------------------------------------------------------------------------------------------------
# MLPs
# ------------------------------------------------------------------------------------------------

ALIGNMENT = 16  # FullyFusedMLP::REQUIRED_ALIGNMENT (fully_fused_mlp.h:110-112), CutlassMLP's too
# (cutlass_mlp.h:117-123)


def mlp_layout(n_in: int, n_out: int, width: int, n_hidden_layers: int, otype: str = "FullyFusedMLP") -> list[dict]:
    """The weight matrices in a tcnn MLP's params, in order (ffmlp.cu:658-677 and 857-865; cmlp.cu:63-88):
    [width x n_in_padded], (n_hidden_layers - 1) x [width x width], [n_out_padded x width]; each
    row-major GPUMatrix<T, RM>(rows = fan-out, cols = fan-in), so element (out, in) sits at
    offset + out * fan_in + in. No biases. n_in_padded = next_multiple(n_in, 16) when the network
    sits behind tcnn.Network's identity encoding (network_with_input_encoding.h:47-51);
    n_out_padded = next_multiple(n_out, 16) (ffmlp.cu:656, cmlp.cu:55). CutlassMLP with
    n_hidden_layers == 0 is one [n_out_padded x n_in_padded] matrix (cmlp.cu:64-67); FullyFusedMLP
    refuses n_hidden_layers == 0 (ffmlp.cu:650-652)."""
    n_in_p = next_multiple(n_in, ALIGNMENT)
    n_out_p = next_multiple(n_out, ALIGNMENT)
    if n_hidden_layers == 0:
        assert otype == "CutlassMLP", "FullyFusedMLP requires at least 1 hidden layer"
        shapes = [(n_out_p, n_in_p)]
    else:
        shapes = [(width, n_in_p)] + [(width, width)] * (n_hidden_layers - 1) + [(n_out_p, width)]
    layout, offset = [], 0
    for rows, cols in shapes:
        layout.append({"rows": rows, "cols": cols, "offset": offset})
        offset += rows * cols
    return layout


def mlp_n_params(n_in: int, n_out: int, width: int, n_hidden_layers: int, otype: str = "FullyFusedMLP") -> int:
    lay = mlp_layout(n_in, n_out, width, n_hidden_layers, otype)
    return lay[-1]["offset"] + lay[-1]["rows"] * lay[-1]["cols"]


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    """cdev.h:111-190 (warp_activation), evaluated in float32."""
    x = x.astype(np.float32)
    if name in ("None", None):
        return x
    if name == "ReLU":
        return np.maximum(x, F32(0.0))
    if name == "LeakyReLU":
        return np.where(x > 0, x, x * F32(0.01)).astype(np.float32)
    if name == "Sigmoid":
        return (F32(1.0) / (F32(1.0) + np.exp(-x))).astype(np.float32)
    if name == "Exponential":
        return np.exp(x).astype(np.float32)
    if name == "Softplus":  # K_ACT = 10 (cdev.h:108)
        return (np.log(np.exp(x * F32(10.0)) + F32(1.0)) / F32(10.0)).astype(np.float32)
    if name == "Tanh":
        return np.tanh(x).astype(np.float32)
    if name == "Sine":
        return np.sin(x).astype(np.float32)
    raise ValueError(f"activation {name}")


def _matmul(w: np.ndarray, h: np.ndarray, half: bool) -> np.ndarray:
    """h [N, in] @ w.T, w [out, in]. fp16: tcnn's fully fused kernel multiplies half matrices in
    16-wide k chunks into a __half accumulator (ffmlp.cu:66-68/331-333 wmma fragments with
    OUT_T = __half, ffmlp.cu:618); emulated as float32 sums per chunk, rounded to half after each."""
    if not half:
        return (h.astype(np.float64) @ w.astype(np.float64).T).astype(np.float32)
    acc = np.zeros((h.shape[0], w.shape[0]), dtype=np.float16)
    for k in range(0, w.shape[1], 16):
        part = h[:, k:k + 16].astype(np.float32) @ w[:, k:k + 16].astype(np.float32).T
        acc = (acc.astype(np.float32) + part).astype(np.float16)
    return acc


def mlp_forward(params_flat: np.ndarray, x: np.ndarray, n_in: int, n_out: int, width: int, n_hidden_layers: int,
                activation: str = "ReLU", output_activation: str = "None", otype: str = "FullyFusedMLP",
                precision: str = "fp32", pad_value: float = 1.0) -> np.ndarray:
    """tcnn.Network(n_in, n_out, config) forward: modules.py:222-233 -> cpp_api.cu:160-162 wraps the
    MLP in NetworkWithInputEncoding with an Identity encoding, whose padding columns n_in ..
    n_in_padded - 1 are set to 1 (ident.h:62-66; padding from set_alignment(16),
    network_with_input_encoding.h:47). Then per layer h = act(W h) with `activation` after every
    matrix but the last and `output_activation` after the last (ffmlp.cu:399/110/468;
    cmlp.cu compute_layer). The torch binding returns output[:, :n_out] of the padded output
    (modules.py:233). Use pad_value=0.0 for a network fed by a NetworkWithInputEncoding's grid (its
    padding, if any, is 0: grid.h:756-766) — for nerfacto's grids no padding arises there."""
    lay = mlp_layout(n_in, n_out, width, n_hidden_layers, otype)
    params_flat = np.asarray(params_flat).reshape(-1)
    assert params_flat.size == mlp_n_params(n_in, n_out, width, n_hidden_layers, otype)
    half = precision == "fp16"
    cast = (lambda a: _round_half(a)) if half else (lambda a: np.asarray(a, dtype=np.float32))
    n_in_p = lay[0]["cols"]
    h = np.full((x.shape[0], n_in_p), pad_value, dtype=np.float32)
    h[:, :n_in] = np.asarray(x, dtype=np.float32)
    h = cast(h)
    for i, m in enumerate(lay):
        w = cast(params_flat[m["offset"]: m["offset"] + m["rows"] * m["cols"]].reshape(m["rows"], m["cols"]))
        h = _matmul(w, h, half)
        act = output_activation if i == len(lay) - 1 else activation
        h = cast(_activation(act, h.astype(np.float32)))
    return h[:, :n_out]


def split_network_with_input_encoding(params_flat: np.ndarray, n_network_params: int):
    """nwie.h:115-122 (set_params_impl) and 124-130: the network's params come FIRST, the encoding's
    after them. Returns (network_params, encoding_params)."""
    params_flat = np.asarray(params_flat).reshape(-1)
    return params_flat[:n_network_params], params_flat[n_network_params:]


# ------------------------------------------------------------------------------------------------
# Spherical harmonics
# ------------------------------------------------------------------------------------------------

def sh_encode_tcnn(x01: np.ndarray, degree: int = 4, precision: str = "fp32") -> np.ndarray:
    """kernel_sh (sh.h:45-72): x, y, z = input * 2 - 1, then sh_enc (cdev.h:475-511) up to degree 4
    (degree^2 = 16 outputs, sh.h:107). Padding (if any) would be written FIRST, with 1.0
    (sh.h:58-63), but tcnn.Encoding has none (alignment 0)."""
    assert degree == 4
    v = np.asarray(x01, dtype=np.float32)
    x = (v[:, 0] * F32(2.0) - F32(1.0)).astype(np.float32)
    y = (v[:, 1] * F32(2.0) - F32(1.0)).astype(np.float32)
    z = (v[:, 2] * F32(2.0) - F32(1.0)).astype(np.float32)
    xy, xz, yz, x2, y2, z2 = x * y, x * z, y * z, x * x, y * y, z * z
    c = [
        np.full_like(x, F32(0.28209479177387814)),           # cdev.h:483
        F32(-0.48860251190291987) * y,                      # 485
        F32(0.48860251190291987) * z,                       # 486
        F32(-0.48860251190291987) * x,                      # 487
        F32(1.0925484305920792) * xy,                       # 489
        F32(-1.0925484305920792) * yz,                      # 490
        F32(0.94617469575755997) * z2 - F32(0.31539156525251999),  # 491
        F32(-1.0925484305920792) * xz,                      # 492
        F32(0.54627421529603959) * x2 - F32(0.54627421529603959) * y2,  # 493
        F32(0.59004358992664352) * y * (F32(-3.0) * x2 + y2),  # 495
        F32(2.8906114426405538) * xy * z,                   # 496
        F32(0.45704579946446572) * y * (F32(1.0) - F32(5.0) * z2),  # 497
        F32(0.3731763325901154) * z * (F32(5.0) * z2 - F32(3.0)),   # 498
        F32(0.45704579946446572) * x * (F32(1.0) - F32(5.0) * z2),  # 499
        F32(1.4453057213202769) * z * (x2 - y2),            # 500
        F32(0.59004358992664352) * x * (-x2 + F32(3.0) * y2),  # 501
    ]
    out = np.stack(c, axis=1).astype(np.float32)
    return _round_half(out) if precision == "fp16" else out


def sh_encode_nerfacto(directions: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """NerfactoField.get_outputs (nerfacto_field.py:242-244): d = (directions + 1) / 2
    (base_field.py:136-142, get_normalized_directions), then the tcnn SphericalHarmonics encoding,
    which maps back to 2 d - 1 (sh.h:67-69). Equal to nerfstudio's torch
    components_from_spherical_harmonics(4, directions) with every odd-index component negated (see
    main()); NOT equal to nerfstudio's torch SHEncoding path, which evaluates the polynomials at
    (directions + 1) / 2 itself (encodings.py:792-795)."""
    d = np.asarray(directions, dtype=np.float32)
    return sh_encode_tcnn(((d + F32(1.0)) / F32(2.0)).astype(np.float32), 4, precision)


sh_encode = sh_encode_nerfacto  # short name: unit directions [N, 3] -> [N, 16], as nerfacto's tcnn path computes them


# ------------------------------------------------------------------------------------------------
# nerfacto's tcnn modules and state-dict keys
# ------------------------------------------------------------------------------------------------

def nerfacto_tcnn_modules(num_levels=16, base_res=16, max_res=2048, log2_hashmap_size=19, features_per_level=2,
                          hidden_dim=64, hidden_dim_color=64, geo_feat_dim=15, appearance_embed_dim=32,
                          num_layers=2, num_layers_color=3,
                          proposal_net_args_list=({"hidden_dim": 16, "log2_hashmap_size": 17, "num_levels": 5,
                                                   "max_res": 128},
                                                  {"hidden_dim": 16, "log2_hashmap_size": 17, "num_levels": 5,
                                                   "max_res": 256})):
    """The tcnn modules of nerfstudio 1.1.5's nerfacto with implementation="tcnn" and their configs
    (nerfacto_field.py:125-201, density_fields.py:71-90, models/nerfacto.py:62-95/180-205 defaults;
    method_configs.py:87-104 overrides none of these). Keys are relative to `_model.`."""
    grid = {"otype": "HashGrid", "n_levels": num_levels, "n_features_per_level": features_per_level,
            "log2_hashmap_size": log2_hashmap_size, "base_resolution": base_res,
            "per_level_scale": per_level_scale_nerfstudio(num_levels, base_res, max_res)}

    def net(width, layers, act="ReLU", out_act="None"):
        return {"otype": "FullyFusedMLP" if width in (16, 32, 64, 128) else "CutlassMLP", "activation": act,
                "output_activation": out_act, "n_neurons": width, "n_hidden_layers": layers - 1}

    mods = []
    grid_params = grid_n_params_tcnn(num_levels, features_per_level, log2_hashmap_size, base_res,
                                     grid["per_level_scale"])
    base_net = net(hidden_dim, num_layers)
    base_net_params = mlp_n_params(num_levels * features_per_level, 1 + geo_feat_dim, hidden_dim, num_layers - 1,
                                   base_net["otype"])
    mods.append({"key": "field.direction_encoding.tcnn_encoding.params", "kind": "Encoding", "n_input_dims": 3,
                 "encoding_config": {"otype": "SphericalHarmonics", "degree": 4}, "n_params": 0, "n_output_dims": 16})
    mods.append({"key": "field.position_encoding.tcnn_encoding.params", "kind": "Encoding", "n_input_dims": 3,
                 "encoding_config": {"otype": "Frequency", "n_frequencies": 2}, "n_params": 0, "n_output_dims": 12})
    mods.append({"key": "field.mlp_base.model.params", "kind": "NetworkWithInputEncoding", "n_input_dims": 3,
                 "n_output_dims": 1 + geo_feat_dim, "encoding_config": grid, "network_config": base_net,
                 "n_params": base_net_params + grid_params, "n_network_params": base_net_params})
    head_in = 16 + geo_feat_dim + appearance_embed_dim
    head_net = net(hidden_dim_color, num_layers_color, "ReLU", "Sigmoid")
    mods.append({"key": "field.mlp_head.tcnn_encoding.params", "kind": "Network", "n_input_dims": head_in,
                 "n_output_dims": 3, "network_config": head_net,
                 "n_params": mlp_n_params(head_in, 3, hidden_dim_color, num_layers_color - 1, head_net["otype"])})
    for i, args in enumerate(proposal_net_args_list):
        pl = args.get("num_levels", 8)
        pgrid = {"otype": "HashGrid", "n_levels": pl, "n_features_per_level": args.get("features_per_level", 2),
                 "log2_hashmap_size": args.get("log2_hashmap_size", 18), "base_resolution": args.get("base_res", 16),
                 "per_level_scale": per_level_scale_nerfstudio(pl, args.get("base_res", 16), args.get("max_res", 1024))}
        gparams = grid_n_params_tcnn(pl, pgrid["n_features_per_level"], pgrid["log2_hashmap_size"],
                                     pgrid["base_resolution"], pgrid["per_level_scale"])
        width = args.get("hidden_dim", 64)
        pnet = net(width, args.get("num_layers", 2))
        n_enc_out = pl * pgrid["n_features_per_level"]
        for key in (f"proposal_networks.{i}.encoding.tcnn_encoding.params",
                    f"proposal_networks.{i}.mlp_base.0.tcnn_encoding.params"):
            mods.append({"key": key, "kind": "Encoding", "n_input_dims": 3, "encoding_config": pgrid,
                         "n_params": gparams, "n_output_dims": n_enc_out, "shared": True})
        mods.append({"key": f"proposal_networks.{i}.mlp_base.1.tcnn_encoding.params", "kind": "Network",
                     "n_input_dims": n_enc_out, "n_output_dims": 1, "network_config": pnet,
                     "n_params": mlp_n_params(n_enc_out, 1, width, args.get("num_layers", 2) - 1, pnet["otype"])})
    return mods


# ------------------------------------------------------------------------------------------------
# Self-checks
# ------------------------------------------------------------------------------------------------

def _print_levels(title, n_levels, feats, log2_t, base, max_res):
    pls = per_level_scale_nerfstudio(n_levels, base, max_res)
    levels = grid_levels(n_levels, feats, log2_t, base, pls)
    total = (levels[-1]["offset"] + levels[-1]["size"]) * feats
    tcnn_total = grid_n_params_tcnn(n_levels, feats, log2_t, base, pls)
    print(f"\n{title}: n_levels={n_levels} F={feats} T=2^{log2_t} base={base} max_res={max_res} "
          f"per_level_scale={pls!r} (float32 {float(F32(pls))!r}, log2 {float(F32(np.log2(F32(pls))))!r})")
    print(f"  {'lvl':>3} {'scale':>14} {'res':>5} {'dense':>5} {'offset':>9} {'size':>7} {'|scale-int|':>11}")
    for lv in levels:
        flag = "  <- near-integer scale" if lv["scale_to_integer"] < 1e-3 else ""
        print(f"  {lv['level']:>3} {lv['scale']:>14.6f} {lv['resolution']:>5} {str(lv['dense']):>5} {lv['offset']:>9} "
              f"{lv['size']:>7} {lv['scale_to_integer']:>11.2e}{flag}")
    print(f"  total params {total} (tcnn constructor formula: {tcnn_total}) {'OK' if total == tcnn_total else 'MISMATCH'}")
    return total == tcnn_total, levels


def _check_dense_linear(rng):
    """A dense level whose entries hold a linear function of the vertex (x + 2y + 3z, -x) must
    interpolate to the same function of pos = scale * x + 0.5: this pins the stride order (x
    fastest), the +0.5 shift, the floor corner and the trilinear weights together."""
    n_levels, feats, log2_t, base, pls = 2, 2, 19, 16, 1.5
    levels = grid_levels(n_levels, feats, log2_t, base, pls)
    params = np.zeros((levels[-1]["offset"] + levels[-1]["size"]) * feats, dtype=np.float32)
    worst = 0.0
    for lv in levels:
        assert lv["dense"]
        r = lv["resolution"]
        idx = np.arange(r ** 3)
        vx, vy, vz = idx % r, (idx // r) % r, idx // (r * r)
        base_i = lv["offset"] * feats
        params[base_i + idx * feats + 0] = vx + 2 * vy + 3 * vz
        params[base_i + idx * feats + 1] = -vx
    # Keep pos_grid + 1 <= r - 1 so no corner wraps: pos = scale * x + 0.5 can reach scale + 0.5,
    # whose floor + 1 can be r = ceil(scale) + 1 itself (the wraparound of cdev.h:1005-1006).
    hi = min((lv["resolution"] - 1.5) / lv["scale"] for lv in levels)
    x = rng.uniform(0.0, hi, size=(2000, 3)).astype(np.float32)
    out = grid_encode(params, x, n_levels, feats, log2_t, base, pls)
    for lv in levels:
        pos = x.astype(np.float64) * lv["scale"] + 0.5
        want0 = pos[:, 0] + 2 * pos[:, 1] + 3 * pos[:, 2]
        want1 = -pos[:, 0]
        got = out[:, lv["level"] * feats: lv["level"] * feats + 2]
        worst = max(worst, float(np.abs(got[:, 0] - want0).max()), float(np.abs(got[:, 1] - want1).max()))
    return worst


def _check_mlp_padding(rng):
    """mlp_forward's identity padding with 1.0 equals a bias equal to the sum of the padded columns'
    weights (a consistency check of the transcription, not of tcnn)."""
    n_in, n_out, width, hidden = 10, 1, 16, 1
    p = rng.normal(size=mlp_n_params(n_in, n_out, width, hidden)).astype(np.float32)
    x = rng.normal(size=(64, n_in)).astype(np.float32)
    got = mlp_forward(p, x, n_in, n_out, width, hidden)
    lay = mlp_layout(n_in, n_out, width, hidden)
    w0 = p[:lay[0]["rows"] * lay[0]["cols"]].reshape(lay[0]["rows"], lay[0]["cols"])
    w1 = p[lay[1]["offset"]:].reshape(lay[1]["rows"], lay[1]["cols"])
    h = np.maximum(x @ w0[:, :n_in].T + w0[:, n_in:].sum(1), 0)
    want = (h @ w1.T)[:, :n_out]
    return float(np.abs(got - want).max())


def main() -> int:
    ok = True
    rng = np.random.default_rng(0)
    print("tcnn_reference self-check (tiny-cuda-nn 6ee3546, nerfstudio 1.1.5)")

    # 1. Per-level tables and totals.
    for args in [("nerfacto field grid (default)", 16, 2, 19, 16, 2048),
                 ("proposal net 0 grid", 5, 2, 17, 16, 128),
                 ("proposal net 1 grid", 5, 2, 17, 16, 256)]:
        good, _ = _print_levels(*args)
        ok &= good

    # 2. Dense-level stride order / offset / weights.
    err = _check_dense_linear(rng)
    print(f"\ndense level holding a linear function, max |interpolated - exact|: {err:.2e} (want < 1e-3)")
    ok &= err < 1e-3

    # 3. MLP padding-as-bias consistency.
    err = _check_mlp_padding(rng)
    print(f"MLP with 1.0-padded input == MLP with bias sum(padded weights), max err: {err:.2e} (want < 1e-4)")
    ok &= err < 1e-4

    # 4. Parameter counts of nerfacto's tcnn modules.
    print("\nnerfacto (default config) tcnn modules, keys under `_model.`:")
    for m in nerfacto_tcnn_modules():
        extra = f" (network {m['n_network_params']} first, then grid {m['n_params'] - m['n_network_params']})" \
            if "n_network_params" in m else ""
        print(f"  {m['key']:<58} {m['kind']:<25} params ({m['n_params']},){extra}")

    # 5. SH: orthonormality of tcnn's basis (Fibonacci sphere quadrature).
    k = 200000
    i = np.arange(k) + 0.5
    zc = 1 - 2 * i / k
    phi = np.pi * (1 + 5 ** 0.5) * i
    d = np.stack([np.sqrt(1 - zc ** 2) * np.cos(phi), np.sqrt(1 - zc ** 2) * np.sin(phi), zc], 1).astype(np.float32)
    y = sh_encode_tcnn((d + 1) / 2).astype(np.float64)
    gram = 4 * np.pi * (y.T @ y) / k
    err = float(np.abs(gram - np.eye(16)).max())
    print(f"\ntcnn SH degree 4: max |Gram - I| over the sphere: {err:.2e} (want < 1e-3)")
    ok &= err < 1e-3

    # 6. Against nerfstudio itself, where importable.
    try:
        import torch
        from nerfstudio.utils.math import components_from_spherical_harmonics
    except Exception as e:  # noqa: BLE001
        print(f"\n(nerfstudio not importable: {e!r}; comparisons with nerfstudio skipped)")
        return 0 if ok else 1

    dirs = rng.normal(size=(4096, 3))
    dirs = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)
    ns = components_from_spherical_harmonics(4, torch.from_numpy(dirs)).numpy()
    tc = sh_encode_nerfacto(dirs)
    sign = np.array([(-1) ** j for j in range(16)], dtype=np.float32)
    err_signed = float(np.abs(tc - ns * sign).max())
    err_plain = float(np.abs(tc - ns).max())
    ns_torch_path = components_from_spherical_harmonics(4, torch.from_numpy((dirs + 1) / 2)).numpy()
    err_torch_path = float(np.abs(tc - ns_torch_path).max())
    print(f"\nSH: tcnn(nerfacto) vs (-1)^k * nerfstudio components(d): max err {err_signed:.2e} (want < 1e-5)")
    print(f"SH: tcnn(nerfacto) vs nerfstudio components(d) unsigned:  max err {err_plain:.2e} (differs: odd k negated)")
    print(f"SH: tcnn(nerfacto) vs nerfstudio torch SHEncoding path (components((d+1)/2)): max err {err_torch_path:.2e} "
          f"(differs: the torch path never maps back to [-1, 1])")
    ok &= err_signed < 1e-5 and err_plain > 0.1

    from nerfstudio.field_components.encodings import HashEncoding
    enc = HashEncoding(num_levels=16, min_res=16, max_res=2048, log2_hashmap_size=19, implementation="torch")
    corners = rng.integers(0, 2049, size=(10000, 16, 3)).astype(np.int32)
    ns_idx = enc.hash_fn(torch.from_numpy(corners)).numpy() - np.arange(16) * (1 << 19)
    tc_idx = grid_index(corners.astype(np.uint32), 2049, 1 << 19, dense=False)
    mism = int((ns_idx != tc_idx).sum())
    print(f"hash of a hashed level: tcnn grid_index vs nerfstudio HashEncoding.hash_fn: {mism} mismatches of "
          f"{ns_idx.size} (want 0)")
    ok &= mism == 0
    pls_ns = float(enc.growth_factor)
    pls_ref = per_level_scale_nerfstudio(16, 16, 2048)
    print(f"per_level_scale: nerfstudio growth_factor {pls_ns!r}, ours {pls_ref!r} {'OK' if pls_ns == pls_ref else 'MISMATCH'}")
    ok &= pls_ns == pls_ref

    ok &= _check_nerfstudio_keys()
    print("\nALL OK" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


def _check_nerfstudio_keys() -> bool:
    """Builds nerfstudio's NerfactoModel (default config) with a stand-in `tcnn` module whose
    classes hold one fp32 `params` Parameter sized by this file's formulas (as tcnn.Module does,
    modules.py:211-213), and prints the state-dict keys it writes. The key names come from
    nerfstudio's module tree; the sizes are ours (check_tcnn.py checks them against tcnn)."""
    import torch

    import nerfstudio.utils.external as ext

    sizes = {}

    class _Module(torch.nn.Module):
        def __init__(self, n_params, desc):
            super().__init__()
            self.params = torch.nn.Parameter(torch.zeros(n_params, dtype=torch.float32))
            sizes[id(self)] = desc

        def forward(self, x):  # never called here
            raise NotImplementedError

    class Encoding(_Module):
        def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
            c = encoding_config
            if c["otype"] == "HashGrid":
                n = grid_n_params_tcnn(c["n_levels"], c["n_features_per_level"], c["log2_hashmap_size"],
                                       c["base_resolution"], c["per_level_scale"])
            else:
                n = 0
            super().__init__(n, ("Encoding", dict(c)))

    class Network(_Module):
        def __init__(self, n_input_dims, n_output_dims, network_config, seed=1337):
            c = network_config
            n = mlp_n_params(n_input_dims, n_output_dims, c["n_neurons"], c["n_hidden_layers"], c["otype"])
            super().__init__(n, ("Network", n_input_dims, n_output_dims, dict(c)))

    class NetworkWithInputEncoding(_Module):
        def __init__(self, n_input_dims, n_output_dims, encoding_config, network_config, seed=1337):
            e, c = encoding_config, network_config
            g = grid_n_params_tcnn(e["n_levels"], e["n_features_per_level"], e["log2_hashmap_size"],
                                   e["base_resolution"], e["per_level_scale"])
            n_enc_out = e["n_levels"] * e["n_features_per_level"]
            m = mlp_n_params(n_enc_out, n_output_dims, c["n_neurons"], c["n_hidden_layers"], c["otype"])
            super().__init__(m + g, ("NetworkWithInputEncoding", dict(e), dict(c)))

    class FakeTcnn:
        pass

    FakeTcnn.Encoding, FakeTcnn.Network, FakeTcnn.NetworkWithInputEncoding = Encoding, Network, NetworkWithInputEncoding
    if any(m in sys.modules for m in ("nerfstudio.field_components.encodings", "nerfstudio.field_components.mlp")):
        # main() imported encodings already (for the hash check): patch the names it bound too.
        import nerfstudio.field_components.encodings as enc_mod
        import nerfstudio.field_components.mlp as mlp_mod
        for mod in (enc_mod, mlp_mod):
            mod.TCNN_EXISTS, mod.tcnn = True, FakeTcnn
    ext.TCNN_EXISTS, ext.tcnn = True, FakeTcnn

    import torchmetrics.functional.image.lpips as tm_lpips
    tv = tm_lpips._get_tv_model_features
    tm_lpips._get_tv_model_features = lambda net, pretrained=False: tv(net, False)
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.data.scene_box import SceneBox

    cfg = method_configs["nerfacto"].pipeline.model
    model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=3, metadata={})
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("lpips.")}
    print("\nnerfstudio NerfactoModel(method_configs['nerfacto']) with a stand-in tcnn, state-dict keys "
          "(under `_model.`; the LPIPS metric's `lpips.*` keys left out):")
    for k, v in state.items():
        print(f"  {k:<58} {tuple(v.shape)!s:<12} {str(v.dtype).replace('torch.', '')}")
    ours = {m["key"]: m["n_params"] for m in nerfacto_tcnn_modules()}
    theirs = {k: v.numel() for k, v in state.items() if k.endswith(".params")}
    same = ours == theirs
    print(f"tcnn `params` keys and sizes vs nerfacto_tcnn_modules(): {'OK' if same else 'MISMATCH'}")
    if not same:
        print("  ours:  ", ours)
        print("  theirs:", theirs)
    pe = model.field.position_encoding.tcnn_encoding
    print(f"(field.position_encoding: NeRFEncoding tcnn Frequency, unused by nerfacto's default config; "
          f"params {tuple(pe.params.shape)})")
    return same


if __name__ == "__main__":
    sys.exit(main())
