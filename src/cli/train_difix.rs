//! `difix3d train-difix`: fine-tune Difix on degraded/clean pairs (Difix3D's `train_difix.py`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;

use difix3d::difix::train::data::{ImagePrep, ImagePrepKind};
use difix3d::difix::train::step::LossWeights;
use difix3d::difix::train::trainer::{
    self, DifixEvalReport, DifixStepReport, DifixTrainConfig, DifixTrainError, DifixTrainObserver, DifixTrainSummary,
};
use difix3d::nn::backend::{devices, run_on, BackendKind, Precision, WithBackend};
use difix3d::perceptual::lpips::LpipsFiles;

#[derive(Args)]
pub struct TrainDifixArgs {
    /// The pair JSON: {"train": {ID: {"image", "target_image", "ref_image"?, "prompt"?}}, "test": {...}}.
    #[arg(long)]
    data: PathBuf,
    /// The model to fine-tune (diffusers layout: nvidia/difix_ref, or a previous run's checkpoint/).
    #[arg(long, default_value = "checkpoints/difix_ref")]
    model: PathBuf,
    /// A reference-trainer checkpoint (`model_*.pkl`) applied over --model.
    #[arg(long)]
    model_checkpoint: Option<PathBuf>,
    /// The run folder: checkpoint/ (loads with `difix3d fix --model`), samples/, eval.jsonl.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// How pairs become training images: `resize` (Difix3D's src/dataset.py: input, target and
    /// reference each resized to --size, aspect ratio not kept, bilinear antialiased as torchvision)
    /// or `crop` (scaled so the shorter side fits, then a random --resolution square, the same for all
    /// three).
    #[arg(long, value_enum, default_value_t = ImagePrepKind::Resize)]
    image_prep: ImagePrepKind,
    /// With --image-prep resize: the size HEIGHTxWIDTH every image is resized to (multiples of 8)
    /// [default: 576x1024, the reference's].
    #[arg(long, value_parser = super::parse_hw)]
    size: Option<(u32, u32)>,
    /// With --image-prep crop: side of the square training crops (a multiple of 8) [default: 512].
    #[arg(long, value_parser = super::values::image_side)]
    resolution: Option<u32>,
    #[arg(long, value_parser = super::values::positive_f64, default_value_t = 2e-5)]
    lr: f64,
    #[arg(long, value_parser = super::values::non_negative_f32, default_value_t = 1.0)]
    lambda_l2: f32,
    #[arg(long, value_parser = super::values::non_negative_f32, default_value_t = 1.0)]
    lambda_lpips: f32,
    #[arg(long, value_parser = super::values::non_negative_f32, default_value_t = 1.0)]
    lambda_gram: f32,
    /// Steps before the Gram loss is added.
    #[arg(long, default_value_t = 2000)]
    gram_warmup: usize,
    /// Side of the Gram loss's random crop, from 16 to the training images' shorter side [default:
    /// 400, or that side when smaller].
    #[arg(long, value_parser = super::values::image_side_usize)]
    gram_crop: Option<usize>,
    /// torchvision's VGG16 ImageNet weights (vgg16-397923af.pth) for LPIPS (and the Gram loss).
    #[arg(long)]
    lpips_backbone: PathBuf,
    /// lpips's linear layers for VGG (default: assets/lpips/vgg.pth).
    #[arg(long)]
    lpips_lin: Option<PathBuf>,
    /// VGG16 weights for the Gram loss (default: --lpips-backbone).
    #[arg(long)]
    vgg16: Option<PathBuf>,
    /// Micro-batches per optimiser step.
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 1)]
    grad_accumulation: usize,
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: usize,
    /// Evaluate on the test split every N steps (0: only at the start and the end).
    #[arg(long, default_value_t = 500)]
    eval_every: usize,
    /// Continue from OUT/checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Data-parallel training over these GPUs (e.g. 0,1,2,3), each taking --grad-accumulation
    /// micro-batches per step. On --backend cpu each index is one more worker thread.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
    backend: BackendKind,
}

struct Bar(indicatif::ProgressBar);

impl DifixTrainObserver for Bar {
    fn step(&mut self, r: &DifixStepReport) -> bool {
        self.0.set_position(r.step as u64);
        let gram = r.losses.gram.map_or(String::new(), |g| format!(" · gram {g:.5}"));
        self.0.set_message(format!(
            "loss {:.4} (L2 {:.4} · LPIPS {:.4}{gram}) · |g| {:.3} · {:.2} it/s",
            r.losses.total, r.losses.l2, r.losses.lpips, r.grad_norm, r.steps_per_second
        ));
        false
    }

    fn eval(&mut self, r: &DifixEvalReport) {
        self.0.println(format!(
            "eval at step {}: L2 {:.4} · PSNR {:.2} dB · SSIM {:.4} · LPIPS {:.4} ({} test pairs)",
            r.step, r.l2, r.psnr, r.ssim, r.lpips, r.samples
        ));
    }
}

