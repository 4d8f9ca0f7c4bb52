//! Command-line interface. Every subcommand calls the same library code the viewer uses.

mod bench;
mod convert;
mod eval;
mod fix;
mod nerfacto_export;
mod nerfacto_render;
mod record;
mod refine;
mod render;
mod train;
mod train_difix;
mod values;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::allocator::KeepFreedMemory;

/// The split rule a `--difix3d-test-every` option asks for.
fn split_rule(difix3d_test_every: Option<u32>) -> difix3d::data::Split {
    difix3d_test_every.map_or(difix3d::data::Split::Default, difix3d::data::Split::Difix3dTestEvery)
}

#[derive(Parser)]
#[command(
    name = "difix3d",
    version,
    about = "Fly through Gaussian-splat scenes and clean every frame with Difix"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Open the viewer window (the default when no subcommand is given).
    View {
        /// A scene file (.ply, .compressed.ply, .splat, .spz, .sog or a SOG meta.json, .pt, .safetensors), a
        /// dataset folder or a nerfstudio transforms.json; defaults to the bundled sample scene.
        path: Option<PathBuf>,
        /// The dataset (folder or nerfstudio transforms.json) that goes with a scene file (its cameras, and photos
        /// for refinement).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Window size WIDTHxHEIGHT.
        #[arg(long, default_value = "1280x800", value_parser = parse_size)]
        size: (u32, u32),
        /// Save a screenshot here once the scene is shown, then quit (for tests and docs).
        #[arg(long)]
        screenshot: Option<PathBuf>,
        /// Turn the post-render fix on at start.
        #[arg(long)]
        fix: bool,
        /// Difix model directory for the post-render fix and --refine-steps.
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        /// Backend for the post-render fix (default: cuda when available, else wgpu).
        #[arg(long, value_enum)]
        backend: Option<difix3d::nn::backend::BackendKind>,
        /// How to show fixed frames.
        #[arg(long, value_enum, default_value = "fixed")]
        fix_view: crate::app::ViewMode,
        /// Draw antialiased (gsplat's rasterize_mode="antialiased"), as a scene trained with
        /// `train --antialiased` must be; the View panel's "Antialiased" box.
        #[arg(long)]
        antialiased: bool,
        /// Where a NeRF renders (default: the CPU backend when the GPU is a CPU implementation such as
        /// lavapipe, wgpu otherwise).
        #[arg(long, value_enum)]
        nerf_backend: Option<difix3d::nn::backend::BackendKind>,
        /// With --screenshot: save the raw view as NAME_raw.png, press the fix key (X), and save the
        /// fixed view as NAME.png once it is on screen.
        #[arg(long, requires = "screenshot", hide = true)]
        screenshot_toggle_fix: bool,
        /// Start training the opened dataset for this many steps (Training panel settings otherwise).
        #[arg(long, value_parser = values::at_least_one)]
        train_steps: Option<usize>,
        /// Image factor for --train-steps.
        #[arg(long, value_parser = values::factor, default_value_t = 4)]
        train_factor: u32,
        /// What --train-steps trains: Gaussian splats, or a nerfacto NeRF (the Training panel's NeRF
        /// mode; the view opens the trained field at the end).
        #[arg(long, value_enum, default_value_t = train::Method::Splats, requires = "train_steps")]
        train_method: train::Method,
        /// For --train-method nerfacto: the model settings (nerfstudio's NerfactoModelConfig names,
        /// as `train --nerfacto-config`); `ns-train nerfacto`'s model otherwise.
        #[arg(long, requires = "train_steps")]
        nerfacto_config: Option<PathBuf>,
        /// Start fine-tuning Difix (--model) on this pair JSON instead, for --train-steps steps
        /// (default 10000), in the Training panel's Difix mode.
        #[arg(long, requires = "lpips_backbone")]
        train_difix: Option<PathBuf>,
        /// How --train-difix prepares its images: `resize` (to --train-size, as Difix3D) or `crop`
        /// (random --train-resolution squares); see `train-difix --image-prep`.
        #[arg(long, value_enum, default_value_t = difix3d::difix::train::data::ImagePrepKind::Resize)]
        train_image_prep: difix3d::difix::train::data::ImagePrepKind,
        /// HEIGHTxWIDTH for --train-image-prep resize [default: 576x1024].
        #[arg(long, value_parser = parse_hw)]
        train_size: Option<(u32, u32)>,
        /// Side of the square crops for --train-image-prep crop [default: 512].
        #[arg(long, value_parser = values::image_side)]
        train_resolution: Option<u32>,
        /// torchvision's VGG16 weights for LPIPS in --train-difix.
        #[arg(long)]
        lpips_backbone: Option<PathBuf>,
        /// lpips's linear layers for --train-difix (default: assets/lpips/vgg.pth).
        #[arg(long)]
        lpips_lin: Option<PathBuf>,
        /// Where the loss runs for --train-steps (all of it for --train-method nerfacto).
        #[arg(long, value_enum, default_value_t = difix3d::nn::backend::BackendKind::Wgpu)]
        train_backend: difix3d::nn::backend::BackendKind,
        /// Start refining the scene with Difix for this many steps (needs --data; Refinement panel
        /// settings otherwise).
        #[arg(long, value_parser = values::at_least_one, requires = "data")]
        refine_steps: Option<usize>,
        /// Steps between fix rounds for --refine-steps.
        #[arg(long, value_parser = values::at_least_one, default_value_t = 2000)]
        refine_every: usize,
        /// Image factor for --refine-steps.
        #[arg(long, value_parser = values::factor, default_value_t = 4)]
        refine_factor: u32,
        /// Where Difix and the loss run for --refine-steps.
        #[arg(long, value_enum, default_value_t = difix3d::nn::backend::BackendKind::Wgpu)]
        refine_backend: difix3d::nn::backend::BackendKind,
    },
    /// Render a scene to PNG files without a window.
    Render(render::RenderArgs),
    /// Render a nerfstudio nerfacto checkpoint (step-*.ckpt) to PNG files.
    NerfactoRender(nerfacto_render::NerfactoRenderArgs),
    /// Export a nerfstudio nerfacto checkpoint as splats (.ply), from the points its cameras see.
    NerfactoExport(nerfacto_export::NerfactoExportArgs),
    /// Clean images with Difix (optionally guided by reference views).
    Fix(fix::FixArgs),
    /// Render (and fix) a camera path to PNG frames or an MP4.
    Record(record::RecordArgs),
    /// Train a Gaussian-splat scene on a dataset (3DGS, gsplat's default recipe).
    Train(train::TrainArgs),
    /// Fine-tune Difix on your own degraded/clean image pairs.
    TrainDifix(train_difix::TrainDifixArgs),
    /// Improve a trained scene with Difix (the Difix3D progressive 3D update).
    Refine(refine::RefineArgs),
    /// Compare a trained scene with its dataset's eval photos (PSNR, SSIM).
    Eval(eval::EvalArgs),
    /// Convert a scene file to another format (chosen by the output's extension).
    Convert(convert::ConvertArgs),
    /// Convert a camera path between difix3d's JSON and nerfstudio's camera_path.json.
    ConvertPath(convert::ConvertPathArgs),
    /// Measure performance.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

