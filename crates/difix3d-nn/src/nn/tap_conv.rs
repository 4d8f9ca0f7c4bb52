//! Convolution on the wgpu backend as one matrix product per kernel row, in burn's own tensor ops.
//!
//! burn 0.21 runs a convolution on wgpu as its direct kernel: one thread per output value looping
//! over every input channel and tap in global memory, with no tiling through shared memory. Its
//! faster kernels (implicit GEMM) need tensor-core matrix instructions that wgpu adapters do not
//! expose, and without those its autotune has only the direct kernel and a 1x1 one to pick from.
//! Matrix products, though, run on wgpu as cubek's tiled matmul. So, as the CPU kernel in
//! [`super::flex_kernels`] does, a stride-1 k x k convolution here is a sum of matrix products on
//! the zero-padded input flattened per channel: output pixel (y, x) of tap (i, j) reads padded
//! pixel (y + i, x + j), which in the flattened padded image is the output's own flat index
//! `y · W' + x` shifted by `i · W' + j` (W' the padded row length). The kernel columns' shifted
//! images (j = 0..k, copies) are stacked along the channels, and kernel row i is one product of
//! its weights [c_out, k · c_in] with that stack shifted by i whole rows: a view, not a copy, because
//! W' is rounded up so that a row is a multiple of the device's buffer offset alignment. The output
//! has the padded row length; its extra columns are cut off at the end. A stride-s convolution is
//! the same on the s² phases of the padded input (phase (a, b) holds padded pixels
//! (s·u + a, s·v + b)): tap (i, j) reads phase (i mod s, j mod s) shifted by (i / s, j / s).
//!
//! Convolutions with fewer than [`MIN_CHANNELS`] input channels stay with burn's direct kernel: on
//! lavapipe the two are even at 32 channels and the products lose at 16 (most of the tiny test
//! model's), while from 128 channels (every convolution of the real Difix but those reading the
//! image or the latents) they are 2-3x faster (BENCHMARKS.md). CUDA keeps burn's convolution,
//! whose autotune (the `cuda` feature) has the implicit GEMM on tensor cores. Everything else
//! burn's kernel handles (groups, dilation, unequal strides, implicit padding) stays with it, and
//! so does autodiff (Difix fine-tuning), a backend type of its own that the caller does not send
//! here: the slices' backward passes would cost memory that burn's convolution backward does not.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::Tensor;

use super::backend::retype;
use super::cube::{on_cube, CubeF32, OnCube};

/// What [`conv2d`] needs to know of the device: the alignment, in f32 elements, of the buffer
/// offsets at which it binds a view of a tensor instead of copying it, and the largest buffer it
/// allocates, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    pub align: usize,
    pub max_buffer_bytes: u64,
}

/// `conv.forward(x)`, plus `residual` if given, as matrix products. Only for convolutions that
/// [`applies`] admits; `limits` are [`device_limits`]'.
///
/// Where the kernel columns' stack or a product would be larger than the device's largest buffer
/// (lavapipe's and some adapters' are 128 MiB: a VAE layer of 256 channels at 256², stacked three
/// times, is 200 MB), the output is computed in bands of rows, each from its own rows of the input.
pub fn conv2d<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    residual: Option<Tensor<B, 4>>,
    limits: DeviceLimits,
) -> Tensor<B, 4> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        unreachable!("applies() admits explicit padding only")
    };
    let [batch, c_in, h, w] = x.dims();
    let [c_out, _, kh, kw] = conv.weight.dims();
    let s = conv.stride[0];
    let out = if [kh, kw, s, top, left, bottom, right] == [1, 1, 1, 0, 0, 0, 0] {
        // A 1x1 convolution is one matrix product on the image as it lies.
        let weights = conv.weight.val().reshape([1, c_out, c_in]);
        weights
            .matmul(x.reshape([batch, c_in, h * w]))
            .reshape([batch, c_out, h, w])
    } else {
        let hp = h + top + bottom;
        let oh = (hp - kh) / s + 1;
        let band = band_rows(batch, c_in, c_out, [kh, kw], s, w + left + right, limits);
        // With less padding than the kernel (every convolution of the Difix model) each band
        // reads at least one row of the image.
        if band >= oh || top >= kh || bottom >= kh {
            products(conv, x, [top, left, bottom, right], limits.align)
        } else {
            // Output rows `r0..r1` read padded rows `r0 · s .. (r1 - 1) · s + kh`: the image's rows
            // among them, and as padding the rest.
            let bands = (0..oh).step_by(band).map(|r0| {
                let r1 = (r0 + band).min(oh);
                let (p0, p1) = (r0 * s, (r1 - 1) * s + kh);
                let (y0, y1) = (p0.clamp(top, top + h) - top, p1.clamp(top, top + h) - top);
                let rows = x.clone().slice([0..batch, 0..c_in, y0..y1, 0..w]);
                let padding = [top.saturating_sub(p0), left, p1.saturating_sub(top + h), right];
                products(conv, rows, padding, limits.align)
            });
            Tensor::cat(bands.collect(), 2)
        }
    };
    let out = match &conv.bias {
        Some(bias) => out + bias.val().reshape([1, c_out, 1, 1]),
        None => out,
    };
    match residual {
        Some(r) => r + out,
        None => out,
    }
}

