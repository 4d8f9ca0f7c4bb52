//! `difix3d refine`: the Difix3D progressive 3D update of a trained scene: Gaussian splats (the
//! default) or, with `--method nerfacto`, Difix3D's nerfstudio variant on a nerfacto NeRF.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use clap::Args;

use difix3d::nn::backend::{run_on_renderer_device, BackendKind, Precision, WithBackend};
use difix3d::refine::nerfacto::{
    self as nerfacto_refine, BatchSource, NerfactoRefineConfig, NerfactoRefineObserver, NerfactoRefineStep, ValPoint,
};
use difix3d::refine::refiner::{self, RefineConfig, RefineError, RefineObserver, RefineSummary, SceneSource, Targets};
use difix3d::refine::round::RoundEvent;
use difix3d::render::GpuContext;
use difix3d::scene::Splats;
use difix3d::train::trainer::{StepReport, StepRequest, TrainObserver};

use super::train::Method;

#[derive(Args)]
pub struct RefineArgs {
    /// What to refine: Gaussian splats (the default) or a nerfacto NeRF (Difix3D's nerfstudio
    /// variant, with --checkpoint).
    #[arg(long, value_enum, default_value_t = Method::Splats)]
    method: Method,
    /// The trained scene: a `difix3d train` checkpoint (.safetensors) or a .ply/.splat in the
    /// dataset's coordinates. Splats only.
    #[arg(long)]
    scene: Option<PathBuf>,
    /// Nerfacto: the trained model, nerfstudio's `nerfstudio_models/step-NNNNNNNNN.ckpt` or the
    /// `nerfacto.safetensors` of `difix3d train --method nerfacto`; the run continues at its step + 1.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Nerfacto: the model's settings (nerfstudio's NerfactoModelConfig names; the run's
    /// `nerfacto.json` for our runs); `ns-train nerfacto`'s defaults otherwise.
    #[arg(long, visible_alias = "config")]
    nerfacto_config: Option<PathBuf>,
    /// Nerfacto: the camera optimiser (off, SO3xR3 or SE3; nerfstudio's camera_optimizer.mode),
    /// whatever --nerfacto-config says. Default: off, as Difix3D's README runs this variant (its
    /// difix3d_config.py says SO3xR3).
    #[arg(long, value_parser = super::values::camera_optimizer_mode)]
    camera_optimizer: Option<difix3d::nerfacto::camera_optimizer::Mode>,
    /// The dataset folder the scene was trained on (COLMAP sparse model + images, or a nerfstudio transforms.json).
    #[arg(long)]
    data: PathBuf,
    /// Train on images downscaled by this factor (`images_N/`).
    #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
    factor: u32,
    /// Split train/eval as Difix3D's own `--test_every N` does (its examples/gsplat/datasets/colmap.py): 0 = every
    /// image in both, 1 = by file name (`_train_` / `_eval_`), N > 1 = every N-th image is a *training* image.
    /// Without it: by Difix3D's `image_train_`/`image_eval_` names when present, else every 8th image is an eval
    /// image (gsplat's `--test_every 8`).
    #[arg(long, value_name = "N")]
    difix3d_test_every: Option<u32>,
    /// Difix model directory in the diffusers layout (nvidia/difix_ref, or nvidia/difix with --no-reference).
    #[arg(long, default_value = "checkpoints/difix_ref")]
    model: PathBuf,
    /// A Difix trainer checkpoint (`model_*.pkl`) applied over --model.
    #[arg(long)]
    model_checkpoint: Option<PathBuf>,
    /// Fix novel views without a reference photo (the single-view `difix` model).
    #[arg(long)]
    no_reference: bool,
    /// Where the novel cameras head: `eval` (the dataset's eval cameras, the default) or a
    /// camera-path JSON (splats only).
    #[arg(long)]
    targets: Option<String>,
    /// Target cameras sampled along a camera path (with --targets PATH.json; default 16).
    #[arg(long, value_parser = super::values::at_least_one)]
    path_samples: Option<usize>,
    /// nerfstudio's dataparser_transforms.json (next to its config.yml). Splats: maps a nerfstudio
    /// camera path given as --targets from the world nerfstudio trained in back to the dataset's.
    /// Nerfacto: the model's frame (default: the file beside --checkpoint, or one folder up).
    #[arg(long)]
    dataparser_transforms: Option<PathBuf>,
    /// Refinement steps (nerfacto: steps after the checkpoint's, nerfstudio's max_num_iterations).
    #[arg(long, default_value_t = 30_000)]
    steps: usize,
    /// Steps between fix rounds (splats: a round also runs at the start; nerfacto: at every step
    /// that is a multiple of it, as Difix3D's nerfstudio pipeline).
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 2000)]
    every: usize,
    /// Nerfacto: render and measure the eval views at every step that is a multiple of this, into
    /// --out's val/STEP/ (Difix3D's steps_per_val, default 5000; 0: never).
    #[arg(long)]
    val_every: Option<usize>,
    /// How far each round moves the novel cameras toward their targets.
    #[arg(long, value_parser = super::values::positive_f32, default_value_t = 0.5)]
    distance: f32,
    /// Chance that a step trains on the newest round's novel views once there are any (default
    /// 0.3 for splats, 0.4 for nerfacto, as the two reference scripts).
    #[arg(long, value_parser = super::values::unit_interval_f32)]
    novel_probability: Option<f32>,
    /// The run folder: rounds/, summary.json; splats: checkpoint.safetensors, point_cloud.ply,
    /// eval.json; nerfacto: nerfacto.safetensors, nerfacto.json, dataparser_transforms.json, eval/.
    #[arg(long)]
    out: PathBuf,
    /// Continue from this run's checkpoint (its rounds are read back from --out).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also write the checkpoint every N steps.
    #[arg(long, value_parser = super::values::at_least_one)]
    checkpoint_every: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Composite training renders over a random colour each step.
    #[arg(long)]
    random_background: bool,
    /// Draw antialiased (gsplat's rasterize_mode="antialiased"), for a scene trained with
    /// `train --antialiased`.
    #[arg(long)]
    antialiased: bool,
    /// Skip the Difix3D+ row of the final evaluation (the eval renders fixed by Difix).
    #[arg(long)]
    no_post_render_eval: bool,
    /// Where Difix, the loss and the optimiser run (the rasterizer always runs on wgpu; default
    /// wgpu). Nerfacto and its Difix run wholly on it (default cpu).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    #[command(flatten)]
    lpips: super::LpipsArgs,
    /// Nerfacto: rays per training batch (Difix3D's train_num_rays_per_batch, default 16384),
    /// rounded down to whole patches.
    #[arg(long, value_parser = super::values::at_least_one)]
    rays_per_batch: Option<usize>,
    /// Nerfacto: side of the square pixel patches a batch is made of (Difix3D's patch_size,
    /// default 32; 1 draws single pixels).
    #[arg(long, value_parser = super::values::at_least_one_u32)]
    patch_size: Option<u32>,
}

