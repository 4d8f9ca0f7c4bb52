//! One nerfacto training step as `ns-train nerfacto` takes it (nerfstudio 1.1.5), with autodiff over
//! any burn backend. Every value below was read in nerfstudio's source:
//!
//! - losses ([`super::losses`]): RGB MSE + 1.0 × interlevel + 0.002 × distortion
//!   (`NerfactoModelConfig.interlevel_loss_mult`, `distortion_loss_mult`); no orientation or
//!   normal losses (`predict_normals=False`);
//! - two Adam optimisers (`method_configs["nerfacto"].optimizers`, β 0.9/0.999 as torch's default):
//!   `proposal_networks` over every proposal network's parameters and `fields` over the field's
//!   (hash grid, both MLPs, appearance codes), each with lr 1e-2 and eps 1e-15, and no weight decay
//!   or gradient clipping (`AdamOptimizerConfig` defaults `weight_decay=0`, `max_norm=None`);
//! - their schedulers (`ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=200000)`, no
//!   warm-up): at step `s` (0-based) `lr = exp((1 − t) ln 1e-2 + t ln 1e-4)`, `t = min(s / 200000, 1)`
//!   ([`learning_rate`]);
//! - proposal weight annealing (`use_proposal_weight_anneal=True`, slope 10, 1000 steps): before step
//!   `s` the proposal weights are raised to `b x / ((b − 1) x + 1)`, `x = min(s / 1000, 1)`, `b = 10`
//!   ([`anneal`]);
//! - the proposal networks' update schedule (`proposal_update_every=5`, `proposal_warmup=5000`):
//!   they are evaluated with gradients when more steps than `clip(interp(s', [0, 5000], [0, 5]), 1, 5)`
//!   have passed since their last update (`s'` the previous step), and always in the first 10
//!   steps; otherwise under `no_grad`, so their parameters get no gradient and Adam skips them
//!   ([`ProposalSchedule`]);
//! - 4096 rays per batch (`train_num_rays_per_batch`), one jitter per ray and sampling pass
//!   (`use_single_jitter=True`);
//! - fp32 throughout: `mixed_precision=True` only changes CUDA runs (nerfstudio turns it off on the
//!   CPU);
//! - the camera optimiser when the config has it on (`CameraOptimizerConfig(mode="SO3xR3")` in
//!   `ns-train nerfacto`, [`super::camera_optimizer`]): each ray moved by its image's correction
//!   before sampling, the regulariser added to the loss, a third Adam optimiser (`camera_opt`, lr
//!   1e-3 decaying to 1e-4 over 5000 steps). Nerfstudio sums every loss term into one and steps all
//!   three optimisers on its gradients.

use burn::optim::adaptor::OptimizerAdaptor;
use std::collections::BTreeMap;

use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamState, AdaptiveMomentumState, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::camera_optimizer::CameraOptimizer;
use super::checkpoint::{AdamMoment, StoredTensor};
use super::field::{DensityField, NerfactoField};
use super::losses::{losses, Losses};
use super::model::{Nerfacto, Networks, Pass, TrainingPass};
use super::state::ParameterValue;
use crate::nn::adam::FusedAdam;

/// Adam's learning rate at the start, both groups (`AdamOptimizerConfig(lr=1e-2)`).
pub const LR_INIT: f64 = 1e-2;
/// The learning rate the schedulers decay to (`lr_final=0.0001`).
pub const LR_FINAL: f64 = 1e-4;
/// The schedulers' `max_steps`.
pub const LR_DECAY_STEPS: usize = 200_000;
/// `AdamOptimizerConfig(eps=1e-15)`.
pub const ADAM_EPS: f32 = 1e-15;
/// `train_num_rays_per_batch`.
pub const RAYS_PER_BATCH: usize = 4096;
/// `proposal_weights_anneal_slope`.
pub const ANNEAL_SLOPE: f64 = 10.0;
/// `proposal_weights_anneal_max_num_iters`.
pub const ANNEAL_STEPS: usize = 1000;
/// `proposal_update_every`.
pub const PROPOSAL_UPDATE_EVERY: f64 = 5.0;
/// `proposal_warmup`.
pub const PROPOSAL_WARMUP: f64 = 5000.0;

/// The learning rate of the field's and the proposal networks' groups at step `s` (0-based).
pub fn learning_rate(step: usize) -> f64 {
    exponential_decay(LR_INIT, LR_FINAL, LR_DECAY_STEPS, step)
}

