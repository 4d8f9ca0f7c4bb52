"""Nerfacto training quality side by side: ours (`difix3d train --method nerfacto`) against nerfstudio
1.1.5's own pipeline, on the same data, model config, rays per batch, steps and camera optimiser,
compared by the eval PSNR trajectory over several seeds.

- Ours: `difix3d train --method nerfacto --data DATA --factor F --steps N --rays-per-batch R
  [--nerfacto-config CONFIG] --camera-optimizer MODE --seed S --eval-steps k,2k,...` (its
  `summary.json`: `eval_psnr_before`, `evals`, `eval_psnr_after`, `camera_corrections`).
- Peer: nerfstudio's real pipeline, as `ns-train nerfacto` runs it, minus the viewer and the writers:
  `VanillaPipeline` with `VanillaDataManagerConfig` (its default `PixelSampler`: a uniform image, then
  a uniform pixel per ray; `train_num_rays_per_batch` = R) over `ColmapDataParserConfig` (the same
  `colmap/sparse/0`, images from `images_F`, `eval_mode="interval"`, `eval_interval=8`: image 00 is
  the eval image and 01-03 train on assets/maupertuis, the split of ours, which takes gsplat's
  `test_every=8`); `NerfactoModel` from `method_configs["nerfacto"]` (`average_init_density=0.01`,
  SO3xR3 camera optimiser, `implementation="torch"`), with every key of CONFIG applied on top and
  the camera optimiser set to MODE; the optimisers and schedulers of `method_configs["nerfacto"]`
  (`Optimizers`), stepped as `Trainer.train_iteration` steps them (CPU: no mixed precision, grad
  scaler disabled), with the pipeline's training callbacks before and after each iteration; torch,
  numpy and `random` seeded with S (as `ns-train`'s `machine.seed`).
- Eval (both sides): the eval image(s) rendered from their given pose (no camera correction; the
  model in eval mode: near plane 0, no sampler jitter, the average appearance embedding), PSNR over
  the whole image on floats in [0, 1] against the 8-bit photo / 255 (ours: `metrics::psnr`, the
  mean over the eval images; peer: `get_outputs_for_camera` then NerfactoModel's
  `get_image_metrics_and_images` psnr, torchmetrics `PeakSignalNoiseRatio(data_range=1)`; the float64
  PSNR of the same render is recorded too), before training (step 0), after every EVAL_EVERY steps
  and at the end.

Known differences of the peer's data that cannot be matched by config, and the world frame:

- World frame: nerfstudio's `ColmapDataParser` by default (`assume_colmap_world_coordinate_convention=True`)
  swaps COLMAP's world y/z before orienting by the mean up vector. Since c3b6a43 ours composes the
  same turn (COLMAP data; a transforms.json's `applied_transform` for transforms.json data), so its
  `dataparser_transforms.json` equals nerfstudio's default one and the default
  `--peer-colmap-convention nerfstudio` compares like with like. `--peer-colmap-convention ours` runs
  nerfstudio with that flag False, which reproduces the frame of builds before c3b6a43 (a rotation
  about +z of 16 degrees and the auto scale 0.1232 against 0.1279 on assets/maupertuis). Every run
  records the max abs difference between ours' `dataparser_transforms.json` (transform and scale) and
  the peer's `dataparser_transform` / `dataparser_scale` (`frame_max_abs_difference`, per seed and its
  max per mode), so a frame mismatch shows in the output (float32 round-off: about 1e-6).
- Intrinsics: nerfstudio divides the COLMAP intrinsics by the factor (fx = 1847.53 / 8, cx = 959.5 /
  8 = 119.94) and floors the size (239x134 against the 240x135 files of images_8: its eval would
  compare a 239x134 render with a 240x135 photo), so the peer uses
  `downscale_rounding_mode="round"` (240x135); ours scales the camera to the image file (fx =
  1847.53 * 240 / 1919, cx = 120.0): a 0.06 px principal-point and 0.05 % focal difference.

Run (the peer venv: `python -m venv ~/.cache/ns-venv && ~/.cache/ns-venv/bin/pip install
nerfstudio==1.1.5 torch torchvision`; the tiny config of the parity fixtures with nerfacto's density
scale, as tests/it/nerfacto_train.rs runs it):

    python3 -c "import json; c = json.load(open('tests/fixtures/nerfacto/config.json')); \\
        c['average_init_density'] = 0.01; json.dump(c, open('/tmp/tiny.json', 'w'))"
    ~/.cache/ns-venv/bin/python benches/nerfacto_quality_vs_nerfstudio.py --difix3d target/release/difix3d \\
        --data assets/maupertuis --factor 8 --steps 300 --rays 512 --eval-every 150 \\
        --nerfacto-config /tmp/tiny.json --modes off,SO3xR3 --seeds 42,43,44 --out /tmp/quality/tiny

    # ns-train nerfacto's full default model (no --nerfacto-config), one seed:
    ~/.cache/ns-venv/bin/python benches/nerfacto_quality_vs_nerfstudio.py --difix3d target/release/difix3d \\
        --data assets/maupertuis --factor 8 --steps 150 --rays 4096 --eval-every 50 \\
        --modes SO3xR3 --seeds 42 --out /tmp/quality/full

`--peer-intrinsics ours` (the peer's cameras rescaled in place to ours' intrinsics) removes the
intrinsics difference; `--cross-eval` also loads each of ours' final models (`nerfacto.safetensors`,
nerfstudio's `_model.` keys) into nerfstudio in the frame ours wrote (nerfstudio's default one; for a
build before c3b6a43 the flag-off one, chosen by matching its `dataparser_transforms.json`) and records
nerfstudio's eval PSNR of it (`nerfstudio_eval_of_ours`): the check that both sides render and score
the eval image alike (measured at c3b6a43, the tiny config above, 16 seeds x 2 modes: within 0.0035 dB
with our intrinsics; with nerfstudio's, 0.010 dB lower to 0.004 dB higher). `--torch-threads 1` keeps the peer from stalling
when another process holds a core.

The sides run one after the other (never in parallel). Prints one JSON object (also written to
OUT/result.json): per mode and seed both sides' PSNR trajectories (`steps`, `psnr`), wall times and
learned camera corrections; per mode the mean and spread (min, max, sample std) over seeds of each
side and of ours - nerfstudio.
"""

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

