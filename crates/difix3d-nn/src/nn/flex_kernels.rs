//! Inference kernels for the CPU backend (burn-flex) where its generic ops are slow: convolution
//! (optionally with a ResNet residual), GroupNorm with the SiLU that follows it, linear layers,
//! GEGLU, attention and nearest upsampling (BENCHMARKS.md has each one's measurement against
//! burn-flex and torch). Each entry point takes and returns burn tensors of
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
//! 128-256 channels that traffic cost 20-40% of the convolution.) Small images, with too few
//! columns to share out in tiles (the UNet's latents), instead copy the k² shifted windows into
//! one matrix [c_in · k², columns] and make a single product with the weights as they lie: k²
//! products of a few hundred columns each ran at a third of gemm's rate there.
//!
//! A stride-s convolution is the same after splitting the padded input into its s² phases (phase
//! (a, b) holds padded pixels (s·u + a, s·v + b)): tap (i, j) reads phase (i mod s, j mod s)
//! shifted by (i / s, j / s), so it too is k² shifted matrix products, on images s² times
//! smaller (the downsampling convolutions of the VAE encoder and the UNet).
//!
//! Everything else (groups, dilation, unequal strides, 1x1, other backends, autodiff) goes through
//! burn's own `conv2d`, except on wgpu, where [`conv2d`] hands the convolutions of 64 channels or
//! more that [`super::tap_conv`] computes the same way, in burn's tensor ops, to it.
//!
//! **GroupNorm (+ SiLU).** burn's `GroupNorm` is seven whole-tensor passes (sum, subtract, square,
//! sum, divide, scale, shift), each writing a new tensor, and the SiLU after it two more; at the
//! VAE's 128 channels x 256² each pass is a 33 MB tensor. [`group_norm`] reads each group twice
//! (mean, then variance about it, both summed in f64) and writes once, normalised, scaled, shifted
//! and optionally through SiLU, in parallel over (image, group).

use std::any::TypeId;

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::backend::{is_wgpu_backend, retype};
use super::tap_conv;

/// `conv.forward(x)`, through [`shifted_conv`] where that applies.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    conv2d_fused(conv, x, None)
}

/// `residual + conv.forward(x)` (a ResNet block's output), the addition done in the convolution's
/// last pass where [`shifted_conv`] applies instead of as a pass of its own over the whole image.
pub fn conv2d_plus<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, residual: Tensor<B, 4>) -> Tensor<B, 4> {
    conv2d_fused(conv, x, Some(residual))
}

fn conv2d_fused<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, residual: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    let generic = |x: Tensor<B, 4>, residual: Option<Tensor<B, 4>>| match residual {
        Some(r) => r + conv.forward(x),
        None => conv.forward(x),
    };
    if is_wgpu_backend::<B>() && tap_conv::applies(conv) {
        if let Some(limits) = tap_conv::device_limits(&x) {
            return tap_conv::conv2d(conv, x, residual, limits);
        }
    }
    if !is_flex::<B>() || !applies(conv) {
        return generic(x, residual);
    }
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return generic(x, residual);
    };
    let weight = to_flex::<B, _>(conv.weight.val()).to_contiguous();
    let bias = conv.bias.as_ref().map(|b| to_flex::<B, _>(b.val()).to_contiguous());
    let input = to_flex::<B, _>(x).to_contiguous();
    let bias_f32 = bias.as_ref().is_none_or(|b| b.as_slice::<f32>().is_some());
    let (Some(w), Some(xs), true) = (weight.as_slice::<f32>(), input.as_slice::<f32>(), bias_f32) else {
        // Not f32 (the backend's float type is f32; kept for safety): burn's kernel.
        return generic(from_flex::<B, 4>(input), residual);
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
        stride: conv.stride[0],
    };
    let (oh, ow) = geometry.output_size();
    let residual = match residual {
        Some(r) if r.dims() == [batch, c_out, oh, ow] => {
            let r = to_flex::<B, 4>(r).to_contiguous();
            if r.as_slice::<f32>().is_none() {
                return generic(from_flex::<B, 4>(input), Some(from_flex::<B, 4>(r)));
            }
            Some(r)
        }
        // A shape mismatch: burn's broadcasting add decides (or reports it).
        Some(r) => return generic(from_flex::<B, 4>(input), Some(r)),
        None => None,
    };
    let residual = residual.as_ref().and_then(|r| r.as_slice::<f32>());
    let (per_image, per_output) = (c_in * h * width, c_out * oh * ow);
    let image = |b: usize| {
        let r = residual.map(|r| &r[b * per_output..(b + 1) * per_output]);
        shifted_conv(&xs[b * per_image..(b + 1) * per_image], w, bias, r, &geometry)
    };
    let out = if batch == 1 {
        image(0)
    } else {
        let mut out = Vec::with_capacity(batch * per_output);
        for b in 0..batch {
            out.extend(image(b));
        }
        out
    };
    output::<B, 4>(out, [batch, c_out, oh, ow])
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
    if !is_flex::<B>() || D < 2 {
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
            let mean = lanes::sum(src) / n;
            let var = lanes::squared_deviation(src, mean) / n;
            let inv = 1.0 / (var + norm.epsilon).sqrt();
            let first_channel = (index % groups) * (channels / groups);
            for (c, (d, s)) in dst.chunks_mut(plane.max(1)).zip(src.chunks(plane.max(1))).enumerate() {
                let channel = first_channel + c;
                let scale = inv * gamma.map_or(1.0, |g| g[channel] as f64);
                let shift = (beta.map_or(0.0, |b| b[channel] as f64) - mean * scale) as f32;
                lanes::scale_shift(s, d, scale as f32, shift, silu);
            }
        });
    output::<B, D>(out, shape)
}

