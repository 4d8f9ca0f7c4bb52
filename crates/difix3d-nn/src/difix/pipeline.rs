//! The Difix pipeline: image in [0,1] -> VAE encode (mean) -> UNet at timestep t -> one DDPM step
//! -> VAE decode with the encoder's skips -> clamp. Optionally with reference views, one per input or
//! one shared by all.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::images::{self, SizePolicy};
use super::load::ModelFiles;
use super::scheduler::OneStep;
use super::text_encoder::TextEncoder;
use super::tokenizer::ClipTokenizer;
use super::unet::UNet;
use super::vae::Vae;
use super::DifixError;
use crate::nn::backend::CpuBackend;
use crate::nn::weights::ParamKey;

/// The prompt Difix was trained with.
pub const DEFAULT_PROMPT: &str = "remove degradation";
/// The timestep the published models run at.
pub const DEFAULT_TIMESTEP: usize = 199;

/// Time spent per pipeline stage, summed over calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    pub prompt: std::time::Duration,
    pub encode: std::time::Duration,
    pub unet: std::time::Duration,
    pub decode: std::time::Duration,
}

pub struct Difix<B: Backend> {
    prompts: PromptEncoder<B>,
    unet: UNet<B>,
    vae: Vae<B>,
    /// The stored names of the UNet's and the VAE's parameters (to write trained weights back).
    unet_keys: Vec<ParamKey>,
    vae_keys: Vec<ParamKey>,
    files: ModelFiles,
    step: OneStep,
    device: B::Device,
}

/// The frozen text side: tokenizer and text encoder, with a cache (the prompt is constant in
/// practice: encode it once, not per frame).
///
/// The text encoder stays on the CPU backend whatever device the rest runs on: it runs once per
/// prompt, and on a GPU its weights (1.4 GB for SD-Turbo's OpenCLIP text tower, 27% of the model)
/// would take device memory for nothing. Its 200 MB token table is also larger than the biggest
/// buffer some adapters allow (lavapipe's, some integrated GPUs'). Only the embedding, `[1, 77,
/// 1024]`, goes to the device.
pub struct PromptEncoder<B: Backend> {
    text_encoder: TextEncoder<CpuBackend>,
    tokenizer: ClipTokenizer,
    cache: HashMap<String, Tensor<B, 3>>,
    device: B::Device,
}

impl<B: Backend> PromptEncoder<B> {
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The text encoder's `last_hidden_state` for `prompt`, [1, 77, dim], cached.
    pub fn embed(&mut self, prompt: &str) -> Tensor<B, 3> {
        if let Some(e) = self.cache.get(prompt) {
            return e.clone();
        }
        let ids = self.tokenizer.encode(prompt);
        let on_cpu = self.text_encoder.forward(&ids, &Default::default());
        let emb = Tensor::<B, 3>::from_data(on_cpu.into_data(), &self.device);
        self.cache.insert(prompt.to_string(), emb.clone());
        emb
    }
}

/// What fine-tuning takes apart: the networks it trains, and the frozen rest.
pub struct TrainingParts<B: Backend> {
    pub unet: UNet<B>,
    pub vae: Vae<B>,
    pub unet_keys: Vec<ParamKey>,
    pub vae_keys: Vec<ParamKey>,
    /// The model folder the weights came from (its configs, tokenizer and text encoder are reused
    /// when trained weights are exported).
    pub source: ModelFiles,
    pub prompts: PromptEncoder<B>,
    pub step: OneStep,
}

impl<B: Backend> Difix<B> {
    /// Loads a model directory (plus, optionally, a trainer checkpoint over it) onto `device`.
    pub fn load(dir: &Path, checkpoint: Option<&Path>, device: &B::Device) -> Result<Self, DifixError> {
        Self::load_with(dir, checkpoint, device, false)
    }

    /// [`Self::load`] for fine-tuning: the VAE decoder's LoRA stays apart as trainable pairs instead
    /// of being merged (same outputs).
    pub fn load_for_training(dir: &Path, checkpoint: Option<&Path>, device: &B::Device) -> Result<Self, DifixError> {
        Self::load_with(dir, checkpoint, device, true)
    }

