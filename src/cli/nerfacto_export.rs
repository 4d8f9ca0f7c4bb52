//! `difix3d nerfacto-export`: a nerfstudio nerfacto checkpoint as splats (a `.ply` the viewer opens
//! and training can start from), from the points its cameras see, as `ns-export pointcloud` picks
//! them (CPU).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use difix3d::camera_path::nerfstudio::DataparserTransform;
use difix3d::data;
use difix3d::nerfacto::export::{self, ExportSettings};
use difix3d::nerfacto::Nerfacto;
use difix3d::nn::backend::CpuBackend;
use difix3d::scene;

#[derive(Args)]
pub struct NerfactoExportArgs {
    /// The nerfstudio checkpoint (`nerfstudio_models/step-NNNNNNNNN.ckpt` of a nerfacto run).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The nerfacto settings the checkpoint does not store (see `nerfacto-render --help`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The cameras to export from (a camera JSON file, one camera or a list, OpenCV axes), in the
    /// checkpoint's world frame; every pixel of each is one ray.
    #[arg(long)]
    camera_json: PathBuf,
    /// The run's `dataparser_transforms.json` (nerfstudio's, or `difix3d train --method nerfacto`'s):
    /// the cameras are then in the dataset's own frame, and so are the exported splats (nerfstudio's
    /// `ns-export pointcloud --save-world-frame`), so they line up with the dataset for `train` or
    /// `refine`. The crop box stays in the model's frame.
    #[arg(long)]
    dataparser_transforms: Option<PathBuf>,
    /// The splat file to write (.ply, .splat, .spz, .sog, ...: any format `convert` writes).
    #[arg(long)]
    out: PathBuf,
    /// Render the cameras at this width (with --height; the intrinsics scale along).
    #[arg(long, value_parser = super::values::image_side, requires = "height")]
    width: Option<u32>,
    #[arg(long, value_parser = super::values::image_side, requires = "width")]
    height: Option<u32>,
    /// Keep pixels whose accumulation is above this (ns-export: 0.5).
    #[arg(long, value_parser = super::values::unit_interval_f32, default_value_t = 0.5)]
    min_accumulation: f32,
    /// Keep every point, not only those in ns-export's crop box [-1, 1]^3.
    #[arg(long)]
    no_crop: bool,
    /// Keep the statistical outliers ns-export removes (20 neighbours, 10 standard deviations).
    #[arg(long)]
    keep_outliers: bool,
    /// At most this many points (ns-export: 1000000).
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 1_000_000)]
    max_points: usize,
    /// Rays rendered at once (memory grows with it).
    #[arg(long, value_parser = super::values::at_least_one, default_value_t = 4096)]
    rays_per_chunk: usize,
}

pub fn run(args: NerfactoExportArgs) -> anyhow::Result<()> {
    let mut cameras = data::camera::read_json(&args.camera_json)?;
    if let (Some(w), Some(h)) = (args.width, args.height) {
        cameras = cameras.into_iter().map(|c| c.resized(w, h)).collect();
    }
    let dataparser = match &args.dataparser_transforms {
        Some(path) => Some(DataparserTransform::load(path)?),
        None => None,
    };
    if let Some(transform) = &dataparser {
        for camera in &mut cameras {
            let pose = glam::Mat4::from(camera.world_from_camera).as_dmat4();
            camera.world_from_camera = glam::Affine3A::from_mat4(transform.to_nerfstudio(pose).as_mat4());
        }
    }
    data::validate::cameras(&cameras).map_err(|m| anyhow::anyhow!("cannot export: {m}"))?;
    if scene::SceneFormat::of(&args.out).is_none() {
        bail!(
            "{}: not a splat file name to write ({})",
            args.out.display(),
            scene::SceneFormat::WRITABLE
        );
    }
    let device = Default::default();
    let model = Nerfacto::<CpuBackend>::open(&args.checkpoint, args.config.as_deref(), &device)?;
    let settings = ExportSettings {
        min_accumulation: args.min_accumulation,
        crop: (!args.no_crop).then_some(([-1.0; 3], [1.0; 3])),
        remove_outliers: !args.keep_outliers,
        max_points: args.max_points,
        rays_per_chunk: args.rays_per_chunk,
    };
    let bar = super::progress_bar(cameras.len() as u64, "{bar:30} {pos}/{len} cameras");
    let mut points = export::point_cloud(&model, &cameras, &settings, &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    if let Some(transform) = &dataparser {
        for (p, _) in &mut points {
            *p = transform
                .point_to_data(glam::Vec3::from(*p).as_dvec3())
                .as_vec3()
                .to_array();
        }
    }
    let splats = scene::init::from_points(&points);
    let Some(splats) = splats else {
        bail!(
            "{}: no pixel of the {} camera(s) has accumulation above {}{}: nothing to export",
            args.checkpoint.display(),
            cameras.len(),
            args.min_accumulation,
            if args.no_crop {
                ""
            } else {
                " inside [-1, 1]^3 (try --no-crop)"
            }
        );
    };
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the output folder: {e}", parent.display()))?;
    }
    scene::save(&splats, &args.out)?;
    println!("{} splats -> {}", splats.len(), args.out.display());
    Ok(())
}