# The LPIPS metric inside NerfactoModel fetches torchvision's AlexNet weights from the internet; only
# its PSNR is used here, so build it without pretrained weights (as tests/golden/nerfacto does).
import torchmetrics.functional.image.lpips as _tm_lpips  # noqa: E402

_tv_features = _tm_lpips._get_tv_model_features
_tm_lpips._get_tv_model_features = lambda net, pretrained=False: _tv_features(net, False)

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig  # noqa: E402
from nerfstudio.configs.method_configs import method_configs  # noqa: E402
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig  # noqa: E402
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig  # noqa: E402
from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation  # noqa: E402
from nerfstudio.engine.optimizers import Optimizers  # noqa: E402
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig  # noqa: E402


def eval_steps(steps, every):
    """The steps after which both sides measure the eval PSNR, besides 0 and the end."""
    return [s for s in range(every, steps, every)] if every > 0 else []


# --------------------------------------------------------------------------------------------------
# Ours


def run_ours(args, mode, seed, out):
    run = out / f"ours_{mode}_{seed}"
    command = [
        args.difix3d, "train", "--method", "nerfacto", "--data", args.data, "--factor", str(args.factor),
        "--steps", str(args.steps), "--rays-per-batch", str(args.rays), "--camera-optimizer", mode,
        "--seed", str(seed), "--backend", args.backend, "--out", str(run),
    ]
    if args.nerfacto_config:
        command += ["--nerfacto-config", args.nerfacto_config]
    middle = eval_steps(args.steps, args.eval_every)
    if middle:
        command += ["--eval-steps", ",".join(map(str, middle))]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    summary = json.loads((run / "summary.json").read_text())
    steps = [0] + [e["step"] for e in summary["evals"]] + [summary["steps"]]
    psnr = [summary["eval_psnr_before"]] + [e["psnr"] for e in summary["evals"]] + [summary["eval_psnr_after"]]
    return {
        "steps": steps,
        "psnr": psnr,
        "wall_s": wall,
        "rays_per_second": summary["rays_per_second"],
        "camera_corrections": summary.get("camera_corrections"),
        "run": str(run),
        "command": command,
    }


