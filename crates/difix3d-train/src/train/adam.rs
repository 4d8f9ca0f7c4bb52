//! Adam over the splat parameter groups, each with its own learning rate (and, for SH, one per
//! column: the DC term learns 20x faster than the higher orders, as in gsplat). Works on the inner
//! (non-autodiff) tensors: parameters go in with their gradients and come out updated.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
/// gsplat's epsilon (much smaller than torch's default 1e-8: splat gradients are tiny).
pub const EPS: f32 = 1e-15;

/// First and second moments of one parameter tensor.
#[derive(Clone, Debug)]
pub struct Moments<B: Backend> {
    pub m: Tensor<B, 2>,
    pub v: Tensor<B, 2>,
}

impl<B: Backend> Moments<B> {
    pub fn zeros(like: &Tensor<B, 2>) -> Self {
        Self {
            m: like.zeros_like(),
            v: like.zeros_like(),
        }
    }
}

/// One Adam step with bias correction for step `step` (1-based). `lr` is [1, columns] (or [1, 1])
/// so groups can give columns different rates.
pub fn step<B: Backend>(
    param: Tensor<B, 2>,
    grad: Tensor<B, 2>,
    moments: &mut Moments<B>,
    lr: Tensor<B, 2>,
    step: usize,
) -> Tensor<B, 2> {
    let m = moments.m.clone() * BETA1 + grad.clone() * (1.0 - BETA1);
    let v = moments.v.clone() * BETA2 + grad.powi_scalar(2) * (1.0 - BETA2);
    let correction1 = 1.0 - BETA1.powi(step as i32);
    let correction2 = 1.0 - BETA2.powi(step as i32);
    let m_hat = m.clone() / correction1;
    let v_hat = v.clone() / correction2;
    moments.m = m;
    moments.v = v;
    param - lr * m_hat / (v_hat.sqrt() + EPS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::ndarray::NdArrayDevice;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    /// Matches a hand computation of torch.optim.Adam (two steps, eps as gsplat sets it).
    #[test]
    fn two_adam_steps_match_the_formula() {
        type B = NdArray<f32>;
        let d = NdArrayDevice::Cpu;
        let p = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, -2.0], [1, 2]), &d);
        let g = Tensor::<B, 2>::from_data(TensorData::new(vec![0.5f32, -0.25], [1, 2]), &d);
        let lr = Tensor::<B, 2>::from_data(TensorData::new(vec![0.1f32, 0.01], [1, 2]), &d);
        let mut moments = Moments::zeros(&p);
        let p = step(p, g.clone(), &mut moments, lr.clone(), 1);
        let p = step(p, g * 2.0, &mut moments, lr, 2);
        // Reference: m1 = 0.1 g, v1 = 0.001 g^2; step 1 moves by lr * sign(g). Step 2 with gradient 2g:
        // m2 = 0.9 m1 + 0.1 (2g) = 0.29 g; v2 = 0.999 v1 + 0.001 (4 g^2) = 0.004999 g^2;
        // m_hat = 0.29 g / 0.19, v_hat = 0.004999 g^2 / 0.001999.
        let ratio = (0.29f64 / 0.19) / (0.004999f64 / 0.001999).sqrt();
        let expected = [1.0 - 0.1 - 0.1 * ratio, -2.0 + 0.01 + 0.01 * ratio];
        let got: Vec<f32> = p.into_data().to_vec().unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
    }
}
