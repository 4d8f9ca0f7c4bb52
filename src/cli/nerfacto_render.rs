//! `difix3d nerfacto-render`: render a nerfstudio nerfacto checkpoint (`step-*.ckpt`) to PNG files,
//! on the CPU.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use difix3d::camera_path::nerfstudio::DataparserTransform;
use difix3d::data::{self, Camera};
use difix3d::image_io;
use difix3d::nerfacto::Nerfacto;
use difix3d::nn::backend::CpuBackend;

/// What `nerfacto-render` and `nerfacto-export` both read: the model and the cameras to cast rays from.
#[derive(Args)]
pub struct NerfactoInput {
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
    /// (nerfstudio's, after its dataparser transform); every pixel of each is one ray.
    #[arg(long)]
    camera_json: PathBuf,
    /// The run's `dataparser_transforms.json` (nerfstudio's, or `difix3d train --method nerfacto`'s):
    /// the cameras are then in the dataset's own frame and are moved into the model's (and
    /// `nerfacto-export` writes its splats back in the dataset's frame, as `ns-export pointcloud
    /// --save-world-frame`, so they line up with the dataset; its crop box stays in the model's frame).
    #[arg(long)]
    dataparser_transforms: Option<PathBuf>,
    /// Cast the cameras at this width (with --height; the intrinsics scale along).
    #[arg(long, value_parser = super::values::image_side, requires = "height")]
    width: Option<u32>,
    #[arg(long, value_parser = super::values::image_side, requires = "width")]
    height: Option<u32>,
    /// Rays rendered at once (memory grows with it).
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 4096)]
    pub rays_per_chunk: usize,
}

impl NerfactoInput {
    /// The cameras in the model's frame, checked (`what`: the command's verb, for the message), and the
    /// dataparser transform they went through.
    pub fn cameras(&self, what: &str) -> anyhow::Result<(Vec<Camera>, Option<DataparserTransform>)> {
        let mut cameras = data::camera::read_json(&self.camera_json)?;
        if let (Some(w), Some(h)) = (self.width, self.height) {
            cameras = cameras.into_iter().map(|c| c.resized(w, h)).collect();
        }
        let dataparser = match &self.dataparser_transforms {
            Some(path) => Some(DataparserTransform::load(path)?),
            None => None,
        };
        if let Some(transform) = &dataparser {
            cameras = cameras.iter().map(|c| transform.camera_to_nerfstudio(c)).collect();
        }
        data::validate::cameras(&cameras).map_err(|m| anyhow::anyhow!("cannot {what}: {m}"))?;
        Ok((cameras, dataparser))
    }

    /// The model, on the CPU.
    pub fn model(&self) -> anyhow::Result<Nerfacto<CpuBackend>> {
        Ok(Nerfacto::open(
            &self.checkpoint,
            self.config.as_deref(),
            &Default::default(),
        )?)
    }

    pub fn checkpoint(&self) -> &std::path::Path {
        &self.checkpoint
    }
}

#[derive(Args)]
pub struct NerfactoRenderArgs {
    #[command(flatten)]
    input: NerfactoInput,
    /// Output folder (created if missing); one PNG per camera, named after it.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: NerfactoRenderArgs) -> anyhow::Result<()> {
    let (cameras, _) = args.input.cameras("render")?;
    if args.out.exists() && !args.out.is_dir() {
        bail!("{}: the output folder is a file", args.out.display());
    }
    let model = args.input.model()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output folder", args.out.display()))?;
    for camera in &cameras {
        let started = std::time::Instant::now();
        let image = model.render_camera(camera, args.input.rays_per_chunk);
        let seconds = started.elapsed().as_secs_f64();
        let stem = std::path::Path::new(&camera.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "render".into());
        let path = args.out.join(format!("{stem}.png"));
        let pixels = image.rgb.iter().map(|&v| image_io::quantize(v)).collect();
        let rgb = image::RgbImage::from_raw(image.width, image.height, pixels)
            .context("the rendered image has the wrong number of pixels")?;
        image_io::save_png(&rgb, &path)?;
        let rays = u64::from(image.width) * u64::from(image.height);
        println!(
            "{} ({rays} rays in {seconds:.3} s: {:.0} rays/s)",
            path.display(),
            rays as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}
