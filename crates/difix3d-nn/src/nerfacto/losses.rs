//! Nerfacto's training losses, as nerfstudio 1.1.5 computes them
//! (nerfstudio/models/nerfacto.py `get_loss_dict`; nerfstudio/model_components/losses.py):
//!
//! - `rgb_loss`: the mean squared error of the rendered colour (`MSELoss`, mean over rays and
//!   channels); with nerfacto's `last_sample` background neither side is blended with anything;
//! - `interlevel_loss` (× `interlevel_loss_mult` = 1.0): MipNeRF-360's proposal loss. For each
//!   proposal pass, the field's weights `w` on its bins `c` (both detached) must not exceed the
//!   proposal's weight mass `w_outer` over each bin: `mean(max(w − w_outer, 0)² / (w + 1e-7))`,
//!   summed over the passes;
//! - `distortion_loss` (× `distortion_loss_mult` = 0.002): MipNeRF-360's distortion loss on the
//!   field's pass, in spacing coordinates: `Σ_ij w_i w_j |u_i − u_j| + Σ_i w_i² (c_{i+1} − c_i) / 3`
//!   with `u` the bin midpoints, averaged over rays (summed here with running sums, not pair by pair).

use burn::prelude::*;

use super::sampler::{count_at_most, RaySamples};
use crate::nn::scan::cumsum_rows_from_zero;

/// `interlevel_loss_mult` of `NerfactoModelConfig`.
pub const INTERLEVEL_LOSS_MULT: f32 = 1.0;
/// `distortion_loss_mult` of `NerfactoModelConfig`.
pub const DISTORTION_LOSS_MULT: f32 = 0.002;
/// `EPS` of nerfstudio/model_components/losses.py.
const OUTER_EPS: f32 = 1.0e-7;

/// The three loss terms of a step, multipliers applied (nerfstudio's `loss_dict`).
#[derive(Clone, Debug)]
pub struct Losses<B: Backend> {
    pub rgb: Tensor<B, 1>,
    pub interlevel: Tensor<B, 1>,
    pub distortion: Tensor<B, 1>,
}

impl<B: Backend> Losses<B> {
    /// The sum that is backpropagated.
    pub fn total(&self) -> Tensor<B, 1> {
        self.rgb.clone() + self.interlevel.clone() + self.distortion.clone()
    }
}

/// The losses of a training forward pass: `rgb` `[R, 3]` against `target` `[R, 3]`, and the passes
/// (proposal passes first, the field's last) with their weights.
pub fn losses<B: Backend>(
    rgb: Tensor<B, 2>,
    target: Tensor<B, 2>,
    passes: &[(RaySamples<B>, Tensor<B, 2>)],
) -> Losses<B> {
    let rgb_loss = (target - rgb).powi_scalar(2).mean();
    let (last_samples, last_weights) = passes.last().expect("a forward pass has at least the field's samples");
    let c = last_samples.bins.clone().detach();
    let w = last_weights.clone().detach();
    let mut interlevel = Tensor::zeros([1], &w.device());
    for (samples, weights) in &passes[..passes.len() - 1] {
        interlevel = interlevel + lossfun_outer(&c, &w, &samples.bins, weights.clone()).mean();
    }
    let distortion = lossfun_distortion(&last_samples.bins, last_weights.clone()).mean();
    Losses {
        rgb: rgb_loss,
        interlevel: interlevel * INTERLEVEL_LOSS_MULT,
        distortion: distortion * DISTORTION_LOSS_MULT,
    }
}

/// The proposal weight mass over each of the bins `t` (`outer`): for bin `[t_i, t_{i+1}]`, the sum of
/// `w_env` over the envelope bins from the one holding `t_i` to the one holding `t_{i+1}`.
fn outer<B: Backend>(t: &Tensor<B, 2>, t_env: &Tensor<B, 2>, w_env: Tensor<B, 2>) -> Tensor<B, 2> {
    let [_, n_edges] = t.dims();
    let [_, m_edges] = t_env.dims();
    let (n, m) = (n_edges - 1, m_edges - 1);
    let cy1 = cumsum_rows_from_zero(w_env); // [R, m + 1]
    let (t0_starts, t0_ends) = (t.clone().narrow(1, 0, n), t.clone().narrow(1, 1, n));
    let (t1_starts, t1_ends) = (t_env.clone().narrow(1, 0, m), t_env.clone().narrow(1, 1, m));
    // `searchsorted(..., side="right")` is the count of sorted values at most each query.
    let lo = (count_at_most(&t1_starts, &t0_starts) - 1).clamp(0, m as i64 - 1);
    let hi = count_at_most(&t1_ends, &t0_ends).clamp(0, m as i64 - 1);
    let cy1_lo = cy1.clone().narrow(1, 0, m).gather(1, lo);
    let cy1_hi = cy1.narrow(1, 1, m).gather(1, hi);
    cy1_hi - cy1_lo
}

/// `lossfun_outer`: `max(w − outer, 0)² / (w + eps)` per bin of `t`, `[R, n]`.
fn lossfun_outer<B: Backend>(
    t: &Tensor<B, 2>,
    w: &Tensor<B, 2>,
    t_env: &Tensor<B, 2>,
    w_env: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let w_outer = outer(t, t_env, w_env);
    (w.clone() - w_outer).clamp_min(0.0).powi_scalar(2) / (w.clone() + OUTER_EPS)
}

