//! Inference kernels for the CPU backend (burn-flex) where its generic ops are slow: convolution,
//! and GroupNorm with the SiLU that follows it. Each entry point takes and returns burn tensors of
//! any backend and does the fast thing only when the backend is [`Flex`] (not under autodiff, whose
//! backend type differs), so the layers call them unconditionally.
//!
//! **Convolution.** burn-flex runs every convolution as im2col + gemm per 512-pixel tile: each call re-lays out the
//! weights, transposes the input to NHWC on one thread, builds an im2col tile per 512 pixels,
//! re-packs the whole weight matrix for every tile and scatters the result back with strided
//! writes. On the full-size Difix at 256x256 those steps cost about as much as the arithmetic.
//!
//! Here a stride-1 k x k convolution is k² matrix products on the zero-padded input flattened per
//! channel, with no im2col at all: output pixel (y, x) of kernel tap (i, j) reads padded pixel
//! (y + i, x + j), which in the flattened padded image is the output's own flat index
//! `y · W' + x` shifted by `i · W' + j` (W' the padded width). So tap (i, j) adds
//! `W[:, :, i, j] · X'[:, shift ..]` to an output laid out with the padded row width, whose last
//! k - 1 columns of each row are discarded. The output's columns are cut into tiles of 512, one
//! task each (rayon): a tile's k² single-threaded gemm calls accumulate into the same block while it
//! is in cache. (Whole-image gemm calls, one per tap, read and wrote the whole output k² times: at
//! 128-256 channels that traffic cost 20-40% of the convolution.)
//!
//! Everything else (strides, groups, dilation, 1x1, other backends, autodiff) goes through burn's
//! own `conv2d`.
//!
//! **GroupNorm (+ SiLU).** burn's `GroupNorm` is seven whole-tensor passes (sum, subtract, square,
//! sum, divide, scale, shift), each writing a new tensor, and the SiLU after it two more; at the
//! VAE's 128 channels x 256² each pass is a 33 MB tensor. [`group_norm`] reads each group twice
//! (mean, then variance about it, both summed in f64) and writes once, normalised, scaled, shifted
//! and optionally through SiLU, in parallel over (image, group).

use std::any::{Any, TypeId};

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// `conv.forward(x)`, through [`shifted_conv`] where that applies.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if TypeId::of::<B>() != TypeId::of::<Flex>() || !applies(conv) {
        return conv.forward(x);
    }
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return conv.forward(x);
    };
    let weight = to_flex::<B, _>(conv.weight.val()).to_contiguous();
    let bias = conv.bias.as_ref().map(|b| to_flex::<B, _>(b.val()).to_contiguous());
    let input = to_flex::<B, _>(x).to_contiguous();
    let bias_f32 = bias.as_ref().is_none_or(|b| b.as_slice::<f32>().is_some());
    let (Some(w), Some(xs), true) = (weight.as_slice::<f32>(), input.as_slice::<f32>(), bias_f32) else {
        // Not f32 (the backend's float type is f32; kept for safety): burn's kernel.
        return conv.forward(from_flex::<B, 4>(input));
    };
    let [batch, c_in, h, width] = <[usize; 4]>::try_from(input.layout().shape().to_vec()).expect("4-D");
    let [c_out, _, kh, kw] = <[usize; 4]>::try_from(weight.layout().shape().to_vec()).expect("4-D");
    let bias = bias.as_ref().and_then(|b| b.as_slice::<f32>());
    let geometry = Geometry {
        c_in,
        h,
        w: width,
        c_out,
        kh,
        kw,
        pad: [top, left, bottom, right],
    };
    let (oh, ow) = geometry.output_size();
    let per_image = c_in * h * width;
    let mut out = Vec::with_capacity(batch * c_out * oh * ow);
    for b in 0..batch {
        out.extend(shifted_conv(
            &xs[b * per_image..(b + 1) * per_image],
            w,
            bias,
            &geometry,
        ));
    }
    from_flex::<B, 4>(FlexTensor::from_data(TensorData::new(out, [batch, c_out, oh, ow])))
}