/// `ExponentialDecayScheduler` without warm-up, as the `LambdaLR` it builds gives it: from `init`
/// at step 0 to `last` at `steps`, log-linearly, then constant.
pub fn exponential_decay(init: f64, last: f64, steps: usize, step: usize) -> f64 {
    let t = (step as f64 / steps as f64).clamp(0.0, 1.0);
    (init.ln() * (1.0 - t) + last.ln() * t).exp()
}

/// The exponent of the proposal weights at step `s` (`set_anneal`, MipNeRF-360's eq. 18 bias).
pub fn anneal(step: usize) -> f32 {
    let x = (step as f64 / ANNEAL_STEPS as f64).clamp(0.0, 1.0);
    let b = ANNEAL_SLOPE;
    (b * x / ((b - 1.0) * x + 1.0)) as f32
}

/// When the proposal networks train: the state `ProposalNetworkSampler` keeps (`_step`,
/// `_steps_since_update`) and its rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProposalSchedule {
    /// The step of the last `step_cb` (0 before any).
    pub step: usize,
    pub steps_since_update: usize,
}

impl ProposalSchedule {
    /// `update_sched`: steps between updates, from 1 rising linearly to 5 over the warm-up.
    pub fn update_every(step: usize) -> f64 {
        let interpolated = (step as f64 / PROPOSAL_WARMUP).min(1.0) * PROPOSAL_UPDATE_EVERY;
        interpolated.clamp(1.0, PROPOSAL_UPDATE_EVERY)
    }

    /// Whether this step's forward pass updates the proposal networks; records the update.
    pub fn begin_step(&mut self) -> bool {
        let updated = self.steps_since_update as f64 > Self::update_every(self.step) || self.step < 10;
        if updated {
            self.steps_since_update = 0;
        }
        updated
    }

    /// `step_cb` after step `s`.
    pub fn end_step(&mut self, step: usize) {
        self.step = step;
        self.steps_since_update += 1;
    }
}

/// A batch of training rays.
#[derive(Clone, Debug)]
pub struct RayBatch<B: Backend> {
    /// `[R, 3]`
    pub origins: Tensor<B, 2>,
    /// `[R, 3]`, unit length.
    pub directions: Tensor<B, 2>,
    /// `[R]`: the training image of each ray.
    pub images: Tensor<B, 1, Int>,
    /// `[R, 3]`: the photo's colour, in [0, 1].
    pub target: Tensor<B, 2>,
}

/// What a step measured: the loss terms (multipliers applied) before the update, and the batch PSNR.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLosses {
    pub rgb: f32,
    pub interlevel: f32,
    pub distortion: f32,
    /// The camera optimiser's regulariser (0 without it).
    pub camera: f32,
    pub total: f32,
    /// PSNR of the batch's rendered colours (`-10 log10(rgb_loss)`).
    pub psnr: f32,
    /// Whether the proposal networks were updated.
    pub proposals_updated: bool,
}

/// A model with its optimisers (two, three with the camera optimiser) and schedules.
pub struct NerfactoTrainer<B: AutodiffBackend> {
    model: Option<Nerfacto<B>>,
    fields: OptimizerAdaptor<FusedAdam, NerfactoField<B>, B>,
    proposals: OptimizerAdaptor<FusedAdam, Vec<DensityField<B>>, B>,
    cameras: OptimizerAdaptor<FusedAdam, CameraOptimizer<B>, B>,
    schedule: ProposalSchedule,
    /// The next step's number (0-based, nerfstudio's).
    step: usize,
}

/// A parameter's gradient in torch's layout: key, shape, values (see [`super::state::parameters`]).
pub type NamedGradient = (String, Vec<usize>, Vec<f32>);

/// The optimiser of the parameter `key`: its position in
/// [`OPTIMISER_GROUPS`](super::checkpoint::OPTIMISER_GROUPS) (fields, proposal networks, camera
/// optimiser), the order of the trainer's records.
fn group_of(key: &str) -> usize {
    super::checkpoint::optimiser_group(key).expect("every parameter's key names its optimiser group")
}

/// nerfstudio's Adam for nerfacto: betas (0.9, 0.999), eps 1e-15, no weight decay (burn's `Adam`,
/// each parameter's update in one pass: [`FusedAdam`]).
fn adam() -> FusedAdam {
    FusedAdam {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: ADAM_EPS,
    }
}

