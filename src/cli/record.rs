//! `difix3d record`: a camera path rendered (and fixed) offline to PNG frames or an MP4.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use difix3d::camera_path::nerfstudio::DataparserTransform;
use difix3d::camera_path::CameraPath;
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::nn::backend::{BackendKind, Precision};
use difix3d::record::{self, FixSettings, RecordJob};
use difix3d::reference_photo::Reference;
use difix3d::render::{GpuContext, RenderOptions};
use difix3d::{data, scene};

#[derive(Args)]
pub struct RecordArgs {
    /// The scene: a 3DGS `.ply` or an antimatter15 `.splat`.
    #[arg(long)]
    scene: PathBuf,
    /// The camera path JSON: saved from the viewer's Record panel, or a nerfstudio camera_path.json (its frames
    /// are rendered exactly as listed, at its render_width x render_height and fps unless --size/--fps say
    /// otherwise).
    #[arg(long)]
    path: PathBuf,
    /// nerfstudio's dataparser_transforms.json (next to its config.yml): maps a nerfstudio camera path from the
    /// world nerfstudio trained in back to the data's (COLMAP) world the scene is in.
    #[arg(long)]
    dataparser_transforms: Option<PathBuf>,
    /// A folder for PNG frames, or a file ending in .mp4 (encoded with ffmpeg).
    #[arg(long)]
    out: PathBuf,
    /// Frames per second [default: a nerfstudio path's fps, else 30].
    #[arg(long, value_parser = super::values::fps)]
    fps: Option<f32>,
    /// Frame size WIDTHxHEIGHT [default: a nerfstudio path's render size, else 1280x720].
    #[arg(long, value_parser = super::parse_size)]
    size: Option<(u32, u32)>,
    /// Clean every frame with Difix.
    #[arg(long)]
    fix: bool,
    /// Difix model directory (diffusers layout).
    #[arg(long, default_value = "checkpoints/difix_ref", requires = "fix")]
    model: PathBuf,
    /// A trainer checkpoint (`model_*.pkl`) applied over --model.
    #[arg(long, requires = "fix")]
    checkpoint: Option<PathBuf>,
    /// Reference view: `none`, `auto` (the nearest training photo of --data), or an image file.
    #[arg(long = "ref", default_value = "none", requires = "fix")]
    reference: String,
    /// The dataset whose training photos `--ref auto` picks from.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which downscaled image folder of the dataset to take references from (1, 2, 4, 8).
    #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
    factor: u32,
    /// Difix working size HEIGHTxWIDTH; default: the frame size floored to multiples of 8.
    #[arg(long, value_parser = super::parse_hw, requires = "fix")]
    fix_size: Option<(u32, u32)>,
    #[arg(long, default_value = DEFAULT_PROMPT, requires = "fix")]
    prompt: String,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// Default: cuda when built with it and a driver is present, else wgpu.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Also write raw | fixed side by side (`DIR/side_by_side/` or `NAME_side_by_side.mp4`).
    #[arg(long, requires = "fix")]
    side_by_side: bool,
    /// SH degree to evaluate (at most the scene's).
    #[arg(long, value_parser = super::values::sh_degree, default_value_t = 3)]
    sh_degree: u32,
    /// Background colour r,g,b in [0, 1].
    #[arg(long, default_value = "0,0,0", value_parser = super::parse_rgb)]
    background: [f32; 3],
    /// Draw antialiased, as a scene trained with `train --antialiased` must be (gsplat's
    /// rasterize_mode="antialiased").
    #[arg(long)]
    antialiased: bool,
}

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let dataparser = match &args.dataparser_transforms {
        Some(file) => Some(DataparserTransform::load(file)?),
        None => None,
    };
    let (path, settings) = CameraPath::load_with(&args.path, dataparser.as_ref())?;
    let fps = args.fps.or(settings.map(|s| s.fps)).unwrap_or(30.0);
    let size = args
        .size
        .or(settings.map(|s| (s.width, s.height)))
        .unwrap_or((1280, 720));
    path.checked_frame_count(fps)
        .map_err(|m| anyhow::anyhow!("{}: {m}", args.path.display()))?;
    let fix = if args.fix {
        let reference = match args.reference.as_str() {
            "none" => Reference::None,
            "auto" => {
                let Some(root) = &args.data else {
                    bail!("--ref auto picks the nearest training photo: give the dataset with --data DIR");
                };
                Reference::NearestTrain(Arc::new(data::open_dataset(root, args.factor)?))
            }
            file => Reference::Image(PathBuf::from(file)),
        };
        Some(FixSettings {
            model: args.model.clone(),
            checkpoint: args.checkpoint.clone(),
            backend: args.backend.unwrap_or_else(super::fix::default_backend),
            precision: args.precision,
            prompt: args.prompt.clone(),
            policy: match args.fix_size {
                Some((height, width)) => SizePolicy::Fixed { height, width },
                None => SizePolicy::Native,
            },
            reference,
        })
    } else {
        None
    };
    let splats = Arc::new(scene::load(&args.scene)?);
    let job = RecordJob {
        splats,
        path,
        fps,
        width: size.0,
        height: size.1,
        render: RenderOptions {
            sh_degree: args.sh_degree,
            background: args.background,
        },
        antialiased: args.antialiased,
        fix,
        side_by_side: args.side_by_side,
        out: args.out.clone(),
    };
    let gpu = GpuContext::headless()?;

    // Ctrl-C finishes the frame in progress, keeps the frames written and cleans up staging files.
    let cancel = super::stop_on_ctrl_c()?;
    let bar = super::progress_bar(0, "{bar:30} {pos}/{len} frames [{elapsed} < {eta}] {msg}");
    bar.set_message(if job.fix.is_some() { "render + fix" } else { "render" });
    let summary = record::record(
        &job,
        &gpu,
        &mut |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            if p.done == p.total {
                bar.set_message("encoding");
            }
        },
        &cancel,
    );
    bar.finish_and_clear();
    let summary = summary?;
    let outputs: Vec<String> = summary.outputs.iter().map(|p| p.display().to_string()).collect();
    println!(
        "recorded {} frame(s) at {}x{} in {:.1} s -> {}",
        summary.frames,
        size.0,
        size.1,
        summary.seconds,
        outputs.join(", ")
    );
    Ok(())
}