# --------------------------------------------------------------------------------------------------
# nerfstudio


def peer_model_config(config_path, mode):
    """method_configs["nerfacto"]'s model config with every key of our JSON config on top."""
    model = copy.deepcopy(method_configs["nerfacto"].pipeline.model)
    model.implementation = "torch"  # tiny-cuda-nn is not installed (and there is no CUDA)
    fields = {f.name for f in dataclasses.fields(model)}
    ignored = []
    if config_path:
        ours = json.loads(Path(config_path).read_text())
        for key, value in ours.items():
            if key == "camera_optimizer":
                for k, v in value.items():
                    setattr(model.camera_optimizer, k, v)
            elif key == "proposal_net_args_list":
                model.proposal_net_args_list = [dict(a) for a in value]
            elif key == "num_proposal_samples_per_ray":
                model.num_proposal_samples_per_ray = tuple(value)
            elif key in fields:
                setattr(model, key, value)
            else:
                ignored.append(key)
    model.camera_optimizer = dataclasses.replace(model.camera_optimizer, mode=mode)
    return model, ignored


def peer_pipeline(args, mode, seed):
    dataparser = ColmapDataParserConfig(
        data=Path(args.data),
        downscale_factor=args.factor,
        # 240x135 cameras for the 240x135 files of images_8 (floor gives 239x134).
        downscale_rounding_mode="round",
        eval_mode="interval",
        eval_interval=8,
        load_3D_points=False,
        assume_colmap_world_coordinate_convention=args.peer_colmap_convention == "nerfstudio",
    )
    model, ignored = peer_model_config(args.nerfacto_config, mode)
    config = VanillaPipelineConfig(
        datamanager=VanillaDataManagerConfig(
            dataparser=dataparser, train_num_rays_per_batch=args.rays, eval_num_rays_per_batch=args.rays
        ),
        model=model,
    )
    # As ns-train's `_set_random_seed(config.machine.seed)`, before anything is built.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pipeline = config.setup(device="cpu", test_mode="val")
    if args.peer_intrinsics == "ours":
        match_our_intrinsics(pipeline, Path(args.data) / dataparser.colmap_path, args.factor)
    return pipeline, ignored


def match_our_intrinsics(pipeline, colmap_dir, factor):
    """Ours scales the COLMAP camera to the image file (`Camera::resized`: fx * w / W, cx * w / W, fy * h /
    H, cy * h / H); nerfstudio divides by the factor. Rescale the peer's cameras in place (the ray
    generators and the eval loader hold the same tensors) to ours'."""
    from nerfstudio.data.utils import colmap_parsing_utils as colmap_utils

    if (colmap_dir / "cameras.txt").exists():
        cameras = colmap_utils.read_cameras_text(colmap_dir / "cameras.txt")
    else:
        cameras = colmap_utils.read_cameras_binary(colmap_dir / "cameras.bin")
    assert len(cameras) == 1, "one COLMAP camera expected"
    colmap = next(iter(cameras.values()))
    for dataset in (pipeline.datamanager.train_dataset, pipeline.datamanager.eval_dataset):
        c = dataset.cameras
        sx = factor * c.width.to(torch.float32) / colmap.width
        sy = factor * c.height.to(torch.float32) / colmap.height
        c.fx.mul_(sx)
        c.cx.mul_(sx)
        c.fy.mul_(sy)
        c.cy.mul_(sy)


