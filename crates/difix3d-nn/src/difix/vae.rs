//! The SD `AutoencoderKL` with Difix's additions: the encoder hands its four down-block inputs to the
//! decoder, which adds them back through 1x1 `skip_conv_1..4` before each up block. The decoder's
//! PEFT LoRA (`vae_skip`) is merged into the weights at load time (see `weights.rs`).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;

use super::error::{check_groups, check_positive, check_positive_f64};
use super::layers::{resize_nearest, tokens_to_image, Attention, ResnetBlock};
use super::{ConfigProblem, DifixError};
use crate::nn::flex_kernels::{conv2d, group_norm};
use crate::nn::loader::{Loader, LoraConv2d};

/// diffusers' VAE ResNets and norms use eps 1e-6.
const EPS: f64 = 1e-6;

/// The keys of `vae/config.json` this implementation uses.
#[derive(Clone, Debug, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "groups32")]
    pub norm_num_groups: usize,
    #[serde(default = "sd_scale")]
    pub scaling_factor: f64,
    /// Difix: multiplier of the skip activations (1.0 in the published model).
    #[serde(default = "unit")]
    pub gamma: f64,
    /// Difix: `true` turns the skip path off.
    #[serde(default)]
    pub ignore_skip: bool,
    /// PEFT's `lora_alpha` when the published config carries it; PEFT's default (8) otherwise, which is
    /// what the reference trainer used (`LoraConfig(r=4)` with no alpha).
    #[serde(default)]
    pub lora_alpha: Option<f32>,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn groups32() -> usize {
    32
}
fn sd_scale() -> f64 {
    0.18215
}
fn unit() -> f64 {
    1.0
}

/// The VAE mid block: resnet, single-head self-attention over pixels, resnet.
#[derive(Module, Debug)]
struct MidBlock<B: Backend> {
    resnet_1: ResnetBlock<B>,
    attn_norm: GroupNorm<B>,
    attention: Attention<B>,
    resnet_2: ResnetBlock<B>,
}

