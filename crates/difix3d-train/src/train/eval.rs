//! Evaluation on held-out views: render each eval camera, compare with its photo (PSNR, SSIM with
//! the standard 11x11 Gaussian window, and LPIPS when its network is given), optionally write the
//! renders. Used by `difix3d eval` and at the end of training and refinement. The metrics run on the
//! CPU backend.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::trainer::TrainError;
use crate::data::View;
use crate::metrics::{compare, MetricsBackend, ViewMetrics};
use crate::perceptual::lpips::Lpips;
use crate::render::diff_render::SplatRenderer;
use crate::render::RenderOptions;
use crate::scene::Splats;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub views: Vec<ViewMetrics>,
    pub psnr: f64,
    pub ssim: f64,
    /// `None` when no LPIPS network was given.
    pub lpips: Option<f64>,
}

/// The photo of `view` as RGB in [0, 1], checked against its camera's size.
pub fn load_photo(view: &View) -> Result<image::RgbImage, TrainError> {
    let image = crate::image_io::open_rgb(&view.image_path).map_err(|message| TrainError::File {
        path: view.image_path.clone(),
        message,
    })?;
    let (w, h) = image.dimensions();
    // SSIM (the training loss and the metric) slides an 11x11 window over the valid region.
    let min = crate::metrics::ssim::MIN_SIDE as u32;
    if w < min || h < min {
        return Err(TrainError::File {
            path: view.image_path.clone(),
            message: format!(
                "the photo is {w}x{h}; training and evaluation need at least {min}x{min} pixels (SSIM's window); \
                 use a smaller data factor"
            ),
        });
    }
    if (w, h) != (view.camera.width, view.camera.height) {
        return Err(TrainError::File {
            path: view.image_path.clone(),
            message: format!(
                "{w}x{h}, but its camera is {}x{}",
                view.camera.width, view.camera.height
            ),
        });
    }
    Ok(image)
}

/// Renders `splats` from every view, compares with the (already loaded) photos, and writes the
/// renders as `out/NAME.png` when `out` is given.
pub fn evaluate(
    renderer: &SplatRenderer,
    splats: &Splats,
    views: &[(View, image::RgbImage)],
    options: &RenderOptions,
    lpips: Option<&Lpips<MetricsBackend>>,
    out: Option<&Path>,
) -> Result<EvalReport, TrainError> {
    let mut metrics = Vec::new();
    for (view, photo) in views {
        let image = renderer.render_image(splats, &view.camera, options)?;
        let rendered: Vec<f32> = image.rgba.iter().flat_map(|p| [p[0], p[1], p[2]]).collect();
        if let Some(dir) = out {
            crate::image_io::save_png(&crate::image_io::to_rgb8(&image), &dir.join(render_name(view)))?;
        }
        metrics.push(compare(&view.camera.name, &rendered, photo, lpips));
    }
    Ok(summarize(metrics))
}

/// `NAME.png` for the render of `view` (the photo's stem).
pub fn render_name(view: &View) -> String {
    render_name_of(&view.camera.name)
}

/// The render's file name for the camera named `name`: its stem as a PNG.
pub fn render_name_of(name: &str) -> String {
    let stem = Path::new(name)
        .file_stem()
        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned());
    format!("{stem}.png")
}

/// Means over the views.
pub fn summarize(metrics: Vec<ViewMetrics>) -> EvalReport {
    let mean = |f: fn(&ViewMetrics) -> f64| metrics.iter().map(f).sum::<f64>() / metrics.len().max(1) as f64;
    let lpips = metrics
        .iter()
        .map(|m| m.lpips)
        .sum::<Option<f64>>()
        .map(|sum| sum / metrics.len().max(1) as f64);
    EvalReport {
        psnr: mean(|m| m.psnr),
        ssim: mean(|m| m.ssim),
        views: metrics,
        lpips,
    }
}
