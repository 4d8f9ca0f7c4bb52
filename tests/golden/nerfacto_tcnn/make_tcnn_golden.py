"""Goldens for reading nerfacto checkpoints of nerfstudio's tiny-cuda-nn implementation.

tiny-cuda-nn needs CUDA, so it cannot run here. Instead nerfstudio 1.1.5 itself builds nerfacto with
`implementation="tcnn"` while `tcnn` is a stand-in whose `Encoding`, `Network` and
`NetworkWithInputEncoding` hold one fp32 `params` vector each (as `tcnn.modules.Module` does) and
compute their forward pass with `tcnn_reference.py`, a numpy transcription of tiny-cuda-nn's kernels
(fp32; see docs/tcnn-layout.md for the facts and their sources). Everything else (the field's
wiring, contraction, SH input mapping, proposal sampler, rendering, the state-dict keys and the
checkpoint format) is nerfstudio's own code. `scripts/gpu/tcnn/` checks the transcription against
tiny-cuda-nn itself on a GPU.

Run (the nerfstudio venv of make_nerfacto_golden.py):

    ~/.cache/ns-venv/bin/python tests/golden/nerfacto_tcnn/make_tcnn_golden.py

Writes into tests/fixtures/nerfacto/:

- `tcnn-step-000000041.ckpt`: the checkpoint as `Trainer.save_checkpoint` writes it (no LPIPS
  network; torch Adam states of three random-gradient steps), the parameters random (grids uniform in ±1, MLP weights normal with
  variance 2 / fan-in), so every level and layer matters;
- `tcnn_config.json`: its config (make_nerfacto_golden.py's tiny one, the proposal networks 16 wide,
  a width tiny-cuda-nn's fully fused MLP runs). Its field grid has 4 levels of 2 features, so the
  density MLP's 8 inputs are padded to 16 by the grid (with zeros), and the colour MLP's 35 and the
  proposal MLPs' 6 by `tcnn.Network`'s identity encoding (with ones);
- `tcnn_goldens.safetensors`: nerfstudio's outputs in eval mode, make_nerfacto_golden.py's
  `model_goldens` (fields, proposal densities, ray renders with the sampler's bins, a camera).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "nerfacto"))

import tcnn_reference as ref  # noqa: E402
import make_nerfacto_golden as torch_golden  # noqa: E402  (patches LPIPS; imports nerfstudio)

import nerfstudio.field_components.encodings as enc_mod  # noqa: E402
import nerfstudio.field_components.mlp as mlp_mod  # noqa: E402
import nerfstudio.utils.external as ext  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = HERE.parents[1] / "fixtures" / "nerfacto"
STEP = 41

CONFIG = dict(torch_golden.CONFIG)
# Tables large enough for dense levels: the field's first level (16³ corners in 2^12 rows: exactly
# full), and proposal network 0's first two (16³; 23³ = 12167 corners in 12168 rows, where the index
# wraps); every other level hashed.
CONFIG["log2_hashmap_size"] = 12
CONFIG["proposal_net_args_list"] = [
    {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 3, "max_res": 32, "use_linear": False},
    {"hidden_dim": 16, "log2_hashmap_size": 7, "num_levels": 3, "max_res": 64, "use_linear": False},
]


def _numpy(t):
    return t.detach().to(torch.float32).cpu().numpy()


class _Module(torch.nn.Module):
    """tcnn.modules.Module's state: one fp32 `params` Parameter."""

    def __init__(self, n_params):
        super().__init__()
        self.params = torch.nn.Parameter(torch.zeros(n_params, dtype=torch.float32))


def _grid_args(c):
    return (c["n_levels"], c["n_features_per_level"], c["log2_hashmap_size"], c["base_resolution"],
            c["per_level_scale"])


def _grid(params, x, c):
    assert c["otype"] == "HashGrid" and c.get("interpolation", "Linear") == "Linear", c
    return ref.grid_encode(params, x, *_grid_args(c))


def _mlp(params, x, n_in, n_out, c, pad_value=1.0):
    assert c["otype"] == "FullyFusedMLP", c
    return ref.mlp_forward(params, x, n_in, n_out, c["n_neurons"], c["n_hidden_layers"], c["activation"],
                           c["output_activation"], c["otype"], pad_value=pad_value)