/// Progress on the terminal: steps on the bar, rounds in its message.
struct BarObserver {
    bar: indicatif::ProgressBar,
    round: String,
}

impl TrainObserver for BarObserver {
    fn step(&mut self, r: &StepReport) -> StepRequest {
        self.bar.set_position(r.step as u64);
        self.bar.set_message(format!(
            "{} · loss {:.4} · PSNR {:.2} · {:.1} it/s",
            self.round, r.loss, r.psnr, r.steps_per_second
        ));
        StepRequest::default()
    }

    fn snapshot(&mut self, _splats: Splats) {}
}

impl RefineObserver for BarObserver {
    fn round(&mut self, event: &RoundEvent) {
        show_round(&self.bar, &mut self.round, event);
    }
}

/// A round's progress in the bar's message, and a line when it is done; `label` names the round
/// in the step messages.
fn show_round(bar: &indicatif::ProgressBar, label: &mut String, event: &RoundEvent) {
    match event {
        RoundEvent::Started { round, .. } => *label = format!("round {}", round + 1),
        RoundEvent::Fixed { round, done, total } => {
            bar.set_message(format!("round {}: fixed {done}/{total} novel views", round + 1));
        }
        RoundEvent::Done(report) => {
            *label = format!("round {} ({} views)", report.round + 1, report.views);
            bar.println(format!(
                "round {} at step {}: {} novel views rendered in {:.1} s, fixed in {:.1} s -> {}",
                report.round + 1,
                report.step,
                report.views,
                report.render.as_secs_f64(),
                report.fix.as_secs_f64(),
                report.dir.display()
            ));
        }
    }
}

