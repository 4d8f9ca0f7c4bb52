"""Goldens for `src/nerfacto/`: a tiny nerfacto model built, trained and rendered by nerfstudio itself.

Run (PyPI nerfstudio 1.1.5 with torch on the CPU; tiny-cuda-nn is not installed, so every nerfstudio
module takes its torch fallback, the `implementation="torch"` layout of the checkpoint):

    python -m venv ~/.cache/ns-venv && ~/.cache/ns-venv/bin/pip install nerfstudio torch torchvision
    ~/.cache/ns-venv/bin/python tests/golden/nerfacto/make_nerfacto_golden.py

Writes into tests/fixtures/nerfacto/:

- `step-000000300.ckpt`: the checkpoint, saved exactly as `Trainer.save_checkpoint`
  (nerfstudio/engine/trainer.py) saves one: `{"step", "pipeline": pipeline.state_dict(),
  "optimizers", "schedulers", "scalers"}`, the pipeline holding the model as `_model` (so every model
  key starts with `_model.`, as in `VanillaPipeline`). The model is `NerfactoModel` with a tiny config
  (below), trained for 300 steps with nerfacto's own losses (RGB, interlevel, distortion) and the
  optimiser/scheduler setup of `method_configs["nerfacto"]`, on rays of a synthetic scene (a coloured
  ball in grey fog), so densities and colours are far from their initial values. One difference to a
  real checkpoint: the model's LPIPS metric network (`_model.lpips.*`, torchvision AlexNet weights
  that nerfstudio never uses to render) is dropped to keep the fixture small; a real checkpoint has
  those keys, and the reader ignores every key outside the field and the proposal networks.
- `config.json`: the tiny config (what `NerfactoConfig` in Rust reads).
- `goldens.safetensors`: inputs and outputs of nerfstudio's own modules in eval mode:
  `hash_points` [P, 3] with `hash_field` [P, L*F], `hash_prop0`, `hash_prop1` (the three hash
  encodings); `field_positions` [S, 3], `field_directions` [S, 3] with `field_density` [S, 1],
  `field_rgb` [S, 3] (NerfactoField.forward, eval: the average appearance embedding),
  `prop0_density`, `prop1_density` (`density_fn` of each proposal network at the same positions);
  `ray_origins` [R, 3], `ray_directions` [R, 3] with `render_rgb` [R, 3], `render_accumulation`,
  `render_depth` (median), `render_expected_depth`, `render_prop_depth_0/1` (NerfactoModel.forward
  in eval: near plane 0, proposal sampler without jitter) and the sampler's intermediate bins
  `bins_0` [R, 33], `bins_1` [R, 17], `bins_2` [R, 9] (spacing coordinates) with `weights_0..2`;
  `image_rgb` [H, W, 3], `image_depth` [H, W, 1], `image_accumulation` of a 16x12 camera
  (`get_outputs_for_camera`, pose `image_camera_to_world` [3, 4] in nerfstudio's OpenGL axes,
  intrinsics `image_intrinsics` = fx, fy, cx, cy).
- `scalings.json`: the per-level grid scales nerfstudio's torch HashEncoding computes for this config
  and for nerfacto's defaults (16 levels 16..2048: the last is 2047, not 2048, from float32 rounding).
- `splatfacto.ckpt`, `vanilla_nerf.ckpt`, `nerfacto_tcnn.ckpt`: the `pipeline` key layouts of
  other methods, and tiny-cuda-nn vectors (`tcnn.modules.Module.params`) of the wrong sizes for any
  nerfacto, a few tiny tensors each, that the reader must refuse with a clear message. (A faithful
  tiny-cuda-nn checkpoint: `tests/golden/nerfacto_tcnn/make_tcnn_golden.py`.) `--only-other-methods` rewrites just these three.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

# The LPIPS metric inside NerfactoModel fetches torchvision's AlexNet weights from the internet; its
# backbone never renders anything, so build it without pretrained weights.
import torchmetrics.functional.image.lpips as _tm_lpips

_tv_features = _tm_lpips._get_tv_model_features
_tm_lpips._get_tv_model_features = lambda net, pretrained=False: _tv_features(net, False)

from nerfstudio.cameras.cameras import Cameras, CameraType  # noqa: E402
from nerfstudio.cameras.rays import Frustums, RayBundle, RaySamples  # noqa: E402
from nerfstudio.data.scene_box import SceneBox  # noqa: E402
from nerfstudio.engine.callbacks import TrainingCallbackAttributes  # noqa: E402
from nerfstudio.engine.optimizers import AdamOptimizerConfig, Optimizers  # noqa: E402
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig  # noqa: E402
from nerfstudio.field_components.field_heads import FieldHeadNames  # noqa: E402
from nerfstudio.field_components.encodings import HashEncoding  # noqa: E402
from nerfstudio.models.nerfacto import NerfactoModelConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "nerfacto"
STEPS = 300
NUM_IMAGES = 3

# Nerfacto's structure (2 proposal networks, piecewise initial sampler, scene contraction with the
# L-inf norm, SH degree 4 directions, appearance embedding) at a tiny size.
CONFIG = {
    "num_levels": 4,
    "base_res": 16,
    "max_res": 128,
    "log2_hashmap_size": 8,
    "features_per_level": 2,
    "hidden_dim": 16,
    "hidden_dim_color": 16,
    "appearance_embed_dim": 4,
    "num_proposal_samples_per_ray": [32, 16],
    "num_nerf_samples_per_ray": 8,
    "proposal_net_args_list": [
        {"hidden_dim": 8, "log2_hashmap_size": 7, "num_levels": 3, "max_res": 32, "use_linear": False},
        {"hidden_dim": 8, "log2_hashmap_size": 7, "num_levels": 3, "max_res": 64, "use_linear": False},
    ],
    # The model config's default; method_configs["nerfacto"] sets 0.01, under which 300 steps leave
    # a faint fog (accumulation ~0.2) that would hardly exercise the proposal sampler.
    "average_init_density": 1.0,
    "near_plane": 0.05,
    "far_plane": 1000.0,
    "background_color": "last_sample",
    "use_average_appearance_embedding": True,
}


def build_model(config=None, **settings):
    """NerfactoModel with `config` (CONFIG by default) and any other model settings."""
    config = config or CONFIG
    cfg = NerfactoModelConfig(
        num_levels=config["num_levels"],
        base_res=config["base_res"],
        max_res=config["max_res"],
        log2_hashmap_size=config["log2_hashmap_size"],
        features_per_level=config["features_per_level"],
        hidden_dim=config["hidden_dim"],
        hidden_dim_color=config["hidden_dim_color"],
        appearance_embed_dim=config["appearance_embed_dim"],
        num_proposal_samples_per_ray=tuple(config["num_proposal_samples_per_ray"]),
        num_nerf_samples_per_ray=config["num_nerf_samples_per_ray"],
        proposal_net_args_list=config["proposal_net_args_list"],
        average_init_density=config["average_init_density"],
        near_plane=config["near_plane"],
        far_plane=config["far_plane"],
        background_color=config["background_color"],
        use_average_appearance_embedding=config["use_average_appearance_embedding"],
        **settings,
    )
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return cfg.setup(scene_box=SceneBox(aabb=aabb), num_train_data=NUM_IMAGES, metadata={})


class Pipeline(torch.nn.Module):
    """The part of VanillaPipeline that its state dict sees: the model under `_model`."""

    def __init__(self, model):
        super().__init__()
        self._model = model


def look_at_rays(gen, n, radius=3.0):
    """Rays from points on a sphere of `radius` towards points near the origin (unit directions)."""
    eye = torch.randn(n, 3, generator=gen)
    eye = eye / eye.norm(dim=-1, keepdim=True) * radius
    target = torch.randn(n, 3, generator=gen) * 0.6
    d = target - eye
    return eye, d / d.norm(dim=-1, keepdim=True)


def synthetic_colours(origins, directions):
    """A ball of radius 0.8 coloured by its normal, in a grey background."""
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - 0.8**2
    disc = b * b - c
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp(min=0))
    normal = origins + t[:, None] * directions
    normal = normal / normal.norm(dim=-1, keepdim=True)
    colour = torch.where(hit[:, None], 0.5 + 0.5 * normal, torch.full_like(normal, 0.3))
    return colour


def train(model, pipeline):
    gen = torch.Generator().manual_seed(1)
    opt_config = {
        "proposal_networks": {
            "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
        },
        "fields": {
            "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
        },
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
        },
    }
    optimizers = Optimizers(opt_config, model.get_param_groups())
    grad_scaler = torch.cuda.amp.GradScaler(enabled=False)
    callbacks = model.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=grad_scaler, pipeline=pipeline, trainer=None)
    )
    model.train()
    for step in range(STEPS):
        for cb in callbacks:
            cb.run_callback_at_location(step, location=cb.where_to_run[0])
        origins, directions = look_at_rays(gen, 256)
        camera_indices = torch.randint(0, NUM_IMAGES, (256, 1), generator=gen)
        bundle = RayBundle(
            origins=origins,
            directions=directions,
            pixel_area=torch.full((256, 1), 1e-4),
            camera_indices=camera_indices,
        )
        batch = {"image": synthetic_colours(origins, directions)}
        optimizers.zero_grad_all()
        outputs = model(bundle)
        metrics = model.get_metrics_dict(outputs, batch)
        losses = model.get_loss_dict(outputs, batch, metrics)
        loss = sum(losses.values())
        loss.backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step}: loss {loss.item():.5f} psnr {metrics['psnr'].item():.2f}")
    return optimizers, grad_scaler


def save_checkpoint(path, pipeline, optimizers, grad_scaler, step):
    # Trainer.save_checkpoint, minus the LPIPS network (see the module docstring).
    state = {k: v for k, v in pipeline.state_dict().items() if not k.startswith("_model.lpips.")}
    torch.save(
        {
            "step": step,
            "pipeline": state,
            "optimizers": {k: v.state_dict() for (k, v) in optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in optimizers.schedulers.items()},
            "scalers": grad_scaler.state_dict(),
        },
        path,
    )


def f32(t):
    return t.detach().to(torch.float32).contiguous()


@torch.no_grad()
def goldens(model):
    model.eval()
    g = {}
    gen = torch.Generator().manual_seed(2)

    # Hash encodings: random points, grid-aligned points and the cube's corners and faces.
    random_pts = torch.rand(96, 3, generator=gen)
    grid_pts = torch.randint(0, 17, (16, 3), generator=gen).float() / 16.0
    corners = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [0.999999, 0.5, 1e-7], [0.5, 0.5, 0.5]]
    )
    pts = torch.cat([random_pts, grid_pts, corners])
    g["hash_points"] = pts
    g["hash_field"] = f32(model.field.mlp_base.model[0](pts))
    g["hash_prop0"] = f32(model.proposal_networks[0].encoding(pts))
    g["hash_prop1"] = f32(model.proposal_networks[1].encoding(pts))
    g.update(model_goldens(model, gen))
    return {k: v.contiguous() for k, v in g.items()}


@torch.no_grad()
def model_goldens(model, gen):
    """The `field_*`, `prop*_density`, `ray_*`/`render_*`, `bins_*`/`weights_*` and `image_*` goldens
    of `model` in eval mode (any implementation), drawing the inputs from `gen`."""
    model.eval()
    g = {}
    # Field outputs at world positions inside the unit cube, out in the contracted region (|x|_inf up
    # to 100) and one at the origin.
    inner = (torch.rand(48, 3, generator=gen) * 2 - 1) * 0.9
    far_dir = torch.randn(16, 3, generator=gen)
    far = far_dir / far_dir.norm(dim=-1, keepdim=True) * torch.logspace(0.1, 2, 16)[:, None]
    positions = torch.cat([inner, far, torch.zeros(1, 3)])
    directions = torch.randn(positions.shape[0], 3, generator=gen)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    n = positions.shape[0]
    samples = RaySamples(
        frustums=Frustums(
            origins=positions,
            directions=directions,
            starts=torch.zeros(n, 1),
            ends=torch.zeros(n, 1),
            pixel_area=torch.ones(n, 1),
        ),
        camera_indices=torch.zeros(n, 1, dtype=torch.long),
    )
    out = model.field.forward(samples)
    g["field_positions"] = positions
    g["field_directions"] = directions
    g["field_density"] = f32(out[FieldHeadNames.DENSITY])
    g["field_rgb"] = f32(out[FieldHeadNames.RGB])
    g["prop0_density"] = f32(model.density_fns[0](positions))
    g["prop1_density"] = f32(model.density_fns[1](positions))

    # A full render of 64 rays (some miss the ball, a few start inside the fog near the origin).
    origins, dirs = look_at_rays(gen, 64)
    origins[:4] *= 0.1
    bundle = RayBundle(
        origins=origins,
        directions=dirs,
        pixel_area=torch.full((64, 1), 1e-4),
        camera_indices=torch.zeros(64, 1, dtype=torch.long),
    )
    outputs = model(bundle)
    g["ray_origins"] = origins
    g["ray_directions"] = dirs
    for name in ["rgb", "accumulation", "depth", "expected_depth", "prop_depth_0", "prop_depth_1"]:
        g[f"render_{name}"] = f32(outputs[name])
    # The sampler's intermediate bins and weights, for debugging a mismatch level by level.
    bundle = RayBundle(
        origins=origins,
        directions=dirs,
        pixel_area=torch.full((64, 1), 1e-4),
        camera_indices=torch.zeros(64, 1, dtype=torch.long),
    )
    bundle = model.collider(bundle)
    ray_samples, weights_list, samples_list = model.proposal_sampler(bundle, density_fns=model.density_fns)
    field_out = model.field.forward(ray_samples)
    weights_list.append(ray_samples.get_weights(field_out[FieldHeadNames.DENSITY]))
    samples_list.append(ray_samples)
    for i, (s, w) in enumerate(zip(samples_list, weights_list)):
        g[f"bins_{i}"] = f32(torch.cat([s.spacing_starts[..., 0], s.spacing_ends[..., -1:, 0]], -1))
        g[f"weights_{i}"] = f32(w[..., 0])

    # A whole camera, through nerfstudio's own ray generation.
    eye = torch.tensor([2.2, -1.4, 1.6])
    forward = -eye / eye.norm()
    up_hint = torch.tensor([0.0, 0.0, 1.0])
    right = torch.linalg.cross(forward, up_hint)
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    c2w = torch.stack([right, up, -forward, eye], dim=1)  # OpenGL: x right, y up, z backwards
    fx, fy, cx, cy = 14.0, 13.0, 8.3, 5.9
    camera = Cameras(
        camera_to_worlds=c2w[None],
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        width=16,
        height=12,
        camera_type=CameraType.PERSPECTIVE,
    )
    image = model.get_outputs_for_camera(camera)
    g["image_camera_to_world"] = c2w.contiguous()
    g["image_intrinsics"] = torch.tensor([fx, fy, cx, cy])
    g["image_rgb"] = f32(image["rgb"])
    g["image_depth"] = f32(image["depth"])
    g["image_accumulation"] = f32(image["accumulation"])
    return g


def scalings():
    def levels(num_levels, base, max_res):
        enc = HashEncoding(
            num_levels=num_levels, min_res=base, max_res=max_res, log2_hashmap_size=4, implementation="torch"
        )
        return enc.scalings.tolist()

    cases = [
        (CONFIG["num_levels"], CONFIG["base_res"], CONFIG["max_res"]),
        (3, 16, 32),
        (3, 16, 64),
        (16, 16, 2048),  # nerfacto's field
        (5, 16, 128),  # nerfacto's first proposal network
        (5, 16, 256),  # its second
        (16, 16, 4096),  # nerfacto-big
        (1, 16, 16),
    ]
    return [{"num_levels": n, "base_res": b, "max_res": m, "scalings": levels(n, b, m)} for (n, b, m) in cases]


def other_methods():
    """Key layouts of other methods' checkpoints, as their trainers save them (tensors shrunk)."""
    gen = torch.Generator().manual_seed(3)
    splatfacto = {
        "_model.gauss_params.means": torch.randn(4, 3, generator=gen),
        "_model.gauss_params.scales": torch.randn(4, 3, generator=gen),
        "_model.gauss_params.quats": torch.randn(4, 4, generator=gen),
        "_model.gauss_params.features_dc": torch.randn(4, 3, generator=gen),
        "_model.gauss_params.features_rest": torch.randn(4, 15, 3, generator=gen),
        "_model.gauss_params.opacities": torch.randn(4, 1, generator=gen),
    }
    vanilla = {
        "_model.field_coarse.mlp_base.layers.0.weight": torch.randn(4, 3, generator=gen),
        "_model.field_fine.mlp_base.layers.0.weight": torch.randn(4, 3, generator=gen),
    }
    # nerfacto with implementation="tcnn": MLPWithHashEncoding holds a tcnn.NetworkWithInputEncoding
    # as `model`, MLP a tcnn.Network as `tcnn_encoding`, HashEncoding a tcnn.Encoding likewise.
    tcnn = {
        "_model.field.aabb": torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]),
        "_model.field.max_res": torch.tensor(2048),
        "_model.field.num_levels": torch.tensor(16),
        "_model.field.log2_hashmap_size": torch.tensor(19),
        "_model.field.embedding_appearance.embedding.weight": torch.randn(3, 32, generator=gen),
        "_model.field.mlp_base.model.params": torch.randn(64, generator=gen).half(),
        "_model.field.mlp_head.tcnn_encoding.params": torch.randn(64, generator=gen).half(),
        "_model.proposal_networks.0.encoding.tcnn_encoding.params": torch.randn(16, generator=gen),
        "_model.proposal_networks.0.mlp_base.0.tcnn_encoding.params": torch.randn(16, generator=gen),
        "_model.proposal_networks.0.mlp_base.1.tcnn_encoding.params": torch.randn(16, generator=gen).half(),
    }
    for name, state in [("splatfacto.ckpt", splatfacto), ("vanilla_nerf.ckpt", vanilla), ("nerfacto_tcnn.ckpt", tcnn)]:
        torch.save({"step": 10, "pipeline": state, "optimizers": {}, "schedulers": {}, "scalers": {}}, OUT / name)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    if "--only-other-methods" in sys.argv:
        other_methods()
        return
    torch.manual_seed(0)
    model = build_model()
    pipeline = Pipeline(model)
    optimizers, grad_scaler = train(model, pipeline)
    save_checkpoint(OUT / f"step-{STEPS:09d}.ckpt", pipeline, optimizers, grad_scaler, STEPS)

    # The goldens come from a model loaded back from the checkpoint, as ns-render would load it.
    fresh = build_model()
    loaded = torch.load(OUT / f"step-{STEPS:09d}.ckpt", map_location="cpu", weights_only=False)  # our own file; it holds numpy scalars
    missing, unexpected = fresh.load_state_dict(
        {k[len("_model.") :]: v for k, v in loaded["pipeline"].items()}, strict=False
    )
    assert all(k.startswith("lpips.") for k in missing), missing
    assert not unexpected, unexpected
    save_file(goldens(fresh), OUT / "goldens.safetensors")

    (OUT / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    (OUT / "scalings.json").write_text(json.dumps(scalings(), indent=1) + "\n")
    other_methods()
    for f in sorted(OUT.iterdir()):
        print(f"{f.name}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