def peer_psnr(pipeline):
    """Mean eval PSNR over the eval images: nerfacto's metric and the float64 one of ours."""
    pipeline.eval()
    model = pipeline.model
    metric, exact = [], []
    with torch.no_grad():
        for camera, batch in pipeline.datamanager.fixed_indices_eval_dataloader:
            outputs = model.get_outputs_for_camera(camera=camera)
            metrics, _ = model.get_image_metrics_and_images(outputs, batch)
            metric.append(metrics["psnr"])
            gt = batch["image"].to(torch.float64)
            mse = ((outputs["rgb"].to(torch.float64) - gt) ** 2).mean().item()
            exact.append(-10.0 * math.log10(mse))
    pipeline.train()
    return sum(metric) / len(metric), sum(exact) / len(exact)


def peer_corrections(model):
    optimizer = model.camera_optimizer
    if optimizer.config.mode == "off":
        return None
    pose = optimizer.pose_adjustment.detach()
    translation = pose[:, :3].norm(dim=-1)
    rotation = pose[:, 3:].norm(dim=-1)
    return {
        "translation_mean": translation.mean().item(),
        "translation_max": translation.max().item(),
        "rotation_mean_degrees": math.degrees(rotation.mean().item()),
        "rotation_max_degrees": math.degrees(rotation.max().item()),
        "pose_adjustment": pose.tolist(),
    }


def run_peer(args, mode, seed):
    started = time.perf_counter()
    pipeline, ignored = peer_pipeline(args, mode, seed)
    optimizers = Optimizers(copy.deepcopy(method_configs["nerfacto"].optimizers), pipeline.get_param_groups())
    grad_scaler = torch.cuda.amp.GradScaler(enabled=False)  # the Trainer's on the CPU
    callbacks = pipeline.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=grad_scaler, pipeline=pipeline, trainer=None)
    )
    middle = set(eval_steps(args.steps, args.eval_every))
    steps, psnr, psnr_f64 = [0], [], []
    first = peer_psnr(pipeline)
    psnr.append(first[0])
    psnr_f64.append(first[1])
    train_time = 0.0
    groups = list(optimizers.parameters.keys())
    for step in range(args.steps):
        t0 = time.perf_counter()
        pipeline.train()
        for c in callbacks:
            c.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        # Trainer.train_iteration (gradient accumulation 1, no autocast on the CPU).
        optimizers.zero_grad_some(groups)
        _, loss_dict, _ = pipeline.get_train_loss_dict(step=step)
        loss = sum(loss_dict.values())
        grad_scaler.scale(loss).backward()
        optimizers.optimizer_scaler_step_some(grad_scaler, groups)
        scale = grad_scaler.get_scale()
        grad_scaler.update()
        if scale <= grad_scaler.get_scale():
            optimizers.scheduler_step_all(step)
        for c in callbacks:
            c.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        train_time += time.perf_counter() - t0
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"nerfstudio's loss became {loss.item()} at step {step}")
        done = step + 1  # optimiser steps taken, as ours counts them
        if done in middle or done == args.steps:
            value = peer_psnr(pipeline)
            steps.append(done)
            psnr.append(value[0])
            psnr_f64.append(value[1])
    wall = time.perf_counter() - started
    outputs = pipeline.datamanager.train_dataparser_outputs
    return {
        "steps": steps,
        "psnr": psnr,
        "psnr_float64": psnr_f64,
        "wall_s": wall,
        "rays_per_second": args.steps * args.rays / max(train_time, 1e-9),
        "camera_corrections": peer_corrections(pipeline.model),
        "ignored_config_keys": ignored,
        "dataparser_scale": float(outputs.dataparser_scale),
        "dataparser_transform": outputs.dataparser_transform.tolist(),
    }