struct Job {
    config: DifixTrainConfig,
    backend: BackendKind,
    devices: Vec<usize>,
    stop: Arc<AtomicBool>,
}

impl WithBackend for Job {
    type Output = Result<DifixTrainSummary, DifixTrainError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let devices = devices::<B>(self.backend, &device, &self.devices)?;
        let mut bar = Bar(super::progress_bar(
            self.config.steps as u64,
            "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
        ));
        let result = trainer::train_difix::<Autodiff<B>>(&self.config, &devices, &mut bar, &self.stop);
        bar.0.finish_and_clear();
        result
    }
}

pub fn run(args: TrainDifixArgs) -> anyhow::Result<()> {
    let lpips = LpipsFiles {
        backbone: args.lpips_backbone,
        lin: args.lpips_lin,
    };
    let mut config = DifixTrainConfig::new(args.data, args.model, args.out, lpips);
    config.model_checkpoint = args.model_checkpoint;
    config.steps = args.steps;
    config.image_prep = image_prep(args.image_prep, args.size, args.resolution, "")?;
    config.lr = args.lr;
    config.weights = LossWeights {
        l2: args.lambda_l2,
        lpips: args.lambda_lpips,
        gram: args.lambda_gram,
    };
    config.gram_warmup = args.gram_warmup;
    config.gram_crop = args.gram_crop;
    config.vgg16 = args.vgg16;
    config.grad_accumulation = args.grad_accumulation.max(1);
    config.checkpoint_every = args.checkpoint_every;
    config.eval_every = args.eval_every;
    config.resume = args.resume;
    config.seed = args.seed;
    // Ctrl-C ends the run after the current step, with a checkpoint.
    let stop = super::stop_on_ctrl_c()?;
    let summary = run_on(
        args.backend,
        Precision::Fp32,
        Job {
            config,
            backend: args.backend,
            devices: args.devices,
            stop,
        },
    )??;
    let last = summary.evals.last().map_or_else(
        || "no test split to evaluate".to_string(),
        |e| format!("test PSNR {:.2} dB, LPIPS {:.4}", e.psnr, e.lpips),
    );
    println!(
        "{} after {} steps; {last}; model in {} (difix3d fix --model {})",
        if summary.stopped_early { "stopped" } else { "trained" },
        summary.steps,
        summary.checkpoint.display(),
        summary.checkpoint.display()
    );
    Ok(())
}

/// The image preparation `kind` with its size: `size` (HEIGHTxWIDTH) for `resize`, `resolution` for
/// `crop`, each defaulting to the reference's 576x1024 and our 512. A size given for the other kind
/// is an error rather than silently unused. `prefix` is put before the flag names in messages
/// (`train-` for `view --train-difix`).
pub fn image_prep(
    kind: ImagePrepKind,
    size: Option<(u32, u32)>,
    resolution: Option<u32>,
    prefix: &str,
) -> anyhow::Result<ImagePrep> {
    match (kind, size, resolution) {
        (ImagePrepKind::Resize, _, Some(_)) => anyhow::bail!(
            "--{prefix}resolution is the crop side of --{prefix}image-prep crop; --{prefix}image-prep resize (the \
             default, as Difix3D's src/dataset.py, which never reads its own --resolution) resizes every image to \
             --{prefix}size HEIGHTxWIDTH (default 576x1024)"
        ),
        (ImagePrepKind::Crop, Some(_), _) => anyhow::bail!(
            "--{prefix}size is the size of --{prefix}image-prep resize; --{prefix}image-prep crop takes square crops \
             of side --{prefix}resolution (default 512)"
        ),
        (ImagePrepKind::Resize, size, None) => Ok(size.map_or(ImagePrep::REFERENCE, |(height, width)| {
            ImagePrep::Resize { height, width }
        })),
        (ImagePrepKind::Crop, None, side) => Ok(ImagePrep::Crop {
            side: side.unwrap_or(512),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_prep_takes_the_size_of_its_kind_only() {
        let resize = image_prep(ImagePrepKind::Resize, None, None, "").unwrap();
        assert_eq!(
            resize,
            ImagePrep::Resize {
                height: 576,
                width: 1024
            }
        );
        let resize = image_prep(ImagePrepKind::Resize, Some((64, 96)), None, "").unwrap();
        assert_eq!(resize, ImagePrep::Resize { height: 64, width: 96 });
        assert_eq!(
            image_prep(ImagePrepKind::Crop, None, None, "").unwrap(),
            ImagePrep::Crop { side: 512 }
        );
        assert_eq!(
            image_prep(ImagePrepKind::Crop, None, Some(32), "").unwrap(),
            ImagePrep::Crop { side: 32 }
        );
        let e = image_prep(ImagePrepKind::Resize, None, Some(512), "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--resolution is the crop side") && e.contains("--size"),
            "{e}"
        );
        let e = image_prep(ImagePrepKind::Crop, Some((8, 8)), None, "train-")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--train-size") && e.contains("--train-resolution"), "{e}");
    }
}