impl<B: Backend> MidBlock<B> {
    fn load(l: &mut Loader<B>, p: &str, c: usize, groups: usize) -> Result<Self, DifixError> {
        Ok(Self {
            resnet_1: ResnetBlock::load(l, &format!("{p}.resnets.0"), c, c, None, groups, EPS)?,
            attn_norm: l.group_norm(&format!("{p}.attentions.0.group_norm"), groups, c, EPS)?,
            attention: Attention::load(l, &format!("{p}.attentions.0"), c, c, 1, true)?,
            resnet_2: ResnetBlock::load(l, &format!("{p}.resnets.1"), c, c, None, groups, EPS)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.resnet_1.forward(x, None);
        let [b, c, height, width] = h.dims();
        let tokens = group_norm(&self.attn_norm, h.clone(), false)
            .reshape([b, c, height * width])
            .swap_dims(1, 2);
        let attended = tokens_to_image(self.attention.forward(tokens, None), height, width);
        self.resnet_2.forward(h + attended, None)
    }
}

#[derive(Module, Debug)]
struct Stage<B: Backend> {
    resnets: Vec<ResnetBlock<B>>,
    resample: Option<LoraConv2d<B>>,
}

impl<B: Backend> Stage<B> {
    /// `count` ResNets under `prefix.resnets.*`, the first taking `cin` channels; no resampling yet.
    fn load(
        l: &mut Loader<B>,
        prefix: &str,
        count: usize,
        cin: usize,
        cout: usize,
        groups: usize,
    ) -> Result<Self, DifixError> {
        let resnets = (0..count)
            .map(|j| {
                let input = if j == 0 { cin } else { cout };
                ResnetBlock::load(l, &format!("{prefix}.resnets.{j}"), input, cout, None, groups, EPS)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            resnets,
            resample: None,
        })
    }
}

/// What the encoder gives the decoder: the latent mean (unscaled) and the skip activations s0..s3.
pub struct Encoded<B: Backend> {
    pub mean: Tensor<B, 4>,
    /// The posterior's log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor<B, 4>,
    pub skips: Vec<Tensor<B, 4>>,
}

#[derive(Module, Debug)]
pub struct Vae<B: Backend> {
    // encoder
    enc_conv_in: Conv2d<B>,
    enc_down: Vec<Stage<B>>,
    enc_mid: MidBlock<B>,
    enc_norm_out: GroupNorm<B>,
    enc_conv_out: Conv2d<B>,
    quant_conv: Conv2d<B>,
    // decoder
    post_quant_conv: Conv2d<B>,
    dec_conv_in: LoraConv2d<B>,
    dec_mid: MidBlock<B>,
    skip_convs: Vec<LoraConv2d<B>>,
    dec_up: Vec<Stage<B>>,
    dec_norm_out: GroupNorm<B>,
    dec_conv_out: LoraConv2d<B>,
    latent_channels: usize,
    pub scaling_factor: f64,
    gamma: f64,
    use_skips: bool,
}

impl VaeConfig {
    /// Checks the config against what [`Vae::load`] builds (see [`super::unet::UNetConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        let ch = &self.block_out_channels;
        if ch.is_empty() || ch.contains(&0) {
            return Err(ConfigProblem {
                key: "block_out_channels",
                rule: "must list at least one block, each with channels > 0".into(),
            });
        }
        check_positive(&[
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("latent_channels", self.latent_channels),
        ])?;
        check_groups("norm_num_groups", self.norm_num_groups, ch)?;
        check_positive_f64("scaling_factor", self.scaling_factor)?;
        if !self.gamma.is_finite() {
            return Err(ConfigProblem {
                key: "gamma",
                rule: format!("must be finite, not {}", self.gamma),
            });
        }
        if let Some(alpha) = self.lora_alpha {
            check_positive_f64("lora_alpha", f64::from(alpha))?;
        }
        Ok(())
    }
}

impl<B: Backend> Vae<B> {
    pub fn load(l: &mut Loader<B>, cfg: &VaeConfig) -> Result<Self, DifixError> {
        cfg.validate().map_err(|p| p.into_error("vae/config.json"))?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let g = cfg.norm_num_groups;
        let z = cfg.latent_channels;

        let enc_conv_in = l.conv("encoder.conv_in", cfg.in_channels, ch[0], 3, true)?;
        let mut enc_down = Vec::with_capacity(n);
        let mut skip_channels = Vec::with_capacity(n);
        let mut out = ch[0];
        for (i, &channels) in ch.iter().enumerate() {
            let p = format!("encoder.down_blocks.{i}");
            skip_channels.push(out);
            let input = out;
            out = channels;
            let mut stage = Stage::load(l, &p, cfg.layers_per_block, input, out, g)?;
            if i + 1 < n {
                // diffusers pads (right 1, bottom 1) and convolves 3x3 stride 2 without padding.
                let pad = PaddingConfig2d::Explicit(0, 0, 1, 1);
                stage.resample =
                    Some(l.lora_conv_strided(&format!("{p}.downsamplers.0.conv"), out, out, 3, 2, pad, true)?);
            }
            enc_down.push(stage);
        }
        let c_mid = ch[n - 1];
        let enc_mid = MidBlock::load(l, "encoder.mid_block", c_mid, g)?;
        let enc_norm_out = l.group_norm("encoder.conv_norm_out", g, c_mid, EPS)?;
        let enc_conv_out = l.conv("encoder.conv_out", c_mid, 2 * z, 3, true)?;
        let quant_conv = l.conv("quant_conv", 2 * z, 2 * z, 1, true)?;

        let post_quant_conv = l.conv("post_quant_conv", z, z, 1, true)?;
        let dec_conv_in = l.lora_conv("decoder.conv_in", z, c_mid, 3, true)?;
        let dec_mid = MidBlock::load(l, "decoder.mid_block", c_mid, g)?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut dec_up = Vec::with_capacity(n);
        let mut skip_convs = Vec::with_capacity(n);
        let use_skips = !cfg.ignore_skip;
        let mut prev = rev[0];
        for i in 0..n {
            let p = format!("decoder.up_blocks.{i}");
            let out = rev[i];
            if use_skips {
                // skip_conv_{i+1} maps s[n-1-i] onto the channels entering up block i.
                let key = format!("decoder.skip_conv_{}", i + 1);
                skip_convs.push(l.lora_conv(&key, skip_channels[n - 1 - i], prev, 1, false)?);
            }
            let mut stage = Stage::load(l, &p, cfg.layers_per_block + 1, prev, out, g)?;
            if i + 1 < n {
                stage.resample = Some(l.lora_conv(&format!("{p}.upsamplers.0.conv"), out, out, 3, true)?);
            }
            prev = out;
            dec_up.push(stage);
        }
        if !use_skips {
            for i in 1..=n {
                l.weights.allow_unused(&format!("decoder.skip_conv_{i}."));
            }
        }
        Ok(Self {
            enc_conv_in,
            enc_down,
            enc_mid,
            enc_norm_out,
            enc_conv_out,
            quant_conv,
            post_quant_conv,
            dec_conv_in,
            dec_mid,
            skip_convs,
            dec_up,
            dec_norm_out: l.group_norm("decoder.conv_norm_out", g, ch[0], EPS)?,
            dec_conv_out: l.lora_conv("decoder.conv_out", ch[0], cfg.out_channels, 3, true)?,
            latent_channels: z,
            scaling_factor: cfg.scaling_factor,
            gamma: cfg.gamma,
            use_skips,
        })
    }

