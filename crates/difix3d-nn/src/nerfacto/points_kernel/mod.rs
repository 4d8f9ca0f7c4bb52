//! Where a batch of ray samples lands in the hash grids' unit cube, as one kernel, forward and backward:
//! [`cpu`] for burn's CPU backend, [`cube`] for its GPU backends (wgpu and CUDA), each also under
//! autodiff.
//!
//! In burn ops, a sample's position `o + d · t` ([`RaySamples::positions`]), the scene contraction
//! ([`contract`]), `(x + 2) / 4` and the inside test ([`SpaceMapping::to_unit_cube`]) are some twenty
//! ops, several of them broadcasts, each writing a tensor of every sample (a million for nerfacto's
//! first proposal pass): on lavapipe about a tenth of a training step. Here each sample's value is
//! computed with the same f32 operations in the same order in registers, and the backward pass
//! sums each ray's samples' gradients into the ray's origin and direction (which carry one with
//! the camera optimiser). The midpoints `t` are the sampler's, which carry no gradient.
//!
//! The contraction's gradient is written out: with `m = ‖x‖∞ = |x_k|` at or above 1,
//! `c = (2 − 1/m) x / m`, so `∂c_i/∂x_j = (2 − 1/m)/m · δ_ij + x_i · (2/m³ − 2/m²) · sign(x_k) · δ_jk`
//! (`k` the first axis of largest magnitude, as burn's `max_dim` picks it). The values agree with
//! the burn-ops version to float rounding (a GPU compiler may fuse a product and a sum).
//!
//! [`RaySamples::positions`]: super::sampler::RaySamples::positions
//! [`contract`]: super::field::contract
//! [`SpaceMapping::to_unit_cube`]: super::field::SpaceMapping::to_unit_cube

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

mod cpu;
mod cube;

/// The samples in the unit cube `[R · n, 3]` and their inside flags `[R · n, 1]`.
type InCubeSamples<B> = (Tensor<B, 2>, Tensor<B, 2>);

/// The contracted samples `o_r + d_r · t_{r,s}` in the unit cube, `[R · n, 3]` (zero where outside),
/// and whether each lies strictly inside it, `[R · n, 1]` (1 or 0), for `origins` and `directions`
/// `[R, 3]` and `midpoints` `[R, n]`. `None` where there is no kernel (ndarray, candle), for a
/// tracked `midpoints`, or for tensors that are not f32: the caller then runs burn's ops.
pub fn contracted_samples<B: Backend>(
    origins: &Tensor<B, 2>,
    directions: &Tensor<B, 2>,
    midpoints: &Tensor<B, 2>,
) -> Option<InCubeSamples<B>> {
    cpu::contracted_samples(origins, directions, midpoints)
        .or_else(|| cube::contracted_samples(origins, directions, midpoints))
}

#[cfg(test)]
mod tests {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::{Autodiff, Wgpu};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::Distribution;

    use super::*;
    use crate::nerfacto::field::SpaceMapping;
    use crate::nn::backend::CpuBackend;

