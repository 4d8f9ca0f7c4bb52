"""Goldens for nerfacto training (`nerfacto::training`, `nerfacto::losses`): two training steps of a
tiny nerfacto model taken by nerfstudio 1.1.5 itself, with the sampler's random jitter recorded so
the Rust side can replay exactly the same samples.

Run (the venv of make_nerfacto_golden.py, torch on the CPU, no tiny-cuda-nn):

    ~/.cache/ns-venv/bin/python tests/golden/nerfacto/make_nerfacto_train_golden.py

The model is `make_nerfacto_golden.py`'s tiny config (CONFIG there) with the camera optimiser off
(`CameraOptimizerConfig(mode="off")`), built with `torch.manual_seed(0)`. Each step is nerfstudio's
`Trainer.train_iteration` with the callbacks `ns-train nerfacto` registers, in its order:
`set_anneal(step)` (before), `zero_grad_all`, `model(ray_bundle)` in training mode, `get_metrics_dict`
+ `get_loss_dict`, `backward`, `optimizer_step_all`, `scheduler_step_all(step)`, then
`proposal_sampler.step_cb(step)` (after), with the optimisers and schedulers of
`method_configs["nerfacto"]` (Adam lr 1e-2, eps 1e-15; exponential decay to 1e-4 over 200000 steps)
for `proposal_networks` and `fields`. `torch.rand` is replaced during the steps by draws from a
seeded generator that are recorded: the sampler's only random numbers are the single jitters
(`[R, 1]`) of the initial spaced sampler and of each PDF sampler, three per step.

Writes into tests/fixtures/nerfacto/:

- `train_init.safetensors`: the model's state dict before training (model keys, no `_model.`;
  without the LPIPS metric network and the camera optimiser).
- `train_golden.safetensors`: for steps k = 0, 1: `rays_{k}_origins` [R, 3], `rays_{k}_directions`,
  `rays_{k}_images` [R] (camera index, as f32), `rays_{k}_target` [R, 3], `jitter_{k}_{p}` [R, 1]
  (p = 0 initial sampler, 1 and 2 the PDF passes), `loss_{k}` = [rgb, interlevel, distortion]
  (multipliers applied); `grad_0.{key}` every parameter's gradient at step 0; `after_1.{key}` every
  parameter after both steps.
- `train_golden_so3xr3.safetensors`, `train_golden_se3.safetensors`: the same two steps with the
  camera optimiser on (`CameraOptimizerConfig(mode=...)`, nerfacto's `camera_opt` Adam lr 1e-3,
  eps 1e-15, decaying to 1e-4 over 5000 steps): the same keys, `loss_{k}` with a fourth term
  (`camera_opt_regularizer`), `grad_{k}.{key}` at both steps, `camera_optimizer.pose_adjustment`
  among the keys; and the map from its rows to corrections on chosen tangents (`exp_*`, see
  `exp_maps`).
- `proposal_updates.json`: the steps (0..6000) at which nerfacto's `ProposalNetworkSampler` (with
  `NerfactoModel`'s `update_sched`: warm-up 5000, every 5) evaluates the proposal networks with
  gradients, observed through `torch.is_grad_enabled()` inside the density functions while the
  sampler is driven as the trainer drives it (`step_cb(step)` after each step).
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_nerfacto_golden as base  # noqa: E402  (also patches the LPIPS download away)

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig  # noqa: E402
from nerfstudio.cameras.rays import RayBundle  # noqa: E402
from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation  # noqa: E402
from nerfstudio.engine.optimizers import AdamOptimizerConfig, Optimizers  # noqa: E402
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = base.OUT
RAYS = 64
STEPS = 2


def build_model(camera_mode="off"):
    """`make_nerfacto_golden.py`'s tiny model with the camera optimiser in `camera_mode`."""
    return base.build_model(camera_optimizer=CameraOptimizerConfig(mode=camera_mode))


def model_state(model):
    return {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("lpips.") and not k.startswith("camera_optimizer.") and k != "device_indicator_param"
    }