    fn load_with(
        dir: &Path,
        checkpoint: Option<&Path>,
        device: &B::Device,
        keep_lora: bool,
    ) -> Result<Self, DifixError> {
        let files = ModelFiles::open(dir, checkpoint)?;
        let step = files.scheduler.one_step(DEFAULT_TIMESTEP, &files.scheduler_path)?;
        let (unet, unet_keys) = files.load_unet_and_keys(device)?;
        let (vae, vae_keys) = files.load_vae_and_keys(device, keep_lora)?;
        Ok(Self {
            prompts: PromptEncoder {
                text_encoder: files.load_text_encoder::<CpuBackend>(&Default::default())?,
                tokenizer: files.tokenizer.clone(),
                cache: HashMap::new(),
                device: device.clone(),
            },
            unet,
            vae,
            unet_keys,
            vae_keys,
            files,
            step,
            device: device.clone(),
        })
    }

    /// Splits the model for fine-tuning (see [`Self::load_for_training`]).
    pub fn into_training_parts(self) -> TrainingParts<B> {
        TrainingParts {
            unet: self.unet,
            vae: self.vae,
            unet_keys: self.unet_keys,
            vae_keys: self.vae_keys,
            source: self.files,
            prompts: self.prompts,
            step: self.step,
        }
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    pub fn set_timestep(&mut self, timestep: usize) -> Result<(), DifixError> {
        self.step = self.files.scheduler.one_step(timestep, &self.files.scheduler_path)?;
        Ok(())
    }

    pub fn step(&self) -> OneStep {
        self.step
    }

    /// The text encoder's `last_hidden_state` for `prompt`, [1, 77, dim], cached.
    pub fn prompt_embedding(&mut self, prompt: &str) -> Tensor<B, 3> {
        self.prompts.embed(prompt)
    }

    pub fn unet(&self) -> &UNet<B> {
        &self.unet
    }
    pub fn vae(&self) -> &Vae<B> {
        &self.vae
    }
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.files.tokenizer
    }
    /// The text encoder, on the CPU backend ([`PromptEncoder`]).
    pub fn text_encoder(&self) -> &TextEncoder<CpuBackend> {
        &self.prompts.text_encoder
    }

    /// Fixes one 8-bit picture (optionally with a reference) at the working size `policy` picks, and
    /// returns it at the input's size: what both `difix3d fix` and the live viewer pass do per frame.
    pub fn fix_image(
        &mut self,
        image: &image::RgbImage,
        reference: Option<&image::RgbImage>,
        policy: SizePolicy,
        prompt: &str,
    ) -> Result<image::RgbImage, DifixError> {
        let (w, h) = image.dimensions();
        let (ww, wh) = policy.working_size(w, h);
        let input = images::to_tensor::<B>(&images::resize(image, ww, wh), &self.device);
        let fixed = self.fix_tensor_image(input, reference, prompt)?;
        Ok(images::resize(&fixed, w, h))
    }

    /// Fixes one image already on the device ([1, 3, h, w] in [0, 1], h and w multiples of 8) with a
    /// reference photo scaled to its size; the result is read back as 8-bit RGB.
    pub fn fix_tensor_image(
        &mut self,
        input: Tensor<B, 4>,
        reference: Option<&image::RgbImage>,
        prompt: &str,
    ) -> Result<image::RgbImage, DifixError> {
        let [_, _, h, w] = input.dims();
        let reference = reference.map(|r| images::to_tensor::<B>(&images::resize(r, w as u32, h as u32), &self.device));
        let fixed = self.fix(input, reference, prompt)?;
        images::to_image(fixed).map_err(|e| DifixError::Backend(format!("reading the result back: {e}")))
    }

    /// Fixes `images` [n, 3, h, w] (values in [0,1], h and w multiples of 8). `refs` is `None`, one
    /// reference for all inputs, or one per input. Returns [n, 3, h, w] in [0,1].
    pub fn fix(
        &mut self,
        images: Tensor<B, 4>,
        refs: Option<Tensor<B, 4>>,
        prompt: &str,
    ) -> Result<Tensor<B, 4>, DifixError> {
        self.fix_timed(images, refs, prompt, None)
    }

