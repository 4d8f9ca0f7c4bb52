//! One fine-tuning step, as Difix3D's `train_difix.py` takes it: the network decodes every view of
//! the batch (targets and their references), the loss is `λ_l2 · MSE + λ_lpips · LPIPS(VGG)` plus,
//! after the warm-up, `λ_gram · Gram(VGG16)` on a crop; the gradients of what trains (the whole UNet,
//! the VAE decoder's LoRA pairs and skip convs) are clipped to a global norm and AdamW updates them.

use burn::collective::{CollectiveError, PeerId, ReduceOperation};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use std::time::{Duration, Instant};

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
    /// with skips; [(b·v), 3, h, w] clamped to [-1, 1]. The latent is the posterior mean, or with
    /// `noise_seed` a sample `mean + std · ε` as the reference trains (ε from that seed).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        context: &Tensor<B, 3>,
        views: usize,
        step: &OneStep,
        noise_seed: Option<u64>,
    ) -> Tensor<B, 4> {
        let encoded = self.vae.encode(x);
        let scale = self.vae.scaling_factor;
        let latent = match noise_seed {
            None => encoded.mean,
            Some(seed) => {
                let shape = encoded.mean.dims();
                let mut rng = crate::rng::Rng(seed);
                let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.normal()).collect();
                let eps = Tensor::<B, 4>::from_data(TensorData::new(values, shape), &encoded.mean.device());
                encoded.mean + encoded.logvar.mul_scalar(0.5).exp() * eps
            }
        };
        let z0 = denoise(&self.unet, step, latent.mul_scalar(scale), context, views);
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

impl Losses {
    /// The term-wise mean (of micro-batches, or of data-parallel peers).
    pub fn mean(items: &[Losses]) -> Losses {
        let n = items.len().max(1) as f32;
        let mut mean = Losses::default();
        for l in items {
            mean.l2 += l.l2 / n;
            mean.lpips += l.lpips / n;
            mean.gram = l.gram.map(|g| mean.gram.unwrap_or(0.0) + g / n);
            mean.total += l.total / n;
        }
        mean
    }
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

/// Replaces each gradient by its mean over all data-parallel peers (burn-collective's all-reduce),
/// parameter by parameter in the module's own order, which every peer shares whatever its parameter
/// ids. (burn's `GradientsParams::all_reduce` goes by sorted ids, which only agree between clones of
/// one process's networks.)
fn average_with_peers<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &mut GradientsParams,
    peer: PeerId,
) -> Result<(), CollectiveError> {
    let mut visitor = AllReduce {
        grads,
        peer,
        error: None,
    };
    module.visit(&mut visitor);
    visitor.error.map_or(Ok(()), Err)
}

struct AllReduce<'a> {
    grads: &'a mut GradientsParams,
    peer: PeerId,
    /// The first failure; no further all-reduce is attempted after it.
    error: Option<CollectiveError>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AllReduce<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let primitive = grad.into_primitive().tensor();
        match burn::collective::all_reduce::<B::InnerBackend>(self.peer, primitive, ReduceOperation::Mean) {
            Ok(mean) => {
                let mean = Tensor::<B::InnerBackend, D>::from_primitive(burn::tensor::TensorPrimitive::Float(mean));
                self.grads.register::<B::InnerBackend, D>(param.id, mean);
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// One micro-batch: the views of one or more samples (each target followed by its reference when
/// there is one), what they should become, and the prompt embedding per view.
pub struct Batch<B: Backend> {
    /// [(b·v), 3, h, w] in [-1, 1].
    pub inputs: Tensor<B, 4>,
    pub targets: Tensor<B, 4>,
    /// [(b·v), 77, dim], detached (the text encoder is frozen).
    pub context: Tensor<B, 3>,
    pub views: usize,
    /// Where the Gram loss looks, once it is on.
    pub gram_crop: Option<Crop>,
    /// Sample the VAE posterior with this seed (the reference samples); `None`: its mean.
    pub noise_seed: Option<u64>,
}

/// What one step needs besides the networks and the batches.
pub struct StepSettings<'a, B: Backend> {
    pub step: &'a OneStep,
    pub lpips: &'a Lpips<B>,
    pub gram: Option<&'a GramLoss<B>>,
    pub weights: LossWeights,
    pub lr: f64,
    pub max_grad_norm: f32,
    /// Wait for the device after each phase so [`StepTimes`] is the phases' own time (on GPU
    /// backends the phases otherwise overlap); for benchmarks.
    pub sync_phases: bool,
}

/// Where one optimiser step's time went (host clock; exact per phase only with
/// [`StepSettings::sync_phases`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// Encode, denoise and decode of every view.
    pub forward: Duration,
    /// L2, LPIPS and Gram terms (read back to the host).
    pub loss: Duration,
    pub backward: Duration,
    /// Gradient averaging with peers, clipping and AdamW.
    pub update: Duration,
}

