//! `difix3d train`: 3DGS training (the default) or nerfstudio's nerfacto (`--method nerfacto`) on a
//! COLMAP / Difix3D dataset folder.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use clap::Args;

use difix3d::nerfacto::trainer::{self as nerfacto_trainer, NerfactoRunConfig, NerfactoStepReport};
use difix3d::nn::backend::{run_on_renderer_device, BackendKind, Precision, WithBackend};
use difix3d::render::GpuContext;
use difix3d::train::densify::DensifyConfig;
use difix3d::train::trainer::{self, TrainConfig, TrainSummary};

/// What `difix3d train` trains and `difix3d refine` refines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// 3D Gaussian splats with gsplat's recipe.
    Splats,
    /// nerfstudio's nerfacto NeRF.
    Nerfacto,
}

impl Method {
    /// Refuses the flags `misplaced` (given, but for the other method) of `command` ("training",
    /// "refinement"), naming each and the method it belongs to.
    pub fn refuse_misplaced(self, command: &str, misplaced: &[&str]) -> anyhow::Result<()> {
        if misplaced.is_empty() {
            return Ok(());
        }
        let (method, other) = match self {
            Method::Splats => (
                format!("splat {command} (the default --method)"),
                "--method nerfacto".to_string(),
            ),
            Method::Nerfacto => ("--method nerfacto".to_string(), format!("splat {command}")),
        };
        anyhow::bail!(
            "{} {} not used by {method}; {} for {other} only",
            misplaced.join(", "),
            if misplaced.len() == 1 { "is" } else { "are" },
            if misplaced.len() == 1 { "it is" } else { "they are" },
        )
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// What to train: Gaussian splats (the default) or nerfstudio's nerfacto.
    #[arg(long, value_enum, default_value_t = Method::Splats)]
    method: Method,
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
    /// Highest SH degree (raised by one every 1000 steps; default 3). Splats only.
    #[arg(long, value_parser = super::values::sh_degree)]
    sh_degree: Option<u32>,
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
    /// Where the loss and the optimiser run (the rasterizer always runs on wgpu; default wgpu).
    /// Nerfacto runs wholly on it (default cpu).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    #[command(flatten)]
    lpips: super::LpipsArgs,
    /// Nerfacto: rays per training batch (nerfstudio's train_num_rays_per_batch, default 4096).
    #[arg(long, value_parser = super::values::at_least_one)]
    rays_per_batch: Option<usize>,
    /// Nerfacto: a JSON file of model settings with nerfstudio's NerfactoModelConfig names
    /// (num_levels, max_res, log2_hashmap_size, hidden_dim, num_proposal_samples_per_ray,
    /// num_nerf_samples_per_ray, proposal_net_args_list, ...); `ns-train nerfacto`'s defaults
    /// otherwise.
    #[arg(long)]
    nerfacto_config: Option<PathBuf>,
    /// Nerfacto: the camera optimiser, learning a pose correction per training image (off, SO3xR3
    /// or SE3; nerfstudio's camera_optimizer.mode). Default: the --nerfacto-config's, else SO3xR3
    /// as `ns-train nerfacto`.
    #[arg(long, value_parser = super::values::camera_optimizer_mode)]
    camera_optimizer: Option<difix3d::nerfacto::camera_optimizer::Mode>,
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

/// The flags of one method given to the other, by name.
fn misplaced_flags(args: &TrainArgs) -> Vec<&'static str> {
    let given = |present: bool, name: &'static str| present.then_some(name);
    match args.method {
        Method::Splats => [
            given(args.rays_per_batch.is_some(), "--rays-per-batch"),
            given(args.nerfacto_config.is_some(), "--nerfacto-config"),
            given(args.camera_optimizer.is_some(), "--camera-optimizer"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Method::Nerfacto => [
            given(args.resume.is_some(), "--resume"),
            given(args.checkpoint_every.is_some(), "--checkpoint-every"),
            given(args.sh_degree.is_some(), "--sh-degree"),
            given(args.random_background, "--random-background"),
            given(args.absgrad, "--absgrad"),
            given(args.antialiased, "--antialiased"),
            given(args.grow_grad2d.is_some(), "--grow-grad2d"),
            given(args.lpips.files().is_some(), "--lpips-backbone"),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    args.method.refuse_misplaced("training", &misplaced_flags(&args))?;
    if args.method == Method::Nerfacto {
        return run_nerfacto(args);
    }
    let mut config = TrainConfig::new(args.data, args.out.clone());
    config.factor = args.factor;
    config.split = super::split_rule(args.difix3d_test_every);
    config.steps = args.steps;
    config.resume = args.resume;
    config.checkpoint_every = args.checkpoint_every;
    config.max_sh_degree = args.sh_degree.unwrap_or(3);
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
        args.backend.unwrap_or(BackendKind::Wgpu),
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

/// `--method nerfacto`: nerfstudio's nerfacto with autodiff, on the CPU backend unless `--backend`
/// says otherwise (fp32 everywhere).
fn run_nerfacto(args: TrainArgs) -> anyhow::Result<()> {
    use difix3d::nerfacto::NerfactoConfig;

    let mut config = NerfactoRunConfig::new(args.data, args.out.clone());
    config.factor = args.factor;
    config.split = super::split_rule(args.difix3d_test_every);
    config.steps = args.steps;
    config.seed = args.seed;
    config.eval_steps = args.eval_steps;
    if let Some(rays) = args.rays_per_batch {
        config.rays_per_batch = rays;
    }
    if let Some(path) = &args.nerfacto_config {
        config.model = NerfactoConfig::read(path)?;
    }
    if let Some(mode) = args.camera_optimizer {
        config.model.camera_optimizer.mode = mode;
    }
    let stop = super::stop_on_ctrl_c()?;
    let bar = super::progress_bar(config.steps as u64, "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]");
    let result = nerfacto_trainer::train_on(
        args.backend.unwrap_or(BackendKind::Cpu),
        &config,
        &mut |r: &NerfactoStepReport| {
            bar.set_position(r.step as u64);
            bar.set_message(format!(
                "loss {:.4} · PSNR {:.2} · {:.0} rays/s",
                r.losses.total, r.losses.psnr, r.rays_per_second
            ));
        },
        &stop,
    );
    bar.finish_and_clear();
    let summary = result??;
    let report = serde_json::json!({
        "method": "nerfacto",
        "steps": summary.steps,
        "eval_psnr_before": summary.eval_psnr_before,
        "eval_psnr_after": summary.eval_psnr_after,
        "evals": summary.evals.iter().map(|(step, psnr)| serde_json::json!({"step": step, "psnr": psnr})).collect::<Vec<_>>(),
        "stopped_early": summary.stopped_early,
        "rays_per_second": summary.rays_per_second,
        "camera_corrections": summary.camera_corrections,
    });
    super::write_json(&args.out.join("summary.json"), &report)?;
    let fmt = |p: Option<f64>| p.map_or("n/a".to_string(), |v| format!("{v:.2} dB"));
    println!(
        "{} nerfacto after {} steps: eval PSNR {} -> {}; wrote {} and {}",
        if summary.stopped_early { "stopped" } else { "trained" },
        summary.steps,
        fmt(summary.eval_psnr_before),
        fmt(summary.eval_psnr_after),
        summary.model.display(),
        summary.config.display()
    );
    Ok(())
}