/// `lin.forward(x)`: one gemm with the bias as its starting value. burn's `Linear` on burn-flex runs
/// a batched matmul (~95 GFLOP/s here against gemm's ~200 on the UNet's shapes) and adds the bias
/// in a second pass.
pub fn linear<B: Backend, const D: usize>(lin: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    if !is_flex::<B>() || D < 2 {
        return lin.forward(x);
    }
    let weight = lin.weight.val();
    let bias = lin.bias.as_ref().map(|b| b.val().unsqueeze_dim::<2>(0));
    match products(to_flex::<B, D>(x), &weight, bias.as_ref(), false) {
        Ok(y) => from_flex::<B, D>(y),
        Err(x) => lin.forward(from_flex::<B, D>(x)),
    }
}

/// `x · weight + bias`, through a ReLU when `relu`, for `x` `[N, in]`, `weight` `[in, out]` and
/// `bias` `[G, out]`, whose row `g` is added to the `N / G` consecutive rows of group `g`
/// (`nn::linear`'s layers: nerfacto's MLPs at inference); `None` where `B` is not [`Flex`] or the
/// tensors are not f32. One gemm into the bias rows, then the ReLU in place: burn-flex's
/// `linear` is a matmul, a bias pass and a ReLU pass, and a grouped bias a repeated copy as well.
pub fn linear_rows<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 2>>,
    relu: bool,
) -> Option<Tensor<B, 2>> {
    if !is_flex::<B>() {
        return None;
    }
    products(to_flex::<B, 2>(x.clone()), weight, bias, relu)
        .ok()
        .map(from_flex::<B, 2>)
}

/// `x · weight (+ bias by groups of rows)`, optionally through a ReLU, for a Flex `x` of rank `D`
/// (a 3-D input read in place whatever its strides); `Err(x)` for what this does not cover (not
/// f32, or shapes that do not fit, which burn's own op then reports).
pub(super) fn products<B: Backend>(
    input: FlexTensor,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 2>>,
    relu: bool,
) -> Result<FlexTensor, FlexTensor> {
    let d = input.layout().shape().num_dims();
    if d < 2 {
        return Err(input);
    }
    // A 3-D input is read in place whatever its strides (the UNet's tokens arrive transposed from
    // the image layout; copying them was a single-threaded strided pass), anything else contiguous.
    let input = if d == 3 && input.dtype() == DType::F32 && input.layout().has_positive_strides() {
        input
    } else {
        input.to_contiguous()
    };
    let weight = to_flex::<B, 2>(weight.clone());
    let bias = bias.map(|b| to_flex::<B, 2>(b.clone()).to_contiguous());
    let shape = input.layout().shape().to_vec();
    let [d_in, d_out] = [weight.layout().shape()[0], weight.layout().shape()[1]];
    let rows = shape[..d - 1].iter().product::<usize>();
    let bias_values = match &bias {
        Some(b) => match b.as_slice::<f32>() {
            Some(v) if b.layout().shape()[1] == d_out && b.layout().shape()[0] > 0 => Some(v),
            _ => return Err(input),
        },
        None => None,
    };
    let groups = bias_values.map_or(1, |v| v.len() / d_out.max(1));
    if input.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || !weight.layout().has_positive_strides()
        || shape[d - 1] != d_in
        || !rows.is_multiple_of(groups)
    {
        return Err(input);
    }
    // [batches, rows per batch, d_in] and its strides.
    let (batches, batch_rows, [s_batch, s_row, s_col]) = if d == 3 {
        let s = input.layout().strides();
        (shape[0], shape[1], [s[0], s[1], s[2]])
    } else {
        (1, rows, [0, d_in as isize, 1])
    };
    let (xs, w) = (strided(&input), strided(&weight));
    let (w_rs, w_cs) = (weight.layout().strides()[0], weight.layout().strides()[1]);
    let mut out = vec![0.0f32; rows * d_out];
    if let (Some(b), true) = (bias_values, d_out > 0) {
        let rows_per_group = rows / groups;
        out.par_chunks_mut(d_out).enumerate().for_each(|(r, row)| {
            let g = r / rows_per_group;
            row.copy_from_slice(&b[g * d_out..(g + 1) * d_out]);
        });
    }
    if batch_rows > 0 && d_out > 0 && d_in > 0 {
        for batch in 0..batches {
            // SAFETY: dst is batch `batch`'s [batch_rows, d_out] row-major block of out; lhs
            // element (r, k) is the input's (batch, r, k), and rhs element (k, j) is
            // w[k·w_rs + j·w_cs]: both inside their storage from its offset, as the layouts have
            // positive strides and these shapes.
            unsafe {
                gemm::gemm(
                    batch_rows,
                    d_out,
                    d_in,
                    out.as_mut_ptr().add(batch * batch_rows * d_out),
                    1,
                    d_out as isize,
                    bias.is_some(),
                    xs.as_ptr().offset(batch as isize * s_batch),
                    s_col,
                    s_row,
                    w.as_ptr(),
                    w_cs,
                    w_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                );
            }
        }
    }
    if relu {
        out.par_chunks_mut(1 << 16).for_each(|chunk| {
            chunk.iter_mut().for_each(|v| *v = v.max(0.0));
        });
    }
    let mut out_shape = shape;
    out_shape[d - 1] = d_out;
    Ok(FlexTensor::from_data(TensorData::new(out, out_shape)))
}

