//! Building blocks shared by the text encoder, the UNet and the VAE (diffusers' ResNet block and
//! attention, and the tensor reshuffles around them), built from named weights by
//! [`crate::nn::loader::Loader`].

use burn::module::Module;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::DifixError;
use crate::nn::flex_kernels::{self, group_norm};
use crate::nn::loader::{Loader, LoraConv2d, LoraLinear};

/// Attention score elements (queries x keys x heads x batch) computed at once. Larger inputs are
/// processed in query chunks, so two 576x1024 views (18432 tokens) never materialise the full matrix.
pub const ATTENTION_CHUNK_ELEMENTS: usize = 1 << 26;

/// diffusers' `ResnetBlock2D`: two GroupNorm-SiLU-conv stages, an optional timestep projection added
/// between them and a 1x1 shortcut when the channel count changes.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: LoraConv2d<B>,
    time_emb_proj: Option<Linear<B>>,
    norm2: GroupNorm<B>,
    conv2: LoraConv2d<B>,
    conv_shortcut: Option<LoraConv2d<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    pub fn load(
        l: &mut Loader<B>,
        prefix: &str,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self, DifixError> {
        Ok(Self {
            norm1: l.group_norm(&format!("{prefix}.norm1"), groups, cin, eps)?,
            conv1: l.lora_conv(&format!("{prefix}.conv1"), cin, cout, 3, true)?,
            time_emb_proj: match temb {
                Some(t) => Some(l.linear(&format!("{prefix}.time_emb_proj"), t, cout, true)?),
                None => None,
            },
            norm2: l.group_norm(&format!("{prefix}.norm2"), groups, cout, eps)?,
            conv2: l.lora_conv(&format!("{prefix}.conv2"), cout, cout, 3, true)?,
            conv_shortcut: if cin != cout {
                Some(l.lora_conv(&format!("{prefix}.conv_shortcut"), cin, cout, 1, true)?)
            } else {
                None
            },
        })
    }

    /// `temb` is the SiLU-free timestep embedding [batch, dim]; the block applies SiLU itself.
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = self.conv1.forward(group_norm(&self.norm1, x.clone(), true));
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(silu(t.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        self.conv2.forward_plus(group_norm(&self.norm2, h, true), shortcut)
    }
}

/// diffusers' `Attention` with separate q/k/v projections (no bias on q/k/v unless `qkv_bias`) and
/// `to_out.0` with bias. `context` switches it to cross-attention.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    to_q: LoraLinear<B>,
    to_k: LoraLinear<B>,
    to_v: LoraLinear<B>,
    to_out: LoraLinear<B>,
    heads: usize,
}