/// The optimiser record of a parameter from its saved moments (torch's layout), each laid out by
/// `layout` from its values and torch shape (as they are for vectors; reshaped for matrices, and
/// transposed too for linear weights, which torch stores transposed).
fn adam_record<B: AutodiffBackend, const D: usize>(
    moment: &AdamMoment,
    device: &burn::tensor::Device<B::InnerBackend>,
    layout: impl Fn(Tensor<B::InnerBackend, 1>, &[usize]) -> Tensor<B::InnerBackend, D>,
) -> AdaptorRecord<FusedAdam, B> {
    let tensor = |s: &StoredTensor| layout(Tensor::from_floats(s.values.as_slice(), device), &s.shape);
    AdaptorRecord::from_state(AdamState {
        momentum: AdaptiveMomentumState::new(moment.step, tensor(&moment.exp_avg), tensor(&moment.exp_avg_sq)),
    })
}

impl<B: AutodiffBackend> NerfactoTrainer<B> {
    pub fn new(model: Nerfacto<B>) -> Self {
        Self {
            model: Some(model),
            fields: adam().init(),
            proposals: adam().init(),
            cameras: adam().init(),
            schedule: ProposalSchedule::default(),
            step: 0,
        }
    }

    /// A trainer whose next step is `step`, as nerfstudio continues from a loaded checkpoint (its
    /// `step` + 1): the schedules and annealing go on from there. The optimisers start fresh unless
    /// [`Self::restore_adam`] gives them the checkpoint's moments; the proposal networks' update
    /// schedule starts fresh as in nerfstudio (`ProposalNetworkSampler` keeps its counters outside
    /// the checkpoint).
    pub fn starting_at(model: Nerfacto<B>, step: usize) -> Self {
        Self {
            step,
            ..Self::new(model)
        }
    }

    /// Gives the optimisers the Adam moments and step counts nerfstudio saved
    /// ([`super::checkpoint::read_adam_moments`], keyed by parameter key, torch layout), as
    /// `Trainer._load_checkpoint` does with `load_optimizers`; a parameter without saved moments
    /// starts fresh. Returns how many parameters got theirs; a moment whose shape differs from its
    /// parameter's is an error naming it.
    pub fn restore_adam(&mut self, moments: &BTreeMap<String, AdamMoment>) -> Result<usize, String> {
        let model = self.model.as_ref().expect("the model is only taken out during a step");
        // Each optimiser's record, in [`group_of`]'s order.
        let mut records = [
            self.fields.to_record(),
            self.proposals.to_record(),
            self.cameras.to_record(),
        ];
        let mut restored = 0;
        for parameter in super::state::parameters(model) {
            let Some(moment) = moments.get(&parameter.key) else {
                continue;
            };
            let shape = parameter.value.torch_shape();
            for (name, t) in [("exp_avg", &moment.exp_avg), ("exp_avg_sq", &moment.exp_avg_sq)] {
                if t.shape != shape {
                    return Err(format!(
                        "the saved {name} of `{}` has shape {:?}; the parameter has {shape:?}",
                        parameter.key, t.shape
                    ));
                }
            }
            let record = match &parameter.value {
                ParameterValue::Matrix(t) => adam_record(moment, &t.device(), |v, s| v.reshape([s[0], s[1]])),
                ParameterValue::LinearWeight(t) => {
                    adam_record(moment, &t.device(), |v, s| v.reshape([s[0], s[1]]).transpose())
                }
                ParameterValue::Vector(t) => adam_record(moment, &t.device(), |v, _| v),
            };
            records[group_of(&parameter.key)].insert(parameter.id, record);
            restored += 1;
        }
        let [fields, proposals, cameras] = records;
        self.fields = adam().init().load_record(fields);
        self.proposals = adam().init().load_record(proposals);
        self.cameras = adam().init().load_record(cameras);
        Ok(restored)
    }