/// The bundled sample scene (fetched by `scripts/fetch_assets.sh`).
pub fn sample_scene() -> PathBuf {
    let beside_binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/bonsai-7k-mini.splat");
    if beside_binary.exists() {
        beside_binary
    } else {
        PathBuf::from("assets/bonsai-7k-mini.splat")
    }
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, None | Some(Command::View { .. })) {
        end_on_backend_thread_panics();
    }
    let default = Command::View {
        path: None,
        size: (1280, 800),
        screenshot: None,
        fix: false,
        model: PathBuf::from("checkpoints/difix_ref"),
        backend: None,
        fix_view: crate::app::ViewMode::Fixed,
        antialiased: false,
        nerf_backend: None,
        screenshot_toggle_fix: false,
        train_steps: None,
        train_factor: 4,
        train_method: train::Method::Splats,
        nerfacto_config: None,
        train_difix: None,
        train_image_prep: difix3d::difix::train::data::ImagePrepKind::Resize,
        train_size: None,
        train_resolution: None,
        lpips_backbone: None,
        lpips_lin: None,
        train_backend: difix3d::nn::backend::BackendKind::Wgpu,
        data: None,
        refine_steps: None,
        refine_every: 2000,
        refine_factor: 4,
        refine_backend: difix3d::nn::backend::BackendKind::Wgpu,
    };
    match cli.command.unwrap_or(default) {
        Command::View {
            path,
            size,
            screenshot,
            fix,
            model,
            backend,
            fix_view,
            antialiased,
            nerf_backend,
            screenshot_toggle_fix,
            train_steps,
            train_factor,
            train_method,
            nerfacto_config,
            train_difix,
            train_image_prep,
            train_size,
            train_resolution,
            lpips_backbone,
            lpips_lin,
            train_backend,
            data,
            refine_steps,
            refine_every,
            refine_factor,
            refine_backend,
        } => {
            let path = path.unwrap_or_else(sample_scene);
            let difix_mode = train_difix.is_some();
            if difix_mode && train_method == train::Method::Nerfacto {
                anyhow::bail!("--train-difix and --train-method nerfacto each say what to train: give one");
            }
            if nerfacto_config.is_some() && train_method != train::Method::Nerfacto {
                anyhow::bail!("--nerfacto-config is for --train-method nerfacto only");
            }
            let nerfacto_mode = train_method == train::Method::Nerfacto;
            let image_prep = train_difix::image_prep(train_image_prep, train_size, train_resolution, "train-")?;
            let difix_start = match (train_difix, lpips_backbone) {
                (Some(data), Some(backbone)) => Some(crate::app::DifixTrainStart {
                    data,
                    model: model.clone(),
                    lpips: difix3d::perceptual::lpips::LpipsFiles {
                        backbone,
                        lin: lpips_lin,
                    },
                    steps: train_steps.unwrap_or(10_000),
                    image_prep,
                    backend: train_backend,
                }),
                _ => None,
            };
            crate::app::run(crate::app::ViewerOptions {
                path: Some(path),
                screenshot,
                window_size: size,
                data,
                refine: refine_steps.map(|steps| crate::app::RefineStart {
                    steps,
                    every: refine_every,
                    factor: refine_factor,
                    model: model.clone(),
                    backend: refine_backend,
                }),
                fix: crate::app::FixStart {
                    model,
                    backend: backend.unwrap_or_else(fix::default_backend),
                    enabled: fix,
                    view_mode: fix_view,
                },
                screenshot_toggle_fix,
                antialiased,
                nerf_backend,
                train_difix: difix_start,
                train: train_steps
                    .filter(|_| !difix_mode && !nerfacto_mode)
                    .map(|steps| (steps, train_factor, train_backend)),
                train_nerfacto: train_steps
                    .filter(|_| nerfacto_mode)
                    .map(|steps| crate::app::NerfactoStart {
                        steps,
                        factor: train_factor,
                        backend: train_backend,
                        model_settings: nerfacto_config,
                    }),
            })
            .context("the viewer failed")
        }
        Command::Render(args) => render::run(args),
        Command::NerfactoRender(args) => nerfacto_render::run(args),
        Command::NerfactoExport(args) => nerfacto_export::run(args),
        Command::Fix(args) => fix::run(args),
        Command::Record(args) => record::run(args),
        Command::Train(args) => {
            let _memory = KeepFreedMemory::hold();
            train::run(args)
        }
        Command::Refine(args) => {
            let _memory = KeepFreedMemory::hold();
            refine::run(args)
        }
        Command::TrainDifix(args) => {
            let _memory = KeepFreedMemory::hold();
            train_difix::run(args)
        }
        Command::Eval(args) => eval::run(args),
        Command::Convert(args) => convert::run(args),
        Command::ConvertPath(args) => convert::run_path(args),
        Command::Bench { what } => bench::run(what),
    }
}

