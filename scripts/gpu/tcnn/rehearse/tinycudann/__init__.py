"""A stand-in for tiny-cuda-nn's torch bindings, made of tests/golden/nerfacto_tcnn/tcnn_reference.py,
so that scripts/gpu/tcnn/check_tcnn.py can be rehearsed on a machine without a GPU:

    PYTHONPATH=scripts/gpu/tcnn/rehearse TCNN_CHECK_DEVICE=cpu python3 scripts/gpu/tcnn/check_tcnn.py --out /tmp/x

It only exercises the check's plumbing (every comparison then holds by construction). Mirrors the
parts of bindings/torch/tinycudann/modules.py the check uses: Encoding, Network,
NetworkWithInputEncoding, an fp32 `params` Parameter, fp16 outputs, `native_tcnn_module.hyperparams()`.
"""

import numpy as np
import torch

import tcnn_reference as R


class _Precision:
    Fp16 = "Precision.Fp16"
    Fp32 = "Precision.Fp32"


class _C:
    Precision = _Precision

    @staticmethod
    def preferred_precision():
        return _Precision.Fp16

    @staticmethod
    def batch_size_granularity():
        return 256


class modules:  # noqa: N801 (the attribute path check_tcnn.py reads: tcnn.modules._C)
    _C = _C


class _Native:
    def __init__(self, hp):
        self._hp = hp

    def hyperparams(self):
        return self._hp


class _Module(torch.nn.Module):
    def __init__(self, n_params, hp):
        super().__init__()
        self.params = torch.nn.Parameter(torch.zeros(n_params, dtype=torch.float32))
        self.native_tcnn_module = _Native(hp)

    def forward(self, x):
        y = self._numpy_forward(self.params.detach().cpu().numpy(), x.detach().float().cpu().numpy())
        out_dtype = torch.float32 if getattr(self, "fp32", False) else torch.float16
        return torch.from_numpy(np.asarray(y, dtype=np.float32)).to(out_dtype).to(x.device)


def _grid_n(c):
    return R.grid_n_params_tcnn(c["n_levels"], c.get("n_features_per_level", 2), c.get("log2_hashmap_size", 19),
                                c.get("base_resolution", 16), c.get("per_level_scale", 2.0))


class Encoding(_Module):
    def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
        c = dict(encoding_config)
        self.fp32 = dtype == torch.float32
        if c["otype"] == "HashGrid":
            n, self.n_output_dims = _grid_n(c), c["n_levels"] * c.get("n_features_per_level", 2)
        else:
            n, self.n_output_dims = 0, c.get("degree", 4) ** 2
        super().__init__(n, c)
        self.c = c

    def _numpy_forward(self, p, x):
        prec = "fp32" if self.fp32 else "fp16"
        if self.c["otype"] == "HashGrid":
            c = self.c
            return R.grid_encode(p, x, c["n_levels"], c.get("n_features_per_level", 2), c.get("log2_hashmap_size", 19),
                                 c.get("base_resolution", 16), c.get("per_level_scale", 2.0), precision=prec)
        return R.sh_encode_tcnn(x, self.c.get("degree", 4), precision=prec)

class Network(_Module):
    def __init__(self, n_input_dims, n_output_dims, network_config, seed=1337):
        c = dict(network_config)
        self.n_in, self.n_output_dims, self.c = n_input_dims, n_output_dims, c
        super().__init__(R.mlp_n_params(n_input_dims, n_output_dims, c["n_neurons"], c["n_hidden_layers"], c["otype"]), c)

    def _numpy_forward(self, p, x):
        c = self.c
        return R.mlp_forward(p, x, self.n_in, self.n_output_dims, c["n_neurons"], c["n_hidden_layers"], c["activation"],
                             c["output_activation"], c["otype"], precision="fp16")


class NetworkWithInputEncoding(_Module):
    def __init__(self, n_input_dims, n_output_dims, encoding_config, network_config, seed=1337):
        e, c = dict(encoding_config), dict(network_config)
        self.e, self.c, self.n_output_dims = e, c, n_output_dims
        self.n_enc = e["n_levels"] * e.get("n_features_per_level", 2)
        self.n_net = R.mlp_n_params(self.n_enc, n_output_dims, c["n_neurons"], c["n_hidden_layers"], c["otype"])
        super().__init__(self.n_net + _grid_n(e), {"encoding": e, "network": c})

    def _numpy_forward(self, p, x):
        e, c = self.e, self.c
        net, grid = R.split_network_with_input_encoding(p, self.n_net)
        enc = R.grid_encode(grid, x, e["n_levels"], e.get("n_features_per_level", 2), e.get("log2_hashmap_size", 19),
                            e.get("base_resolution", 16), e.get("per_level_scale", 2.0), precision="fp16")
        return R.mlp_forward(net, enc.astype(np.float32), self.n_enc, self.n_output_dims, c["n_neurons"],
                             c["n_hidden_layers"], c["activation"], c["output_activation"], c["otype"],
                             precision="fp16", pad_value=0.0)
