//! `difix3d eval`: a trained scene against the eval photos of its dataset.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use difix3d::metrics::load_lpips;
use difix3d::render::diff_render::SplatRenderer;
use difix3d::render::{GpuContext, RasterMode, RenderOptions};
use difix3d::train::eval::{evaluate, load_photo};
use difix3d::{data, image_io, scene};

#[derive(Args)]
pub struct EvalArgs {
    /// The trained scene (.ply, .splat or a run's checkpoint.safetensors).
    #[arg(long)]
    scene: PathBuf,
    /// The dataset whose eval views to compare with (a COLMAP scene folder or a nerfstudio transforms.json).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
    factor: u32,
    /// Split train/eval as Difix3D's own `--test_every N` does (its examples/gsplat/datasets/colmap.py): 0 = every
    /// image in both, 1 = by file name (`_train_` / `_eval_`), N > 1 = every N-th image is a *training* image.
    /// Without it: by Difix3D's `image_train_`/`image_eval_` names when present, else every 8th image is an eval
    /// image (gsplat's `--test_every 8`).
    #[arg(long, value_name = "N")]
    difix3d_test_every: Option<u32>,
    /// Where to write metrics.json and the renders (default: `eval/` beside the scene).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    lpips: super::LpipsArgs,
    #[arg(long, default_value = "0,0,0", value_parser = super::parse_rgb)]
    background: [f32; 3],
    /// Draw antialiased, as a scene trained with `train --antialiased` must be (gsplat's
    /// rasterize_mode="antialiased").
    #[arg(long)]
    antialiased: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let lpips = load_lpips(args.lpips.files().as_ref())?;
    let splats = scene::load(&args.scene)?;
    let dataset = data::open_dataset_split(&args.data, args.factor, super::split_rule(args.difix3d_test_every))?;
    if dataset.eval.is_empty() {
        bail!("{}: the dataset has no eval views", args.data.display());
    }
    let views = dataset
        .eval
        .iter()
        .map(|v| Ok((v.clone(), load_photo(v)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let out = args.out.unwrap_or_else(|| {
        args.scene
            .parent()
            .map_or_else(|| PathBuf::from("eval"), |p| p.join("eval"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    let mode = RasterMode {
        antialiased: args.antialiased,
        ..RasterMode::default()
    };
    let renderer = SplatRenderer::with_mode(GpuContext::headless()?, mode);
    let options = RenderOptions {
        sh_degree: 3,
        background: args.background,
    };
    let report = evaluate(&renderer, &splats, &views, &options, lpips.as_ref(), Some(&out))?;
    let json = serde_json::to_string_pretty(&report)?;
    let metrics = out.join("metrics.json");
    image_io::write_atomic(&metrics, |tmp| std::fs::write(tmp, &json).map_err(|e| e.to_string()))?;
    let lpips = report.lpips.map_or_else(
        || "LPIPS not computed (no --lpips-backbone)".to_string(),
        |v| format!("LPIPS {v:.4}"),
    );
    println!(
        "{} eval view(s): PSNR {:.2} dB, SSIM {:.4}, {lpips} -> {}",
        report.views.len(),
        report.psnr,
        report.ssim,
        metrics.display()
    );
    Ok(())
}
