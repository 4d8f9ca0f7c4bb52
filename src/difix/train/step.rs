//! One fine-tuning step, as Difix3D's `train_difix.py` takes it: the network decodes every view of
//! the batch (targets and their references), the loss is `λ_l2 · MSE + λ_lpips · LPIPS(VGG)` plus,
//! after the warm-up, `λ_gram · Gram(VGG16)` on a crop; the gradients of what trains (the whole UNet,
//! the VAE decoder's LoRA pairs and skip convs) are clipped to a global norm and AdamW updates them.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use crate::difix::pipeline::denoise;
use crate::difix::scheduler::OneStep;
use crate::difix::unet::UNet;
use crate::difix::vae::Vae;
use crate::perceptual::gram::GramLoss;
use crate::perceptual::lpips::Lpips;

/// The networks fine-tuning updates.
#[derive(Module, Debug)]
pub struct Nets<B: Backend> {
    pub unet: UNet<B>,
    pub vae: Vae<B>,
}

impl<B: Backend> Nets<B> {
    /// Marks what trains as the reference does: every UNet parameter, and in the VAE only the LoRA
    /// pairs and the skip convs (load with [`crate::difix::Difix::load_for_training`] so the pairs
    /// exist).
    pub fn freeze_like_the_reference(self) -> Self {
        self.map(&mut Freeze::default())
    }

    /// Every view of `x` [(b·v), 3, h, w] in [-1, 1] through encode → one-step denoise → decode
    /// with skips; [(b·v), 3, h, w] clamped to [-1, 1].
    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>, views: usize, step: &OneStep) -> Tensor<B, 4> {
        let encoded = self.vae.encode(x);
        let scale = self.vae.scaling_factor;
        let z0 = denoise(&self.unet, step, encoded.mean.mul_scalar(scale), context, views);
        self.vae.decode(z0.div_scalar(scale), &encoded.skips).clamp(-1.0, 1.0)
    }
}

/// Sets `require_grad` from each parameter's path in [`Nets`].
#[derive(Default)]
struct Freeze {
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Freeze {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let trains = match self.path.first().map(String::as_str) {
            Some("unet") => true,
            Some("vae") => self.path.iter().any(|p| p == "lora" || p == "skip_convs"),
            _ => false,
        };
        param.set_require_grad(trains)
    }
}

/// The weights of the loss terms (the reference's `--lambda_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    pub l2: f32,
    pub lpips: f32,
    pub gram: f32,
}

/// A square crop (top, left, size) for the Gram loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub top: usize,
    pub left: usize,
    pub size: usize,
}

/// The loss terms of one step, before weighting.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Losses {
    pub l2: f32,
    pub lpips: f32,
    /// `None` before the Gram warm-up ends.
    pub gram: Option<f32>,
    /// The weighted sum that is backpropagated.
    pub total: f32,
}

/// The weighted loss of `prediction` against `target` (both [n, 3, h, w] in [-1, 1]) and its terms.
pub fn loss<B: Backend>(
    prediction: Tensor<B, 4>,
    target: Tensor<B, 4>,
    lpips: &Lpips<B>,
    gram: Option<(&GramLoss<B>, Crop)>,
    weights: LossWeights,
) -> (Tensor<B, 1>, Losses) {
    let l2 = (prediction.clone() - target.clone()).powi_scalar(2).mean();
    let to01 = |x: Tensor<B, 4>| x.add_scalar(1.0).div_scalar(2.0);
    let perceptual = lpips.distance(to01(prediction.clone()), to01(target.clone())).mean();
    let mut total = l2.clone() * weights.l2 + perceptual.clone() * weights.lpips;
    let scalar = |t: &Tensor<B, 1>| t.clone().into_scalar().elem::<f32>();
    let mut losses = Losses {
        l2: scalar(&l2),
        lpips: scalar(&perceptual),
        gram: None,
        total: 0.0,
    };
    if let Some((gram, c)) = gram {
        let [n, ch, _, _] = prediction.dims();
        let crop = |x: Tensor<B, 4>| to01(x).slice([0..n, 0..ch, c.top..c.top + c.size, c.left..c.left + c.size]);
        let g = gram.loss(crop(prediction), crop(target));
        losses.gram = Some(scalar(&g));
        total = total + g * weights.gram;
    }
    losses.total = scalar(&total);
    (total, losses)
}

/// AdamW as the reference configures it (β = 0.9 / 0.999, ε = 1e-8), with its weight decay.
pub type DifixOptimizer<B> = OptimizerAdaptor<AdamW, Nets<B>, B>;

pub fn optimizer<B: AutodiffBackend>(weight_decay: f32) -> DifixOptimizer<B> {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay)
        .init()
}

/// Scales all gradients so their global L2 norm is at most `max_norm` (torch's `clip_grad_norm_`:
/// factor `max_norm / (norm + 1e-6)` when below 1); returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f32,
) -> f32 {
    let mut sum = SquaredNorm { grads, sum: 0.0 };
    module.visit(&mut sum);
    let norm = sum.sum.sqrt() as f32;
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
    norm
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sum += g.powi_scalar(2).sum().into_scalar().elem::<f64>();
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let id: ParamId = param.id;
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(id) {
            self.grads.register::<B::InnerBackend, D>(id, g * self.factor);
        }
    }
}

/// One step: forward all views, the loss, backward, clipping, AdamW. Returns the updated networks,
/// the loss terms and the gradient norm before clipping.
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: AutodiffBackend>(
    nets: Nets<B>,
    optimizer: &mut DifixOptimizer<B>,
    inputs: Tensor<B, 4>,
    targets: Tensor<B, 4>,
    context: &Tensor<B, 3>,
    views: usize,
    step: &OneStep,
    lpips: &Lpips<B>,
    gram: Option<(&GramLoss<B>, Crop)>,
    weights: LossWeights,
    lr: f64,
    max_grad_norm: f32,
) -> (Nets<B>, Losses, f32) {
    let prediction = nets.forward(inputs, context, views, step);
    let (total, losses) = loss(prediction, targets, lpips, gram, weights);
    let mut grads = GradientsParams::from_grads(total.backward(), &nets);
    let norm = clip_global_norm(&nets, &mut grads, max_grad_norm);
    let nets = optimizer.step(lr, nets, grads);
    (nets, losses, norm)
}