/// The most output rows [`products`] computes at once without a buffer larger than
/// `limits.max_buffer_bytes`: the phases of the padded input, the kernel columns' stack and a
/// kernel row's product each take about one row of `wp` (rounded up to the alignment) pixels of
/// their channels per output row, plus `kh / s + 2` rows of margin. At least 1.
fn band_rows(
    batch: usize,
    c_in: usize,
    c_out: usize,
    [kh, kw]: [usize; 2],
    s: usize,
    wp: usize,
    limits: DeviceLimits,
) -> usize {
    let per_row = bytes_per_row(batch, c_in, c_out, kw, s, wp, limits.align);
    let rows = limits.max_buffer_bytes / per_row.max(1);
    (rows as usize).saturating_sub(kh / s + 2).max(1)
}

/// The bytes per output row of [`band_rows`]' largest buffer.
fn bytes_per_row(batch: usize, c_in: usize, c_out: usize, kw: usize, s: usize, wp: usize, align: usize) -> u64 {
    let wq = wp.div_ceil(s).div_ceil(align) * align;
    let channels = (kw * c_in).max(s * s * c_in).max(c_out);
    (batch * channels * wq * size_of::<f32>()) as u64
}

/// The convolution of `x` padded by `[top, left, bottom, right]` zeros, without bias: one matrix
/// product per kernel row (the module's description).
fn products<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, padding: [usize; 4], align: usize) -> Tensor<B, 4> {
    let [top, left, bottom, right] = padding;
    let [batch, c_in, h, w] = x.dims();
    let [c_out, _, kh, kw] = conv.weight.dims();
    let s = conv.stride[0];
    let (hp, wp) = (h + top + bottom, w + left + right);
    let (oh, ow) = ((hp - kh) / s + 1, (wp - kw) / s + 1);
    // Each phase's padded image: `hq` rows of `wq` pixels, the rows as long as the device's buffer
    // offsets need for a whole number of rows to be an aligned offset (burn then slices a view,
    // not a copy), and one spare row at the bottom so that every tap's window of `oh` rows stays
    // inside it (the spare row is read only by columns that are cut).
    let (hq, wq) = (hp.div_ceil(s) + 1, wp.div_ceil(s).div_ceil(align) * align);
    let padded = x.pad(
        [(top, hq * s - h - top), (left, wq * s - w - left)],
        PadMode::Constant(0.0),
    );
    // [batch, phase row, phase column, c_in, hq · wq]
    let phases = if s == 1 {
        padded.reshape([batch, 1, 1, c_in, hq * wq])
    } else {
        padded
            .reshape([batch, c_in, hq, s, wq, s])
            .permute([0, 3, 5, 1, 2, 4])
            .reshape([batch, s, s, c_in, hq * wq])
    };
    let phase = |a: usize, b: usize| {
        phases
            .clone()
            .slice([0..batch, a..a + 1, b..b + 1, 0..c_in, 0..hq * wq])
            .reshape([batch, c_in, hq * wq])
    };
    // For each phase row `a` a kernel row reads: the kernel columns' shifted images stacked along
    // the channels, [batch, kw · c_in, (hq - 1) · wq], each shifted by its column's offset (a copy:
    // a shift of a pixel or two is not an aligned offset). A kernel row's taps then read one
    // window of that, shifted by whole rows: one matrix product per kernel row.
    let rows = (hq - 1) * wq;
    let stacked: Vec<Tensor<B, 3>> = (0..s.min(kh))
        .map(|a| {
            let columns = (0..kw)
                .map(|j| {
                    let shift = j / s;
                    phase(a, j % s).slice([0..batch, 0..c_in, shift..shift + rows])
                })
                .collect();
            Tensor::cat(columns, 1)
        })
        .collect();
    // [kh, c_out, kw · c_in]: kernel row i's weights as one matrix, columns in the stack's order.
    let weights = conv.weight.val().permute([2, 0, 3, 1]).reshape([kh, c_out, kw * c_in]);
    let columns = oh * wq;
    let mut out: Option<Tensor<B, 3>> = None;
    for i in 0..kh {
        let shift = (i / s) * wq;
        let window = stacked[i % s]
            .clone()
            .slice([0..batch, 0..kw * c_in, shift..shift + columns]);
        let product = weights.clone().slice([i..i + 1, 0..c_out, 0..kw * c_in]).matmul(window);
        out = Some(match out {
            Some(sum) => sum + product,
            None => product,
        });
    }
    out.expect("a kernel has at least one row")
        .reshape([batch, c_out, oh, wq])
        .slice([0..batch, 0..c_out, 0..oh, 0..ow])
}