/// `lossfun_distortion` per ray, `[R, 1]`, for bin edges `t` `[R, n + 1]` and weights `w` `[R, n]`.
///
/// nerfstudio sums `w_i w_j |u_i − u_j|` over all pairs, an `[R, n, n]` tensor (9.4M values for 4096
/// rays of 48 samples, the largest of a training step). The bins are sorted along each ray (every
/// sampler's edges increase), so `Σ_j w_j |u_i − u_j|` splits at `i` into the samples before and
/// after it, and the pair sum is `2 Σ_i w_i (u_i · W_i − U_i)` with `W_i = Σ_{j<i} w_j` and
/// `U_i = Σ_{j<i} w_j u_j` (Zip-NeRF's form of the same loss): two running sums instead of `n²`
/// terms. It equals nerfstudio's to float rounding ([`tests`]).
fn lossfun_distortion<B: Backend>(t: &Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let [_, edges] = t.dims();
    let n = edges - 1;
    let (starts, ends) = (t.clone().narrow(1, 0, n), t.clone().narrow(1, 1, n));
    let ut = (ends.clone() + starts.clone()) / 2.0;
    let weight_before = cumsum_rows_from_zero(w.clone()).narrow(1, 0, n);
    let weighted_before = cumsum_rows_from_zero(w.clone() * ut.clone()).narrow(1, 0, n);
    let loss_inter = (w.clone() * (ut * weight_before - weighted_before)).sum_dim(1) * 2.0;
    let loss_intra = (w.powi_scalar(2) * (ends - starts)).sum_dim(1) / 3.0;
    loss_inter + loss_intra
}

#[cfg(test)]
mod tests {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::{Autodiff, Wgpu};
    use burn::tensor::Distribution;

    use super::*;
    use crate::nn::backend::CpuBackend;

    /// nerfstudio's `lossfun_distortion` as it is written: the `[R, n, n]` pair sum.
    fn pairwise<B: Backend>(t: &Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
        let [rays, edges] = t.dims();
        let n = edges - 1;
        let (starts, ends) = (t.clone().narrow(1, 0, n), t.clone().narrow(1, 1, n));
        let ut = (ends.clone() + starts.clone()) / 2.0;
        let dut = (ut.clone().reshape([rays, n, 1]) - ut.reshape([rays, 1, n])).abs();
        let inner = (w.clone().reshape([rays, 1, n]) * dut).sum_dim(2).reshape([rays, n]);
        let loss_inter = (w.clone() * inner).sum_dim(1);
        let loss_intra = (w.powi_scalar(2) * (ends - starts)).sum_dim(1) / 3.0;
        loss_inter + loss_intra
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 values")
    }

    /// The running-sum form against the pair sum, values and the weights' gradient, on sorted bins
    /// in [0, 1] with a few repeated edges (empty bins) and weights as a field gives them.
    fn matches_the_pair_sum<B: burn::tensor::backend::AutodiffBackend>(device: &B::Device) {
        let (rays, n) = (300, 48);
        let steps = Tensor::<B, 2>::random([rays, n + 1], Distribution::Uniform(0.0, 1.0), device);
        // Every fifth step empty: equal neighbouring edges.
        let keep: Vec<f32> = (0..n + 1).map(|j| if j % 5 == 3 { 0.0 } else { 1.0 }).collect();
        let steps = steps * Tensor::<B, 1>::from_floats(keep.as_slice(), device).reshape([1, n + 1]);
        let t = steps.clone().cumsum(1) / steps.sum_dim(1);
        let w = Tensor::<B, 2>::random([rays, n], Distribution::Uniform(0.0, 0.1), device).require_grad();
        let (fast, slow) = (lossfun_distortion(&t, w.clone()), pairwise(&t, w.clone()));
        let scale = values(slow.clone()).into_iter().fold(0f32, f32::max);
        for (a, b) in values(fast.clone()).into_iter().zip(values(slow.clone())) {
            assert!((a - b).abs() <= 1e-5 * scale, "loss {a} against the pair sum's {b}");
        }
        let weights = Tensor::<B, 2>::random([rays, 1], Distribution::Normal(1.0, 0.5), device);
        let gradient = |loss: Tensor<B, 2>| values(w.grad(&(loss * weights.clone()).sum().backward()).unwrap());
        let (fast, slow) = (gradient(fast), gradient(slow));
        let scale = slow.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "the gradient is not trivial");
        for (a, b) in fast.into_iter().zip(slow) {
            assert!((a - b).abs() <= 1e-5 * scale, "gradient {a} against the pair sum's {b}");
        }
    }

    #[test]
    fn distortion_loss_equals_the_pair_sum() {
        matches_the_pair_sum::<Autodiff<CpuBackend>>(&Default::default());
    }

    #[test]
    fn distortion_loss_equals_the_pair_sum_on_wgpu() {
        matches_the_pair_sum::<Autodiff<Wgpu<f32>>>(&WgpuDevice::DefaultDevice);
    }
}
