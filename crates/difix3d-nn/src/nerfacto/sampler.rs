//! Where along each ray nerfacto evaluates its fields, and the volume-rendering weights
//! (nerfstudio/model_components/ray_samplers.py: `SpacedSampler`, `UniformLinDispPiecewiseSampler`,
//! `PDFSampler`, `ProposalNetworkSampler`; nerfstudio/cameras/rays.py: `RaySamples.get_weights`).
//!
//! Samples are kept as bin edges in "spacing" coordinates `s` in [0, 1] (`[R, n + 1]` for `n`
//! samples per ray), which a [`Spacing`] maps to distances along the ray. The first proposal pass
//! takes evenly spaced bins; each later pass (and the field's own pass) draws new bins from the
//! piecewise-constant distribution of the previous pass's weights, at fixed quantiles outside
//! training (no jitter), so rendering is deterministic.

use burn::prelude::*;

use super::config::InitialSampler;
use super::count_kernel;
use crate::nn::scan::{cumsum_rows, cumsum_rows_from_zero};

/// The map from spacing coordinates to distances (`spacing_to_euclidean_fn`) for rays from `near`
/// to `far`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spacing {
    pub kind: InitialSampler,
    /// The spacing function at the near and far planes (`s_near`, `s_far`).
    s_near: f32,
    s_far: f32,
}

impl Spacing {
    pub fn new(kind: InitialSampler, near: f32, far: f32) -> Self {
        let f = |x: f32| match kind {
            InitialSampler::Uniform => x,
            // `torch.where(x < 1, x / 2, 1 - 1 / (2 * x))`
            InitialSampler::Piecewise => {
                if x < 1.0 {
                    x / 2.0
                } else {
                    1.0 - 1.0 / (2.0 * x)
                }
            }
        };
        Self {
            kind,
            s_near: f(near),
            s_far: f(far),
        }
    }

    /// Distances along the ray for spacing coordinates `s` (any shape):
    /// `f⁻¹(s · s_far + (1 − s) · s_near)`.
    pub fn to_euclidean<B: Backend, const D: usize>(&self, s: Tensor<B, D>) -> Tensor<B, D> {
        let mixed = s.clone() * self.s_far + (s.neg() + 1.0) * self.s_near;
        match self.kind {
            InitialSampler::Uniform => mixed,
            // `torch.where(x < 0.5, 2 * x, 1 / (2 - 2 * x))`
            InitialSampler::Piecewise => {
                let near_half = mixed.clone().lower_elem(0.5);
                let far_part = (mixed.clone() * 2.0).neg().add_scalar(2.0).recip();
                far_part.mask_where(near_half, mixed * 2.0)
            }
        }
    }
}

/// `torch.linspace(start, end, steps)` for float32, value for value: the first half counts up
/// from `start`, the second half down from `end` (ATen's `linspace` kernel).
pub fn linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// The samples of a batch of rays: bin edges in spacing coordinates and the bins' distances.
#[derive(Clone, Debug)]
pub struct RaySamples<B: Backend> {
    /// `[R, n + 1]` spacing coordinates of the bin edges.
    pub bins: Tensor<B, 2>,
    /// `[R, n]` distance of each bin's start and end along the (unit) ray direction.
    pub starts: Tensor<B, 2>,
    pub ends: Tensor<B, 2>,
}

impl<B: Backend> RaySamples<B> {
    pub fn from_bins(bins: Tensor<B, 2>, spacing: &Spacing) -> Self {
        let [_, edges] = bins.dims();
        let euclidean = spacing.to_euclidean(bins.clone());
        Self {
            bins,
            starts: euclidean.clone().narrow(1, 0, edges - 1),
            ends: euclidean.narrow(1, 1, edges - 1),
        }
    }

    /// `n` evenly spaced bins per ray (`SpacedSampler` outside training).
    pub fn uniform(rays: usize, samples: usize, spacing: &Spacing, device: &B::Device) -> Self {
        let edges = linspace(0.0, 1.0, samples + 1);
        let bins = Tensor::<B, 1>::from_floats(edges.as_slice(), device)
            .reshape([1, samples + 1])
            .expand([rays, samples + 1]);
        Self::from_bins(bins, spacing)
    }

