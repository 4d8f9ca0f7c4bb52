//! SSIM with the standard 11x11 Gaussian window (sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, data range 1),
//! averaged over the "valid" region (no padding), as gsplat's training loss (fused-ssim,
//! `padding="valid"`) computes it. Ordinary burn code, so it is differentiable under autodiff.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

const WINDOW: usize = 11;
/// The smallest image side SSIM is defined on here (one window); photos are checked against it
/// when they load.
pub const MIN_SIDE: usize = WINDOW;
const SIGMA: f32 = 1.5;
const C1: f32 = 0.01 * 0.01;
const C2: f32 = 0.03 * 0.03;

/// The normalised 1D Gaussian window.
fn gaussian() -> [f32; WINDOW] {
    let mut g = [0.0f32; WINDOW];
    for (i, v) in g.iter_mut().enumerate() {
        let x = i as f32 - (WINDOW / 2) as f32;
        *v = (-x * x / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f32 = g.iter().sum();
    g.map(|v| v / sum)
}

/// The "valid" 1D Gaussian filter over `n` samples as a band matrix [n - 10, n]: blurring an image
/// is `rows · X · colsᵀ`, two matrix products (fast forward and backward on every backend, unlike a
/// depthwise convolution's backward on the CPU).
fn band<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 2> {
    let g = gaussian();
    let out = n + 1 - WINDOW;
    let mut m = vec![0.0f32; out * n];
    for r in 0..out {
        m[r * n + r..r * n + r + WINDOW].copy_from_slice(&g);
    }
    Tensor::from_data(TensorData::new(m, [out, n]), device)
}

/// Mean SSIM of two image batches [n, c, h, w] with values in [0, 1]; h and w must be at least 11.
pub fn ssim<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    let [n, c, h, w] = a.dims();
    let device = a.device();
    let rows = band::<B>(h, &device).unsqueeze::<4>().expand([n, c, h + 1 - WINDOW, h]);
    let cols = band::<B>(w, &device)
        .transpose()
        .unsqueeze::<4>()
        .expand([n, c, w, w + 1 - WINDOW]);
    let blur = |x: Tensor<B, 4>| rows.clone().matmul(x).matmul(cols.clone());
    let mu_a = blur(a.clone());
    let mu_b = blur(b.clone());
    let mu_a2 = mu_a.clone().powi_scalar(2);
    let mu_b2 = mu_b.clone().powi_scalar(2);
    let mu_ab = mu_a * mu_b;
    let sigma_a = blur(a.clone() * a.clone()) - mu_a2.clone();
    let sigma_b = blur(b.clone() * b.clone()) - mu_b2.clone();
    let sigma_ab = blur(a * b) - mu_ab.clone();
    let numerator = (mu_ab * 2.0 + C1) * (sigma_ab * 2.0 + C2);
    let denominator = (mu_a2 + mu_b2 + C1) * (sigma_a + sigma_b + C2);
    (numerator / denominator).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::ndarray::NdArrayDevice;
    use burn::backend::{Autodiff, NdArray};

    #[derive(serde::Deserialize)]
    struct Case {
        shape: [usize; 4],
        a: Vec<f32>,
        b: Vec<f32>,
        ssim: f64,
        skimage_ssim: f64,
        grad_a: Vec<f32>,
    }

    /// Against torch float64 (and scikit-image's value): tests/golden/ssim_golden.py.
    #[test]
    fn ssim_and_its_gradient_match_the_reference() {
        type B = Autodiff<NdArray<f32>>;
        let path = crate::repo_root().join("tests/fixtures/train/ssim_case.json");
        let case: Case = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!((case.ssim - case.skimage_ssim).abs() < 1e-9);
        let d = NdArrayDevice::Cpu;
        let a = Tensor::<B, 4>::from_data(TensorData::new(case.a, case.shape), &d).require_grad();
        let b = Tensor::<B, 4>::from_data(TensorData::new(case.b, case.shape), &d);
        let s = ssim(a.clone(), b);
        let value: f32 = s.clone().into_scalar();
        assert!((value as f64 - case.ssim).abs() < 1e-5, "{value} vs {}", case.ssim);
        let grads = s.backward();
        let g: Vec<f32> = a.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let (diff, norm) = g.iter().zip(&case.grad_a).fold((0.0f64, 0.0f64), |(d, n), (x, y)| {
            (d + ((x - y) as f64).powi(2), n + (*y as f64).powi(2))
        });
        let rel = (diff / norm).sqrt();
        assert!(rel < 1e-4, "gradient relative error {rel:.2e}");
    }
}
