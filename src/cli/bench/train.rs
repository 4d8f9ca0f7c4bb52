//! `difix3d bench train`: 3DGS training steps, where their time goes, and peak memory.

use std::path::PathBuf;
use std::time::Duration;

use super::{append_row, chrono_date, file_name, memory, peak_rss_mib};
use difix3d::nn::backend::{run_on_renderer_device, BackendKind, Precision, WithBackend};
use difix3d::render::GpuContext;
pub(super) struct TrainBench {
    config: difix3d::train::trainer::TrainConfig,
    gpu: GpuContext,
}

impl WithBackend for TrainBench {
    /// (summary, per-step reports, resident memory over the run)
    type Output = anyhow::Result<(
        difix3d::train::trainer::TrainSummary,
        Vec<difix3d::train::trainer::StepReport>,
        serde_json::Value,
    )>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let mut reports = Vec::new();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut trace = memory::MemoryTrace::new(Duration::from_secs(5));
        let started = std::time::Instant::now();
        let every = (self.config.steps / 10).max(1);
        let summary = difix3d::train::trainer::train::<B>(
            &self.config,
            self.gpu,
            &device,
            &mut |r: &difix3d::train::trainer::StepReport| {
                // Progress on stderr (the report is stdout's): where a slow or stuck run got to.
                if r.step <= 3 || r.step.is_multiple_of(every) {
                    let t = &r.times;
                    eprintln!(
                        "bench train: step {}/{} after {:.1} s (this step: render {:.1} / loss {:.1} / backward {:.1} / optimiser {:.1} ms)",
                        r.step,
                        r.steps,
                        started.elapsed().as_secs_f64(),
                        t.render.as_secs_f64() * 1e3,
                        t.loss.as_secs_f64() * 1e3,
                        t.backward.as_secs_f64() * 1e3,
                        t.optimizer.as_secs_f64() * 1e3,
                    );
                }
                reports.push(r.clone());
                trace.sample();
            },
            &stop,
        )?;
        Ok((summary, reports, trace.report()))
    }
}

/// Trains `steps` steps (into a temporary run folder) and reports where the time went.
pub(super) fn bench_train(
    data: PathBuf,
    factor: u32,
    steps: usize,
    backend: BackendKind,
    append_md: Option<PathBuf>,
) -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("difix3d-bench-train-{}", std::process::id()));
    let mut config = difix3d::train::trainer::TrainConfig::new(data.clone(), out.clone());
    config.factor = factor;
    config.steps = steps;
    let gpu = GpuContext::headless()?;
    let adapter = gpu.adapter_name.clone();
    let result = run_on_renderer_device(
        backend,
        Precision::Fp32,
        &gpu,
        TrainBench {
            config,
            gpu: gpu.clone(),
        },
    );
    let _ = std::fs::remove_dir_all(&out);
    let (summary, reports, memory) = result??;
    // The first steps compile kernels; time the rest.
    let timed = &reports[reports.len().min(5)..];
    let n = timed.len().max(1) as f64;
    let ms = |f: fn(&difix3d::train::trainer::StepTimes) -> Duration| {
        timed.iter().map(|r| f(&r.times).as_secs_f64()).sum::<f64>() * 1e3 / n
    };
    let (render, loss, backward, optimizer, densify) = (
        ms(|t| t.render),
        ms(|t| t.loss),
        ms(|t| t.backward),
        ms(|t| t.optimizer),
        ms(|t| t.densify),
    );
    let step_ms = render + loss + backward + optimizer + densify;
    let rss = peak_rss_mib();
    let camera = {
        let d = difix3d::data::open_dataset(&data, factor)?;
        d.train
            .first()
            .map(|v| (v.camera.width, v.camera.height))
            .unwrap_or((0, 0))
    };
    let report = serde_json::json!({
        "bench": "train",
        "data": data.display().to_string(),
        "factor": factor,
        "size": [camera.0, camera.1],
        "steps": steps,
        "backend": backend.to_string(),
        "adapter": &*adapter,
        "its": 1e3 / step_ms,
        "render_ms": render, "loss_ms": loss, "backward_ms": backward, "optimizer_ms": optimizer,
        "densify_ms": densify,
        "final_splats": summary.splats,
        "peak_rss_mib": rss,
        "eval_psnr_after": summary.eval_psnr_after,
        "memory": memory,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let name = file_name(&data);
    let row = format!(
        "| {} | train | {name} | {}x{} | {adapter} / {backend} | {:.2} | {render:.1} / {loss:.1} / {backward:.1} / {optimizer:.1} / {densify:.1} | {} | {rss:.0} | {steps} |",
        chrono_date(),
        camera.0,
        camera.1,
        1e3 / step_ms,
        summary.splats,
    );
    println!("{row}");
    append_row(append_md, &row, "train", "render / loss / backward")
}
