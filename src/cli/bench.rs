//! `difix3d bench ...`: performance measurements, printed as JSON and as a BENCHMARKS.md table row.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;

use difix3d::render::{GpuContext, GpuSplats, Rasterizer, RenderOptions};
use difix3d::{scene, view};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Frame times of the splat renderer along an orbit around the scene.
    Render {
        #[arg(long)]
        scene: PathBuf,
        /// Resolution WIDTHxHEIGHT.
        #[arg(long, default_value = "1920x1080", value_parser = super::parse_size)]
        size: (u32, u32),
        #[arg(long, default_value_t = 100)]
        frames: u32,
        /// Also append the result as a table row to this markdown file (e.g. BENCHMARKS.md).
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
}

pub fn run(what: BenchCommand) -> anyhow::Result<()> {
    match what {
        BenchCommand::Render {
            scene: path,
            size,
            frames,
            append_md,
        } => bench_render(&path, size, frames.max(1), append_md),
    }
}

fn bench_render(
    path: &std::path::Path,
    (width, height): (u32, u32),
    frames: u32,
    append_md: Option<PathBuf>,
) -> anyhow::Result<()> {
    let splats = scene::load(path)?;
    let ctx = GpuContext::headless()?;
    let gpu_splats = GpuSplats::upload(&ctx.device, &splats);
    let mut rasterizer = Rasterizer::new(&ctx.device);
    let options = RenderOptions::default();
    let start = view::ViewController::default_for(&splats, super::render::default_up());
    let camera_at = |i: u32| {
        let mut v = start.clone();
        v.orbit(std::f32::consts::TAU * i as f32 / frames as f32, 0.0);
        v.camera(width, height)
    };

    // Warm up: shader compilation and buffer growth happen in the first frames.
    for i in 0..3 {
        rasterizer.render(&ctx, &gpu_splats, &camera_at(i), &options)?;
        ctx.wait()?;
    }
    let mut times = Vec::with_capacity(frames as usize);
    let mut intersections = 0u64;
    for i in 0..frames {
        let t = Instant::now();
        let stats = rasterizer.render(&ctx, &gpu_splats, &camera_at(i), &options)?;
        ctx.wait()?;
        times.push(t.elapsed());
        intersections += stats.intersections as u64;
    }
    // A second pass with a GPU wait after every stage splits the time per stage.
    let profiled_frames = frames.min(20);
    let (mut project, mut sort, mut raster) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for i in 0..profiled_frames {
        let s = rasterizer.render_profiled(&ctx, &gpu_splats, &camera_at(i), &options)?;
        project += s.project;
        sort += s.sort;
        raster += s.rasterize;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    let p95 = ms(times[((times.len() as f64 * 0.95).ceil() as usize).clamp(1, times.len()) - 1]);
    let per = |d: Duration| ms(d) / profiled_frames as f64;
    let peak_mib = rasterizer.peak_bytes() as f64 / (1024.0 * 1024.0);
    let report = serde_json::json!({
        "bench": "render",
        "scene": path.display().to_string(),
        "splats": splats.len(),
        "width": width,
        "height": height,
        "frames": frames,
        "adapter": &*ctx.adapter_name,
        "mean_ms": mean,
        "p95_ms": p95,
        "fps": 1e3 / mean,
        "project_ms": per(project),
        "sort_ms": per(sort),
        "rasterize_ms": per(raster),
        "mean_intersections": intersections / frames as u64,
        "peak_gpu_mib": peak_mib,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let row = format!(
        "| {} | render | {} | {}x{} | {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.0} | {} |",
        chrono_date(),
        path.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        width,
        height,
        ctx.adapter_name,
        mean,
        p95,
        per(project),
        per(sort),
        per(raster),
        peak_mib,
        frames,
    );
    println!("{row}");
    if let Some(md) = append_md {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&md)
            .with_context(|| format!("{}: cannot open", md.display()))?;
        writeln!(f, "{row}").with_context(|| format!("{}: cannot write", md.display()))?;
    }
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD, without pulling in a date crate.
fn chrono_date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}