    /// `n` bins per ray, each edge moved by the ray's `jitter` `[R, 1]` in [0, 1) within the span
    /// between its neighbouring bin centres (`SpacedSampler` in training with `single_jitter`): the
    /// first edge ranges over [0, c_0], inner edges over [c_{i-1}, c_i], the last over [c_{n-1}, 1].
    pub fn stratified(samples: usize, spacing: &Spacing, jitter: Tensor<B, 2>) -> Self {
        let [rays, _] = jitter.dims();
        let device = jitter.device();
        let edges = linspace(0.0, 1.0, samples + 1);
        let centres: Vec<f32> = edges.windows(2).map(|w| (w[1] + w[0]) / 2.0).collect();
        let upper: Vec<f32> = centres.iter().copied().chain([edges[samples]]).collect();
        let lower: Vec<f32> = [edges[0]].into_iter().chain(centres.iter().copied()).collect();
        let row = |v: Vec<f32>| Tensor::<B, 1>::from_floats(v.as_slice(), &device).reshape([1, samples + 1]);
        let (lower, upper) = (row(lower), row(upper));
        let bins = lower.clone() + (upper - lower).expand([rays, samples + 1]) * jitter.expand([rays, samples + 1]);
        Self::from_bins(bins, spacing)
    }

    pub fn num_samples(&self) -> usize {
        self.starts.dims()[1]
    }

    /// The bins' midpoints along the ray, `[R, n]` (`(starts + ends) / 2`).
    pub fn midpoints(&self) -> Tensor<B, 2> {
        (self.starts.clone() + self.ends.clone()) / 2.0
    }

    /// The sample positions `[R · n, 3]` (`Frustums.get_positions`: origin + direction · midpoint).
    pub fn positions(&self, origins: &Tensor<B, 2>, directions: &Tensor<B, 2>) -> Tensor<B, 2> {
        let [rays, n] = self.starts.dims();
        let o = origins.clone().reshape([rays, 1, 3]);
        let d = directions.clone().reshape([rays, 1, 3]);
        let t = self.midpoints().reshape([rays, n, 1]);
        (o + d * t).reshape([rays * n, 3])
    }

    /// Volume-rendering weights `[R, n]` for densities `[R, n]` (`RaySamples.get_weights`):
    /// `w_i = (1 − exp(−σ_i δ_i)) · exp(−Σ_{j<i} σ_j δ_j)`.
    pub fn weights(&self, density: Tensor<B, 2>) -> Tensor<B, 2> {
        let [_, n] = density.dims();
        let delta_density = (self.ends.clone() - self.starts.clone()) * density;
        let alphas = delta_density.clone().neg().exp().neg() + 1.0;
        let accumulated = cumsum_rows_from_zero(delta_density.narrow(1, 0, n - 1)); // [R, n]
        let weights = alphas * accumulated.neg().exp();
        let nan = weights.clone().is_nan();
        weights.mask_fill(nan, 0.0)
    }

    /// New bins drawn from these samples' `weights` `[R, n]` at fixed quantiles (`PDFSampler` outside
    /// training, without the original bins: nerfacto's `include_original=False`).
    pub fn resample(&self, weights: Tensor<B, 2>, samples: usize, spacing: &Spacing) -> Self {
        self.resample_jittered(weights, samples, spacing, None)
    }