impl StepTimes {
    pub fn total(&self) -> Duration {
        self.forward + self.loss + self.backward + self.update
    }
}

/// What [`train_step`] returns.
pub struct Stepped<B: AutodiffBackend> {
    pub nets: Nets<B>,
    /// The loss terms averaged over the micro-batches.
    pub losses: Losses,
    /// The gradient norm before clipping.
    pub grad_norm: f32,
    pub times: StepTimes,
}

/// One optimiser step over `batches` (gradient accumulation: each micro-batch's loss divided by
/// their number, as accelerate does): forward all views, the loss, backward, global-norm clipping,
/// AdamW. With `peer` set, this is one of several data-parallel copies (see [`super::parallel`]):
/// the gradients are averaged with the other peers' before clipping, so every copy takes the same
/// update.
pub fn train_step<B: AutodiffBackend>(
    nets: Nets<B>,
    optimizer: &mut DifixOptimizer<B>,
    batches: Vec<Batch<B>>,
    settings: &StepSettings<B>,
    peer: Option<PeerId>,
) -> Result<Stepped<B>, CollectiveError> {
    let n = batches.len().max(1);
    let mut accumulator = burn::optim::GradientsAccumulator::new();
    let mut terms = Vec::with_capacity(n);
    let mut times = StepTimes::default();
    let mut clock = PhaseClock::new(settings.sync_phases);
    for batch in batches {
        let device = batch.inputs.device();
        let prediction = nets.forward(
            batch.inputs,
            &batch.context,
            batch.views,
            settings.step,
            batch.noise_seed,
        );
        times.forward += clock.lap::<B>(&device);
        let gram = settings.gram.zip(batch.gram_crop);
        let (total, losses) = loss(prediction, batch.targets, settings.lpips, gram, settings.weights);
        times.loss += clock.lap::<B>(&device);
        let grads = GradientsParams::from_grads((total / n as f32).backward(), &nets);
        times.backward += clock.lap::<B>(&device);
        accumulator.accumulate(&nets, grads);
        terms.push(losses);
    }
    let mut grads = accumulator.grads();
    if let Some(peer) = peer {
        average_with_peers(&nets, &mut grads, peer)?;
    }
    let grad_norm = clip_global_norm(&nets, &mut grads, settings.max_grad_norm);
    let nets = optimizer.step(settings.lr, nets, grads);
    times.update += clock.elapsed();
    Ok(Stepped {
        nets,
        losses: Losses::mean(&terms),
        grad_norm,
        times,
    })
}

/// Times consecutive phases, waiting for the device at each boundary when asked to.
struct PhaseClock {
    sync: bool,
    since: Instant,
}

impl PhaseClock {
    fn new(sync: bool) -> Self {
        Self {
            sync,
            since: Instant::now(),
        }
    }

    /// The time since the last lap, after the device's queued work when syncing.
    fn lap<B: Backend>(&mut self, device: &B::Device) -> Duration {
        if self.sync {
            // A failed sync surfaces at the next read-back; the timing is what is lost.
            let _ = B::sync(device);
        }
        let lap = self.since.elapsed();
        self.since = Instant::now();
        lap
    }

    fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }
}
