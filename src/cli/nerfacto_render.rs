//! `difix3d nerfacto-render`: render a nerfstudio nerfacto checkpoint (`step-*.ckpt`) to PNG files,
//! on the CPU backend or `--backend`'s.

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use clap::Args;

use difix3d::camera_path::nerfstudio::DataparserTransform;
use difix3d::data::{self, Camera};
use difix3d::image_io;
use difix3d::nerfacto::Nerfacto;
use difix3d::nn::backend::{run_on_fp32, BackendKind, WithBackend};

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
    /// Where the field runs (fp32).
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
}

/// Work on a loaded model, whatever backend it was loaded on (a generic closure).
pub trait WithNerfacto {
    type Output;
    fn run<B: Backend>(self, model: &Nerfacto<B>) -> anyhow::Result<Self::Output>;
}

/// Loads the model on the chosen backend, then runs the job on it.
struct LoadThen<'a, J> {
    input: &'a NerfactoInput,
    job: J,
}

impl<J: WithNerfacto> WithBackend for LoadThen<'_, J> {
    type Output = anyhow::Result<J::Output>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let model = Nerfacto::<B>::open(&self.input.checkpoint, self.input.config.as_deref(), &device)?;
        self.job.run(&model)
    }
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

    /// Runs `job` on the model, loaded on `--backend`.
    pub fn with_model<J: WithNerfacto>(&self, job: J) -> anyhow::Result<J::Output> {
        run_on_fp32(self.backend, LoadThen { input: self, job })?
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
    args.input.with_model(RenderCameras {
        cameras: &cameras,
        out: &args.out,
        rays_per_chunk: args.input.rays_per_chunk,
    })
}

/// Each camera to `out/<camera stem>.png`, with its rays/s on the terminal.
struct RenderCameras<'a> {
    cameras: &'a [Camera],
    out: &'a std::path::Path,
    rays_per_chunk: usize,
}

impl WithNerfacto for RenderCameras<'_> {
    type Output = ();

    fn run<B: Backend>(self, model: &Nerfacto<B>) -> anyhow::Result<()> {
        // Only now that the model has loaded: a refused checkpoint leaves no folder behind.
        std::fs::create_dir_all(self.out)
            .with_context(|| format!("{}: cannot create the output folder", self.out.display()))?;
        for camera in self.cameras {
            let started = std::time::Instant::now();
            let image = model.render_camera(camera, self.rays_per_chunk);
            let seconds = started.elapsed().as_secs_f64();
            let stem = std::path::Path::new(&camera.name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "render".into());
            let path = self.out.join(format!("{stem}.png"));
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
}