    /// The optimisers' Adam moments and step counts by parameter key, in torch's layout (what
    /// [`Self::restore_adam`] takes); parameters that have not been stepped are absent.
    pub fn adam_moments(&self) -> BTreeMap<String, AdamMoment> {
        let model = self.model.as_ref().expect("the model is only taken out during a step");
        // Each optimiser's record, in [`group_of`]'s order.
        let mut records = [
            self.fields.to_record(),
            self.proposals.to_record(),
            self.cameras.to_record(),
        ];
        let mut out = BTreeMap::new();
        for parameter in super::state::parameters(model) {
            let Some(record) = records[group_of(&parameter.key)].remove(&parameter.id) else {
                continue;
            };
            // The moments as values of the parameter's own kind, so they come out in torch's layout
            // as the parameter does.
            let (step, moment_1, moment_2) = match parameter.value {
                ParameterValue::Vector(_) => {
                    let m = record.into_state::<1>().momentum;
                    (
                        m.time,
                        ParameterValue::Vector(m.moment_1),
                        ParameterValue::Vector(m.moment_2),
                    )
                }
                ParameterValue::Matrix(_) | ParameterValue::LinearWeight(_) => {
                    let kind = match parameter.value {
                        ParameterValue::LinearWeight(_) => ParameterValue::LinearWeight,
                        _ => ParameterValue::Matrix,
                    };
                    let m = record.into_state::<2>().momentum;
                    (m.time, kind(m.moment_1), kind(m.moment_2))
                }
            };
            let stored = |value: ParameterValue<B::InnerBackend>| {
                let (shape, values) = value.torch_values();
                StoredTensor { shape, values }
            };
            let (exp_avg, exp_avg_sq) = (stored(moment_1), stored(moment_2));
            out.insert(
                parameter.key,
                AdamMoment {
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        out
    }

    pub fn model(&self) -> &Nerfacto<B> {
        self.model.as_ref().expect("the model is only taken out during a step")
    }

    /// The next step's number: the number of steps taken, for a trainer made by [`Self::new`].
    pub fn steps(&self) -> usize {
        self.step
    }

    /// One step on `batch` with `jitter` (one `[R, 1]` tensor in [0, 1) per sampling pass: the
    /// number of proposal passes plus one).
    pub fn step(&mut self, batch: &RayBatch<B>, jitter: Vec<Tensor<B, 2>>) -> StepLosses {
        self.step_keeping_gradients(batch, jitter, false).0
    }

    /// [`Self::step`], also returning every parameter's gradient (before the update) when `keep`
    /// is set; a parameter that got none (the proposal networks between their updates) is absent.
    pub fn step_keeping_gradients(
        &mut self,
        batch: &RayBatch<B>,
        jitter: Vec<Tensor<B, 2>>,
        keep: bool,
    ) -> (StepLosses, Option<Vec<NamedGradient>>) {
        let step = self.step;
        let update_proposals = self.schedule.begin_step();
        let model = self.model.take().expect("the model is only taken out during a step");
        let (origins, directions) = match &model.camera_optimizer {
            Some(camera) => camera.correct(
                model.config.camera_optimizer.mode,
                batch.origins.clone(),
                batch.directions.clone(),
                batch.images.clone(),
            ),
            None => (batch.origins.clone(), batch.directions.clone()),
        };
        let pass = Pass::Train(TrainingPass {
            images: batch.images.clone(),
            jitter,
            anneal: anneal(step),
            update_proposals,
        });
        let outputs = model.forward(origins, directions, &pass);
        let terms: Losses<B> = losses(outputs.rgb, batch.target.clone(), &outputs.passes);
        let scalar = |t: &Tensor<B, 1>| t.clone().into_scalar().elem::<f32>();
        let (rgb, interlevel, distortion) = (scalar(&terms.rgb), scalar(&terms.interlevel), scalar(&terms.distortion));
        let regularizer = model
            .camera_optimizer
            .as_ref()
            .map(|c| c.regularizer(&model.config.camera_optimizer));
        let camera = regularizer.as_ref().map_or(0.0, scalar);
        let total = match regularizer {
            Some(r) => terms.total() + r,
            None => terms.total(),
        };
        let total_value = scalar(&total);
        let mut grads = total.backward();
        let kept = keep.then(|| {
            super::state::parameters(&model)
                .into_iter()
                .filter_map(|p| {
                    let (shape, values) = p.value.grad(&grads)?.torch_values();
                    Some((p.key, shape, values))
                })
                .collect()
        });

        let (networks, rest) = model.into_parts();
        let field_grads = GradientsParams::from_module(&mut grads, &networks.field);
        let proposal_grads = GradientsParams::from_module(&mut grads, &networks.proposals);
        let lr = learning_rate(step);
        let camera_optimizer = networks.camera_optimizer.map(|camera| {
            let camera_grads = GradientsParams::from_module(&mut grads, &camera);
            let lr = super::camera_optimizer::learning_rate(step);
            self.cameras.step(lr, camera, camera_grads)
        });
        let networks = Networks {
            field: self.fields.step(lr, networks.field, field_grads),
            proposals: self.proposals.step(lr, networks.proposals, proposal_grads),
            camera_optimizer,
        };
        self.model = Some(Nerfacto::from_parts(networks, rest));
        self.schedule.end_step(step);
        self.step += 1;
        let losses = StepLosses {
            rgb,
            interlevel,
            distortion,
            camera,
            total: total_value,
            psnr: -10.0 * rgb.max(1e-12).log10(),
            proposals_updated: update_proposals,
        };
        (losses, kept)
    }
}
