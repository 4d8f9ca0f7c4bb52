//! Evaluation on held-out views: render each eval camera, compare with its photo (PSNR, SSIM with
//! the standard 11x11 Gaussian window, and LPIPS when its network is given), optionally write the
//! renders. Used by `difix3d eval` and at the end of training and refinement. The metrics run on the
//! CPU backend.

use std::path::Path;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::diff_render::SplatRenderer;
use super::ssim::ssim;
use super::trainer::TrainError;
use crate::data::View;
use crate::perceptual::lpips::{Lpips, LpipsFiles};
use crate::render::RenderOptions;
use crate::scene::Splats;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ViewMetrics {
    pub name: String,
    pub psnr: f64,
    pub ssim: f64,
    pub lpips: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub views: Vec<ViewMetrics>,
    pub psnr: f64,
    pub ssim: f64,
    /// `None` when no LPIPS network was given.
    pub lpips: Option<f64>,
}

/// The backend the metrics run on.
pub type MetricsBackend = NdArray<f32>;

/// Loads LPIPS for the metrics, when its files are given.
pub fn load_lpips(files: Option<&LpipsFiles>) -> Result<Option<Lpips<MetricsBackend>>, crate::difix::DifixError> {
    files.map(|f| Lpips::load(f, &NdArrayDevice::Cpu)).transpose()
}

/// The photo of `view` as RGB in [0, 1], checked against its camera's size.
pub fn load_photo(view: &View) -> Result<image::RgbImage, TrainError> {
    let image = crate::image_io::open_rgb(&view.image_path).map_err(|message| TrainError::File {
        path: view.image_path.clone(),
        message,
    })?;
    let (w, h) = image.dimensions();
    // SSIM (the training loss and the metric) slides an 11x11 window over the valid region.
    let min = super::ssim::MIN_SIDE as u32;
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

fn nchw(values: Vec<f32>, w: usize, h: usize) -> Tensor<NdArray<f32>, 4> {
    Tensor::<NdArray<f32>, 3>::from_data(TensorData::new(values, [h, w, 3]), &NdArrayDevice::Cpu)
        .permute([2, 0, 1])
        .unsqueeze()
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
    let stem = Path::new(&view.camera.name)
        .file_stem()
        .map_or_else(|| view.camera.name.clone(), |s| s.to_string_lossy().into_owned());
    format!("{stem}.png")
}

/// PSNR, SSIM (and LPIPS when given) of an RGB image [H * W * 3] (clamped to [0, 1] here) against
/// its photo.
pub fn compare(
    name: &str,
    rendered: &[f32],
    photo: &image::RgbImage,
    lpips: Option<&Lpips<MetricsBackend>>,
) -> ViewMetrics {
    let truth: Vec<f32> = photo.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
    let clamped: Vec<f32> = rendered.iter().map(|v| v.clamp(0.0, 1.0)).collect();
    let psnr = crate::metrics::psnr(&clamped, &truth);
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let (a, b) = (nchw(clamped, w, h), nchw(truth, w, h));
    let lpips = lpips.map(|m| m.distance(a.clone(), b.clone()).into_scalar() as f64);
    let ssim_value: f32 = ssim(a, b).into_scalar();
    ViewMetrics {
        name: name.to_string(),
        psnr,
        ssim: ssim_value as f64,
        lpips,
    }
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