    /// [`Self::fix`], waiting for the device after each stage and adding the stage times to `times`
    /// when given (for benchmarks; the waits cost a little throughput).
    pub fn fix_timed(
        &mut self,
        images: Tensor<B, 4>,
        refs: Option<Tensor<B, 4>>,
        prompt: &str,
        mut times: Option<&mut StageTimes>,
    ) -> Result<Tensor<B, 4>, DifixError> {
        let device = self.device.clone();
        let mut clock = std::time::Instant::now();
        let mut lap = |slot: fn(&mut StageTimes) -> &mut std::time::Duration| -> Result<(), DifixError> {
            if let Some(t) = times.as_deref_mut() {
                B::sync(&device).map_err(|e| DifixError::Backend(format!("device error: {e:?}")))?;
                *slot(t) += clock.elapsed();
                clock = std::time::Instant::now();
            }
            Ok(())
        };
        let [n, c, h, w] = images.dims();
        if c != 3 || h % 8 != 0 || w % 8 != 0 || h == 0 || w == 0 {
            return Err(DifixError::Input(format!(
                "Difix needs RGB images with sides that are multiples of 8, got {c}x{h}x{w}"
            )));
        }
        let (batch, views) = match refs {
            None => (images, 1),
            Some(r) => {
                let [m, rc, rh, rw] = r.dims();
                if rc != 3 || rh != h || rw != w {
                    return Err(DifixError::Input(format!(
                        "reference images are {rc}x{rh}x{rw}, the inputs {c}x{h}x{w}"
                    )));
                }
                let r = match m {
                    1 => r.repeat_dim(0, n),
                    m if m == n => r,
                    m => {
                        return Err(DifixError::Input(format!(
                            "{m} reference images for {n} inputs: give one reference for all, or one per input"
                        )))
                    }
                };
                // Interleave [t0, r0, t1, r1, ...]: each input attends with its own reference.
                (Tensor::stack::<5>(vec![images, r], 1).reshape([2 * n, 3, h, w]), 2)
            }
        };
        let emb = self.prompt_embedding(prompt);
        let total = n * views;
        let context = emb.repeat_dim(0, total);
        let scale = self.vae.scaling_factor;
        lap(|t| &mut t.prompt)?;
        let encoded = self.vae.encode(batch.mul_scalar(2.0).sub_scalar(1.0));
        let z = encoded.mean.mul_scalar(scale);
        lap(|t| &mut t.encode)?;
        let z0 = denoise(&self.unet, &self.step, z, &context, views);
        // Decode only the target views, each with its own skips.
        let (z0, skips) = if views == 1 {
            (z0, encoded.skips)
        } else {
            let targets = Tensor::<B, 1, Int>::from_data(
                TensorData::new((0..n).map(|i| (i * views) as i64).collect::<Vec<_>>(), [n]),
                &self.device,
            );
            let skips = encoded
                .skips
                .into_iter()
                .map(|s| s.select(0, targets.clone()))
                .collect();
            (z0.select(0, targets), skips)
        };
        lap(|t| &mut t.unet)?;
        let out = self
            .vae
            .decode(z0.div_scalar(scale), &skips)
            .clamp(-1.0, 1.0)
            .add_scalar(1.0)
            .div_scalar(2.0);
        lap(|t| &mut t.decode)?;
        Ok(out)
    }
}

/// The one-step denoise: the UNet's noise estimate at the step's timestep, and the clean latent
/// `z0 = a * z - b * eps` (DDPM's `pred_original_sample`).
pub fn denoise<B: Backend>(
    unet: &UNet<B>,
    step: &OneStep,
    z: Tensor<B, 4>,
    context: &Tensor<B, 3>,
    views: usize,
) -> Tensor<B, 4> {
    let eps = unet.forward(z.clone(), step.timestep as f64, context, views);
    z.mul_scalar(step.a) - eps.mul_scalar(step.b)
}