def frame_difference(ours_transforms, transform, scale):
    """Max abs difference between ours' `dataparser_transforms.json` (transform and scale) and a peer's
    `dataparser_transform` (3x4) and `dataparser_scale`."""
    theirs = torch.as_tensor(transform, dtype=torch.float64)
    mine = torch.tensor(ours_transforms["transform"], dtype=torch.float64)
    return max(abs(float(scale) - ours_transforms["scale"]), (theirs - mine).abs().max().item())


def cross_eval(args, mode, run):
    """nerfstudio's eval PSNR of ours' final model (`nerfacto.safetensors`, whose `_model.` keys are
    nerfstudio's), in the frame ours wrote, with nerfstudio's and with our intrinsics. Ours writes
    nerfstudio's default frame since c3b6a43 (`assume_colmap_world_coordinate_convention=True`); a build
    before that wrote the frame of that flag False: the convention whose frame matches ours'
    `dataparser_transforms.json` is used (nerfstudio's when neither does, the difference recorded)."""
    from safetensors.torch import load_file

    state = {k[len("_model."):]: v for k, v in load_file(str(run / "nerfacto.safetensors")).items()
             if k.startswith("_model.")}
    ours_transforms = json.loads((run / "dataparser_transforms.json").read_text())

    def pipeline_in(convention, intrinsics):
        local = argparse.Namespace(**{**vars(args), "peer_colmap_convention": convention,
                                      "peer_intrinsics": intrinsics, "nerfacto_config": str(run / "nerfacto.json")})
        pipeline, _ = peer_pipeline(local, mode, 0)
        outputs = pipeline.datamanager.train_dataparser_outputs
        return pipeline, frame_difference(ours_transforms, outputs.dataparser_transform, outputs.dataparser_scale)

    out = {}
    convention = "nerfstudio"
    for intrinsics in ("nerfstudio", "ours"):
        pipeline, frame_error = pipeline_in(convention, intrinsics)
        if frame_error >= 1e-4 and convention == "nerfstudio":
            other, other_error = pipeline_in("ours", intrinsics)
            if other_error < 1e-4:
                pipeline, frame_error, convention = other, other_error, "ours"
        missing, unexpected = pipeline.model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        unread = [k for k in missing if not k.startswith("lpips.") and k != "device_indicator_param"]
        assert not unread, unread
        metric, exact = peer_psnr(pipeline)
        out[f"{intrinsics}_intrinsics"] = {"psnr": metric, "psnr_float64": exact}
        out["peer_colmap_convention"] = convention
        out["frame_max_abs_difference"] = frame_error
    return out


# --------------------------------------------------------------------------------------------------