impl NerfactoRefineObserver for BarObserver {
    fn step(&mut self, r: &NerfactoRefineStep) {
        self.bar.set_position((r.step + 1 - r.first_step) as u64);
        let source = match r.source {
            BatchSource::Photos => "photos",
            BatchSource::Novel { .. } => "novel views",
        };
        self.bar.set_message(format!(
            "step {} · {} · {source} · loss {:.4} · PSNR {:.2} · {:.0} rays/s",
            r.step, self.round, r.losses.total, r.losses.psnr, r.rays_per_second
        ));
    }

    fn round(&mut self, event: &RoundEvent) {
        show_round(&self.bar, &mut self.round, event);
    }

    fn val(&mut self, point: &ValPoint) {
        self.bar.println(format!(
            "step {}: eval PSNR {:.2} dB, SSIM {:.4}",
            point.step, point.psnr, point.ssim
        ));
    }
}

struct RefineJob {
    config: RefineConfig,
    gpu: GpuContext,
    stop: Arc<AtomicBool>,
}

impl WithBackend for RefineJob {
    type Output = Result<RefineSummary, RefineError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let mut observer = BarObserver {
            bar: super::progress_bar(
                self.config.steps as u64,
                "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
            ),
            round: "before round 1".into(),
        };
        let result = refiner::refine::<B>(&self.config, self.gpu, &device, &mut observer, &self.stop);
        observer.bar.finish_and_clear();
        result
    }
}

/// The flags of one method given to the other, by name.
fn misplaced_flags(args: &RefineArgs) -> Vec<&'static str> {
    let given = |present: bool, name: &'static str| present.then_some(name);
    let flags = match args.method {
        Method::Splats => vec![
            given(args.checkpoint.is_some(), "--checkpoint"),
            given(args.nerfacto_config.is_some(), "--nerfacto-config"),
            given(args.camera_optimizer.is_some(), "--camera-optimizer"),
            given(args.rays_per_batch.is_some(), "--rays-per-batch"),
            given(args.patch_size.is_some(), "--patch-size"),
            given(args.val_every.is_some(), "--val-every"),
        ],
        Method::Nerfacto => vec![
            given(args.scene.is_some(), "--scene"),
            given(args.resume.is_some(), "--resume"),
            given(args.targets.is_some(), "--targets"),
            given(args.path_samples.is_some(), "--path-samples"),
            given(args.checkpoint_every.is_some(), "--checkpoint-every"),
            given(args.random_background, "--random-background"),
            given(args.antialiased, "--antialiased"),
        ],
    };
    flags.into_iter().flatten().collect()
}

pub fn run(args: RefineArgs) -> anyhow::Result<()> {
    args.method.refuse_misplaced("refinement", &misplaced_flags(&args))?;
    if args.method == Method::Nerfacto {
        return run_nerfacto(args);
    }
    if args.scene.is_none() && args.resume.is_none() {
        anyhow::bail!("splat refinement needs --scene (the trained scene) or --resume (a refinement's checkpoint)");
    }
    // With --resume the scene comes from the checkpoint; `scene` is then only a placeholder.
    let scene = SceneSource::File(args.scene.clone().unwrap_or_default());
    let mut config = RefineConfig::new(args.data, scene, args.model, args.out.clone());
    config.factor = args.factor;
    config.split = super::split_rule(args.difix3d_test_every);
    config.model_checkpoint = args.model_checkpoint;
    config.reference = !args.no_reference;
    config.targets = match args.targets.as_deref().unwrap_or("eval") {
        "eval" => {
            if let Some(file) = &args.dataparser_transforms {
                anyhow::bail!(
                    "--dataparser-transforms {}: applies to a nerfstudio camera path given as --targets PATH.json, \
                     not to --targets eval",
                    file.display()
                );
            }
            Targets::Eval
        }
        file => Targets::Path {
            file: file.into(),
            samples: args.path_samples.unwrap_or(16),
            dataparser: args.dataparser_transforms,
        },
    };
    config.steps = args.steps;
    config.every = args.every;
    config.distance = args.distance;
    config.resume = args.resume;
    config.checkpoint_every = args.checkpoint_every;
    config.seed = args.seed;
    config.random_background = args.random_background;
    config.antialiased = args.antialiased;
    config.post_render_eval = !args.no_post_render_eval;
    config.lpips = args.lpips.files();
    if let Some(p) = args.novel_probability {
        config.novel_probability = p;
    }
    let gpu = GpuContext::headless()?;
    // Ctrl-C ends the run after the current step (or novel view), with a checkpoint.
    let stop = super::stop_on_ctrl_c()?;
    let summary = run_on_renderer_device(
        args.backend.unwrap_or(BackendKind::Wgpu),
        Precision::Fp32,
        &gpu,
        RefineJob {
            config,
            gpu: gpu.clone(),
            stop,
        },
    )??;
    let report = serde_json::json!({
        "steps": summary.steps,
        "rounds": summary.rounds,
        "splats": summary.splats,
        "eval": summary.eval,
        "stopped_early": summary.stopped_early,
    });
    super::write_json(&args.out.join("summary.json"), &report)?;
    println!(
        "{} after {} steps and {} rounds: {} splats; wrote {} and {}",
        if summary.stopped_early { "stopped" } else { "refined" },
        summary.steps,
        summary.rounds,
        summary.splats,
        summary.ply.display(),
        summary.checkpoint.display()
    );
    println!("{}", summary.eval.table("3DGS"));
    Ok(())
}