/// `hidden · gelu(gate)` where `hidden` and `gate` are the two halves of `x`'s last axis (diffusers'
/// GEGLU; gelu with erf, as torch's default). burn-flex's `gelu` calls a scalar `erf` per element
/// and the chunk, multiply and gelu are three passes: 29 ms against torch's 0.8 ms at the UNet's
/// 1024 x 2560.
pub fn geglu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let generic = |x: Tensor<B, D>| {
        let [hidden, gate] = <[Tensor<B, D>; 2]>::try_from(x.chunk(2, D - 1)).expect("chunk(2) of an even axis");
        hidden * burn::tensor::activation::gelu(gate)
    };
    if !is_flex::<B>() || D < 1 {
        return generic(x);
    }
    let input = to_flex::<B, D>(x).to_contiguous();
    let shape = input.layout().shape().to_vec();
    let (Some(xs), true) = (input.as_slice::<f32>(), shape[D - 1].is_multiple_of(2)) else {
        return generic(from_flex::<B, D>(input));
    };
    let half = shape[D - 1] / 2;
    let mut out = vec![0.0f32; xs.len() / 2];
    if half > 0 {
        out.par_chunks_mut(half)
            .zip(xs.par_chunks(2 * half))
            .for_each(|(dst, row)| lanes::geglu(&row[..half], &row[half..], dst));
    }
    let mut out_shape = shape;
    out_shape[D - 1] = half;
    output::<B, D>(out, out_shape)
}

/// Query rows per task of [`attention_merged`]: a task's score block is this many rows of every key.
const ATTENTION_ROWS: usize = 128;

