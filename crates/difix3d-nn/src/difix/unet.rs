//! The Stable Diffusion 2.1 `UNet2DConditionModel` (diffusers layout), with Difix's reference mode:
//! in every transformer block the self-attention runs jointly over the views of one sample
//! (`(b*v, n, d) -> (b, v*n, d)`), so the target view can borrow detail from a reference photo.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use super::error::{check_groups, check_positive, check_positive_f64};
use super::layers::{resize_nearest, silu, tokens_to_image, Attention, ResnetBlock};
use super::{ConfigProblem, DifixError};
use crate::nn::flex_kernels::{conv2d, geglu, group_norm, linear};
use crate::nn::loader::Loader;

/// `attention_head_dim` / `num_attention_heads`: a number or one per block.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v[i.min(v.len() - 1)],
        }
    }
}

/// The keys of `unet/config.json` this implementation uses (others are accepted and ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    pub cross_attention_dim: usize,
    /// In SD 2.x configs this is really the number of heads (a historical diffusers quirk).
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default = "groups32")]
    pub norm_num_groups: usize,
    #[serde(default = "eps5")]
    pub norm_eps: f64,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub transformer_layers_per_block: Option<PerBlock>,
}

fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn groups32() -> usize {
    32
}
fn eps5() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl UNetConfig {
    fn heads(&self, block: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(block)
    }

    /// Checks the config against what this implementation builds, before any tensor is made: a bad
    /// value here would otherwise panic deep inside the network (a zero group count, heads that do
    /// not divide a width). The error gives the key and the rule.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        let n = self.block_out_channels.len();
        let bad = |key: &'static str, rule: String| Err(ConfigProblem { key, rule });
        if n == 0 || self.block_out_channels.contains(&0) {
            return bad(
                "block_out_channels",
                "must list at least one block, each with channels > 0".into(),
            );
        }
        if !self.block_out_channels[0].is_multiple_of(2) {
            return bad(
                "block_out_channels",
                format!(
                    "the first block's channels ({}) must be even (the timestep embedding's sin/cos halves)",
                    self.block_out_channels[0]
                ),
            );
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(
                "down_block_types",
                "down/up block type lists must match block_out_channels".into(),
            );
        }
        check_positive(&[
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("cross_attention_dim", self.cross_attention_dim),
        ])?;
        check_groups("norm_num_groups", self.norm_num_groups, &self.block_out_channels)?;
        check_positive_f64("norm_eps", self.norm_eps)?;
        if !self.freq_shift.is_finite() {
            return bad("freq_shift", format!("must be finite, not {}", self.freq_shift));
        }
        let heads_key = if self.num_attention_heads.is_some() {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        let heads = self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim);
        if matches!(heads, PerBlock::Each(v) if v.is_empty()) {
            return bad(heads_key, "must be a number or a non-empty list".into());
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            let h = heads.get(i);
            if h == 0 || c % h != 0 {
                return bad(
                    heads_key,
                    format!(
                        "block {i}: the head count must be greater than 0 and divide the block's {c} channels, not {h}"
                    ),
                );
            }
        }
        if !self.use_linear_projection {
            return bad(
                "use_linear_projection",
                "only use_linear_projection = true (SD 2.x) is supported".into(),
            );
        }
        if let Some(layers) = &self.transformer_layers_per_block {
            if matches!(layers, PerBlock::Each(v) if v.is_empty()) || (0..n).any(|i| layers.get(i) != 1) {
                return bad(
                    "transformer_layers_per_block",
                    "only one transformer layer per block is supported".into(),
                );
            }
        }
        for t in self.down_block_types.iter().chain(&self.up_block_types) {
            if !matches!(
                t.as_str(),
                "CrossAttnDownBlock2D" | "DownBlock2D" | "CrossAttnUpBlock2D" | "UpBlock2D"
            ) {
                return bad("down_block_types", format!("unsupported block type `{t}`"));
            }
        }
        Ok(())
    }
}

/// `BasicTransformerBlock`: self-attention (joint over views), cross-attention to the prompt, GEGLU MLP.
#[derive(Module, Debug)]
struct TransformerBlock<B: Backend> {
    norm1: LayerNorm<B>,
    attn1: Attention<B>,
    norm2: LayerNorm<B>,
    attn2: Attention<B>,
    norm3: LayerNorm<B>,
    ff_proj: Linear<B>,
    ff_out: Linear<B>,
}

