//! The CLIP text encoder (`transformers.CLIPTextModel`; for SD-Turbo the OpenCLIP ViT-H text tower):
//! token + position embeddings, pre-LN transformer layers with a causal mask, a final LayerNorm.
//! Its output (`last_hidden_state`) is what the UNet cross-attends to.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;

use super::error::{check_positive, check_positive_f64};
use super::layers::{attention, merge_heads, split_heads};
use super::{ConfigProblem, DifixError};
use crate::nn::loader::Loader;

/// The keys of `text_encoder/config.json` this implementation uses.
#[derive(Clone, Debug, Deserialize)]
pub struct TextEncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

#[derive(Module, Debug)]
struct EncoderLayer<B: Backend> {
    layer_norm1: LayerNorm<B>,
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    out_proj: Linear<B>,
    layer_norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    token_embedding: Embedding<B>,
    position_embedding: Embedding<B>,
    layers: Vec<EncoderLayer<B>>,
    final_layer_norm: LayerNorm<B>,
    heads: usize,
    quick_gelu: bool,
}

impl TextEncoderConfig {
    /// Checks the config against what [`TextEncoder::load`] builds: positive sizes, heads that divide
    /// the width, a finite epsilon, a supported activation.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        check_positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigProblem {
                key: "num_attention_heads",
                rule: format!(
                    "{} must divide hidden_size ({})",
                    self.num_attention_heads, self.hidden_size
                ),
            });
        }
        check_positive_f64("layer_norm_eps", self.layer_norm_eps)?;
        if !matches!(self.hidden_act.as_str(), "gelu" | "quick_gelu") {
            return Err(ConfigProblem {
                key: "hidden_act",
                rule: format!("`{}` is not supported (gelu or quick_gelu)", self.hidden_act),
            });
        }
        Ok(())
    }
}

impl<B: Backend> TextEncoder<B> {
    pub fn load(l: &mut Loader<B>, config: &TextEncoderConfig) -> Result<Self, DifixError> {
        config
            .validate()
            .map_err(|p| p.into_error("text_encoder/config.json"))?;
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("text_model.encoder.layers.{i}");
            layers.push(EncoderLayer {
                layer_norm1: l.layer_norm(&format!("{p}.layer_norm1"), d, eps)?,
                q_proj: l.linear(&format!("{p}.self_attn.q_proj"), d, d, true)?,
                k_proj: l.linear(&format!("{p}.self_attn.k_proj"), d, d, true)?,
                v_proj: l.linear(&format!("{p}.self_attn.v_proj"), d, d, true)?,
                out_proj: l.linear(&format!("{p}.self_attn.out_proj"), d, d, true)?,
                layer_norm2: l.layer_norm(&format!("{p}.layer_norm2"), d, eps)?,
                fc1: l.linear(&format!("{p}.mlp.fc1"), d, config.intermediate_size, true)?,
                fc2: l.linear(&format!("{p}.mlp.fc2"), config.intermediate_size, d, true)?,
            });
        }
        // A buffer older checkpoints carry; it is always 0..max_positions.
        l.weights.allow_unused("text_model.embeddings.position_ids");
        let quick_gelu = match config.hidden_act.as_str() {
            "gelu" => false,
            "quick_gelu" => true,
            other => {
                return Err(DifixError::Input(format!(
                    "text encoder: unsupported hidden_act `{other}` (gelu or quick_gelu)"
                )))
            }
        };
        Ok(Self {
            token_embedding: l.embedding("text_model.embeddings.token_embedding.weight", config.vocab_size, d)?,
            position_embedding: l.embedding(
                "text_model.embeddings.position_embedding.weight",
                config.max_position_embeddings,
                d,
            )?,
            layers,
            final_layer_norm: l.layer_norm("text_model.final_layer_norm", d, eps)?,
            heads: config.num_attention_heads,
            quick_gelu,
        })
    }

    /// `ids`: token ids of one prompt (already padded). Returns `last_hidden_state` [1, tokens, hidden].
    pub fn forward(&self, ids: &[u32], device: &B::Device) -> Tensor<B, 3> {
        let n = ids.len();
        let tokens = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
            device,
        );
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, device).reshape([1, n]);
        let mut x = self.token_embedding.forward(tokens) + self.position_embedding.forward(positions);
        for layer in &self.layers {
            let h = layer.layer_norm1.forward(x.clone());
            let q = split_heads(layer.q_proj.forward(h.clone()), self.heads);
            let k = split_heads(layer.k_proj.forward(h.clone()), self.heads);
            let v = split_heads(layer.v_proj.forward(h), self.heads);
            x = x + layer.out_proj.forward(merge_heads(attention(q, k, v, true)));
            let h = layer.fc1.forward(layer.layer_norm2.forward(x.clone()));
            let h = if self.quick_gelu {
                h.clone() * burn::tensor::activation::sigmoid(h.mul_scalar(1.702))
            } else {
                burn::tensor::activation::gelu(h)
            };
            x = x + layer.fc2.forward(h);
        }
        self.final_layer_norm.forward(x)
    }
}