/// `silu(norm.forward(x))` with `silu`, else `norm.forward(x)`.
pub fn group_norm<B: Backend, const D: usize>(norm: &GroupNorm<B>, x: Tensor<B, D>, silu: bool) -> Tensor<B, D> {
    let generic = |x: Tensor<B, D>| {
        let y = norm.forward(x);
        if silu {
            burn::tensor::activation::silu(y)
        } else {
            y
        }
    };
    if TypeId::of::<B>() != TypeId::of::<Flex>() || D < 2 {
        return generic(x);
    }
    let input = to_flex::<B, D>(x).to_contiguous();
    let Some(xs) = input.as_slice::<f32>() else {
        return generic(from_flex::<B, D>(input));
    };
    let shape = input.layout().shape().to_vec();
    let channels = shape[1];
    let groups = norm.num_groups;
    if channels != norm.num_channels || groups == 0 || !channels.is_multiple_of(groups) {
        // burn's module reports the misuse.
        return generic(from_flex::<B, D>(input));
    }
    let gamma = norm.gamma.as_ref().map(|g| to_flex::<B, 1>(g.val()).to_contiguous());
    let beta = norm.beta.as_ref().map(|b| to_flex::<B, 1>(b.val()).to_contiguous());
    let f32_or_absent = |t: &Option<FlexTensor>| t.as_ref().is_none_or(|t| t.as_slice::<f32>().is_some());
    if !f32_or_absent(&gamma) || !f32_or_absent(&beta) {
        return generic(from_flex::<B, D>(input));
    }
    let gamma = gamma.as_ref().and_then(|g| g.as_slice::<f32>());
    let beta = beta.as_ref().and_then(|b| b.as_slice::<f32>());
    let plane = shape[2..].iter().product::<usize>();
    let per_group = channels / groups * plane;
    let mut out = vec![0.0f32; xs.len()];
    out.par_chunks_mut(per_group.max(1))
        .zip(xs.par_chunks(per_group.max(1)))
        .enumerate()
        .for_each(|(index, (dst, src))| {
            let n = src.len() as f64;
            let mean = src.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = src.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + norm.epsilon).sqrt();
            let first_channel = (index % groups) * (channels / groups);
            for (c, (d, s)) in dst.chunks_mut(plane.max(1)).zip(src.chunks(plane.max(1))).enumerate() {
                let channel = first_channel + c;
                let scale = inv * gamma.map_or(1.0, |g| g[channel] as f64);
                let shift = (beta.map_or(0.0, |b| b[channel] as f64) - mean * scale) as f32;
                let scale = scale as f32;
                if silu {
                    for (o, &v) in d.iter_mut().zip(s) {
                        let y = v * scale + shift;
                        *o = y / (1.0 + (-y).exp());
                    }
                } else {
                    for (o, &v) in d.iter_mut().zip(s) {
                        *o = v * scale + shift;
                    }
                }
            }
        });
    from_flex::<B, D>(FlexTensor::from_data(TensorData::new(out, shape)))
}

/// What [`shifted_conv`] handles: stride 1, no dilation, one group, a kernel larger than 1x1 (1x1
/// is already a single gemm in burn-flex) and explicit padding, on f32 weights.
fn applies<B: Backend>(conv: &Conv2d<B>) -> bool {
    conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.kernel_size != [1, 1]
        && matches!(conv.padding, PaddingConfig2d::Explicit(..))
        && conv.weight.val().dtype() == DType::F32
}

/// The sizes of one convolution (one image).
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    /// top, left, bottom, right
    pub pad: [usize; 4],
}

impl Geometry {
    fn padded(&self) -> (usize, usize) {
        (self.h + self.pad[0] + self.pad[2], self.w + self.pad[1] + self.pad[3])
    }

    pub fn output_size(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        ((hp + 1).saturating_sub(self.kh), (wp + 1).saturating_sub(self.kw))
    }
}

/// Output columns (flattened pixels) per task of [`shifted_conv`]: all k² taps of one tile
/// accumulate into the same block while it is in cache (c_out x 512 floats: 256 KiB at 128
/// channels). 256-2048 measured within noise of each other at 128-512 channels; 512 was best.
const COLUMN_TILE: usize = 512;

/// The output of [`shifted_conv`], written by several tasks, each its own columns.
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint columns (see `shifted_conv`), and the buffer outlives them.
unsafe impl Sync for SharedOut {}

