"""Nerfacto speed side by side: ours (`difix3d`, burn's CPU backend, and with --backends others such as
wgpu) against nerfstudio 1.1.5's own nerfacto (its torch implementation; tiny-cuda-nn needs CUDA), on
the CPU, in one run.

Both sides use `ns-train nerfacto`'s model defaults (16-level hash grid of 2^19 entries, 256/96
proposal samples, 48 NeRF samples, two proposal networks) with the same camera optimiser
(--camera-optimizer: SO3xR3 by default, as `ns-train nerfacto`; off or SE3), the same rays per batch,
and the same camera size for rendering:

- training: ours is `difix3d train --method nerfacto` on DATASET (its `summary.json`'s
  `rays_per_second`, training time only); the peer is nerfstudio's model, optimisers, schedulers and
  training callbacks stepped on random rays through the scene box (a ray's cost does not depend on
  what it sees: the sample counts are fixed), after two warm-up steps;
- rendering: one camera of --render-size pixels, ours through `difix3d nerfacto-render` of the model
  ours just trained (it prints the render time of the camera, loading excluded), the peer through
  `get_outputs_for_camera_ray_bundle` on as many random rays; both with --rays-per-chunk rays at
  once (default 32768, nerfstudio's `eval_num_rays_per_chunk` default).

Run (the peer venv: `python -m venv ~/.cache/ns-venv && ~/.cache/ns-venv/bin/pip install
nerfstudio==1.1.5 torch torchvision`):

    ~/.cache/ns-venv/bin/python benches/nerfacto_vs_nerfstudio.py --difix3d target/release/difix3d \\
        --data assets/maupertuis --factor 8

Prints one JSON object with both sides and the ratios per backend of ours (ours / peer; above 1 is
ours faster).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch

# The LPIPS metric inside NerfactoModel fetches torchvision's AlexNet weights from the internet; it
# never renders anything, so build it without pretrained weights (as tests/golden/nerfacto does).
import torchmetrics.functional.image.lpips as _tm_lpips  # noqa: E402

_tv_features = _tm_lpips._get_tv_model_features
_tm_lpips._get_tv_model_features = lambda net, pretrained=False: _tv_features(net, False)

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig  # noqa: E402
from nerfstudio.cameras.rays import RayBundle  # noqa: E402
from nerfstudio.data.scene_box import SceneBox  # noqa: E402
from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation  # noqa: E402
from nerfstudio.engine.optimizers import AdamOptimizerConfig, Optimizers  # noqa: E402
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig  # noqa: E402
from nerfstudio.models.nerfacto import NerfactoModelConfig  # noqa: E402


def peer_model(num_images, camera_mode):
    cfg = NerfactoModelConfig(
        camera_optimizer=CameraOptimizerConfig(mode=camera_mode), implementation="torch", eval_num_rays_per_chunk=1 << 15
    )
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return cfg.setup(scene_box=SceneBox(aabb=aabb), num_train_data=num_images, metadata={})


def random_rays(generator, rays, num_images):
    origins = (torch.rand(rays, 3, generator=generator) - 0.5) * 1.5
    directions = torch.nn.functional.normalize(torch.randn(rays, 3, generator=generator), dim=-1)
    images = torch.randint(0, num_images, (rays, 1), generator=generator)
    return RayBundle(
        origins=origins, directions=directions, pixel_area=torch.full((rays, 1), 1e-6), camera_indices=images
    )


def peer_training(steps, rays, num_images, camera_mode):
    torch.manual_seed(0)
    model = peer_model(num_images, camera_mode)
    model.train()
    schedule = lambda: ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000)  # noqa: E731
    groups = {
        "proposal_networks": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": schedule()},
        "fields": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": schedule()},
    }
    if camera_mode != "off":
        groups["camera_opt"] = {
            "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
        }
    optimizers = Optimizers(groups, model.get_param_groups())
    callbacks = model.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=None, pipeline=None, trainer=None)
    )
    before = [c for c in callbacks if TrainingCallbackLocation.BEFORE_TRAIN_ITERATION in c.where_to_run]
    after = [c for c in callbacks if TrainingCallbackLocation.AFTER_TRAIN_ITERATION in c.where_to_run]
    generator = torch.Generator().manual_seed(1)
    warmup = 2
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        bundle = random_rays(generator, rays, num_images)
        target = torch.rand(rays, 3, generator=generator)
        for c in before:
            c.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        optimizers.zero_grad_all()
        outputs = model(bundle)
        batch = {"image": target}
        losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
        sum(losses.values()).backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        for c in after:
            c.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    seconds = time.perf_counter() - started
    return model, {"steps": steps, "seconds": seconds, "rays_per_second": steps * rays / seconds}


def peer_render(model, width, height, chunk):
    model.eval()
    model.config.eval_num_rays_per_chunk = chunk
    generator = torch.Generator().manual_seed(2)
    bundle = random_rays(generator, width * height, 1)
    bundle = bundle.reshape((height, width))
    started = time.perf_counter()
    with torch.no_grad():
        model.get_outputs_for_camera_ray_bundle(bundle)
    seconds = time.perf_counter() - started
    return {"size": [width, height], "seconds": seconds, "rays_per_second": width * height / seconds}


def ours(difix3d, backend, data, factor, steps, rays, width, height, chunk, camera_mode, out):
    run = out / "run"
    subprocess.run(
        [difix3d, "train", "--method", "nerfacto", "--data", data, "--factor", str(factor), "--steps", str(steps),
         "--rays-per-batch", str(rays), "--backend", backend, "--camera-optimizer", camera_mode, "--out", str(run)],
        check=True, stdout=subprocess.DEVNULL,
    )
    summary = json.loads((run / "summary.json").read_text())
    train = {"steps": summary["steps"], "rays_per_second": summary["rays_per_second"]}
    camera_json = out / "camera.json"
    # 2 units out on -z of the model's frame, looking at its origin (where the pixels look does not
    # change a ray's cost: the sample counts are fixed).
    camera = {"name": "bench.png", "width": width, "height": height, "fx": 0.8 * width, "fy": 0.8 * width,
              "cx": width / 2, "cy": height / 2,
              "world_from_camera": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -2], [0, 0, 0, 1]]}
    camera_json.write_text(json.dumps(camera))
    rendered = subprocess.run(
        [difix3d, "nerfacto-render", "--checkpoint", str(run / "nerfacto.safetensors"), "--config",
         str(run / "nerfacto.json"), "--camera-json", str(camera_json), "--width", str(width), "--height",
         str(height), "--rays-per-chunk", str(chunk), "--backend", backend, "--out", str(out / "renders")],
        check=True, capture_output=True, text=True,
    )
    match = re.search(r"\((\d+) rays in ([0-9.]+) s", rendered.stdout)
    if not match:
        raise SystemExit(f"nerfacto-render printed no timing: {rendered.stdout!r}")
    rays_rendered, seconds = int(match.group(1)), float(match.group(2))
    render = {"size": [width, height], "seconds": seconds, "rays_per_second": rays_rendered / seconds}
    return train, render


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--difix3d", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--render-size", default="160x90")
    parser.add_argument("--rays-per-chunk", type=int, default=1 << 15,
                        help="rays rendered at once, both sides (nerfstudio's default 32768 needs buffers larger "
                        "than lavapipe allows: 4096 there)")
    parser.add_argument("--camera-optimizer", default="SO3xR3", choices=["off", "SO3xR3", "SE3"],
                        help="both sides' camera optimiser (nerfstudio's camera_optimizer.mode)")
    parser.add_argument("--backends", default="cpu",
                        help="ours' backends, comma-separated (cpu, wgpu: lavapipe where there is no GPU; cuda)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.render_size.split("x"))
    ours_by_backend = {}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            train, render = ours(
                args.difix3d, backend, args.data, args.factor, args.steps, args.rays, width, height, args.rays_per_chunk,
                args.camera_optimizer, Path(tmp),
            )
        ours_by_backend[backend] = {"train": train, "render": render}
    model, peer_train = peer_training(args.steps, args.rays, num_images=8, camera_mode=args.camera_optimizer)
    peer_rendered = peer_render(model, width, height, args.rays_per_chunk)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)",
        "rays_per_batch": args.rays,
        "rays_per_chunk": args.rays_per_chunk,
        "camera_optimizer": args.camera_optimizer,
        "ours": ours_by_backend,
        "nerfstudio": {"train": peer_train, "render": peer_rendered},
        "ratios": {
            backend: {
                "train": o["train"]["rays_per_second"] / peer_train["rays_per_second"],
                "render": o["render"]["rays_per_second"] / peer_rendered["rays_per_second"],
            }
            for backend, o in ours_by_backend.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
