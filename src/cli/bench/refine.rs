//! `difix3d bench refine`: what a Difix3D refinement round costs — training steps, rendering the
//! novel views, and fixing them with Difix — measured on a short run into a temporary folder.

use std::path::PathBuf;
use std::time::Duration;

use burn::tensor::backend::Backend;

use difix3d::nn::backend::{run_on_renderer_device, BackendKind, Precision, WithBackend};
use difix3d::refine::refiner::{self, RefineConfig, RefineObserver, SceneSource};
use difix3d::refine::round::{RoundEvent, RoundReport};
use difix3d::render::GpuContext;
use difix3d::train::trainer::{StepReport, StepRequest, TrainObserver};

/// The reference's steps between rounds, for the "per round" estimate.
const REFERENCE_ROUND_STEPS: f64 = 2000.0;

pub struct RefineBenchArgs {
    pub scene: PathBuf,
    pub data: PathBuf,
    pub factor: u32,
    pub model: PathBuf,
    pub steps: usize,
    pub every: usize,
    pub backend: BackendKind,
    pub append_md: Option<PathBuf>,
}

#[derive(Default)]
struct Collect {
    steps: Vec<StepReport>,
    rounds: Vec<RoundReport>,
}

impl TrainObserver for Collect {
    fn step(&mut self, report: &StepReport) -> StepRequest {
        self.steps.push(report.clone());
        StepRequest::default()
    }
}

impl RefineObserver for Collect {
    fn round(&mut self, event: &RoundEvent) {
        if let RoundEvent::Done(report) = event {
            self.rounds.push(report.clone());
        }
    }
}

struct Job {
    config: RefineConfig,
    gpu: GpuContext,
}

impl WithBackend for Job {
    type Output = anyhow::Result<Collect>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let mut collect = Collect::default();
        let stop = std::sync::atomic::AtomicBool::new(false);
        refiner::refine::<B>(&self.config, self.gpu, &device, &mut collect, &stop)?;
        Ok(collect)
    }
}

pub fn bench_refine(args: RefineBenchArgs) -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("difix3d-bench-refine-{}", std::process::id()));
    let mut config = RefineConfig::new(
        args.data.clone(),
        SceneSource::File(args.scene.clone()),
        args.model.clone(),
        out.clone(),
    );
    config.factor = args.factor;
    config.steps = args.steps.max(2);
    config.every = args.every.max(1);
    config.post_render_eval = false;
    let gpu = GpuContext::headless()?;
    let adapter = gpu.adapter_name.clone();
    let result = run_on_renderer_device(
        args.backend,
        Precision::Fp32,
        &gpu,
        Job {
            config,
            gpu: gpu.clone(),
        },
    );
    let _ = std::fs::remove_dir_all(&out);
    let collect = result??;

    // The first steps and the first round compile kernels; time the rest when there is a rest (up to
    // 5 warm-up steps, at most half of them).
    let timed_steps = &collect.steps[(collect.steps.len() / 2).min(5)..];
    let step_ms = timed_steps
        .iter()
        .map(|r| {
            let t = &r.times;
            (t.render + t.loss + t.backward + t.optimizer).as_secs_f64()
        })
        .sum::<f64>()
        * 1e3
        / timed_steps.len().max(1) as f64;
    let rounds = if collect.rounds.len() > 1 {
        &collect.rounds[1..]
    } else {
        &collect.rounds[..]
    };
    let views = rounds.first().map_or(0, |r| r.views);
    let per_view_ms = |f: fn(&RoundReport) -> Duration| {
        let total: f64 = rounds.iter().map(|r| f(r).as_secs_f64()).sum();
        let count: usize = rounds.iter().map(|r| r.views).sum();
        total * 1e3 / count.max(1) as f64
    };
    let (render_ms, difix_ms) = (per_view_ms(|r| r.render), per_view_ms(|r| r.fix));
    let round_s = (REFERENCE_ROUND_STEPS * step_ms + views as f64 * (render_ms + difix_ms)) / 1e3;
    let size = {
        let d = difix3d::data::open_dataset(&args.data, args.factor)?;
        d.train.first().map_or((0, 0), |v| (v.camera.width, v.camera.height))
    };
    let rss = super::peak_rss_mib();
    let model = super::file_name(&args.model);
    let report = serde_json::json!({
        "bench": "refine",
        "data": args.data.display().to_string(),
        "scene": args.scene.display().to_string(),
        "model": model,
        "size": [size.0, size.1],
        "backend": args.backend.to_string(),
        "adapter": &*adapter,
        "steps": collect.steps.len(),
        "rounds": collect.rounds.len(),
        "views_per_round": views,
        "step_ms": step_ms,
        "render_ms_per_view": render_ms,
        "difix_ms_per_view": difix_ms,
        "round_of_2000_steps_s": round_s,
        "peak_rss_mib": rss,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let name = super::file_name(&args.data);
    let row = format!(
        "| {} | refine | {name} | {}x{} | {adapter} / {} | {model} | {views} | {step_ms:.1} / {render_ms:.1} / {difix_ms:.1} | {round_s:.1} | {rss:.0} | {} / {} |",
        super::chrono_date(),
        size.0,
        size.1,
        args.backend,
        collect.steps.len(),
        collect.rounds.len(),
    );
    println!("{row}");
    super::append_row(
        args.append_md,
        &row,
        "refine",
        "step / render per view / Difix per view",
    )
}
