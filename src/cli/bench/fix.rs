//! `difix3d bench fix`: the Difix pipeline per image, with the encode / UNet / decode split.

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use super::{file_name, peak_rss_mib};
use difix3d::difix::pipeline::StageTimes;
use difix3d::difix::Difix;
use difix3d::nn::backend::WithBackend;
use difix3d::nn::tap_conv;
pub(super) struct FixBench {
    pub(super) model: PathBuf,
    pub(super) height: u32,
    pub(super) width: u32,
    pub(super) with_ref: bool,
    pub(super) iters: u32,
    /// Also time the calls with every convolution on burn's own kernel (`nn::tap_conv` off), in the
    /// same run on the same loaded model.
    pub(super) compare_conv: bool,
}

impl WithBackend for FixBench {
    type Output = anyhow::Result<(serde_json::Value, String)>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        use burn::tensor::{Distribution, Tensor};
        let load = Instant::now();
        let mut model = Difix::<B>::load(&self.model, None, &device)?;
        let load_s = load.elapsed().as_secs_f64();
        let (h, w) = (self.height as usize, self.width as usize);
        let image = || Tensor::<B, 4>::random([1, 3, h, w], Distribution::Uniform(0.0, 1.0), &device);
        let reference = || self.with_ref.then(image);
        let prompt = difix3d::difix::pipeline::DEFAULT_PROMPT;
        // Warm-up (kernel compilation, autotuning and memory pools), then the mean of `iters` calls.
        let mut mean_call_ms = || -> anyhow::Result<f64> {
            let _ = model.fix(image(), reference(), prompt)?.into_data();
            let start = Instant::now();
            for _ in 0..self.iters {
                let _ = model.fix(image(), reference(), prompt)?.into_data();
            }
            Ok(start.elapsed().as_secs_f64() * 1e3 / self.iters as f64)
        };
        let mean_ms = mean_call_ms()?;
        let direct_conv_ms = match self.compare_conv {
            true => {
                tap_conv::set_enabled(false);
                let direct = mean_call_ms();
                tap_conv::set_enabled(true);
                let direct = direct?;
                println!(
                    "convolutions as matrix products (nn::tap_conv): {mean_ms:.1} ms per call; all on burn's \
                     kernel: {direct:.1} ms ({:.2}x)",
                    direct / mean_ms
                );
                Some(direct)
            }
            false => None,
        };
        let mut stages = StageTimes::default();
        for _ in 0..self.iters {
            let _ = model
                .fix_timed(image(), reference(), prompt, Some(&mut stages))?
                .into_data();
        }
        let per = |d: Duration| d.as_secs_f64() * 1e3 / self.iters as f64;
        let rss = peak_rss_mib();
        let model_name = file_name(&self.model);
        let report = serde_json::json!({
            "bench": "fix",
            "model": self.model.display().to_string(),
            "height": h, "width": w, "reference": self.with_ref,
            "precision": std::any::type_name::<B::FloatElem>(),
            "iters": self.iters,
            "load_s": load_s,
            "mean_ms": mean_ms,
            "burn_conv_mean_ms": direct_conv_ms,
            "encode_ms": per(stages.encode), "unet_ms": per(stages.unet), "decode_ms": per(stages.decode),
            "peak_rss_mib": rss,
        });
        let row = format!(
            "{model_name} | {h}x{w} | {} | {} | {mean_ms:.1} | {:.1} / {:.1} / {:.1} | {rss:.0} | {} |",
            if self.with_ref { "yes" } else { "no" },
            std::any::type_name::<B::FloatElem>(),
            per(stages.encode),
            per(stages.unet),
            per(stages.decode),
            self.iters
        );
        Ok((report, row))
    }
}