/// `--method nerfacto`: Difix3D's nerfstudio variant with autodiff, nerfacto and Difix on the CPU
/// backend unless `--backend` says otherwise (fp32).
fn run_nerfacto(args: RefineArgs) -> anyhow::Result<()> {
    let Some(checkpoint) = args.checkpoint else {
        anyhow::bail!(
            "--method nerfacto needs --checkpoint: the trained nerfacto model (nerfstudio's step-*.ckpt or \
             the nerfacto.safetensors of `difix3d train --method nerfacto`)"
        );
    };
    let mut config = NerfactoRefineConfig::new(args.data, checkpoint, args.model, args.out.clone());
    config.factor = args.factor;
    config.split = super::split_rule(args.difix3d_test_every);
    config.nerfacto_config = args.nerfacto_config;
    if let Some(mode) = args.camera_optimizer {
        config.camera_optimizer = mode;
    }
    config.dataparser_transforms = args.dataparser_transforms;
    config.model_checkpoint = args.model_checkpoint;
    config.reference = !args.no_reference;
    config.steps = args.steps;
    config.every = args.every;
    if let Some(every) = args.val_every {
        config.val_every = every;
    }
    config.distance = args.distance;
    config.seed = args.seed;
    config.post_render_eval = !args.no_post_render_eval;
    config.lpips = args.lpips.files();
    if let Some(p) = args.novel_probability {
        config.novel_probability = p;
    }
    if let Some(rays) = args.rays_per_batch {
        config.rays_per_batch = rays;
    }
    if let Some(size) = args.patch_size {
        config.patch_size = size;
    }
    // Ctrl-C ends the run after the current step (or novel view), and the model is saved.
    let stop = super::stop_on_ctrl_c()?;
    let mut observer = BarObserver {
        bar: super::progress_bar(config.steps as u64, "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]"),
        round: "before round 1".into(),
    };
    let result =
        nerfacto_refine::refine_nerfacto_on(args.backend.unwrap_or(BackendKind::Cpu), &config, &mut observer, &stop);
    observer.bar.finish_and_clear();
    let summary = result??;
    let report = serde_json::json!({
        "method": "nerfacto",
        "first_step": summary.first_step,
        "steps": summary.steps,
        "rounds": summary.round_steps.len(),
        "round_steps": summary.round_steps,
        "val": summary.val,
        "eval_psnr_before": summary.eval_psnr_before,
        "eval_psnr_after": summary.eval_psnr_after,
        "eval": summary.eval,
        "stopped_early": summary.stopped_early,
        "adam_moments_restored": summary.adam_moments_restored,
        "camera_corrections": summary.camera_corrections,
    });
    super::write_json(&args.out.join("summary.json"), &report)?;
    let fmt = |p: Option<f64>| p.map_or("n/a".to_string(), |v| format!("{v:.2} dB"));
    println!(
        "{} nerfacto after {} steps from step {} and {} rounds: eval PSNR {} -> {}; wrote {}, {} and {}",
        if summary.stopped_early { "stopped" } else { "refined" },
        summary.steps,
        summary.first_step,
        summary.round_steps.len(),
        fmt(summary.eval_psnr_before),
        fmt(summary.eval_psnr_after),
        summary.model.display(),
        summary.config.display(),
        summary.transforms.display()
    );
    println!("{}", summary.eval.table("Nerfacto"));
    Ok(())
}
