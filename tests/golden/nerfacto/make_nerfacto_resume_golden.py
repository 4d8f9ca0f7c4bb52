"""Golden for continuing nerfacto training from a nerfstudio checkpoint with its saved optimiser
state (`NerfactoTrainer::restore_adam`, `nerfacto::checkpoint::read_adam_moments`): what
`ns-train ... --load-checkpoint step-000000300.ckpt` does, then one training step, taken by
nerfstudio 1.1.5 itself.

Run (the venv of make_nerfacto_golden.py, torch on the CPU, no tiny-cuda-nn):

    ~/.cache/ns-venv/bin/python tests/golden/nerfacto/make_nerfacto_resume_golden.py

As `Trainer._load_checkpoint`: the model from the checkpoint's `pipeline`, the `fields` and
`proposal_networks` optimisers from its `optimizers` (`load_state_dict`: Adam moments and per-parameter
step counts), their schedulers from `schedulers`, and the first step is the checkpoint's `step` + 1.
The model is make_nerfacto_train_golden.py's, once with the camera optimiser off (as Difix3D's
README runs it), so the checkpoint's `camera_optimizer.pose_adjustment` and its `camera_opt`
optimiser are not loaded, and once with it on (`SO3xR3`, as `ns-train nerfacto` and Difix3D's config
run it, and as the checkpoint was trained), continuing both. The step is that script's `train_step`
(fresh rays, the sampler's jitters recorded).

Writes into tests/fixtures/nerfacto/ `resume_golden.safetensors` (off) and
`resume_golden_so3xr3.safetensors` (on): `rays_0_*`, `jitter_0_{p}`, `loss_0` as in
`train_golden.safetensors`, and `after_0.{key}` every parameter after the step
(`camera_optimizer.pose_adjustment` too when on).
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_nerfacto_train_golden as train  # noqa: E402

from safetensors.torch import save_file  # noqa: E402

base = train.base
CHECKPOINT = base.OUT / "step-000000300.ckpt"
GROUPS = ["fields", "proposal_networks"]


def main(camera_mode="off"):
    torch.manual_seed(0)
    model = train.build_model(camera_mode)
    pipeline = base.Pipeline(model)
    loaded = torch.load(CHECKPOINT, map_location="cpu", weights_only=False)
    state = {k[len("_model."):]: v for k, v in loaded["pipeline"].items() if k.startswith("_model.")}
    if camera_mode == "off":
        state = {k: v for k, v in state.items() if not k.startswith("camera_optimizer.")}
    groups = GROUPS if camera_mode == "off" else GROUPS + ["camera_opt"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("lpips.") for k in missing), missing

    optimizers, callbacks = train.optimizers_and_callbacks(model, pipeline)
    for group in groups:
        optimizers.optimizers[group].load_state_dict(loaded["optimizers"][group])
        optimizers.schedulers[group].load_state_dict(loaded["schedulers"][group])
    step = loaded["step"] + 1
    steps = {g: sorted({int(s["step"]) for s in loaded["optimizers"][g]["state"].values()}) for g in groups}
    print(f"continuing at step {step}; saved Adam step counts: {steps}")

    g = {}
    model.train()
    ray_gen = torch.Generator().manual_seed(7)
    jitter_gen = torch.Generator().manual_seed(8)
    train.train_step(model, optimizers, callbacks, step, 0, ray_gen, jitter_gen, g, keep_grads=False)
    for k, p in train.named_parameters(model).items():
        g[f"after_0.{k}"] = p.detach().clone()
    suffix = "" if camera_mode == "off" else f"_{camera_mode.lower()}"
    out = base.OUT / f"resume_golden{suffix}.safetensors"
    save_file({k: v.contiguous().to(torch.float32) for k, v in g.items()}, out)
    print(f"{out.name}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    np.random.seed(0)
    main()
    main("SO3xR3")
