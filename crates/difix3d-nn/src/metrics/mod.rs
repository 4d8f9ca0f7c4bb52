//! Image quality metrics shared by tests, evaluation, training, Difix fine-tuning and benchmarks:
//! PSNR, SSIM (the standard 11x11 Gaussian window; also 3DGS training's loss) and LPIPS when its
//! network is given, on the CPU backend.

pub mod ssim;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::nn::weights::WeightsError;
use crate::perceptual::lpips::{Lpips, LpipsFiles};
use ssim::ssim;

/// Peak signal-to-noise ratio in dB of two equally sized images with values in [0, 1].
/// Identical images give infinity.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr: images differ in size");
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x as f64) - (*y as f64)).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    -10.0 * mse.log10()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ViewMetrics {
    pub name: String,
    pub psnr: f64,
    pub ssim: f64,
    pub lpips: Option<f64>,
}

/// The backend the metrics run on.
pub type MetricsBackend = NdArray<f32>;

/// Loads LPIPS for the metrics, when its files are given.
pub fn load_lpips(files: Option<&LpipsFiles>) -> Result<Option<Lpips<MetricsBackend>>, WeightsError> {
    files.map(|f| Lpips::load(f, &NdArrayDevice::Cpu)).transpose()
}

fn nchw(values: Vec<f32>, w: usize, h: usize) -> Tensor<NdArray<f32>, 4> {
    Tensor::<NdArray<f32>, 3>::from_data(TensorData::new(values, [h, w, 3]), &NdArrayDevice::Cpu)
        .permute([2, 0, 1])
        .unsqueeze()
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
    let psnr = psnr(&clamped, &truth);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_matches_hand_computation() {
        // MSE = 0.01 -> 20 dB.
        let a = vec![0.5f32; 100];
        let b = vec![0.6f32; 100];
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-4);
        assert!(psnr(&a, &a).is_infinite());
    }
}