    /// [`Self::resample`]; with `jitter` `[R, 1]` in [0, 1) the quantiles are `i / (n + 1)` plus the
    /// ray's jitter over `n + 1` (`PDFSampler` in training with `single_jitter`) instead of the bins'
    /// centres. The new bins carry no gradient (nerfstudio detaches them).
    pub fn resample_jittered(
        &self,
        weights: Tensor<B, 2>,
        samples: usize,
        spacing: &Spacing,
        jitter: Option<Tensor<B, 2>>,
    ) -> Self {
        let weights = weights.detach();
        const HISTOGRAM_PADDING: f32 = 0.01;
        const EPS: f32 = 1e-5;
        let [rays, n] = weights.dims();
        let device = weights.device();
        let weights = weights + HISTOGRAM_PADDING;
        let sum = weights.clone().sum_dim(1);
        // Rays whose weights sum to (almost) nothing get a uniform distribution.
        let padding = (sum.clone().neg() + EPS).clamp_min(0.0);
        let weights = weights + padding.clone() / n as f32;
        let sum = sum + padding;
        let pdf = weights / sum;
        let cdf = cumsum_rows_from_zero(pdf).clamp_max(1.0); // [R, n + 1]

        let num_bins = samples + 1;
        let start = linspace(0.0, (1.0 - 1.0 / num_bins as f64) as f32, num_bins);
        let u = match jitter {
            None => {
                let quantiles: Vec<f32> = start
                    .into_iter()
                    .map(|u| u + (1.0 / (2 * num_bins) as f64) as f32)
                    .collect();
                Tensor::<B, 1>::from_floats(quantiles.as_slice(), &device)
                    .reshape([1, num_bins])
                    .expand([rays, num_bins])
            }
            Some(jitter) => {
                let start = Tensor::<B, 1>::from_floats(start.as_slice(), &device).reshape([1, num_bins]);
                start.expand([rays, num_bins]) + (jitter / num_bins as f32).expand([rays, num_bins])
            }
        };

        // `torch.searchsorted(cdf, u, side="right")`: how many cdf values are <= u (cdf is sorted).
        let above_index = count_at_most(&cdf, &u);
        let below = (above_index.clone() - 1).clamp(0, n as i64);
        let above = above_index.clamp(0, n as i64);
        let cdf_below = cdf.clone().gather(1, below.clone());
        let cdf_above = cdf.gather(1, above.clone());
        let bins_below = self.bins.clone().gather(1, below);
        let bins_above = self.bins.clone().gather(1, above);
        // `clip(nan_to_num((u − cdf_below) / (cdf_above − cdf_below), 0), 0, 1)`: 0/0 is 0, x/0 is
        // ±inf and clips to 1 or 0.
        let t = (u - cdf_below.clone()) / (cdf_above - cdf_below);
        let nan = t.clone().is_nan();
        let t = t.mask_fill(nan, 0.0).clamp(0.0, 1.0);
        let bins = bins_below.clone() + t * (bins_above - bins_below);
        Self::from_bins(bins.detach(), spacing)
    }
}

/// For each row, how many entries of the sorted `sorted` `[R, C]` are <= each `values` `[R, U]`
/// entry: `[R, U]`.
///
/// On the CPU and GPU backends a kernel ([`count_kernel`]). Elsewhere in burn ops, one value column
/// at a time, each compared with the whole `[R, C]` block: the single `[R, U, C]` comparison of two
/// expanded views needs a buffer of `R · U · C` flags (408 MB for nerfacto's proposal pass, more
/// than lavapipe allows).
pub fn count_at_most<B: Backend>(sorted: &Tensor<B, 2>, values: &Tensor<B, 2>) -> Tensor<B, 2, Int> {
    if let Some(counts) = count_kernel::count_at_most(sorted, values) {
        return counts;
    }
    let [_, u] = values.dims();
    let columns = (0..u)
        .map(|j| {
            values
                .clone()
                .narrow(1, j, 1)
                .greater_equal(sorted.clone())
                .int()
                .sum_dim(1)
        })
        .collect();
    Tensor::cat(columns, 1)
}

/// The median depth of each ray, `[R, 1]`: the midpoint of the first sample where the accumulated
/// weight reaches 0.5 (`DepthRenderer(method="median")`, `searchsorted(..., side="left")`).
pub fn median_depth<B: Backend>(samples: &RaySamples<B>, weights: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rays, n] = weights.dims();
    let accumulated = cumsum_rows(weights);
    let index = accumulated
        .lower_elem(0.5)
        .int()
        .sum_dim(1)
        .clamp(0, n as i64 - 1)
        .reshape([rays, 1]);
    samples.midpoints().gather(1, index)
}
