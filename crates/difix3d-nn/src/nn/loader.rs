//! Burn modules built straight from named weights ([`Weights`]): a [`Loader`] makes burn's own `nn`
//! layers (so a trainer can optimise them) with the shapes the caller's config implies, instead of a
//! random init that would be overwritten anyway. Difix's networks and the perceptual networks are
//! built with it. PEFT LoRA pairs can be kept apart for training ([`LoraConv2d`], [`LoraLinear`]).

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, GroupNorm, LayerNorm, LayerNormConfig, Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::flex_kernels::{conv2d, conv2d_plus, linear};
use super::weights::{ParamKey, Weights, WeightsError};

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

    pub fn tensor<const D: usize>(&mut self, key: &str, shape: [usize; D]) -> Result<Tensor<B, D>, WeightsError> {
        self.weights.tensor::<B, D>(key, shape, self.device)
    }

    pub fn conv(
        &mut self,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        bias: bool,
    ) -> Result<Conv2d<B>, WeightsError> {
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
    ) -> Result<Conv2d<B>, WeightsError> {
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
    pub fn linear(&mut self, prefix: &str, din: usize, dout: usize, bias: bool) -> Result<Linear<B>, WeightsError> {
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
    ) -> Result<LoraConv2d<B>, WeightsError> {
        let base = self.conv_strided(prefix, cin, cout, kernel, stride, padding.clone(), bias)?;
        let lora = match self.weights.take_lora(prefix)? {
            None => None,
            Some(pair) => {
                let bad = |key: &str, shape: &[usize]| WeightsError::Key {
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
    ) -> Result<LoraConv2d<B>, WeightsError> {
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
    ) -> Result<LoraLinear<B>, WeightsError> {
        let base = self.linear(prefix, din, dout, bias)?;
        let lora = match self.weights.take_lora(prefix)? {
            None => None,
            Some(pair) => {
                let rank = pair.a_shape[0];
                if pair.a_shape[..] != [rank, din] || pair.b_shape[..] != [dout, rank] {
                    return Err(WeightsError::Key {
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
    ) -> Result<GroupNorm<B>, WeightsError> {
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

    pub fn layer_norm(&mut self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm<B>, WeightsError> {
        let mut norm = LayerNormConfig::new(dim).with_epsilon(eps).init(self.device);
        let (wk, bk) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let (w, b) = (self.tensor(&wk, [dim])?, self.tensor(&bk, [dim])?);
        norm.gamma = self.param(&wk, w, false);
        norm.beta = Some(self.param(&bk, b, false));
        Ok(norm)
    }

    pub fn embedding(&mut self, key: &str, count: usize, dim: usize) -> Result<Embedding<B>, WeightsError> {
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

    /// `residual + self.forward(x)`.
    pub fn forward_plus(&self, x: Tensor<B, 4>, residual: Tensor<B, 4>) -> Tensor<B, 4> {
        match &self.lora {
            None => conv2d_plus(&self.base, x, residual),
            Some(_) => residual + self.forward(x),
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
            None => linear(&self.base, x),
            Some(l) => linear(&self.base, x.clone()) + l.up.forward(l.down.forward(x)).mul_scalar(l.scale),
        }
    }
}
