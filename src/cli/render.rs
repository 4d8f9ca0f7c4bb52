//! `difix3d render`: headless renders to PNG, from dataset cameras, camera JSON files or the default view.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use difix3d::data::{self, Camera};
use difix3d::render::{check_frame_size, GpuContext, GpuSplats, Rasterizer, RenderOptions};
use difix3d::{image_io, scene, view};

#[derive(Args)]
pub struct RenderArgs {
    /// The scene: a 3DGS `.ply` or an antimatter15 `.splat`.
    #[arg(long)]
    scene: PathBuf,
    /// A dataset (a Difix3D/COLMAP folder, or a nerfstudio transforms.json) whose cameras to render.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which downscaled image folder of the dataset sets the resolution (1, 2, 4, 8).
    #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
    factor: u32,
    /// Render the dataset camera with this image name.
    #[arg(long, conflicts_with = "all_eval")]
    camera: Vec<String>,
    /// Render every eval camera of the dataset.
    #[arg(long)]
    all_eval: bool,
    /// A camera JSON file (one camera or a list), as written by the viewer.
    #[arg(long, conflicts_with_all = ["camera", "all_eval"])]
    camera_json: Option<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Output width; with --height overrides the camera's resolution (intrinsics scale along).
    #[arg(long, value_parser = super::values::image_side, requires = "height")]
    width: Option<u32>,
    #[arg(long, value_parser = super::values::image_side, requires = "width")]
    height: Option<u32>,
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

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let splats = scene::load(&args.scene)?;
    let cameras = cameras(&args, &splats)?;
    if args.out.exists() && !args.out.is_dir() {
        bail!("{}: the output folder is a file", args.out.display());
    }
    let ctx = GpuContext::headless()?;
    for camera in &cameras {
        check_frame_size(&ctx.device, camera.width, camera.height, false)
            .with_context(|| format!("cannot render camera '{}'", camera.name))?;
    }
    let gpu_splats = GpuSplats::upload(&ctx, &splats).with_context(|| format!("{}", args.scene.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output folder", args.out.display()))?;
    let mut rasterizer = Rasterizer::new(&ctx.device);
    rasterizer.set_antialiased(args.antialiased);
    let options = RenderOptions {
        sh_degree: args.sh_degree,
        background: args.background,
    };
    let bar = ProgressBar::new(cameras.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for camera in &cameras {
        bar.set_message(camera.name.clone());
        rasterizer.render(&ctx, &gpu_splats, camera, &options)?;
        let image = rasterizer.read_image(&ctx)?;
        let stem = std::path::Path::new(&camera.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "render".into());
        let path = args.out.join(format!("{stem}.png"));
        image_io::save_png(&image_io::to_rgb8(&image), &path)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "rendered {} view(s) of {} ({} splats) to {}",
        cameras.len(),
        args.scene.display(),
        splats.len(),
        args.out.display()
    );
    Ok(())
}

fn cameras(args: &RenderArgs, splats: &scene::Splats) -> anyhow::Result<Vec<Camera>> {
    let mut cameras: Vec<Camera> = if let Some(path) = &args.camera_json {
        data::camera::read_json(path)?
    } else if let Some(root) = &args.data {
        let dataset = data::open_dataset(root, args.factor)?;
        if args.all_eval {
            if dataset.eval.is_empty() {
                bail!("{}: the dataset has no eval images", root.display());
            }
            dataset.eval.iter().map(|v| v.camera.clone()).collect()
        } else if args.camera.is_empty() {
            bail!("with --data, choose views with --camera NAME or --all-eval");
        } else {
            let mut out = Vec::new();
            for name in &args.camera {
                let view = dataset
                    .find(name)
                    .with_context(|| format!("{}: no camera for image '{name}'", root.display()))?;
                out.push(view.camera.clone());
            }
            out
        }
    } else {
        if args.all_eval || !args.camera.is_empty() {
            bail!("--camera and --all-eval need --data DIR");
        }
        let (w, h) = (args.width.unwrap_or(1280), args.height.unwrap_or(720));
        vec![view::ViewController::default_for(splats, default_up()).camera(w, h)]
    };
    if let (Some(w), Some(h)) = (args.width, args.height) {
        cameras = cameras.into_iter().map(|c| c.resized(w, h)).collect();
    }
    data::validate::cameras(&cameras).map_err(|m| anyhow::anyhow!("cannot render: {m}"))?;
    Ok(cameras)
}

/// Without cameras we cannot know the scene's up; COLMAP-frame captures are usually -y up.
pub fn default_up() -> glam::Vec3 {
    glam::Vec3::NEG_Y
}