/// The fewest input channels for which [`applies`] admits a convolution.
pub const MIN_CHANNELS: usize = 64;

/// Whether [`applies`] admits any convolution: on unless [`set_enabled`] turned it off.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the products on or off for this process. Only `difix3d bench fix --compare-conv` turns
/// them off, to time a whole call with burn's own kernel against them in one run.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// On burn's CubeCL backends, `Some` of the [`DeviceLimits`] of `x`'s device; `None` elsewhere.
pub fn device_limits<B: Backend>(x: &Tensor<B, 4>) -> Option<DeviceLimits> {
    struct Limits<B: Backend>(Tensor<B, 4>);
    impl<B: Backend> OnCube for Limits<B> {
        type Output = DeviceLimits;
        fn plain<C: CubeF32>(self) -> Option<DeviceLimits> {
            let t = retype::<B, C, 4>(self.0)?.into_primitive().tensor();
            let memory = &t.client.properties().memory;
            Some(DeviceLimits {
                align: (memory.alignment as usize / size_of::<f32>()).max(1),
                max_buffer_bytes: memory.max_page_size,
            })
        }
        fn tracked<C: CubeF32>(self) -> Option<DeviceLimits> {
            None
        }
    }
    on_cube::<B, _>(Limits(x.clone()))
}

/// Whether [`conv2d`] computes `conv`: at least [`MIN_CHANNELS`] input channels, square strides,
/// no dilation or groups, explicit padding (and the products not turned off: [`set_enabled`]).
pub fn applies<B: Backend>(conv: &Conv2d<B>) -> bool {
    let [_, c_in, _, _] = conv.weight.dims();
    c_in >= MIN_CHANNELS && computes(conv) && ENABLED.load(Ordering::Relaxed)
}

/// [`applies`] without the channel count.
fn computes<B: Backend>(conv: &Conv2d<B>) -> bool {
    conv.stride[0] == conv.stride[1]
        && conv.stride[0] >= 1
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Explicit(..))
}

#[cfg(test)]
mod tests {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::Wgpu;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    use super::*;

    type W = Wgpu<f32>;

