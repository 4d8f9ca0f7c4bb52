//! `difix3d train`: 3DGS training on a COLMAP / Difix3D dataset folder.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use clap::Args;

use difix3d::nn::backend::{run_on_renderer_device, BackendKind, Precision, WithBackend};
use difix3d::render::GpuContext;
use difix3d::train::densify::DensifyConfig;
use difix3d::train::trainer::{self, TrainConfig, TrainSummary};

#[derive(Args)]
pub struct TrainArgs {
    /// The dataset folder (COLMAP sparse model + images, or a nerfstudio transforms.json).
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
    #[arg(long, default_value_t = 30_000)]
    steps: usize,
    /// The run folder: checkpoint.safetensors, point_cloud.ply, summary.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue from a checkpoint written by an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also write the checkpoint every N steps.
    #[arg(long, value_parser = super::values::at_least_one)]
    checkpoint_every: Option<usize>,
    /// Highest SH degree (raised by one every 1000 steps).
    #[arg(long, value_parser = super::values::sh_degree, default_value_t = 3)]
    sh_degree: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Composite training renders over a random colour each step (gsplat's --random-bkgd).
    #[arg(long)]
    random_background: bool,
    /// Also measure the eval PSNR after these steps (comma-separated; in summary.json's "evals").
    #[arg(long, value_delimiter = ',')]
    eval_steps: Vec<usize>,
    /// Densify from the absolute 2D-mean gradients (gsplat's absgrad, AbsGS: per splat, the sum over
    /// pixels of |each pixel's gradient|); raises the growth threshold to 0.0008 unless
    /// --grow-grad2d is given.
    #[arg(long)]
    absgrad: bool,
    /// Train antialiased, as gsplat's --antialiased (rasterize_mode="antialiased", Mip-Splatting's
    /// 2D filter: each splat's opacity scaled by sqrt(det(Σ2D) / det(Σ2D + 0.3 I))). Draw the
    /// result with `render --antialiased` / `eval --antialiased`.
    #[arg(long)]
    antialiased: bool,
    /// The mean 2D-gradient norm (NDC units) above which a splat is cloned or split (default 0.0002,
    /// 0.0008 with --absgrad).
    #[arg(long, value_parser = super::values::non_negative_f32)]
    grow_grad2d: Option<f32>,
    /// Where the loss and the optimiser run (the rasterizer always runs on wgpu).
    #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
    backend: BackendKind,
    #[command(flatten)]
    lpips: super::LpipsArgs,
}

struct TrainJob {
    config: TrainConfig,
    gpu: GpuContext,
    stop: Arc<AtomicBool>,
}

impl WithBackend for TrainJob {
    type Output = Result<TrainSummary, trainer::TrainError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let bar = super::progress_bar(
            self.config.steps as u64,
            "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
        );
        let result = trainer::train::<B>(
            &self.config,
            self.gpu,
            &device,
            &mut |r: &trainer::StepReport| {
                bar.set_position(r.step as u64);
                bar.set_message(format!(
                    "loss {:.4} · PSNR {:.2} · {} splats · {:.1} it/s",
                    r.loss, r.psnr, r.splats, r.steps_per_second
                ));
            },
            &self.stop,
        );
        bar.finish_and_clear();
        result
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut config = TrainConfig::new(args.data, args.out.clone());
    config.factor = args.factor;
    config.split = super::split_rule(args.difix3d_test_every);
    config.steps = args.steps;
    config.resume = args.resume;
    config.checkpoint_every = args.checkpoint_every;
    config.max_sh_degree = args.sh_degree;
    config.seed = args.seed;
    config.random_background = args.random_background;
    config.lpips = args.lpips.files();
    config.eval_steps = args.eval_steps;
    config.densify.absgrad = args.absgrad;
    config.antialiased = args.antialiased;
    if args.absgrad {
        config.densify.grow_grad2d = DensifyConfig::ABSGRAD_GROW_GRAD2D;
    }
    if let Some(grow) = args.grow_grad2d {
        config.densify.grow_grad2d = grow;
    }
    let gpu = GpuContext::headless()?;
    // Ctrl-C ends the run after the current step, with a checkpoint.
    let stop = super::stop_on_ctrl_c()?;
    let summary = run_on_renderer_device(
        args.backend,
        Precision::Fp32,
        &gpu,
        TrainJob {
            config,
            gpu: gpu.clone(),
            stop,
        },
    )??;
    let fmt = |p: Option<f64>| p.map_or("n/a".to_string(), |v| format!("{v:.2} dB"));
    let report = serde_json::json!({
        "steps": summary.steps,
        "splats": summary.splats,
        "eval_psnr_before": summary.eval_psnr_before,
        "eval_psnr_after": summary.eval_psnr_after,
        "eval": summary.eval,
        "stopped_early": summary.stopped_early,
        "evals": summary.evals,
    });
    super::write_json(&args.out.join("summary.json"), &report)?;
    println!(
        "{} after {} steps: {} splats, eval PSNR {} -> {}; wrote {} and {}",
        if summary.stopped_early { "stopped" } else { "trained" },
        summary.steps,
        summary.splats,
        fmt(summary.eval_psnr_before),
        fmt(summary.eval_psnr_after),
        summary.ply.display(),
        summary.checkpoint.display()
    );
    Ok(())
}