    /// x: [b, 3, h, w] in [-1, 1]. The posterior mean is used (no sampling): deterministic output.
    pub fn encode(&self, x: Tensor<B, 4>) -> Encoded<B> {
        let mut h = conv2d(&self.enc_conv_in, x);
        let mut skips = Vec::with_capacity(self.enc_down.len());
        for stage in &self.enc_down {
            skips.push(h.clone());
            for resnet in &stage.resnets {
                h = resnet.forward(h, None);
            }
            if let Some(conv) = &stage.resample {
                h = conv.forward(h);
            }
        }
        h = self.enc_mid.forward(h);
        h = conv2d(&self.enc_conv_out, group_norm(&self.enc_norm_out, h, true));
        let moments = conv2d(&self.quant_conv, h);
        let [b, _, lh, lw] = moments.dims();
        let mean = moments.clone().slice([0..b, 0..self.latent_channels, 0..lh, 0..lw]);
        let z = self.latent_channels;
        let logvar = moments.slice([0..b, z..2 * z, 0..lh, 0..lw]).clamp(-30.0, 20.0);
        Encoded { mean, logvar, skips }
    }

    /// z: unscaled latent [b, 4, h/8, w/8]; `skips`: the encoder's activations of the same images.
    pub fn decode(&self, z: Tensor<B, 4>, skips: &[Tensor<B, 4>]) -> Tensor<B, 4> {
        let mut h = self.dec_conv_in.forward(conv2d(&self.post_quant_conv, z));
        h = self.dec_mid.forward(h);
        let n = self.dec_up.len();
        for (i, stage) in self.dec_up.iter().enumerate() {
            if let Some(conv) = self.skip_convs.get(i) {
                h = h + conv.forward(skips[n - 1 - i].clone().mul_scalar(self.gamma));
            }
            for resnet in &stage.resnets {
                h = resnet.forward(h, None);
            }
            if let Some(conv) = &stage.resample {
                let [_, _, hh, ww] = h.dims();
                h = conv.forward(resize_nearest(h, hh * 2, ww * 2));
            }
        }
        self.dec_conv_out.forward(group_norm(&self.dec_norm_out, h, true))
    }
}