    fn values<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 values")
    }

    /// burn's ops: positions, then `SpaceMapping::to_unit_cube`.
    fn ops<B: Backend>(o: &Tensor<B, 2>, d: &Tensor<B, 2>, t: &Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [rays, n] = t.dims();
        let positions = (o.clone().reshape([rays, 1, 3])
            + d.clone().reshape([rays, 1, 3]) * t.clone().reshape([rays, n, 1]))
        .reshape([rays * n, 3]);
        let points = SpaceMapping::Contraction.to_unit_cube(positions);
        (points.unit, points.inside)
    }

    /// Rays from around the origin in all directions, samples from near to far (1e3): inside the
    /// unit ball, contracted, and a few beyond the cube's faces (nothing is, after contraction, but
    /// points at a face of the cube: the far end maps to within float rounding of it).
    fn rays<B: Backend>(device: &B::Device) -> [Tensor<B, 2>; 3] {
        let (rays, n) = (97, 40);
        let o = Tensor::<B, 2>::random([rays, 3], Distribution::Uniform(-1.5, 1.5), device);
        let d = Tensor::<B, 2>::random([rays, 3], Distribution::Normal(0.0, 1.0), device);
        let d = d.clone() / (d.powi_scalar(2).sum_dim(1).sqrt());
        let steps: Vec<f32> = (0..n).map(|s| 0.05 * 1.3f32.powi(s)).collect();
        let t = Tensor::<B, 1>::from_floats(steps.as_slice(), device)
            .reshape([1, n])
            .expand([rays, n])
            + Tensor::<B, 2>::random([rays, n], Distribution::Uniform(0.0, 0.01), device);
        [o, d, t]
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "{what}: the values are trivial");
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "{what}: differs by {worst} (scale {scale})"
        );
    }

    fn forward_matches_burn_ops<B: Backend>(device: &B::Device) {
        let [o, d, t] = rays::<B>(device);
        let (unit, inside) = contracted_samples(&o, &d, &t).expect("a kernel on this backend");
        let (unit_ops, inside_ops) = ops(&o, &d, &t);
        assert_close(&values(unit), &values(unit_ops), "unit positions");
        let (inside, inside_ops) = (values(inside), values(inside_ops));
        assert_eq!(inside, inside_ops);
        assert!(inside.contains(&1.0), "some samples are inside");
    }

    fn gradients_match_burn_ops_autodiff<B: AutodiffBackend>(device: &B::Device) {
        let [o, d, t] = rays::<B>(device);
        let weights = Tensor::<B, 2>::random([97 * 40, 3], Distribution::Normal(0.0, 1.0), device);
        let gradients = |kernel: bool| {
            let (o, d) = (o.clone().require_grad(), d.clone().require_grad());
            let (unit, inside) = match kernel {
                true => contracted_samples(&o, &d, &t).expect("a kernel on this backend under autodiff"),
                false => ops(&o, &d, &t),
            };
            // The inside flags carry no gradient; the loss uses them as nerfacto does (density × inside).
            let loss = (unit * weights.clone() * inside).sum();
            let grads = loss.backward();
            (values(o.grad(&grads).unwrap()), values(d.grad(&grads).unwrap()))
        };
        let ((o_kernel, d_kernel), (o_ops, d_ops)) = (gradients(true), gradients(false));
        assert_close(&o_kernel, &o_ops, "origin gradient");
        assert_close(&d_kernel, &d_ops, "direction gradient");
    }

    #[test]
    fn forward_matches_burn_ops_on_wgpu() {
        forward_matches_burn_ops::<Wgpu<f32>>(&WgpuDevice::DefaultDevice);
    }

    /// On the CPU backend the same operations in the same order: the same bits.
    #[test]
    fn forward_equals_burn_ops_on_the_cpu_backend() {
        forward_matches_burn_ops::<CpuBackend>(&Default::default());
        let [o, d, t] = rays::<CpuBackend>(&Default::default());
        let (unit, _) = contracted_samples(&o, &d, &t).unwrap();
        assert_eq!(values(unit), values(ops(&o, &d, &t).0));
    }

    #[test]
    fn gradients_match_burn_ops_autodiff_on_wgpu() {
        gradients_match_burn_ops_autodiff::<Autodiff<Wgpu<f32>>>(&WgpuDevice::DefaultDevice);
    }

    #[test]
    fn gradients_match_burn_ops_autodiff_on_the_cpu_backend() {
        gradients_match_burn_ops_autodiff::<Autodiff<CpuBackend>>(&Default::default());
    }

    /// Midpoints that carry a gradient are left to burn's ops (the kernels give them none).
    #[test]
    fn tracked_midpoints_are_declined() {
        let [o, d, t] = rays::<Autodiff<Wgpu<f32>>>(&WgpuDevice::DefaultDevice);
        assert!(contracted_samples(&o, &d, &t.require_grad()).is_none());
        let [o, d, t] = rays::<Autodiff<CpuBackend>>(&Default::default());
        assert!(contracted_samples(&o, &d, &t.require_grad()).is_none());
    }
}