class Encoding(_Module):
    def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
        self.config = dict(encoding_config)
        n = ref.grid_n_params_tcnn(*_grid_args(self.config)) if self.config["otype"] == "HashGrid" else 0
        super().__init__(n)

    def forward(self, x):
        x = _numpy(x)
        if self.config["otype"] == "SphericalHarmonics":
            assert self.config["degree"] == 4, self.config
            out = ref.sh_encode_tcnn(x)
        else:
            out = _grid(_numpy(self.params), x, self.config)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class Network(_Module):
    def __init__(self, n_input_dims, n_output_dims, network_config, seed=1337):
        self.n_in, self.n_out, self.config = n_input_dims, n_output_dims, dict(network_config)
        c = self.config
        super().__init__(ref.mlp_n_params(n_input_dims, n_output_dims, c["n_neurons"], c["n_hidden_layers"],
                                          c["otype"]))

    def forward(self, x):
        out = _mlp(_numpy(self.params), _numpy(x), self.n_in, self.n_out, self.config)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class NetworkWithInputEncoding(_Module):
    def __init__(self, n_input_dims, n_output_dims, encoding_config, network_config, seed=1337):
        self.e, self.c, self.n_out = dict(encoding_config), dict(network_config), n_output_dims
        self.n_enc = self.e["n_levels"] * self.e["n_features_per_level"]
        self.n_net = ref.mlp_n_params(self.n_enc, n_output_dims, self.c["n_neurons"], self.c["n_hidden_layers"],
                                      self.c["otype"])
        super().__init__(self.n_net + ref.grid_n_params_tcnn(*_grid_args(self.e)))

    def forward(self, x):
        net, grid = ref.split_network_with_input_encoding(_numpy(self.params), self.n_net)
        encoded = _grid(grid, _numpy(x), self.e)
        # The grid feeds the network directly; it pads its output with zeros (grid.h:756-766).
        out = _mlp(net, encoded, self.n_enc, self.n_out, self.c, pad_value=0.0)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class StandInTcnn:
    Encoding = Encoding
    Network = Network
    NetworkWithInputEncoding = NetworkWithInputEncoding


def install_stand_in():
    for mod in (enc_mod, mlp_mod, ext):
        mod.TCNN_EXISTS, mod.tcnn = True, StandInTcnn


def build_model():
    return torch_golden.build_model(CONFIG, implementation="tcnn")


@torch.no_grad()
def randomize(model, gen):
    """Random parameters: grids uniform in ±1 (density features shifted so the scene is part fog,
    part empty), MLP weights normal with variance 2 / fan-in, padded entries included."""
    for module in model.modules():
        if isinstance(module, NetworkWithInputEncoding):
            n = module.n_net
            module.params[n:] = torch.rand(module.params.numel() - n, generator=gen) * 2 - 1
            module.params[:n] = torch.randn(n, generator=gen) * (2.0 / module.n_enc) ** 0.5
        elif isinstance(module, Network):
            module.params[:] = torch.randn(module.params.numel(), generator=gen) * (2.0 / module.n_in) ** 0.5
        elif isinstance(module, Encoding) and module.params.numel() > 0:
            module.params[:] = torch.rand(module.params.numel(), generator=gen) * 2 - 1
    model.field.embedding_appearance.embedding.weight[:] = torch.randn(
        model.field.embedding_appearance.embedding.weight.shape, generator=gen)


def adam_states(model):
    """nerfstudio's optimisers (torch Adam over `get_param_groups`, as make_nerfacto_golden.py sets
    them up) after three steps of random gradients, as `Trainer.save_checkpoint` stores them. As in
    a real run, the unused position encoding never gets a gradient (no state), the SH encoding's
    empty vector does."""
    gen = torch.Generator().manual_seed(3)
    saved = {}
    for group, params in model.get_param_groups().items():
        optimizer = torch.optim.Adam(params, lr=1e-2, eps=1e-15)
        for _ in range(3):
            for p in params:
                p.grad = None if p is model.field.position_encoding.tcnn_encoding.params else torch.randn(
                    p.shape, generator=gen)
            optimizer.step()
        saved[group] = optimizer.state_dict()
    return saved


def main():
    install_stand_in()
    torch.manual_seed(0)
    model = build_model()
    assert isinstance(model.field.mlp_base.model, NetworkWithInputEncoding), "the stand-in was not used"
    randomize(model, torch.Generator().manual_seed(1))
    pipeline = torch_golden.Pipeline(model)
    state = {k: v for k, v in pipeline.state_dict().items() if not k.startswith("_model.lpips.")}
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save({"step": STEP, "pipeline": state, "optimizers": adam_states(model), "schedulers": {}, "scalers": {}},
               OUT / f"tcnn-step-{STEP:09d}.ckpt")
    (OUT / "tcnn_config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    g = {k: v.contiguous() for k, v in torch_golden.model_goldens(model, torch.Generator().manual_seed(2)).items()}
    save_file(g, str(OUT / "tcnn_goldens.safetensors"))
    for k, v in state.items():
        if k.endswith("params"):
            print(f"{k:<60} {tuple(v.shape)}")
    acc = g["render_accumulation"]
    print(f"render accumulation {acc.min():.3f}..{acc.max():.3f}, rgb {g['render_rgb'].min():.3f}.."
          f"{g['render_rgb'].max():.3f}, field density {g['field_density'].min():.3g}..{g['field_density'].max():.3g}")


if __name__ == "__main__":
    main()