def spread(values):
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarise(per_seed):
    """Per eval step: each side's and the difference's mean and spread over seeds."""
    seeds = list(per_seed)
    steps = per_seed[seeds[0]]["ours"]["steps"] if "ours" in per_seed[seeds[0]] else per_seed[seeds[0]]["nerfstudio"]["steps"]
    out = {"steps": steps}
    frames = [per_seed[s]["frame_max_abs_difference"] for s in seeds if "frame_max_abs_difference" in per_seed[s]]
    if frames:
        out["frame_max_abs_difference"] = max(frames)
    for side in ("ours", "nerfstudio"):
        if all(side in per_seed[s] for s in seeds):
            out[side] = [spread([per_seed[s][side]["psnr"][i] for s in seeds]) for i in range(len(steps))]
    if "ours" in out and "nerfstudio" in out:
        assert all(per_seed[s]["ours"]["steps"] == per_seed[s]["nerfstudio"]["steps"] for s in seeds)
        out["ours_minus_nerfstudio"] = [
            spread([per_seed[s]["ours"]["psnr"][i] - per_seed[s]["nerfstudio"]["psnr"][i] for s in seeds])
            for i in range(len(steps))
        ]
        # The change from step 0 to the end, each side.
        for side in ("ours", "nerfstudio"):
            out[f"{side}_gain"] = spread([per_seed[s][side]["psnr"][-1] - per_seed[s][side]["psnr"][0] for s in seeds])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--difix3d", default="target/release/difix3d")
    parser.add_argument("--data", default="assets/maupertuis")
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rays", type=int, default=512)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--nerfacto-config", help="our JSON model config; ns-train nerfacto's defaults without")
    parser.add_argument("--modes", default="off,SO3xR3")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--backend", default="cpu", help="ours' --backend")
    parser.add_argument("--sides", default="ours,nerfstudio")
    parser.add_argument(
        "--peer-colmap-convention", choices=["nerfstudio", "ours"], default="nerfstudio",
        help="nerfstudio: its default world frame (assume_colmap_world_coordinate_convention=True), the one ours "
        "writes since c3b6a43; ours: that flag False, the frame of ours' builds before c3b6a43",
    )
    parser.add_argument(
        "--peer-intrinsics", choices=["nerfstudio", "ours"], default="nerfstudio",
        help="nerfstudio: the COLMAP intrinsics divided by the factor; ours: scaled to the image file as ours does",
    )
    parser.add_argument("--cross-eval", action="store_true",
                        help="also render each of ours' trained models in nerfstudio (the frame ours wrote; both intrinsics) and "
                        "report nerfstudio's eval PSNR of them: a check that both sides evaluate alike")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="/tmp/quality/run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    modes = args.modes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    sides = args.sides.split(",")

    result = {
        "settings": {k: v for k, v in vars(args).items()},
        "torch_threads": torch.get_num_threads(),
        "modes": {},
    }
    for mode in modes:
        per_seed = {}
        for seed in seeds:
            entry = {}
            if "ours" in sides:
                entry["ours"] = run_ours(args, mode, seed, out)
                print(f"[{mode} seed {seed}] ours {['%.3f' % p for p in entry['ours']['psnr']]} "
                      f"({entry['ours']['wall_s']:.1f} s)", file=sys.stderr, flush=True)
            if "ours" in sides and args.cross_eval:
                with contextlib.redirect_stdout(sys.stderr):
                    entry["ours"]["nerfstudio_eval_of_ours"] = cross_eval(args, mode, Path(entry["ours"]["run"]))
                print(f"[{mode} seed {seed}] nerfstudio's eval of ours' final model "
                      f"{entry['ours']['nerfstudio_eval_of_ours']}", file=sys.stderr, flush=True)
            if "nerfstudio" in sides:
                with contextlib.redirect_stdout(sys.stderr):  # nerfstudio's console logs go to stdout
                    entry["nerfstudio"] = run_peer(args, mode, seed)
                print(f"[{mode} seed {seed}] nerfstudio {['%.3f' % p for p in entry['nerfstudio']['psnr']]} "
                      f"({entry['nerfstudio']['wall_s']:.1f} s)", file=sys.stderr, flush=True)
            if "ours" in entry and "nerfstudio" in entry:
                ours_transforms = json.loads((Path(entry["ours"]["run"]) / "dataparser_transforms.json").read_text())
                entry["frame_max_abs_difference"] = frame_difference(
                    ours_transforms, entry["nerfstudio"]["dataparser_transform"], entry["nerfstudio"]["dataparser_scale"])
                print(f"[{mode} seed {seed}] frame: max abs difference of ours' dataparser_transforms.json and "
                      f"nerfstudio's ({args.peer_colmap_convention} convention) "
                      f"{entry['frame_max_abs_difference']:.3g}", file=sys.stderr, flush=True)
            per_seed[str(seed)] = entry
            (out / "result.json").write_text(json.dumps(result | {"partial": {mode: per_seed}}, indent=1))
        result["modes"][mode] = {"seeds": per_seed, "summary": summarise(per_seed)}
        (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