/// One image `x` [c_in, h, w] convolved (stride 1) with `weight` [c_out, c_in, kh, kw] plus `bias`:
/// [c_out, oh, ow], row-major.
pub fn shifted_conv(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let (hp, wp) = g.padded();
    let (oh, ow) = g.output_size();
    if oh == 0 || ow == 0 {
        return Vec::new();
    }
    // Each channel's padded image, flattened, with kw - 1 spare zeros so the last tap's window of
    // the last output row stays inside the channel.
    let stride = hp * wp + g.kw - 1;
    let mut padded = vec![0.0f32; g.c_in * stride];
    padded.par_chunks_mut(stride).enumerate().for_each(|(c, dst)| {
        for y in 0..g.h {
            let row = (c * g.h + y) * g.w;
            let at = (y + g.pad[0]) * wp + g.pad[1];
            dst[at..at + g.w].copy_from_slice(&x[row..row + g.w]);
        }
    });
    let n = oh * wp;
    let taps = g.kh * g.kw;
    // Column tiles in parallel when there are enough to share out (the VAE's full-resolution
    // layers). Otherwise (the UNet's 8x8 to 32x32 latents at 320-1280 channels) one tile of every
    // column, each gemm using every thread: a copy of 1280² x 9 weights per call would cost more
    // than it saves there.
    let parallel_tiles = n.div_ceil(COLUMN_TILE) >= 2 * rayon::current_num_threads();
    let (tile_len, gemm_threads) = if parallel_tiles {
        (COLUMN_TILE, gemm::Parallelism::None)
    } else {
        (n, gemm::Parallelism::Rayon(0))
    };
    // Each tap's [c_out, c_in] weights: contiguous copies for the tiles (gemm packs a contiguous
    // matrix faster than one with a column stride of k², once per tile and tap), the weights in
    // place otherwise. (row stride, column stride, offset of tap t = t · tap stride).
    let tap_weights: Vec<f32>;
    let (lhs, lhs_rs, lhs_cs, tap_stride) = if parallel_tiles {
        let mut copy = vec![0.0f32; taps * g.c_out * g.c_in];
        copy.par_chunks_mut(g.c_out * g.c_in)
            .enumerate()
            .for_each(|(tap, dst)| {
                for (d, s) in dst.iter_mut().zip(weight[tap..].iter().step_by(taps)) {
                    *d = *s;
                }
            });
        tap_weights = copy;
        (tap_weights.as_slice(), g.c_in, 1, g.c_out * g.c_in)
    } else {
        (weight, g.c_in * taps, taps, 1)
    };
    let mut wide = vec![0.0f32; g.c_out * n];
    let wide_ptr = SharedOut(wide.as_mut_ptr());
    let one_tile = |tile: usize| {
        let wide_ptr = &wide_ptr;
        let first = tile * tile_len;
        let columns = tile_len.min(n - first);
        for i in 0..g.kh {
            for j in 0..g.kw {
                let tap = i * g.kw + j;
                // SAFETY: dst is columns [first, first + columns) of [c_out, n] row-major (row
                // stride n), which no other tile writes; lhs is tap (i, j)'s [c_out, c_in] inside
                // `lhs` (strides as chosen above); rhs is [c_in, columns] starting at the tap's
                // shift plus `first`, row stride `stride`: its last element,
                // (c_in - 1)·stride + i·wp + j + n - 1, is below c_in·stride because
                // i·wp + j + oh·wp <= (kh - 1 + oh)·wp + kw - 1 = hp·wp + kw - 1.
                unsafe {
                    gemm::gemm(
                        g.c_out,
                        columns,
                        g.c_in,
                        wide_ptr.0.add(first),
                        1,
                        n as isize,
                        tap > 0,
                        lhs.as_ptr().add(tap * tap_stride),
                        lhs_cs as isize,
                        lhs_rs as isize,
                        padded.as_ptr().add(i * wp + j + first),
                        1,
                        stride as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm_threads,
                    );
                }
            }
        }
    };
    let tiles = n.div_ceil(tile_len);
    if parallel_tiles {
        (0..tiles).into_par_iter().for_each(one_tile);
    } else {
        (0..tiles).for_each(one_tile);
    }
    // Drop the kw - 1 extra columns of each row and add the bias.
    let mut out = vec![0.0f32; g.c_out * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(c, dst)| {
        let b = bias.map_or(0.0, |b| b[c]);
        for y in 0..oh {
            let src = &wide[c * n + y * wp..c * n + y * wp + ow];
            for (d, s) in dst[y * ow..(y + 1) * ow].iter_mut().zip(src) {
                *d = s + b;
            }
        }
    });
    out
}

