//! Building blocks shared by the text encoder, the UNet and the VAE, built straight from named weights.
//!
//! The layers are burn's own `nn` modules (so a trainer can later optimise them); only their
//! construction is ours: from a [`Weights`] store, with the shapes the configs imply, instead of a
//! random init that would be overwritten anyway.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, GroupNorm, LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::weights::{ParamKey, Weights};
use super::DifixError;
use crate::nn::flex_kernels::{conv2d, group_norm};

/// Attention score elements (queries x keys x heads x batch) computed at once. Larger inputs are
/// processed in query chunks, so two 576x1024 views (18432 tokens) never materialise the full matrix.
pub const ATTENTION_CHUNK_ELEMENTS: usize = 1 << 26;

/// Reads tensors for one model component onto one device.
pub struct Loader<'a, B: Backend> {
    pub weights: &'a mut Weights,
    pub device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    /// A parameter holding `tensor`, remembered as coming from `key` (for writing it back).
    fn param<const D: usize>(&mut self, key: &str, tensor: Tensor<B, D>, transposed: bool) -> Param<Tensor<B, D>> {
        let param = Param::from_tensor(tensor);
        let key = self.weights.stored_key(key);
        self.weights.param_keys.push(ParamKey {
            id: param.id,
            key,
            transposed,
        });
        param
    }

    pub fn tensor<const D: usize>(&mut self, key: &str, shape: [usize; D]) -> Result<Tensor<B, D>, DifixError> {
        self.weights.tensor::<B, D>(key, shape, self.device)
    }

    pub fn conv(
        &mut self,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        bias: bool,
    ) -> Result<Conv2d<B>, DifixError> {
        self.conv_strided(
            prefix,
            cin,
            cout,
            kernel,
            1,
            PaddingConfig2d::Explicit(kernel / 2, kernel / 2, kernel / 2, kernel / 2),
            bias,
        )
    }

    #[allow(clippy::too_many_arguments)] // mirrors torch's Conv2d signature
    pub fn conv_strided(
        &mut self,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: PaddingConfig2d,
        bias: bool,
    ) -> Result<Conv2d<B>, DifixError> {
        let key = format!("{prefix}.weight");
        let weight = self.tensor(&key, [cout, cin, kernel, kernel])?;
        let weight = self.param(&key, weight, false);
        let bias = if bias {
            let key = format!("{prefix}.bias");
            let b = self.tensor(&key, [cout])?;
            Some(self.param(&key, b, false))
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            stride: [stride, stride],
            kernel_size: [kernel, kernel],
            dilation: [1, 1],
            groups: 1,
            padding,
        })
    }

    /// A torch `nn.Linear` (weight stored [out, in]; burn wants [in, out]).
    pub fn linear(&mut self, prefix: &str, din: usize, dout: usize, bias: bool) -> Result<Linear<B>, DifixError> {
        let key = format!("{prefix}.weight");
        let weight = self.weights.take_values(&key, &[dout, din])?;
        let weight = transposed(weight, [dout, din], self.device);
        let weight = self.param(&key, weight, true);
        let bias = if bias {
            let key = format!("{prefix}.bias");
            let b = self.tensor(&key, [dout])?;
            Some(self.param(&key, b, false))
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// [`Self::conv_strided`] with the module's LoRA kept apart when the weights are loaded for
    /// training (otherwise merged, and `lora` is `None`).
    #[allow(clippy::too_many_arguments)] // mirrors torch's Conv2d signature
    pub fn lora_conv_strided(
        &mut self,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: PaddingConfig2d,
        bias: bool,
    ) -> Result<LoraConv2d<B>, DifixError> {
        let base = self.conv_strided(prefix, cin, cout, kernel, stride, padding.clone(), bias)?;
        let lora = match self.weights.take_lora(prefix)? {
            None => None,
            Some(pair) => {
                let bad = |key: &str, shape: &[usize]| DifixError::Key {
                    path: self.weights.origin.clone(),
                    key: key.to_string(),
                    message: format!("LoRA shape {shape:?} does not fit the conv {cin}->{cout} {kernel}x{kernel}"),
                };
                let [rank, ain, ak, ak2] = pair.a_shape[..] else {
                    return Err(bad(&pair.a_key, &pair.a_shape));
                };
                if ain != cin || ak != kernel || ak2 != kernel {
                    return Err(bad(&pair.a_key, &pair.a_shape));
                }
                if pair.b_shape[..] != [cout, rank, 1, 1] {
                    return Err(bad(&pair.b_key, &pair.b_shape));
                }
                let mut conv =
                    |key: &str, values: Vec<f32>, shape: [usize; 4], stride: usize, padding: PaddingConfig2d| {
                        let weight = Tensor::from_data(TensorData::new(values, shape), self.device);
                        Conv2d {
                            weight: self.param(key, weight, false),
                            bias: None,
                            stride: [stride, stride],
                            kernel_size: [shape[2], shape[3]],
                            dilation: [1, 1],
                            groups: 1,
                            padding,
                        }
                    };
                Some(ConvLora {
                    down: conv(&pair.a_key, pair.a, [rank, cin, kernel, kernel], stride, padding),
                    up: conv(&pair.b_key, pair.b, [cout, rank, 1, 1], 1, PaddingConfig2d::Valid),
                    scale: pair.scale as f64,
                })
            }
        };
        Ok(LoraConv2d { base, lora })
    }

    /// [`Self::lora_conv_strided`] with stride 1 and "same" padding.
    pub fn lora_conv(
        &mut self,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        bias: bool,
    ) -> Result<LoraConv2d<B>, DifixError> {
        let pad = kernel / 2;
        self.lora_conv_strided(
            prefix,
            cin,
            cout,
            kernel,
            1,
            PaddingConfig2d::Explicit(pad, pad, pad, pad),
            bias,
        )
    }

    /// [`Self::linear`] with the module's LoRA kept apart when loading for training.
    pub fn lora_linear(
        &mut self,
        prefix: &str,
        din: usize,
        dout: usize,
        bias: bool,
    ) -> Result<LoraLinear<B>, DifixError> {
        let base = self.linear(prefix, din, dout, bias)?;
        let lora = match self.weights.take_lora(prefix)? {
            None => None,
            Some(pair) => {
                let rank = pair.a_shape[0];
                if pair.a_shape[..] != [rank, din] || pair.b_shape[..] != [dout, rank] {
                    return Err(DifixError::Key {
                        path: self.weights.origin.clone(),
                        key: pair.a_key,
                        message: format!(
                            "LoRA shapes A {:?} and B {:?} do not fit the linear {din}->{dout}",
                            pair.a_shape, pair.b_shape
                        ),
                    });
                }
                // torch stores [out, in]; burn multiplies by [in, out].
                let mut linear = |key: &str, values: Vec<f32>, shape: [usize; 2]| {
                    let weight = transposed::<B>(values, shape, self.device);
                    Linear {
                        weight: self.param(key, weight, true),
                        bias: None,
                    }
                };
                Some(LinearLora {
                    down: linear(&pair.a_key, pair.a, [rank, din]),
                    up: linear(&pair.b_key, pair.b, [dout, rank]),
                    scale: pair.scale as f64,
                })
            }
        };
        Ok(LoraLinear { base, lora })
    }

    pub fn group_norm(
        &mut self,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<GroupNorm<B>, DifixError> {
        let (wk, bk) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let (w, b) = (self.tensor(&wk, [channels])?, self.tensor(&bk, [channels])?);
        Ok(GroupNorm {
            gamma: Some(self.param(&wk, w, false)),
            beta: Some(self.param(&bk, b, false)),
            num_groups: groups,
            num_channels: channels,
            epsilon: eps,
            affine: true,
        })
    }

    pub fn layer_norm(&mut self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm<B>, DifixError> {
        let mut norm = LayerNormConfig::new(dim).with_epsilon(eps).init(self.device);
        let (wk, bk) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let (w, b) = (self.tensor(&wk, [dim])?, self.tensor(&bk, [dim])?);
        norm.gamma = self.param(&wk, w, false);
        norm.beta = Some(self.param(&bk, b, false));
        Ok(norm)
    }

    pub fn embedding(&mut self, key: &str, count: usize, dim: usize) -> Result<Embedding<B>, DifixError> {
        Ok(Embedding {
            weight: {
                let w = self.tensor(key, [count, dim])?;
                self.param(key, w, false)
            },
        })
    }
}

/// `values` ([rows, cols], row-major) as the [cols, rows] tensor, transposed on the host so the
/// tensor is contiguous: a transposed view would be copied by every matmul that reshapes it (burn's
/// `Linear` does), on every call.
fn transposed<B: Backend>(values: Vec<f32>, [rows, cols]: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    let mut out = vec![0.0f32; values.len()];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
        for (c, v) in row.iter().enumerate() {
            out[c * rows + r] = *v;
        }
    }
    Tensor::from_data(TensorData::new(out, [cols, rows]), device)
}

/// A conv with its PEFT LoRA (`down` = lora_A, `up` = lora_B, times alpha / rank) kept apart so
/// training can update it; `None` when merged at load or absent.
#[derive(Module, Debug)]
pub struct LoraConv2d<B: Backend> {
    pub base: Conv2d<B>,
    pub lora: Option<ConvLora<B>>,
}

#[derive(Module, Debug)]
pub struct ConvLora<B: Backend> {
    pub down: Conv2d<B>,
    pub up: Conv2d<B>,
    pub scale: f64,
}

impl<B: Backend> LoraConv2d<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match &self.lora {
            None => conv2d(&self.base, x),
            Some(l) => conv2d(&self.base, x.clone()) + l.up.forward(conv2d(&l.down, x)).mul_scalar(l.scale),
        }
    }
}

/// A linear layer with its PEFT LoRA kept apart (see [`LoraConv2d`]).
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    pub base: Linear<B>,
    pub lora: Option<LinearLora<B>>,
}

#[derive(Module, Debug)]
pub struct LinearLora<B: Backend> {
    pub down: Linear<B>,
    pub up: Linear<B>,
    pub scale: f64,
}

impl<B: Backend> LoraLinear<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.lora {
            None => self.base.forward(x),
            Some(l) => self.base.forward(x.clone()) + l.up.forward(l.down.forward(x)).mul_scalar(l.scale),
        }
    }
}

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
        let h = self.conv2.forward(group_norm(&self.norm2, h, true));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
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
        self.to_out.forward(merge_heads(attention(q, k, v, false)))
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
            // score matrix; the others compute the same softmax(q k^T / sqrt(d)) v as below.
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
