//! `difix3d convert IN OUT`: any scene file we read to any format we write, chosen by OUT's extension.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use difix3d::camera_path::nerfstudio::{DataparserTransform, RenderSettings};
use difix3d::camera_path::CameraPath;
use difix3d::scene::{self, SceneFormat};

#[derive(Args)]
pub struct ConvertArgs {
    /// The scene to read: .ply, .compressed.ply, .splat, .spz (versions 2-4), .sog (or a SOG folder's meta.json), a
    /// gsplat checkpoint ckpt_STEP_rankR.pt (all ranks of that step are read) or a difix3d run's checkpoint.safetensors.
    pub input: PathBuf,
    /// Where to write it; the extension picks the format: .ply, .compressed.ply, .splat, .spz, .sog (a zip; a name
    /// ending in meta.json writes the images beside it instead) or .pt (a gsplat checkpoint at step 0 that gsplat's
    /// and Difix3D's `--ckpt` load).
    pub output: PathBuf,
    /// For .spz output: 3 (one gzip stream, read by every .spz reader) or 4 (zstd streams, spz 2.x and
    /// splat-transform's default).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=4))]
    pub spz_version: u32,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    // Refuse an unwritable output before the (possibly long) read.
    match SceneFormat::of(&args.output) {
        None | Some(SceneFormat::RunCheckpoint) => bail!(
            "{}: cannot write this format (expected {})",
            args.output.display(),
            SceneFormat::WRITABLE
        ),
        Some(_) => {}
    }
    if args.spz_version != 3 && SceneFormat::of(&args.output) != Some(SceneFormat::Spz) {
        bail!("{}: --spz-version is for .spz output", args.output.display());
    }
    let (splats, repairs) = scene::load_reporting(&args.input)?;
    if !repairs.is_empty() {
        eprintln!("{}: {repairs}", args.input.display());
    }
    if args.spz_version == 4 {
        scene::spz::write_spz_version(&splats, &args.output, scene::spz::SpzVersion::V4)?;
    } else {
        scene::save(&splats, &args.output)?;
    }
    println!(
        "{} -> {}: {} splats, SH degree {}",
        args.input.display(),
        args.output.display(),
        splats.len(),
        splats.sh_degree
    );
    Ok(())
}

#[derive(Args)]
pub struct ConvertPathArgs {
    /// The camera path to read: difix3d's JSON (the Record panel's Save) or a nerfstudio camera_path.json.
    pub input: PathBuf,
    /// Where to write it, in the other format (a nerfstudio path becomes ours, ours becomes nerfstudio's).
    pub output: PathBuf,
    /// For nerfstudio output: frames per second [default: 30].
    #[arg(long, value_parser = super::values::fps)]
    pub fps: Option<f32>,
    /// For nerfstudio output: render size WIDTHxHEIGHT [default: 1280x720].
    #[arg(long, value_parser = super::parse_size)]
    pub size: Option<(u32, u32)>,
    /// nerfstudio's dataparser_transforms.json: nerfstudio paths are in the world nerfstudio trained in, ours in
    /// the data's (COLMAP) world; this maps between them (both directions).
    #[arg(long)]
    pub dataparser_transforms: Option<PathBuf>,
}

pub fn run_path(args: ConvertPathArgs) -> anyhow::Result<()> {
    let dataparser = match &args.dataparser_transforms {
        Some(file) => Some(DataparserTransform::load(file)?),
        None => None,
    };
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the camera path: {e}", args.input.display()))?;
    let from_nerfstudio = serde_json::from_str::<serde_json::Value>(&text)
        .map(|v| difix3d::camera_path::nerfstudio::is_camera_path(&v))
        .unwrap_or(false);
    if from_nerfstudio {
        if args.fps.is_some() || args.size.is_some() {
            bail!("--fps and --size are for nerfstudio output; a nerfstudio path's frames are converted as listed");
        }
        let (path, settings) = CameraPath::load_with(&args.input, dataparser.as_ref())?;
        path.save(&args.output)?;
        let settings = settings.map(|s| format!(" (it was {}x{} at {} fps)", s.width, s.height, s.fps));
        println!(
            "{} -> {}: {} keyframes, one per nerfstudio frame{}",
            args.input.display(),
            args.output.display(),
            path.keyframes.len(),
            settings.unwrap_or_default()
        );
    } else {
        let path = CameraPath::load(&args.input)?;
        let (width, height) = args.size.unwrap_or((1280, 720));
        let settings = RenderSettings {
            fps: args.fps.unwrap_or(30.0),
            width,
            height,
        };
        path.save_nerfstudio(&args.output, settings, dataparser.as_ref())?;
        println!(
            "{} -> {}: nerfstudio camera path of {} frames at {}x{}, {} fps",
            args.input.display(),
            args.output.display(),
            path.frame_count(settings.fps),
            width,
            height,
            settings.fps
        );
    }
    Ok(())
}
