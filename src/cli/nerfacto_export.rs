//! `difix3d nerfacto-export`: a nerfstudio nerfacto checkpoint as splats (a `.ply` the viewer opens
//! and training can start from), from the points its cameras see, as `ns-export pointcloud` picks
//! them (CPU).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use difix3d::nerfacto::export::{self, ExportSettings};
use difix3d::scene;

#[derive(Args)]
pub struct NerfactoExportArgs {
    #[command(flatten)]
    input: super::nerfacto_render::NerfactoInput,
    /// The splat file to write (.ply, .splat, .spz, .sog, ...: any format `convert` writes).
    #[arg(long)]
    out: PathBuf,
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
}

pub fn run(args: NerfactoExportArgs) -> anyhow::Result<()> {
    let (cameras, dataparser) = args.input.cameras("export")?;
    if scene::SceneFormat::of(&args.out).is_none() {
        bail!(
            "{}: not a splat file name to write ({})",
            args.out.display(),
            scene::SceneFormat::WRITABLE
        );
    }
    let settings = ExportSettings {
        min_accumulation: args.min_accumulation,
        crop: (!args.no_crop).then_some(([-1.0; 3], [1.0; 3])),
        remove_outliers: !args.keep_outliers,
        max_points: args.max_points,
        rays_per_chunk: args.input.rays_per_chunk,
    };
    let bar = super::progress_bar(cameras.len() as u64, "{bar:30} {pos}/{len} cameras");
    let points = args.input.with_model(PointCloud {
        cameras: &cameras,
        settings: &settings,
        bar: &bar,
    });
    bar.finish_and_clear();
    let mut points = points?;
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
            args.input.checkpoint().display(),
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

/// The points `export::point_cloud` picks, with the cameras done on the bar.
struct PointCloud<'a> {
    cameras: &'a [difix3d::data::Camera],
    settings: &'a ExportSettings,
    bar: &'a indicatif::ProgressBar,
}

impl super::nerfacto_render::WithNerfacto for PointCloud<'_> {
    type Output = Vec<([f32; 3], [u8; 3])>;

    fn run<B: burn::tensor::backend::Backend>(
        self,
        model: &difix3d::nerfacto::Nerfacto<B>,
    ) -> anyhow::Result<Self::Output> {
        Ok(export::point_cloud(
            model,
            self.cameras,
            self.settings,
            &mut |done, _| self.bar.set_position(done as u64),
        ))
    }
}