    fn max_difference(a: Tensor<W, 4>, b: Tensor<W, 4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Each shape the Difix model has (3x3 stride 1 and 2, asymmetric padding as diffusers'
    /// `Downsample2D` pads, 1x1, odd sizes, two images, bias and residual) against burn's own
    /// kernel, at few channels (the products do not depend on the count).
    #[test]
    fn matches_burn_conv2d_on_wgpu() {
        let device = WgpuDevice::DefaultDevice;
        // (c_in, c_out, kernel, stride, padding [top, left, bottom, right], bias, h, w)
        let cases = [
            (5, 7, 3, 1, [1, 1, 1, 1], true, 9, 13),
            (4, 6, 3, 2, [0, 0, 1, 1], true, 10, 12),
            (4, 6, 3, 2, [1, 1, 1, 1], false, 11, 7),
            (6, 3, 1, 1, [0, 0, 0, 0], true, 5, 8),
            (6, 3, 1, 1, [1, 0, 0, 1], true, 5, 8),
            (3, 4, 5, 1, [2, 1, 2, 3], true, 8, 6),
        ];
        for (c_in, c_out, k, s, [top, left, bottom, right], bias, h, w) in cases {
            let conv = Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
                .with_bias(bias)
                .init::<W>(&device);
            assert!(computes(&conv) && !applies(&conv));
            let x = Tensor::<W, 4>::random([2, c_in, h, w], Distribution::Normal(0.0, 1.0), &device);
            let expected = conv.forward(x.clone());
            let residual = Tensor::<W, 4>::random(expected.dims(), Distribution::Normal(0.0, 1.0), &device);
            let case = format!("{c_in}->{c_out} {k}x{k} stride {s} padding {top},{left},{bottom},{right}");
            let limits = device_limits(&x).expect("a wgpu tensor");
            let ours = conv2d(&conv, x.clone(), None, limits);
            assert_eq!(ours.dims(), expected.dims(), "{case}");
            // Sums of at most 5 x 5 x 6 products of N(0, 1)-sized values, in another order: 1e-5.
            assert!(max_difference(ours, expected.clone()) < 1e-5, "{case}");
            let with_residual = conv2d(&conv, x.clone(), Some(residual.clone()), limits);
            assert!(
                max_difference(with_residual, residual + expected.clone()) < 1e-5,
                "{case} with a residual"
            );
            // A device whose largest buffer holds a few rows: bands of 1 and of 2 output rows.
            for rows in [1, 2] {
                let wp = w + left + right;
                let per_row = bytes_per_row(2, c_in, c_out, k, s, wp, limits.align);
                let bytes = per_row * (rows + k / s + 2) as u64;
                let small = DeviceLimits {
                    max_buffer_bytes: bytes,
                    ..limits
                };
                assert_eq!(band_rows(2, c_in, c_out, [k, k], s, wp, small), rows, "{case}");
                let banded = conv2d(&conv, x.clone(), None, small);
                assert_eq!(banded.dims(), expected.dims(), "{case}, bands of {rows}");
                assert!(
                    max_difference(banded, expected.clone()) < 1e-5,
                    "{case}, bands of {rows}"
                );
            }
        }
    }

    /// Few channels, grouped and dilated convolutions are left to burn.
    #[test]
    fn what_is_left_to_burn() {
        let device = WgpuDevice::DefaultDevice;
        let c = MIN_CHANNELS;
        let config = |c_in| Conv2dConfig::new([c_in, c], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
        let wide = config(c).init::<W>(&device);
        let narrow = config(c - 1).init::<W>(&device);
        let grouped = config(c).with_groups(2).init::<W>(&device);
        let dilated = config(c).with_dilation([2, 2]).init::<W>(&device);
        let same = config(c).with_padding(PaddingConfig2d::Same).init::<W>(&device);
        assert!(applies(&wide));
        assert!(!applies(&narrow) && !applies(&grouped) && !applies(&dilated) && !applies(&same));
        // `bench fix --compare-conv`'s switch (other tests of this process may meanwhile take
        // burn's kernel, which gives the same values).
        set_enabled(false);
        let off = applies(&wide);
        set_enabled(true);
        assert!(!off && applies(&wide));
    }
}