/// softmax(q kᵀ / √d) v for q [b, h, n, d], k and v [b, h, m, d] (any strides), without a mask,
/// with the heads merged back: [b, n, h·d] (what `layers::merge_heads` of the [b, h, n, d] result
/// gives). `None` when the backend is not [`Flex`] or the tensors are not f32 with positive
/// strides: the caller's generic attention applies.
///
/// Per (image, head, block of query rows): one gemm for the scores, a softmax over each row, one
/// gemm writing straight into the merged layout, the blocks in parallel. burn-flex's tiled kernel
/// took 39 ms against torch's 10 ms at the UNet's 5 heads x 1024 tokens, and merging its output
/// was a single-threaded strided copy.
pub fn attention_merged<B: Backend>(q: &Tensor<B, 4>, k: &Tensor<B, 4>, v: &Tensor<B, 4>) -> Option<Tensor<B, 3>> {
    if !is_flex::<B>() {
        return None;
    }
    let (q, k, v) = (
        to_flex::<B, 4>(q.clone()),
        to_flex::<B, 4>(k.clone()),
        to_flex::<B, 4>(v.clone()),
    );
    let usable = |t: &FlexTensor| t.dtype() == DType::F32 && t.layout().has_positive_strides();
    let dims = |t: &FlexTensor| <[usize; 4]>::try_from(t.layout().shape().to_vec()).ok();
    let ([b, h, n, d], [kb, kh, m, kd], [vb, vh, vm, vd]) = (dims(&q)?, dims(&k)?, dims(&v)?);
    if !(usable(&q) && usable(&k) && usable(&v)) || (kb, kh, kd) != (b, h, d) || (vb, vh, vm, vd) != (b, h, m, d) {
        return None;
    }
    let mut out = vec![0.0f32; b * n * h * d];
    if m > 0 && d > 0 && n > 0 && h > 0 {
        fn view(t: &FlexTensor) -> (&[f32], [isize; 4]) {
            let s = t.layout().strides();
            (strided(t), [s[0], s[1], s[2], s[3]])
        }
        let ((qs, qst), (ks, kst), (vs, vst)) = (view(&q), view(&k), view(&v));
        let scale = 1.0 / (d as f32).sqrt();
        let out_ptr = SharedOut(out.as_mut_ptr());
        let blocks = n.div_ceil(ATTENTION_ROWS);
        (0..b * h * blocks).into_par_iter().for_each(|task| {
            let out_ptr = &out_ptr;
            let (bh, block) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let first = block * ATTENTION_ROWS;
            let rows = ATTENTION_ROWS.min(n - first);
            let q0 = bi as isize * qst[0] + hi as isize * qst[1] + first as isize * qst[2];
            let k0 = bi as isize * kst[0] + hi as isize * kst[1];
            let v0 = bi as isize * vst[0] + hi as isize * vst[1];
            let mut scores = vec![0.0f32; rows * m];
            // SAFETY: every element read is (image bi, head hi, row < n or m, column < d) of a
            // tensor with that shape and positive strides, so inside its storage from its offset;
            // scores is [rows, m] row-major; the output block is rows first..first + rows, columns
            // hi·d..(hi + 1)·d of image bi's [n, h·d], which no other task writes.
            unsafe {
                gemm::gemm(
                    rows,
                    m,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    m as isize,
                    false,
                    qs.as_ptr().offset(q0),
                    qst[3],
                    qst[2],
                    ks.as_ptr().offset(k0),
                    kst[2],
                    kst[3],
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            scores.chunks_mut(m).for_each(lanes::softmax);
            unsafe {
                gemm::gemm(
                    rows,
                    d,
                    m,
                    out_ptr.0.add((bi * n + first) * h * d + hi * d),
                    1,
                    (h * d) as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    m as isize,
                    vs.as_ptr().offset(v0),
                    vst[3],
                    vst[2],
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    }
    Some(output::<B, 3>(out, [b, n, h * d]))
}

/// Nearest-neighbour resize with PyTorch's legacy index rule `src = floor(dst · in / out)`, as a
/// parallel copy per channel; `None` when the backend is not [`Flex`] (burn-flex's gathers, which
/// `layers::resize_nearest` falls back to, are single-threaded).
pub fn resize_nearest<B: Backend>(x: &Tensor<B, 4>, height: usize, width: usize) -> Option<Tensor<B, 4>> {
    if !is_flex::<B>() {
        return None;
    }
    let input = to_flex::<B, 4>(x.clone()).to_contiguous();
    let xs = input.as_slice::<f32>()?;
    let [b, c, h, w] = <[usize; 4]>::try_from(input.layout().shape().to_vec()).ok()?;
    let columns: Vec<usize> = (0..width).map(|x| x * w / width).collect();
    let mut out = vec![0.0f32; b * c * height * width];
    if h > 0 && w > 0 && height > 0 && width > 0 {
        out.par_chunks_mut(height * width)
            .zip(xs.par_chunks(h * w))
            .for_each(|(dst, src)| {
                for (y, row) in dst.chunks_mut(width).enumerate() {
                    let from = &src[(y * h / height) * w..];
                    for (o, &x) in row.iter_mut().zip(&columns) {
                        *o = from[x];
                    }
                }
            });
    }
    Some(output::<B, 4>(out, [b, c, height, width]))
}

/// The element-wise loops of these kernels, written so the compiler vectorises them (independent
/// lanes, no calls), each compiled for the baseline x86-64 the binary targets and for AVX2 + FMA,
/// the one picked at run time ([`multiversion`](crate::nn::multiversion)).
mod lanes {
    use crate::nn::multiversion::multiversion;

    const LANES: usize = 8;

    multiversion! {
        /// Σ x in f64, over independent partial sums.
        pub fn sum(x: &[f32]) -> f64 {
            let mut acc = [0.0f64; LANES];
            let chunks = x.chunks_exact(LANES);
            let rest = chunks.remainder().iter().map(|&v| v as f64).sum::<f64>();
            for c in chunks {
                for (a, &v) in acc.iter_mut().zip(c) {
                    *a += v as f64;
                }
            }
            acc.iter().sum::<f64>() + rest
        }
    }

    multiversion! {
        /// Σ (x - mean)² in f64, over independent partial sums.
        pub fn squared_deviation(x: &[f32], mean: f64) -> f64 {
            let mut acc = [0.0f64; LANES];
            let chunks = x.chunks_exact(LANES);
            let rest = chunks.remainder().iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
            for c in chunks {
                for (a, &v) in acc.iter_mut().zip(c) {
                    let d = v as f64 - mean;
                    *a += d * d;
                }
            }
            acc.iter().sum::<f64>() + rest
        }
    }

    multiversion! {
        /// `dst = x · scale + shift`, through SiLU when `silu`.
        pub fn scale_shift(x: &[f32], dst: &mut [f32], scale: f32, shift: f32, silu: bool) {
            if silu {
                for (o, &v) in dst.iter_mut().zip(x) {
                    let y = v * scale + shift;
                    *o = y / (1.0 + exp(-y));
                }
            } else {
                for (o, &v) in dst.iter_mut().zip(x) {
                    *o = v * scale + shift;
                }
            }
        }
    }

    multiversion! {
        /// `dst = hidden · gelu(gate)`, gelu(g) = g/2 · (1 + erf(g/√2)).
        pub fn geglu(hidden: &[f32], gate: &[f32], dst: &mut [f32]) {
            for ((o, &h), &g) in dst.iter_mut().zip(hidden).zip(gate) {
                *o = h * 0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }

    multiversion! {
        /// softmax of one row, in place.
        pub fn softmax(row: &mut [f32]) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut total = 0.0f32;
            for v in row.iter_mut() {
                *v = exp(*v - max);
                total += *v;
            }
            let inv = 1.0 / total;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }

    /// eˣ to about 1 ulp (Cephes' `expf`: x = n ln 2 + r, a degree-6 polynomial in r), branch-free;
    /// x is clamped to [-87, 88], where eˣ is a normal f32.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        let x = x.clamp(-87.0, 88.0);
        // Round x·log2(e) to the nearest integer (|value| < 2²² here).
        const ROUND: f32 = 12_582_912.0;
        let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let mut p = 1.987_569_1e-4f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 0.166_666_65;
        p = p * r + 0.5;
        let e = p * r * r + r + 1.0;
        e * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// erf(x) with an absolute error below 2e-7 (Abramowitz and Stegun 7.1.26), branch-free.
    #[inline(always)]
    pub fn erf(x: f32) -> f32 {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t + 0.254_829_6) * t;
        (1.0 - poly * exp(-a * a)).copysign(x)
    }
}

/// What [`shifted_conv`] handles: the same stride both ways, no dilation, one group, a kernel
/// larger than 1x1 (1x1 is already a single gemm in burn-flex) and explicit padding, on f32
/// weights.
fn applies<B: Backend>(conv: &Conv2d<B>) -> bool {
    conv.stride[0] == conv.stride[1]
        && conv.stride[0] >= 1
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
    /// The same both ways; at least 1.
    pub stride: usize,
}

impl Geometry {
    fn padded(&self) -> (usize, usize) {
        (self.h + self.pad[0] + self.pad[2], self.w + self.pad[1] + self.pad[3])
    }

    /// The size of one phase of the padded image: (padded + stride - 1) / stride each way.
    fn phase(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        (hp.div_ceil(self.stride), wp.div_ceil(self.stride))
    }

    pub fn output_size(&self) -> (usize, usize) {
        let (hp, wp) = self.padded();
        let along = |padded: usize, k: usize| if padded < k { 0 } else { (padded - k) / self.stride + 1 };
        (along(hp, self.kh), along(wp, self.kw))
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

/// One image `x` [c_in, h, w] convolved with `weight` [c_out, c_in, kh, kw] plus `bias` and
/// `residual` [c_out, oh, ow]: [c_out, oh, ow], row-major.
pub fn shifted_conv(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: &Geometry,
) -> Vec<f32> {
    let s = g.stride;
    let (oh, ow) = g.output_size();
    if oh == 0 || ow == 0 {
        return Vec::new();
    }
    // Phase (a, b) of each channel's padded image (padded pixels (s·u + a, s·v + b); with stride 1
    // the padded image itself), flattened, with (kw - 1) / s spare zeros so the last tap's window
    // of the last output row stays inside it. Laid out [phase][channel][plane], so a tap's
    // right-hand side is [c_in, columns] with row stride `plane`.
    let (hq, wq) = g.phase();
    let plane = hq * wq + (g.kw - 1) / s;
    let mut phases = vec![0.0f32; s * s * g.c_in * plane];
    phases.par_chunks_mut(plane).enumerate().for_each(|(k, dst)| {
        let (phase, c) = (k / g.c_in, k % g.c_in);
        let (a, b) = (phase / s, phase % s);
        for u in 0..hq {
            // Padded row s·u + a is input row s·u + a - top, where that is inside the image.
            let Some(y) = (s * u + a).checked_sub(g.pad[0]).filter(|&y| y < g.h) else {
                continue;
            };
            let src = &x[(c * g.h + y) * g.w..(c * g.h + y + 1) * g.w];
            let row = &mut dst[u * wq..(u + 1) * wq];
            if s == 1 {
                row[g.pad[1]..g.pad[1] + g.w].copy_from_slice(src);
            } else {
                for (v, d) in row.iter_mut().enumerate() {
                    if let Some(&value) = (s * v + b).checked_sub(g.pad[1]).and_then(|x| src.get(x)) {
                        *d = value;
                    }
                }
            }
        }
    });
    let n = oh * wq;
    // The tap (i, j) of the kernel: where its right-hand side starts among the phases (the phase's
    // offset plus the shift (i / s, j / s)).
    let tap_start = |i: usize, j: usize| ((i % s) * s + j % s) * g.c_in * plane + (i / s) * wq + j / s;
    let mut wide = vec![0.0f32; g.c_out * n];
    // Column tiles in parallel when there are enough to share out (the VAE's full-resolution
    // layers). Otherwise (the UNet's 4x4 to 32x32 latents at 320-2560 input channels) one matrix
    // product over every tap at once, each gemm using every thread: there, k² products with only
    // a few hundred columns each ran at a third of gemm's rate (1280 ch at 4²: 16 vs 6 ms).
    let threads = rayon::current_num_threads().max(1);
    if n.div_ceil(COLUMN_TILE) >= 2 * threads {
        tiled_products(weight, &phases, &mut wide, g, n, plane, tap_start);
    } else {
        // The right-hand side [c_in · k², n]: row c · k² + t holds tap t's window of channel c, so
        // the weights [c_out, c_in, kh, kw] are its left-hand side [c_out, c_in · k²] as they are.
        let taps = g.kh * g.kw;
        let mut columns = vec![0.0f32; g.c_in * taps * n];
        columns.par_chunks_mut(taps * n).enumerate().for_each(|(c, dst)| {
            for (t, row) in dst.chunks_mut(n).enumerate() {
                // In bounds: see `tiled_products`' SAFETY note on the last element of a window.
                let start = tap_start(t / g.kw, t % g.kw) + c * plane;
                row.copy_from_slice(&phases[start..start + n]);
            }
        });
        let k = g.c_in * taps;
        // SAFETY: dst [c_out, n], lhs [c_out, k] and rhs [k, n], all row-major and contiguous, are
        // exactly `wide`, `weight` and `columns`.
        unsafe {
            gemm::gemm(
                g.c_out,
                n,
                k,
                wide.as_mut_ptr(),
                1,
                n as isize,
                false,
                weight.as_ptr(),
                1,
                k as isize,
                columns.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
    }
    // Drop the wq - ow extra columns of each row and add the bias, then the residual.
    let mut out = vec![0.0f32; g.c_out * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(c, dst)| {
        let b = bias.map_or(0.0, |b| b[c]);
        for y in 0..oh {
            let src = &wide[c * n + y * wq..c * n + y * wq + ow];
            let row = &mut dst[y * ow..(y + 1) * ow];
            match residual {
                Some(r) => {
                    let r = &r[c * oh * ow + y * ow..c * oh * ow + (y + 1) * ow];
                    for ((d, s), r) in row.iter_mut().zip(src).zip(r) {
                        *d = r + (s + b);
                    }
                }
                None => {
                    for (d, s) in row.iter_mut().zip(src) {
                        *d = s + b;
                    }
                }
            }
        }
    });
    out
}

/// `wide` [c_out, n] = the sum over taps of tap (i, j)'s weights [c_out, c_in] times its window of
/// the phases ([c_in, n], row stride `plane`, starting at `tap_start(i, j)`), in column tiles of
/// about [`COLUMN_TILE`], one rayon task each: a tile's k² single-threaded products accumulate into
/// the same block while it is in cache.
fn tiled_products(
    weight: &[f32],
    phases: &[f32],
    wide: &mut [f32],
    g: &Geometry,
    n: usize,
    plane: usize,
    tap_start: impl Fn(usize, usize) -> usize + Sync,
) {
    let threads = rayon::current_num_threads().max(1);
    // About COLUMN_TILE columns each, as many tiles as a multiple of the thread count, so no
    // thread idles at the end (e.g. 4224 columns at 512 ch, 64²: 10 tiles of 432, not 9 of 512).
    let tiles = n.div_ceil(COLUMN_TILE).next_multiple_of(threads);
    let tile_len = n.div_ceil(tiles).next_multiple_of(16);
    // Each tap's [c_out, c_in] weights as a contiguous copy: gemm packs a contiguous matrix faster
    // than one with a column stride of k², once per tile and tap.
    let taps = g.kh * g.kw;
    let mut tap_weights = vec![0.0f32; taps * g.c_out * g.c_in];
    tap_weights
        .par_chunks_mut(g.c_out * g.c_in)
        .enumerate()
        .for_each(|(tap, dst)| {
            for (d, s) in dst.iter_mut().zip(weight[tap..].iter().step_by(taps)) {
                *d = *s;
            }
        });
    let wide_ptr = SharedOut(wide.as_mut_ptr());
    let one_tile = |tile: usize| {
        let wide_ptr = &wide_ptr;
        let first = tile * tile_len;
        let columns = tile_len.min(n - first);
        for i in 0..g.kh {
            for j in 0..g.kw {
                let tap = i * g.kw + j;
                // SAFETY: dst is columns [first, first + columns) of [c_out, n] row-major (row
                // stride n), which no other tile writes; lhs is tap (i, j)'s contiguous
                // [c_out, c_in]; rhs is [c_in, columns] of the tap's phase starting at its shift
                // plus `first`, row stride `plane`: its last element within the phase,
                // (c_in - 1)·plane + (i/s)·wq + j/s + n - 1, is below c_in·plane because
                // (i/s + oh)·wq + j/s <= ((kh-1)/s + oh)·wq + (kw-1)/s <= hq·wq + (kw-1)/s = plane
                // (oh = (hp - kh)/s + 1, so (kh-1)/s + oh <= (hp-1)/s + 1 = hq).
                unsafe {
                    gemm::gemm(
                        g.c_out,
                        columns,
                        g.c_in,
                        wide_ptr.0.add(first),
                        1,
                        n as isize,
                        tap > 0,
                        tap_weights.as_ptr().add(tap * g.c_out * g.c_in),
                        1,
                        g.c_in as isize,
                        phases.as_ptr().add(tap_start(i, j) + first),
                        1,
                        plane as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        }
    };
    (0..n.div_ceil(tile_len)).into_par_iter().for_each(one_tile);
}

/// Whether `B` is the CPU backend these kernels run on (not under autodiff, whose type differs).
fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// An f32 tensor's storage from its first element on, to be read through its layout's strides.
fn strided(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[t.layout().start_offset()..]
}

/// A kernel's result, `values` row-major in `shape`, as a tensor of `B` (= [`Flex`]).
fn output<B: Backend, const D: usize>(values: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> Tensor<B, D> {
    from_flex::<B, D>(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// `t`'s primitive as a [`FlexTensor`]; only called when `B` is [`Flex`].
fn to_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    retype::<B, Flex, D>(t).expect("B is Flex").into_primitive().tensor()
}

fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    retype::<Flex, B, D>(Tensor::from_primitive(TensorPrimitive::Float(t))).expect("B is Flex")
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

    /// Against burn's `Linear` on Flex: with and without bias, 2-D and 3-D inputs, and a weight
    /// stored transposed (a strided view, as `Loader` may make).
    #[test]
    fn linear_equals_burns() {
        use burn::nn::LinearConfig;
        let device = Default::default();
        for bias in [true, false] {
            let mut lin = LinearConfig::new(7, 5).with_bias(bias).init::<Flex>(&device);
            if let Some(b) = lin.bias.take() {
                lin.bias = Some(b.map(|_| Tensor::random([5], Distribution::Normal(0.0, 1.0), &device)));
            }
            let x3 = Tensor::<Flex, 3>::random([2, 3, 7], Distribution::Normal(0.0, 1.0), &device);
            let diff: f32 = (linear(&lin, x3.clone()) - lin.forward(x3)).abs().max().into_scalar();
            assert!(diff < 1e-5, "bias={bias}: {diff}");
            // Tokens transposed from an image layout, read in place.
            let tokens = Tensor::<Flex, 3>::random([2, 7, 3], Distribution::Normal(0.0, 1.0), &device).swap_dims(1, 2);
            let diff: f32 = (linear(&lin, tokens.clone()) - lin.forward(tokens))
                .abs()
                .max()
                .into_scalar();
            assert!(diff < 1e-5, "transposed bias={bias}: {diff}");
            let x2 = Tensor::<Flex, 2>::random([4, 7], Distribution::Normal(0.0, 1.0), &device);
            let diff: f32 = (linear(&lin, x2.clone()) - lin.forward(x2.clone()))
                .abs()
                .max()
                .into_scalar();
            assert!(diff < 1e-5, "2-D bias={bias}: {diff}");
            let transposed = Tensor::<Flex, 2>::random([5, 7], Distribution::Normal(0.0, 1.0), &device).transpose();
            lin.weight = lin.weight.map(|_| transposed.clone());
            let diff: f32 = (linear(&lin, x2.clone()) - lin.forward(x2)).abs().max().into_scalar();
            assert!(diff < 1e-5, "strided weight bias={bias}: {diff}");
        }
    }

    /// Against burn's matmul, bias (one row, or a row per group of rows) and ReLU on Flex.
    #[test]
    fn linear_rows_equals_burns() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<Flex, 2>::random([12, 7], normal, &device);
        let weight = Tensor::<Flex, 2>::random([7, 5], normal, &device);
        for groups in [1, 3, 12] {
            let bias = Tensor::<Flex, 2>::random([groups, 5], normal, &device);
            let repeated = bias
                .clone()
                .reshape([groups, 1, 5])
                .expand([groups, 12 / groups, 5])
                .reshape([12, 5]);
            let plain = x.clone().matmul(weight.clone()) + repeated;
            for relu in [false, true] {
                let expected = if relu {
                    burn::tensor::activation::relu(plain.clone())
                } else {
                    plain.clone()
                };
                let got = linear_rows(&x, &weight, Some(&bias), relu).expect("Flex f32");
                let diff: f32 = (got - expected).abs().max().into_scalar();
                assert!(diff < 1e-5, "groups {groups}, relu {relu}: {diff}");
            }
        }
        let got = linear_rows(&x, &weight.clone().transpose().transpose(), None, false).expect("Flex f32");
        let diff: f32 = (got - x.clone().matmul(weight.clone())).abs().max().into_scalar();
        assert!(diff < 1e-5, "no bias: {diff}");
        // A bias whose groups do not divide the rows, and other backends, are left to burn.
        let five = Tensor::<Flex, 2>::zeros([5, 5], &device);
        assert!(linear_rows(&x, &weight, Some(&five), false).is_none());
        type Nd = burn::backend::NdArray;
        let (nd_x, nd_w) = (
            Tensor::<Nd, 2>::zeros([2, 7], &Default::default()),
            Tensor::<Nd, 2>::zeros([7, 2], &Default::default()),
        );
        assert!(linear_rows(&nd_x, &nd_w, None, false).is_none());
    }

    /// Against burn's chunk + gelu (erf) + multiply on Flex, over values where erf's tails matter.
    #[test]
    fn geglu_equals_burns() {
        let device = Default::default();
        let x = Tensor::<Flex, 3>::random([2, 5, 2 * 300], Distribution::Normal(0.0, 3.0), &device);
        let [hidden, gate] = <[Tensor<Flex, 3>; 2]>::try_from(x.clone().chunk(2, 2)).unwrap();
        let want = hidden * burn::tensor::activation::gelu(gate);
        let got = geglu(x);
        assert_eq!(got.dims(), [2, 5, 300]);
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }

    /// Against burn's attention on Flex: self- and cross-attention, transposed (strided) inputs as
    /// `split_heads` makes them, and more query rows than one block.
    #[test]
    fn attention_equals_burns() {
        let device = Default::default();
        for (n, m) in [(7, 7), (300, 77), (1, 3)] {
            let q = Tensor::<Flex, 4>::random([2, n, 3, 16], Distribution::Normal(0.0, 1.0), &device).swap_dims(1, 2);
            let k = Tensor::<Flex, 4>::random([2, m, 3, 16], Distribution::Normal(0.0, 1.0), &device).swap_dims(1, 2);
            let v = Tensor::<Flex, 4>::random([2, 3, m, 16], Distribution::Normal(0.0, 1.0), &device);
            let want = burn::tensor::module::attention(q.clone(), k.clone(), v.clone(), None, None, Default::default())
                .swap_dims(1, 2)
                .reshape([2, n, 3 * 16]);
            let got = attention_merged(&q, &k, &v).expect("Flex, f32, positive strides");
            assert_eq!(got.dims(), want.dims());
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "n={n} m={m}: {diff}");
        }
    }

    /// The vector `exp` against the standard library's, relative error, over its whole range.
    #[test]
    fn lane_exp_is_accurate() {
        let worst = (-86_999..88_000)
            .map(|i| i as f32 * 1e-3)
            .map(|x| ((lanes::exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "{worst}");
    }

    /// Against burn's gathers with torch's index rule `src = floor(dst * in / out)`: up, down and
    /// uneven factors.
    #[test]
    fn resize_nearest_equals_gathers() {
        use burn::tensor::Int;
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let index = |out: usize, inp: usize| {
            let idx: Vec<i64> = (0..out).map(|i| ((i * inp) / out) as i64).collect();
            Tensor::<Flex, 1, Int>::from_data(TensorData::new(idx, [out]), &device)
        };
        for (height, width) in [(10, 14), (3, 4), (7, 9)] {
            let got = resize_nearest(&x, height, width).expect("Flex");
            let want = x.clone().select(2, index(height, 5)).select(3, index(width, 7));
            assert_eq!(
                got.to_data().to_vec::<f32>().unwrap(),
                want.to_data().to_vec::<f32>().unwrap()
            );
        }
    }

    /// `conv2d_plus` adds the residual exactly as `residual + conv2d(x)` does.
    #[test]
    fn fused_residual_equals_the_sum() {
        let device = Default::default();
        let conv = Conv2dConfig::new([4, 6], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<Flex>(&device);
        let x = Tensor::<Flex, 4>::random([2, 4, 33, 40], Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<Flex, 4>::random([2, 6, 33, 40], Distribution::Normal(0.0, 1.0), &device);
        let want = r.clone() + conv2d(&conv, x.clone());
        let got = conv2d_plus(&conv, x, r);
        assert_eq!(
            got.to_data().to_vec::<f32>().unwrap(),
            want.to_data().to_vec::<f32>().unwrap()
        );
    }

    /// Against burn-flex's own convolution: square and asymmetric padding, 3x3 and 3x2 kernels,
    /// strides 1 to 3, odd sizes, two images, with and without bias.
    #[test]
    fn equals_burns_convolution() {
        let device = Default::default();
        // With two threads (this machine and CI) the 41 x 41 case (41 x 43 = 1763 output
        // columns with the padded row width) and the stride-2 90 x 84 case (45 x 43) run as
        // column tiles, the others as one product over all taps. The stride-2 cases with padding
        // (0, 0, 1, 1) are the VAE encoder's downsampling.
        for (kernel, padding, stride, bias, [h, w]) in [
            ([3, 3], PaddingConfig2d::Explicit(1, 1, 1, 1), 1, true, [9, 6]),
            ([3, 3], PaddingConfig2d::Explicit(0, 1, 2, 0), 1, false, [9, 6]),
            ([3, 2], PaddingConfig2d::Explicit(2, 0, 1, 1), 1, true, [9, 6]),
            ([3, 3], PaddingConfig2d::Explicit(1, 1, 1, 1), 1, true, [41, 41]),
            ([3, 3], PaddingConfig2d::Explicit(0, 0, 1, 1), 2, true, [9, 6]),
            ([3, 3], PaddingConfig2d::Explicit(0, 0, 1, 1), 2, true, [64, 64]),
            ([3, 3], PaddingConfig2d::Explicit(0, 0, 1, 1), 2, false, [90, 84]),
            ([3, 3], PaddingConfig2d::Explicit(1, 1, 1, 1), 2, false, [10, 7]),
            ([3, 2], PaddingConfig2d::Explicit(2, 0, 1, 1), 3, true, [11, 8]),
            ([4, 4], PaddingConfig2d::Explicit(1, 2, 0, 1), 2, true, [13, 9]),
        ] {
            let conv = Conv2dConfig::new([5, 7], kernel)
                .with_padding(padding.clone())
                .with_stride([stride, stride])
                .with_bias(bias)
                .init::<Flex>(&device);
            assert!(applies(&conv));
            let x = Tensor::<Flex, 4>::random([2, 5, h, w], Distribution::Normal(0.0, 1.0), &device);
            let want = conv.forward(x.clone());
            let got = conv2d(&conv, x);
            let case = format!("{kernel:?} {padding:?} stride {stride} {h}x{w}");
            assert_eq!(got.dims(), want.dims(), "{case}");
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "{case}: {diff}");
        }
    }
}