/// `t`'s primitive as a [`FlexTensor`]; only called when `B` is [`Flex`].
fn to_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    let primitive: Box<dyn Any> = Box::new(t.into_primitive().tensor());
    *primitive
        .downcast::<FlexTensor>()
        .expect("B is Flex, whose float primitive is FlexTensor")
}

fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let primitive: Box<dyn Any> = Box::new(t);
    let primitive = primitive
        .downcast::<B::FloatTensorPrimitive>()
        .expect("B is Flex, whose float primitive is FlexTensor");
    Tensor::from_primitive(TensorPrimitive::Float(*primitive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    /// Against burn's GroupNorm (+ SiLU) on Flex: affine or not, 3-D and 4-D, two images.
    #[test]
    fn group_norm_equals_burns() {
        use burn::nn::GroupNormConfig;
        let device = Default::default();
        for affine in [true, false] {
            let mut norm = GroupNormConfig::new(3, 6).with_affine(affine).init::<Flex>(&device);
            if let (Some(g), Some(b)) = (norm.gamma.take(), norm.beta.take()) {
                let shape = g.val().dims();
                norm.gamma = Some(g.map(|_| Tensor::random(shape, Distribution::Normal(1.0, 0.5), &device)));
                norm.beta = Some(b.map(|_| Tensor::random(shape, Distribution::Normal(0.0, 0.5), &device)));
            }
            for silu in [false, true] {
                let x = Tensor::<Flex, 4>::random([2, 6, 5, 7], Distribution::Normal(0.3, 2.0), &device);
                let mut want = norm.forward(x.clone());
                if silu {
                    want = burn::tensor::activation::silu(want);
                }
                let diff: f32 = (group_norm(&norm, x, silu) - want).abs().max().into_scalar();
                assert!(diff < 1e-5, "affine={affine} silu={silu}: {diff}");
                let x3 = Tensor::<Flex, 3>::random([2, 6, 11], Distribution::Normal(0.0, 1.0), &device);
                let diff: f32 = (group_norm(&norm, x3.clone(), silu)
                    - if silu {
                        burn::tensor::activation::silu(norm.forward(x3.clone()))
                    } else {
                        norm.forward(x3)
                    })
                .abs()
                .max()
                .into_scalar();
                assert!(diff < 1e-5, "3-D affine={affine} silu={silu}: {diff}");
            }
        }
    }

    /// Against burn-flex's own convolution: square and asymmetric padding, 3x3 and 3x2 kernels,
    /// odd sizes, two images, with and without bias.
    #[test]
    fn equals_burns_convolution() {
        let device = Default::default();
        // The last case has 41 x 43 = 1763 output columns with the padded row width: three full
        // column tiles and a partial one.
        for (kernel, padding, bias, [h, w]) in [
            ([3, 3], PaddingConfig2d::Explicit(1, 1, 1, 1), true, [9, 6]),
            ([3, 3], PaddingConfig2d::Explicit(0, 1, 2, 0), false, [9, 6]),
            ([3, 2], PaddingConfig2d::Explicit(2, 0, 1, 1), true, [9, 6]),
            ([3, 3], PaddingConfig2d::Explicit(1, 1, 1, 1), true, [41, 41]),
        ] {
            let conv = Conv2dConfig::new([5, 7], kernel)
                .with_padding(padding.clone())
                .with_bias(bias)
                .init::<Flex>(&device);
            assert!(applies(&conv));
            let x = Tensor::<Flex, 4>::random([2, 5, h, w], Distribution::Normal(0.0, 1.0), &device);
            let want = conv.forward(x.clone());
            let got = conv2d(&conv, x);
            assert_eq!(got.dims(), want.dims(), "{kernel:?} {padding:?}");
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "{kernel:?} {padding:?}: {diff}");
        }
    }
}