/// `Transformer2DModel` with linear projections: GroupNorm, proj_in, one block, proj_out, residual.
#[derive(Module, Debug)]
struct SpatialTransformer<B: Backend> {
    norm: GroupNorm<B>,
    proj_in: Linear<B>,
    block: TransformerBlock<B>,
    proj_out: Linear<B>,
}

impl<B: Backend> SpatialTransformer<B> {
    fn load(l: &mut Loader<B>, p: &str, c: usize, heads: usize, cfg: &UNetConfig) -> Result<Self, DifixError> {
        let t = format!("{p}.transformer_blocks.0");
        let eps = 1e-5;
        Ok(Self {
            norm: l.group_norm(&format!("{p}.norm"), cfg.norm_num_groups, c, 1e-6)?,
            proj_in: l.linear(&format!("{p}.proj_in"), c, c, true)?,
            block: TransformerBlock {
                norm1: l.layer_norm(&format!("{t}.norm1"), c, eps)?,
                attn1: Attention::load(l, &format!("{t}.attn1"), c, c, heads, false)?,
                norm2: l.layer_norm(&format!("{t}.norm2"), c, eps)?,
                attn2: Attention::load(l, &format!("{t}.attn2"), c, cfg.cross_attention_dim, heads, false)?,
                norm3: l.layer_norm(&format!("{t}.norm3"), c, eps)?,
                ff_proj: l.linear(&format!("{t}.ff.net.0.proj"), c, 8 * c, true)?,
                ff_out: l.linear(&format!("{t}.ff.net.2"), 4 * c, c, true)?,
            },
            proj_out: l.linear(&format!("{p}.proj_out"), c, c, true)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>, views: usize) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = group_norm(&self.norm, x.clone(), false)
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let mut t = linear(&self.proj_in, tokens);
        let blk = &self.block;
        // Reference mode: the views of one sample attend to each other's tokens.
        let joint = t.clone().reshape([b / views, views * h * w, c]);
        let attended = blk.attn1.forward(blk.norm1.forward(joint), None).reshape([b, h * w, c]);
        t = t + attended;
        t = t.clone() + blk.attn2.forward(blk.norm2.forward(t), Some(context.clone()));
        let ff = linear(&blk.ff_proj, blk.norm3.forward(t.clone()));
        t = t + linear(&blk.ff_out, geglu(ff));
        tokens_to_image(linear(&self.proj_out, t), h, w) + x
    }
}

#[derive(Module, Debug)]
struct DownBlock<B: Backend> {
    resnets: Vec<ResnetBlock<B>>,
    attentions: Vec<SpatialTransformer<B>>,
    downsample: Option<Conv2d<B>>,
}

#[derive(Module, Debug)]
struct UpBlock<B: Backend> {
    resnets: Vec<ResnetBlock<B>>,
    attentions: Vec<SpatialTransformer<B>>,
    upsample: Option<Conv2d<B>>,
}

#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    time_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    time_linear_1: Linear<B>,
    time_linear_2: Linear<B>,
    conv_in: Conv2d<B>,
    down: Vec<DownBlock<B>>,
    mid_resnet_1: ResnetBlock<B>,
    mid_attention: SpatialTransformer<B>,
    mid_resnet_2: ResnetBlock<B>,
    up: Vec<UpBlock<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> UNet<B> {
    pub fn load(l: &mut Loader<B>, cfg: &UNetConfig) -> Result<Self, DifixError> {
        cfg.validate().map_err(|p| p.into_error("unet/config.json"))?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = ch[0] * 4;
        let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);

        let mut down = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let p = format!("down_blocks.{i}");
            let in_ch = out_ch;
            out_ch = ch[i];
            let mut block = DownBlock {
                resnets: vec![],
                attentions: vec![],
                downsample: None,
            };
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 { in_ch } else { out_ch };
                block.resnets.push(ResnetBlock::load(
                    l,
                    &format!("{p}.resnets.{j}"),
                    cin,
                    out_ch,
                    Some(temb),
                    groups,
                    eps,
                )?);
                if kind == "CrossAttnDownBlock2D" {
                    block.attentions.push(SpatialTransformer::load(
                        l,
                        &format!("{p}.attentions.{j}"),
                        out_ch,
                        cfg.heads(i),
                        cfg,
                    )?);
                }
            }
            if i + 1 < n {
                let pad = PaddingConfig2d::Explicit(1, 1, 1, 1);
                block.downsample =
                    Some(l.conv_strided(&format!("{p}.downsamplers.0.conv"), out_ch, out_ch, 3, 2, pad, true)?);
            }
            down.push(block);
        }

        let c_mid = ch[n - 1];
        let mid_resnet_1 = ResnetBlock::load(l, "mid_block.resnets.0", c_mid, c_mid, Some(temb), groups, eps)?;
        let mid_attention = SpatialTransformer::load(l, "mid_block.attentions.0", c_mid, cfg.heads(n - 1), cfg)?;
        let mid_resnet_2 = ResnetBlock::load(l, "mid_block.resnets.1", c_mid, c_mid, Some(temb), groups, eps)?;

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut prev_out = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let p = format!("up_blocks.{i}");
            let out = rev[i];
            let input = rev[(i + 1).min(n - 1)];
            let heads = cfg.heads(n - 1 - i);
            let mut block = UpBlock {
                resnets: vec![],
                attentions: vec![],
                upsample: None,
            };
            for j in 0..=cfg.layers_per_block {
                let skip = if j == cfg.layers_per_block { input } else { out };
                let cin = if j == 0 { prev_out } else { out };
                block.resnets.push(ResnetBlock::load(
                    l,
                    &format!("{p}.resnets.{j}"),
                    cin + skip,
                    out,
                    Some(temb),
                    groups,
                    eps,
                )?);
                if kind == "CrossAttnUpBlock2D" {
                    block.attentions.push(SpatialTransformer::load(
                        l,
                        &format!("{p}.attentions.{j}"),
                        out,
                        heads,
                        cfg,
                    )?);
                }
            }
            if i + 1 < n {
                block.upsample = Some(l.conv(&format!("{p}.upsamplers.0.conv"), out, out, 3, true)?);
            }
            prev_out = out;
            up.push(block);
        }

        Ok(Self {
            time_dim: ch[0],
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
            time_linear_1: l.linear("time_embedding.linear_1", ch[0], temb, true)?,
            time_linear_2: l.linear("time_embedding.linear_2", temb, temb, true)?,
            conv_in: l.conv("conv_in", cfg.in_channels, ch[0], 3, true)?,
            down,
            mid_resnet_1,
            mid_attention,
            mid_resnet_2,
            up,
            norm_out: l.group_norm("conv_norm_out", groups, ch[0], eps)?,
            conv_out: l.conv("conv_out", ch[0], cfg.out_channels, 3, true)?,
        })
    }

    /// The timestep embedding after the MLP, [batch, 4 * block_out_channels[0]].
    pub fn time_embedding(&self, timestep: f64, batch: usize, device: &B::Device) -> Tensor<B, 2> {
        let half = self.time_dim / 2;
        let freqs: Vec<f64> = (0..half)
            .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - self.freq_shift)).exp() * timestep)
            .collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = freqs.iter().map(|a| (a.sin() as f32, a.cos() as f32)).unzip();
        let values = if self.flip_sin_to_cos {
            [cos, sin].concat()
        } else {
            [sin, cos].concat()
        };
        let emb = Tensor::<B, 2>::from_data(TensorData::new(values, [1, self.time_dim]), device);
        let emb = self.time_linear_2.forward(silu(self.time_linear_1.forward(emb)));
        emb.repeat_dim(0, batch)
    }

    /// Predicted noise for `sample` [b*views, 4, h, w] at `timestep`, conditioned on `context`
    /// [b*views, tokens, dim]. Consecutive `views` batch entries form one sample (target first).
    pub fn forward(&self, sample: Tensor<B, 4>, timestep: f64, context: &Tensor<B, 3>, views: usize) -> Tensor<B, 4> {
        let [batch, _, _, _] = sample.dims();
        let temb = self.time_embedding(timestep, batch, &sample.device());
        let mut h = conv2d(&self.conv_in, sample);
        let mut skips = vec![h.clone()];
        for block in &self.down {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(h, Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context, views);
                }
                skips.push(h.clone());
            }
            if let Some(conv) = &block.downsample {
                h = conv2d(conv, h);
                skips.push(h.clone());
            }
        }
        h = self.mid_resnet_1.forward(h, Some(&temb));
        h = self.mid_attention.forward(h, context, views);
        h = self.mid_resnet_2.forward(h, Some(&temb));
        for block in &self.up {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up-block resnet, by construction");
                h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context, views);
                }
            }
            if let Some(conv) = &block.upsample {
                // Upsample to the next skip's exact size: latents need not be multiples of 8.
                let [_, _, sh, sw] = skips.last().expect("skips remain for the next up block").dims();
                h = conv2d(conv, resize_nearest(h, sh, sw));
            }
        }
        conv2d(&self.conv_out, group_norm(&self.norm_out, h, true))
    }
}