impl<B: Backend> Attention<B> {
    pub fn load(
        l: &mut Loader<B>,
        prefix: &str,
        dim: usize,
        context_dim: usize,
        heads: usize,
        qkv_bias: bool,
    ) -> Result<Self, DifixError> {
        Ok(Self {
            to_q: l.lora_linear(&format!("{prefix}.to_q"), dim, dim, qkv_bias)?,
            to_k: l.lora_linear(&format!("{prefix}.to_k"), context_dim, dim, qkv_bias)?,
            to_v: l.lora_linear(&format!("{prefix}.to_v"), context_dim, dim, qkv_bias)?,
            to_out: l.lora_linear(&format!("{prefix}.to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// x: [batch, tokens, dim]; context: [batch, context_tokens, context_dim] or `None` for self-attention.
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = split_heads(self.to_q.forward(x), self.heads);
        let k = split_heads(self.to_k.forward(context.clone()), self.heads);
        let v = split_heads(self.to_v.forward(context), self.heads);
        let attended =
            flex_kernels::attention_merged(&q, &k, &v).unwrap_or_else(|| merge_heads(attention(q, k, v, false)));
        self.to_out.forward(attended)
    }
}

/// [b, n, h*d] -> [b, h, n, d]
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

/// [b, h, n, d] -> [b, n, h*d]
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// [b, h*w, c] tokens -> [b, c, h, w] image. Splitting the token axis first and permuting after
/// avoids reshaping a transposed tensor, which burn-wgpu 0.21 gets wrong for some shapes (seen with a
/// 1x2 latent: `swap_dims(1, 2).reshape([b, c, 1, 2])` returned scrambled values).
pub fn tokens_to_image<B: Backend>(tokens: Tensor<B, 3>, height: usize, width: usize) -> Tensor<B, 4> {
    let [b, _, c] = tokens.dims();
    tokens.reshape([b, height, width, c]).permute([0, 3, 1, 2])
}

/// softmax(q k^T / sqrt(d)) v, in query chunks when the score matrix would be large.
pub fn attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, causal: bool) -> Tensor<B, 4> {
    attention_chunked(q, k, v, causal, ATTENTION_CHUNK_ELEMENTS)
}

/// [`attention`] with an explicit budget of score elements per chunk.
pub fn attention_chunked<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
    max_elements: usize,
) -> Tensor<B, 4> {
    let [b, h, n, d] = q.dims();
    let m = k.dims()[2];
    let chunk = (max_elements / (b * h * m).max(1)).max(1);
    let scale = 1.0 / (d as f64).sqrt();
    let block = |q: Tensor<B, 4>, offset: usize| {
        if !causal {
            // The backend's own attention: burn-flex runs a tiled (flash) kernel that never holds the
            // score matrix (`Attention` uses `flex_kernels::attention_merged` there instead); the
            // others compute the same softmax(q k^T / sqrt(d)) v as below.
            return burn::tensor::module::attention(q, k.clone(), v.clone(), None, None, Default::default());
        }
        let rows = q.dims()[2];
        let mut scores = q.matmul(k.clone().swap_dims(2, 3)).mul_scalar(scale);
        // Query i (absolute offset + i) must not see keys after it.
        let masked: Vec<bool> = (0..rows).flat_map(|i| (0..m).map(move |j| j > offset + i)).collect();
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(masked, [rows, m]), &scores.device());
        scores = scores.mask_fill(mask.reshape([1, 1, rows, m]).expand([b, h, rows, m]), f32::NEG_INFINITY);
        softmax(scores, 3).matmul(v.clone())
    };
    if chunk >= n {
        return block(q, 0);
    }
    let parts: Vec<Tensor<B, 4>> = (0..n)
        .step_by(chunk)
        .map(|s| block(q.clone().slice([0..b, 0..h, s..(s + chunk).min(n), 0..d]), s))
        .collect();
    Tensor::cat(parts, 2)
}

pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::silu(x)
}

/// Nearest-neighbour resize with PyTorch's legacy index rule `src = floor(dst * in / out)` (what
/// diffusers' `F.interpolate(mode="nearest")` does), done with gathers so every backend agrees.
pub fn resize_nearest<B: Backend>(x: Tensor<B, 4>, height: usize, width: usize) -> Tensor<B, 4> {
    if let Some(resized) = flex_kernels::resize_nearest(&x, height, width) {
        return resized;
    }
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let index = |out: usize, inp: usize| {
        let idx: Vec<i64> = (0..out).map(|i| ((i * inp) / out) as i64).collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [out]), &device)
    };
    x.select(2, index(height, h)).select(3, index(width, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::ndarray::NdArrayDevice;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray<f32>;

    /// Chunking over queries must not change the result, with or without the causal mask.
    #[test]
    fn chunked_attention_equals_full_attention() {
        let dev = NdArrayDevice::Cpu;
        let q = Tensor::<B, 4>::random([2, 3, 37, 8], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<B, 4>::random([2, 3, 37, 8], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<B, 4>::random([2, 3, 37, 8], Distribution::Normal(0.0, 1.0), &dev);
        for causal in [false, true] {
            let full = attention_chunked(q.clone(), k.clone(), v.clone(), causal, usize::MAX);
            // 2 * 3 * 37 keys per query row: 5 rows per chunk, the last chunk shorter.
            let chunked = attention_chunked(q.clone(), k.clone(), v.clone(), causal, 2 * 3 * 37 * 5);
            let diff: f32 = (full.clone() - chunked).abs().max().into_scalar();
            assert!(diff < 1e-6, "causal={causal}: {diff}");
            if causal {
                // The first query sees only the first key.
                let first = full.slice([0..2, 0..3, 0..1, 0..8]);
                let v0 = v.clone().slice([0..2, 0..3, 0..1, 0..8]);
                let diff: f32 = (first - v0).abs().max().into_scalar();
                assert!(diff < 1e-6);
            }
        }
    }
}
