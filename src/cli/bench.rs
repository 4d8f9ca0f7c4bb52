//! `difix3d bench ...`: performance measurements, printed as JSON and as a BENCHMARKS.md table row.

mod conv;
mod fix;
mod live;
mod memory;
mod orbit;
mod refine;
mod render;
mod train;
mod train_difix;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use difix3d::fix::session::WorkerKey;
use difix3d::nn::backend::{run_on, run_on_cpu, BackendKind, CpuImpl, Precision};
use fix::FixBench;
use live::LiveRun;
use memory::peak_rss_mib;

use crate::allocator::KeepFreedMemory;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Frame times of the splat renderer along an orbit around the scene, or at fixed cameras.
    Render {
        #[arg(long)]
        scene: PathBuf,
        /// Resolution WIDTHxHEIGHT [default: 1920x1080, or the cameras' own with --camera-json].
        #[arg(long, value_parser = super::parse_size)]
        size: Option<(u32, u32)>,
        /// Time these cameras (a camera JSON file as `render --camera-json` reads: one camera or a
        /// list, cycled through) instead of an orbit.
        #[arg(long)]
        camera_json: Option<PathBuf>,
        #[arg(long, value_parser = super::values::at_least_one_u32, default_value_t = 100)]
        frames: u32,
        /// Also append the result as a table row to this markdown file (e.g. BENCHMARKS.md).
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// One 3x3 convolution per case, burn's own kernel against the matrix products of
    /// `nn::tap_conv` (what `--backend wgpu` runs for 64 or more input channels), on one device.
    Conv {
        /// Cases, comma-separated: CHANNELSxSIDE[/STRIDE] (channels in and out, a square image's
        /// side, the stride; padding 1).
        #[arg(long, value_delimiter = ',', value_parser = parse_conv_case,
              default_value = "32x128,128x128,256x64,512x32,128x128/2")]
        cases: Vec<(usize, usize, usize)>,
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        /// Timed calls of each after one warm-up call.
        #[arg(long, value_parser = super::values::at_least_one_u32, default_value_t = 3)]
        iters: u32,
    },
    /// Time of the Difix pipeline per image, with the encode / UNet / decode split.
    Fix {
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        /// Working size HEIGHTxWIDTH.
        #[arg(long, default_value = "576x1024", value_parser = super::parse_hw)]
        size: (u32, u32),
        /// Run with one reference view per image.
        #[arg(long = "ref")]
        with_ref: bool,
        #[arg(long, value_enum, default_value_t = Precision::Fp32)]
        precision: Precision,
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        /// With `--backend cpu`: which of burn's CPU backends to time (`--backend cpu` elsewhere
        /// always runs flex).
        #[arg(long, value_enum, default_value_t = CpuImpl::Flex)]
        cpu_impl: CpuImpl,
        /// Timed runs after one warm-up run.
        #[arg(long, value_parser = super::values::at_least_one_u32, default_value_t = 10)]
        iters: u32,
        /// Also time the calls with every convolution on burn's own kernel instead of as matrix
        /// products (what the wgpu backend runs for 64+ input channels), in the same run.
        #[arg(long)]
        compare_conv: bool,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// 3DGS training steps: it/s, the split between forward, loss, backward, optimiser and
    /// densification, and peak memory.
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
        factor: u32,
        #[arg(long, default_value_t = 200)]
        steps: usize,
        /// Where the loss and optimiser run.
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// The live post-render pass as the viewer runs it: render fps with the fix off and on, fix
    /// latency, fixed frames per second, and latency from a camera change to its fixed frame.
    Live {
        #[arg(long)]
        scene: PathBuf,
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        /// Render and working size HEIGHTxWIDTH.
        #[arg(long, default_value = "576x1024", value_parser = super::parse_hw)]
        size: (u32, u32),
        #[arg(long, value_enum, default_value_t = Precision::Fp32)]
        precision: Precision,
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        /// Camera moves (rendered frames) per phase.
        #[arg(long, value_parser = super::values::at_least_one_u32, default_value_t = 60)]
        frames: u32,
        /// Run Difix on the renderer's own wgpu device and hand frames over on the GPU (as the
        /// viewer does with the wgpu backend) instead of reading them back.
        #[arg(long)]
        gpu_frames: bool,
        /// After the timed phases, keep flying and fixing for this many seconds, sampling resident
        /// memory (a leak shows as growth; reported as `soak`).
        #[arg(long, value_parser = super::values::seconds, default_value_t = 0.0)]
        soak_s: f64,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// Difix fine-tuning: it/s after a warm-up step and peak memory, batch 1, on generated pairs.
    TrainDifix {
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        /// torchvision's VGG16 weights for LPIPS and the Gram loss.
        #[arg(long)]
        lpips_backbone: PathBuf,
        #[arg(long)]
        lpips_lin: Option<PathBuf>,
        #[arg(long, value_parser = super::values::image_side, default_value_t = 512)]
        resolution: u32,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Train without a reference view (single-view model).
        #[arg(long)]
        no_ref: bool,
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// The cost of a Difix3D refinement round: training step time, and rendering and fixing time
    /// per novel view, from a short run; also the estimate for a round of 2000 steps.
    Refine {
        /// The trained scene (.ply / .splat, or a training checkpoint).
        #[arg(long)]
        scene: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
        factor: u32,
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        #[arg(long, default_value_t = 40)]
        steps: usize,
        /// Steps between rounds in the short run (at least two rounds are wanted).
        #[arg(long, default_value_t = 20)]
        every: usize,
        /// Where Difix, the loss and the optimiser run.
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
}

pub fn run(what: BenchCommand) -> anyhow::Result<()> {
    let training = matches!(
        what,
        BenchCommand::Train { .. } | BenchCommand::TrainDifix { .. } | BenchCommand::Refine { .. }
    );
    let _memory = training.then(KeepFreedMemory::hold);
    match what {
        BenchCommand::Render {
            scene: path,
            size,
            camera_json,
            frames,
            append_md,
        } => {
            let cameras = match &camera_json {
                Some(file) => {
                    let cameras = difix3d::data::camera::read_json(file)?;
                    anyhow::ensure!(!cameras.is_empty(), "{}: no cameras", file.display());
                    match size {
                        Some((w, h)) => cameras.into_iter().map(|c| c.resized(w, h)).collect(),
                        None => cameras,
                    }
                }
                None => Vec::new(),
            };
            render::bench_render(&path, size.unwrap_or((1920, 1080)), cameras, frames.max(1), append_md)
        }
        BenchCommand::Conv { cases, backend, iters } => {
            let reports = run_on(backend, Precision::Fp32, conv::ConvBench { cases, iters })??;
            let report = serde_json::json!({ "bench": "conv", "backend": backend.to_string(), "cases": reports });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Fix {
            model,
            size: (height, width),
            with_ref,
            precision,
            backend,
            cpu_impl,
            iters,
            compare_conv,
            append_md,
        } => {
            if compare_conv && backend != BackendKind::Wgpu {
                anyhow::bail!("--compare-conv times nn::tap_conv's matrix products, which only --backend wgpu runs");
            }
            let job = FixBench {
                model,
                height,
                width,
                with_ref,
                iters: iters.max(1),
                compare_conv,
            };
            let (report, row) = match backend {
                BackendKind::Cpu => run_on_cpu(cpu_impl, precision, job)??,
                _ => run_on(backend, precision, job)??,
            };
            let backend = match backend {
                BackendKind::Cpu => format!("cpu ({cpu_impl:?})").to_lowercase(),
                other => other.to_string(),
            };
            let row = format!("| {} | fix | {} | {row}", chrono_date(), backend);
            println!("{}", serde_json::to_string_pretty(&report)?);
            println!("{row}");
            append_row(append_md, &row, "fix", "encode / UNet / decode")
        }
        BenchCommand::Train {
            data,
            factor,
            steps,
            backend,
            append_md,
        } => train::bench_train(data, factor, steps.max(2), backend, append_md),
        BenchCommand::TrainDifix {
            model,
            lpips_backbone,
            lpips_lin,
            resolution,
            steps,
            no_ref,
            backend,
            append_md,
        } => train_difix::bench_train_difix(train_difix::TrainDifixBenchArgs {
            model,
            lpips: difix3d::perceptual::lpips::LpipsFiles {
                backbone: lpips_backbone,
                lin: lpips_lin,
            },
            resolution,
            steps,
            with_ref: !no_ref,
            backend,
            append_md,
        }),
        BenchCommand::Refine {
            scene,
            data,
            factor,
            model,
            steps,
            every,
            backend,
            append_md,
        } => refine::bench_refine(refine::RefineBenchArgs {
            scene,
            data,
            factor,
            model,
            steps,
            every,
            backend,
            append_md,
        }),
        BenchCommand::Live {
            scene,
            model,
            size: (height, width),
            precision,
            backend,
            frames,
            gpu_frames,
            soak_s,
            append_md,
        } => {
            let key = WorkerKey {
                model,
                backend,
                precision,
            };
            let run = LiveRun {
                frames: frames.max(2),
                gpu_frames,
                soak: Duration::from_secs_f64(soak_s),
            };
            live::bench_live(&scene, key, (width, height), run, append_md)
        }
    }
}

/// Adds `row` to the markdown table whose rows carry `| bench |` (after its last row, or after the
/// header separator of the table whose header contains `header_marker`); at the end otherwise.
fn append_row(append_md: Option<PathBuf>, row: &str, bench: &str, header_marker: &str) -> anyhow::Result<()> {
    let Some(md) = append_md else { return Ok(()) };
    let text = match std::fs::read_to_string(&md) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", md.display())),
    };
    let mut lines: Vec<&str> = text.lines().collect();
    let tag = format!("| {bench} |");
    let at = match lines.iter().rposition(|l| l.starts_with('|') && l.contains(&tag)) {
        Some(i) => i + 1,
        None => match lines
            .iter()
            .position(|l| l.starts_with('|') && l.contains(header_marker))
        {
            Some(h) => (h + 2).min(lines.len()),
            None => lines.len(),
        },
    };
    lines.insert(at, row);
    let mut out = lines.join("\n");
    out.push('\n');
    difix3d::image_io::write_atomic(&md, |tmp| std::fs::write(tmp, &out).map_err(|e| e.to_string()))?;
    Ok(())
}

/// The last component of `path` (a model folder, scene or dataset name for the result tables).
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A `bench conv` case: `CHANNELSxSIDE` or `CHANNELSxSIDE/STRIDE`.
fn parse_conv_case(s: &str) -> Result<(usize, usize, usize), String> {
    let (shape, stride) = s.split_once('/').unwrap_or((s, "1"));
    let (channels, side) = shape
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected CHANNELSxSIDE or CHANNELSxSIDE/STRIDE"))?;
    let number = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{s:?}: {v:?} is not a positive whole number"))
    };
    Ok((number(channels)?, number(side)?, number(stride)?))
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