def named_parameters(model):
    """Every trainable parameter by state-dict key (a proposal network's hash table once, as
    `encoding.hash_table`; the camera optimiser's `pose_adjustment` when it is on)."""
    out = {}
    for k, p in model.named_parameters():
        if k.startswith("lpips.") or k == "device_indicator_param":
            continue
        if ".mlp_base.0.hash_table" in k and k.startswith("proposal_networks."):
            continue
        out[k] = p
    return out


def optimizers_and_callbacks(model, pipeline):
    """`method_configs["nerfacto"]`'s optimisers and schedulers, and the model's training callbacks."""
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
    groups = model.get_param_groups()
    expected = {"proposal_networks", "fields"}
    if model.config.camera_optimizer.mode != "off":
        expected.add("camera_opt")
    else:
        del opt_config["camera_opt"]
    assert set(groups) == expected, groups.keys()
    optimizers = Optimizers(opt_config, groups)
    callbacks = model.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=None, pipeline=pipeline, trainer=None)
    )
    return optimizers, callbacks


def train_step(model, optimizers, callbacks, step, index, ray_gen, jitter_gen, g, keep_grads):
    """`Trainer.train_iteration` at `step` on RAYS fresh rays; records the rays, the sampler's
    jitters and the loss terms into `g` under `index` (and every gradient when `keep_grads`)."""
    before = [cb for cb in callbacks if TrainingCallbackLocation.BEFORE_TRAIN_ITERATION in cb.where_to_run]
    after = [cb for cb in callbacks if TrainingCallbackLocation.AFTER_TRAIN_ITERATION in cb.where_to_run]
    recorded = []
    real_rand = torch.rand

    def recorded_rand(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        t = real_rand(*shape, generator=jitter_gen, dtype=kwargs.get("dtype") or torch.float32)
        recorded.append(t.clone())
        return t

    origins, directions = base.look_at_rays(ray_gen, RAYS)
    images = torch.randint(0, base.NUM_IMAGES, (RAYS, 1), generator=ray_gen)
    target = base.synthetic_colours(origins, directions)
    g[f"rays_{index}_origins"] = origins
    g[f"rays_{index}_directions"] = directions
    g[f"rays_{index}_images"] = images[:, 0].float()
    g[f"rays_{index}_target"] = target

    for cb in before:
        cb.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    optimizers.zero_grad_all()
    bundle = RayBundle(
        origins=origins,
        directions=directions,
        pixel_area=torch.full((RAYS, 1), 1e-4),
        camera_indices=images,
    )
    torch.rand = recorded_rand
    try:
        outputs = model(bundle)
    finally:
        torch.rand = real_rand
    assert len(recorded) == 3 and all(r.shape == (RAYS, 1) for r in recorded), [r.shape for r in recorded]
    for p, r in enumerate(recorded):
        g[f"jitter_{index}_{p}"] = r
    batch = {"image": target}
    metrics = model.get_metrics_dict(outputs, batch)
    losses = model.get_loss_dict(outputs, batch, metrics)
    names = ["rgb_loss", "interlevel_loss", "distortion_loss"]
    if model.config.camera_optimizer.mode != "off":
        names.append("camera_opt_regularizer")
    assert set(losses) == set(names), losses.keys()
    g[f"loss_{index}"] = torch.stack([losses[n] for n in names]).detach()
    loss = sum(losses.values())
    loss.backward()
    if keep_grads:
        for k, p in named_parameters(model).items():
            assert p.grad is not None, k
            g[f"grad_{index}.{k}"] = p.grad.detach().clone()
    optimizers.optimizer_step_all()
    optimizers.scheduler_step_all(step)
    for cb in after:
        cb.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    print(f"step {step}: " + ", ".join(f"{k} {v.item():.6f}" for k, v in losses.items()))


def main(camera_mode="off"):
    """The goldens of the model with the camera optimiser off (`train_golden.safetensors`, which
    also writes `train_init.safetensors`) or on (`train_golden_{mode}.safetensors`: the same
    initial weights, `pose_adjustment` zeros as nerfstudio makes it; every gradient kept at both
    steps, and a fourth loss term, the camera regulariser)."""
    torch.manual_seed(0)
    model = build_model(camera_mode)
    pipeline = base.Pipeline(model)
    if camera_mode == "off":
        save_file(model_state(model), OUT / "train_init.safetensors")
    else:
        # The same weights as the run without it (pose_adjustment draws no random numbers).
        from safetensors.torch import load_file

        init = load_file(OUT / "train_init.safetensors")
        state = model_state(model)
        assert all(torch.equal(init[k], state[k]) for k in init), "not train_init.safetensors' weights"
        assert torch.count_nonzero(model.camera_optimizer.pose_adjustment) == 0

    optimizers, callbacks = optimizers_and_callbacks(model, pipeline)

    g = {}
    ray_gen = torch.Generator().manual_seed(5)
    jitter_gen = torch.Generator().manual_seed(6)
    model.train()
    for step in range(STEPS):
        keep = step == 0 or camera_mode != "off"
        train_step(model, optimizers, callbacks, step, step, ray_gen, jitter_gen, g, keep_grads=keep)
    for k, p in named_parameters(model).items():
        g[f"after_{STEPS - 1}.{k}"] = p.detach().clone()
    if camera_mode == "off":
        names = ["train_init.safetensors", "train_golden.safetensors"]
    else:
        g.update(exp_maps(camera_mode))
        names = [f"train_golden_{camera_mode.lower()}.safetensors"]
    save_file({k: v.contiguous().to(torch.float32) for k, v in g.items()}, OUT / names[-1])
    for name in names:
        print(f"{name}: {(OUT / name).stat().st_size} bytes")


def exp_maps(camera_mode):
    """The camera optimiser's map from `pose_adjustment` rows to `[R|t]` corrections on chosen
    tangents (zero, below and near the maps' small-angle thresholds, ordinary and large angles):
    `exp_tangent` [T, 6], `exp_map` [T, 3, 4], and `exp_grad` [T, 6], the gradient of
    `sum(exp_weights * map)` for recorded random `exp_weights` [T, 3, 4]."""
    from nerfstudio.cameras.lie_groups import exp_map_SE3, exp_map_SO3xR3

    gen = torch.Generator().manual_seed(7)
    rows = [
        [0.0] * 6,
        [0.1, -0.2, 0.3, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1e-4, -2e-4, 3e-4],
        [0.01, 0.02, -0.03, 0.004, -0.003, 0.005],
        [0.0, 0.0, 0.0, 0.006, 0.0, 0.0],
        [0.5, -0.1, 0.2, 0.3, -0.4, 0.5],
        [-1.0, 2.0, 0.5, 1.5, 0.2, -2.5],
    ]
    tangent = torch.cat([torch.tensor(rows), torch.randn(5, 6, generator=gen) * 0.3]).requires_grad_(True)
    fn = {"SO3xR3": exp_map_SO3xR3, "SE3": exp_map_SE3}[camera_mode]
    out = fn(tangent)
    weights = torch.randn(out.shape, generator=gen)
    (out * weights).sum().backward()
    return {
        "exp_tangent": tangent.detach(),
        "exp_map": out.detach(),
        "exp_weights": weights,
        "exp_grad": tangent.grad.detach(),
    }


def proposal_updates(steps=6000):
    """When the proposal networks get gradients, step by step, from nerfstudio's own sampler."""
    import json

    model = build_model()
    model.train()
    sampler = model.proposal_sampler
    seen = []

    def density_fn(positions):
        seen.append(torch.is_grad_enabled())
        return torch.zeros(*positions.shape[:-1], 1)

    bundle = RayBundle(
        origins=torch.zeros(1, 3),
        directions=torch.tensor([[0.0, 0.0, 1.0]]),
        pixel_area=torch.ones(1, 1),
        nears=torch.full((1, 1), 0.05),
        fars=torch.full((1, 1), 1000.0),
    )
    updated = []
    for step in range(steps):
        seen.clear()
        sampler(bundle, density_fns=[density_fn, density_fn])
        assert len(seen) == 2 and seen[0] == seen[1]
        if seen[0]:
            updated.append(step)
        sampler.step_cb(step)
    (OUT / "proposal_updates.json").write_text(json.dumps({"steps": steps, "updated": updated}) + "\n")


if __name__ == "__main__":
    np.random.seed(0)
    main()
    for mode in ["SO3xR3", "SE3"]:
        main(mode)
    proposal_updates()
