//! `difix3d bench conv`: one 3x3 convolution, burn's own kernel against `nn::tap_conv`'s matrix
//! products, on the same device in one run (the products are what the wgpu backend runs for 64 or
//! more input channels).

use std::time::Instant;

use burn::nn::conv::Conv2dConfig;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use difix3d::nn::backend::WithBackend;
use difix3d::nn::tap_conv;

pub(super) struct ConvBench {
    /// (channels in and out, image side, stride) per case.
    pub(super) cases: Vec<(usize, usize, usize)>,
    pub(super) iters: u32,
}

impl WithBackend for ConvBench {
    type Output = anyhow::Result<Vec<serde_json::Value>>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let mut reports = Vec::new();
        for (channels, side, stride) in self.cases {
            let conv = Conv2dConfig::new([channels, channels], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init::<B>(&device);
            let x = Tensor::<B, 4>::random([1, channels, side, side], Distribution::Normal(0.0, 1.0), &device);
            let limits = tap_conv::device_limits(&x).ok_or_else(|| {
                anyhow::anyhow!("bench conv compares burn's kernel with nn::tap_conv: use --backend wgpu or cuda")
            })?;
            // One warm-up call each (kernel compilation), then `iters` timed ones; reading one
            // value back waits for the device.
            let time = |f: &dyn Fn() -> Tensor<B, 4>| {
                let _ = f().sum().into_data();
                let start = Instant::now();
                for _ in 0..self.iters {
                    let _ = f().sum().into_data();
                }
                start.elapsed().as_secs_f64() * 1e3 / f64::from(self.iters)
            };
            let burn_ms = time(&|| conv.forward(x.clone()));
            let taps_ms = time(&|| tap_conv::conv2d(&conv, x.clone(), None, limits));
            let output = side.div_ceil(stride);
            let gflop = 2.0 * (channels * channels * 9 * output * output) as f64 / 1e9;
            println!(
                "{channels} ch, {side}x{side}, stride {stride}: burn {burn_ms:.1} ms, matrix products {taps_ms:.1} ms \
                 ({:.2}x; {:.1} / {:.1} GFLOP/s)",
                burn_ms / taps_ms,
                gflop / burn_ms * 1e3,
                gflop / taps_ms * 1e3
            );
            reports.push(serde_json::json!({
                "channels": channels, "side": side, "stride": stride, "iters": self.iters,
                "burn_ms": burn_ms, "tap_conv_ms": taps_ms, "speedup": burn_ms / taps_ms,
            }));
        }
        Ok(reports)
    }
}
