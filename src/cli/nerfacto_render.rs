//! `difix3d nerfacto-render`: render a nerfstudio nerfacto checkpoint (`step-*.ckpt`) to PNG files,
//! on the CPU.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use difix3d::data;
use difix3d::image_io;
use difix3d::nerfacto::Nerfacto;
use difix3d::nn::backend::CpuBackend;

#[derive(Args)]
pub struct NerfactoRenderArgs {
    /// The nerfstudio checkpoint (`nerfstudio_models/step-NNNNNNNNN.ckpt` of a nerfacto run), or the
    /// `nerfacto.safetensors` of `difix3d train --method nerfacto` (with its `nerfacto.json` as
    /// --config).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A JSON file with the nerfacto settings the checkpoint does not store (keys as in nerfstudio's
    /// NerfactoModelConfig: base_res, num_proposal_samples_per_ray, num_nerf_samples_per_ray,
    /// average_init_density, far_plane, background_color, ...); `ns-train nerfacto`'s defaults
    /// otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A camera JSON file (one camera or a list, OpenCV axes), in the checkpoint's world frame
    /// (nerfstudio's, after its dataparser transform).
    #[arg(long)]
    camera_json: PathBuf,
    /// The run's `dataparser_transforms.json` (nerfstudio's, or `difix3d train --method nerfacto`'s):
    /// the cameras are then in the dataset's own frame and are moved into the model's.
    #[arg(long)]
    dataparser_transforms: Option<PathBuf>,
    /// Output folder (created if missing); one PNG per camera, named after it.
    #[arg(long)]
    out: PathBuf,
    /// Output width; with --height overrides the camera's resolution (intrinsics scale along).
    #[arg(long, value_parser = super::values::image_side, requires = "height")]
    width: Option<u32>,
    #[arg(long, value_parser = super::values::image_side, requires = "width")]
    height: Option<u32>,
    /// Rays rendered at once (memory grows with it).
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 4096)]
    rays_per_chunk: usize,
}

pub fn run(args: NerfactoRenderArgs) -> anyhow::Result<()> {
    let mut cameras = data::camera::read_json(&args.camera_json)?;
    if let (Some(w), Some(h)) = (args.width, args.height) {
        cameras = cameras.into_iter().map(|c| c.resized(w, h)).collect();
    }
    if let Some(path) = &args.dataparser_transforms {
        let transform = difix3d::camera_path::nerfstudio::DataparserTransform::load(path)?;
        for camera in &mut cameras {
            let pose = glam::Mat4::from(camera.world_from_camera).as_dmat4();
            camera.world_from_camera = glam::Affine3A::from_mat4(transform.to_nerfstudio(pose).as_mat4());
        }
    }
    data::validate::cameras(&cameras).map_err(|m| anyhow::anyhow!("cannot render: {m}"))?;
    if args.out.exists() && !args.out.is_dir() {
        bail!("{}: the output folder is a file", args.out.display());
    }
    let device = Default::default();
    let model = Nerfacto::<CpuBackend>::open(&args.checkpoint, args.config.as_deref(), &device)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output folder", args.out.display()))?;
    for camera in &cameras {
        let image = model.render_camera(camera, args.rays_per_chunk);
        let stem = std::path::Path::new(&camera.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "render".into());
        let path = args.out.join(format!("{stem}.png"));
        let pixels = image.rgb.iter().map(|&v| image_io::quantize(v)).collect();
        let rgb = image::RgbImage::from_raw(image.width, image.height, pixels)
            .context("the rendered image has the wrong number of pixels")?;
        image_io::save_png(&rgb, &path)?;
        println!("{}", path.display());
    }
    Ok(())
}