/// Parses `r,g,b` with components in [0, 1].
pub fn parse_rgb(s: &str) -> Result<[f32; 3], String> {
    let parts: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("'{s}': {e}"))?;
    match parts[..] {
        [r, g, b] if parts.iter().all(|v| (0.0..=1.0).contains(v)) => Ok([r, g, b]),
        _ => Err(format!("'{s}': expected three numbers in [0, 1] like 0,0,0")),
    }
}

/// Parses `WIDTHxHEIGHT`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    parse_pair(s, "WIDTHxHEIGHT like 1920x1080")
}

/// Parses `HEIGHTxWIDTH` (the order of Difix's working sizes, as in the reference's 576x1024).
pub fn parse_hw(s: &str) -> Result<(u32, u32), String> {
    parse_pair(s, "HEIGHTxWIDTH like 576x1024")
}

/// Two sizes separated by `x`, each in 1..=16384, in the order written.
fn parse_pair(s: &str, expected: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{s}': expected {expected}"))?;
    let a: u32 = a.trim().parse().map_err(|e| format!("'{s}': {e}"))?;
    let b: u32 = b.trim().parse().map_err(|e| format!("'{s}': {e}"))?;
    if a == 0 || b == 0 || a > 16384 || b > 16384 {
        return Err(format!("'{s}': sizes must be between 1 and 16384"));
    }
    Ok((a, b))
}

