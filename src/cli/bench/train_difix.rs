//! `difix3d bench train-difix`: fine-tuning speed (it/s after a warm-up step) and peak memory at a
//! resolution, batch 1, on generated image pairs (a training run into a temporary folder).

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use difix3d::difix::train::step::StepTimes;
use difix3d::difix::train::trainer::{self, DifixStepReport, DifixTrainConfig, DifixTrainObserver};
use difix3d::nn::backend::{run_on, BackendKind, Precision, WithBackend};
use difix3d::perceptual::lpips::LpipsFiles;

pub struct TrainDifixBenchArgs {
    pub model: PathBuf,
    pub lpips: LpipsFiles,
    pub resolution: u32,
    pub steps: usize,
    pub with_ref: bool,
    pub backend: BackendKind,
    pub append_md: Option<PathBuf>,
}

/// When each step ended, and its phases.
struct Times {
    ends: Vec<Instant>,
    phases: Vec<StepTimes>,
}

impl DifixTrainObserver for Times {
    fn step(&mut self, report: &DifixStepReport) -> bool {
        self.ends.push(Instant::now());
        self.phases.push(report.times);
        false
    }
}

struct Job {
    config: DifixTrainConfig,
}

impl WithBackend for Job {
    type Output = anyhow::Result<Times>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let mut times = Times {
            ends: vec![Instant::now()],
            phases: Vec::new(),
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        trainer::train_difix::<Autodiff<B>>(&self.config, &[device], &mut times, &stop)?;
        Ok(times)
    }
}

/// Writes a pair of patterned images at `size` (and a reference) and the JSON naming them.
fn make_pairs(dir: &std::path::Path, size: u32, with_ref: bool) -> anyhow::Result<PathBuf> {
    let pattern = |seed: u32| {
        image::RgbImage::from_fn(size, size, |x, y| {
            let v = |k: u32| ((x * (k + 3) + y * (k + 5) + seed * 17) % 255) as u8;
            image::Rgb([v(1), v(2), v(3)])
        })
    };
    for (name, seed) in [("input", 1), ("target", 2), ("ref", 3)] {
        pattern(seed).save(dir.join(format!("{name}.png")))?;
    }
    let mut entry = serde_json::json!({"image": "input.png", "target_image": "target.png"});
    if with_ref {
        entry["ref_image"] = "ref.png".into();
    }
    let path = dir.join("pairs.json");
    std::fs::write(&path, serde_json::json!({"train": {"0": entry}}).to_string())?;
    Ok(path)
}

pub fn bench_train_difix(args: TrainDifixBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("difix3d-bench-train-difix-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let data = make_pairs(&dir, args.resolution, args.with_ref)?;
        let mut config = DifixTrainConfig::new(data, args.model.clone(), dir.join("run"), args.lpips.clone());
        config.steps = args.steps.max(2);
        config.image_prep = difix3d::difix::train::data::ImagePrep::Crop { side: args.resolution };
        config.gram_warmup = 0;
        config.checkpoint_every = 0;
        config.eval_every = 0;
        config.sync_phases = true;
        run_on(args.backend, Precision::Fp32, Job { config })?
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let Times { ends: times, phases } = result?;
    // The first step compiles kernels; time the rest.
    let steady: Vec<f64> = times.windows(2).skip(1).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    let step_s = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    let phase_s = |f: fn(&StepTimes) -> std::time::Duration| {
        let rest = &phases[1.min(phases.len())..];
        rest.iter().map(|t| f(t).as_secs_f64()).sum::<f64>() / rest.len().max(1) as f64
    };
    let (forward, loss, backward, update) = (
        phase_s(|t| t.forward),
        phase_s(|t| t.loss),
        phase_s(|t| t.backward),
        phase_s(|t| t.update),
    );
    let rss = super::peak_rss_mib();
    let model = super::file_name(&args.model);
    let report = serde_json::json!({
        "bench": "train-difix",
        "model": model,
        "resolution": args.resolution,
        "reference": args.with_ref,
        "backend": args.backend.to_string(),
        "steps": times.len().saturating_sub(1),
        "its": 1.0 / step_s.max(1e-9),
        "step_s": step_s,
        "forward_s": forward,
        "loss_s": loss,
        "backward_s": backward,
        "update_s": update,
        "peak_rss_mib": rss,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let row = format!(
        "| {} | train-difix | {} | {model} | {}x{} | {} | f32 | {:.3} | {:.2} | {forward:.2} / {loss:.2} / {backward:.2} / {update:.2} | {rss:.0} | {} |",
        super::chrono_date(),
        args.backend,
        args.resolution,
        args.resolution,
        if args.with_ref { "yes" } else { "no" },
        1.0 / step_s.max(1e-9),
        step_s,
        times.len().saturating_sub(1),
    );
    println!("{row}");
    super::append_row(args.append_md, &row, "train-difix", "it/s | s per step")
}
