//! `difix3d refine`: the Difix3D progressive 3D update of a trained scene.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use clap::Args;

use difix3d::nn::backend::{run_on_renderer_device, BackendKind, Precision, WithBackend};
use difix3d::refine::refiner::{self, RefineConfig, RefineError, RefineObserver, RefineSummary, SceneSource, Targets};
use difix3d::refine::round::RoundEvent;
use difix3d::render::GpuContext;
use difix3d::scene::Splats;
use difix3d::train::trainer::{StepReport, StepRequest, TrainObserver};

#[derive(Args)]
pub struct RefineArgs {
    /// The trained scene: a `difix3d train` checkpoint (.safetensors) or a .ply/.splat in the
    /// dataset's coordinates.
    #[arg(long, required_unless_present = "resume")]
    scene: Option<PathBuf>,
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
    /// Where the novel cameras head: `eval` (the dataset's eval cameras) or a camera-path JSON.
    #[arg(long, default_value = "eval")]
    targets: String,
    /// Target cameras sampled along a camera path (with --targets PATH.json).
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 16)]
    path_samples: usize,
    /// nerfstudio's dataparser_transforms.json (next to its config.yml): maps a nerfstudio camera path
    /// given as --targets from the world nerfstudio trained in back to the dataset's.
    #[arg(long)]
    dataparser_transforms: Option<PathBuf>,
    /// Refinement steps.
    #[arg(long, default_value_t = 30_000)]
    steps: usize,
    /// Steps between fix rounds (a round also runs at the start).
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 2000)]
    every: usize,
    /// How far each round moves the novel cameras toward their targets.
    #[arg(long, value_parser = super::values::positive_f32, default_value_t = 0.5)]
    distance: f32,
    /// The run folder: rounds/, checkpoint.safetensors, point_cloud.ply, eval.json, summary.json.
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
    /// Where Difix, the loss and the optimiser run (the rasterizer always runs on wgpu).
    #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
    backend: BackendKind,
    #[command(flatten)]
    lpips: super::LpipsArgs,
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
        match event {
            RoundEvent::Started { round, .. } => self.round = format!("round {}", round + 1),
            RoundEvent::Fixed { round, done, total } => {
                self.bar
                    .set_message(format!("round {}: fixed {done}/{total} novel views", round + 1));
            }
            RoundEvent::Done(report) => {
                self.round = format!("round {} ({} views)", report.round + 1, report.views);
                self.bar.println(format!(
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

pub fn run(args: RefineArgs) -> anyhow::Result<()> {
    // With --resume the scene comes from the checkpoint; `scene` is then only a placeholder.
    let scene = SceneSource::File(args.scene.clone().unwrap_or_default());
    let mut config = RefineConfig::new(args.data, scene, args.model, args.out.clone());
    config.factor = args.factor;
    config.split = super::split_rule(args.difix3d_test_every);
    config.model_checkpoint = args.model_checkpoint;
    config.reference = !args.no_reference;
    config.targets = match args.targets.as_str() {
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
            samples: args.path_samples,
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
    let gpu = GpuContext::headless()?;
    // Ctrl-C ends the run after the current step (or novel view), with a checkpoint.
    let stop = super::stop_on_ctrl_c()?;
    let summary = run_on_renderer_device(
        args.backend,
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
    println!("{}", summary.eval.table());
    Ok(())
}