/// A progress bar with `template` (indicatif syntax), falling back to the plain style.
pub fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

/// A flag that Ctrl-C raises, so long jobs end cleanly (with their checkpoint or partial output).
pub fn stop_on_ctrl_c() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    difix3d::image_io::write_atomic(path, |tmp| {
        std::fs::write(tmp, value.to_string()).map_err(|e| e.to_string())
    })?;
    Ok(())
}

/// LPIPS as an extra metric, for `eval`, `train` and `refine`.
#[derive(clap::Args, Clone, Debug)]
pub struct LpipsArgs {
    /// Also report LPIPS, with these torchvision ImageNet weights of VGG16 (`vgg16-397923af.pth`)
    /// or AlexNet (`alexnet-owt-7be5be79.pth`).
    #[arg(long)]
    lpips_backbone: Option<PathBuf>,
    /// lpips's linear layers for that network (default: assets/lpips/vgg.pth or alex.pth, fetched by
    /// scripts/fetch_assets.sh from the lpips package).
    #[arg(long, requires = "lpips_backbone")]
    lpips_lin: Option<PathBuf>,
}

impl LpipsArgs {
    pub fn files(&self) -> Option<difix3d::perceptual::lpips::LpipsFiles> {
        self.lpips_backbone
            .clone()
            .map(|backbone| difix3d::perceptual::lpips::LpipsFiles {
                backbone,
                lin: self.lpips_lin.clone(),
            })
    }
}

/// burn's GPU backends run each device on a thread of their own, and a failure there (an allocation
/// larger than the device allows, a driver error) is a panic on that thread while the command waits
/// for its result, which may then never come. For the command-line tools, a panic off the main
/// thread therefore ends the process at once with an error that says what failed, not a hang or a
/// half-done result. (The viewer keeps its own worker failures to itself.)
fn end_on_backend_thread_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        if name == "main" {
            return default(info);
        }
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        // Its first line (cubecl appends a backtrace note).
        let payload = payload.lines().next().unwrap_or_default();
        let hint = if payload.contains("allocate buffer") {
            "; the device cannot hold a buffer that large (CPU implementations such as lavapipe allow \
             little): use a smaller size, fewer rays at once for a NeRF (--rays-per-batch, \
             --rays-per-chunk), or another --backend"
        } else {
            ""
        };
        eprintln!("error: the `{name}` thread failed: {payload}{hint}");
        // Not `process::exit`: its exit handlers reach the failed backend's thread-locals and panic
        // again, which aborts. Nothing is left half-written by this: outputs are written atomically.
        // SAFETY: `_exit` ends the process at once; no Rust state is used after it.
        unsafe { libc::_exit(1) }
    }));
}
