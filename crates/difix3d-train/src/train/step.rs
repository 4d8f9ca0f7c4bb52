//! One optimisation step, shared by 3DGS training and the Difix3D refinement: render a camera,
//! compare with a target image (masked and weighted when the refinement asks), backpropagate through
//! the rasterizer, and Adam-update every parameter group with its own learning rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};

use super::adam::{self, Moments};
use super::trainer::TrainError;
use crate::data::Camera;
use crate::metrics::ssim::ssim;
use crate::render::diff_render::{render, SplatRenderer, SplatTensors};
use crate::render::RenderOptions;
use crate::scene::{self, Splats};

/// All the optimisable state: parameters and Adam moments, per group.
pub struct State<B: Backend> {
    pub params: SplatTensors<B>,
    pub moments: [Moments<B>; 5],
}

impl<B: Backend> State<B> {
    /// `splats` with fresh (zero) optimiser moments.
    pub fn new(splats: &Splats, device: &B::Device) -> Self {
        let params = SplatTensors::from_splats(splats, device);
        let moments = groups(&params).map(Moments::zeros);
        Self { params, moments }
    }

    pub fn len(&self) -> usize {
        self.params.means.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn groups<B: Backend>(p: &SplatTensors<B>) -> [&Tensor<B, 2>; 5] {
    [&p.means, &p.log_scales, &p.rotations, &p.opacity_logits, &p.sh]
}

pub const GROUP_NAMES: [&str; 5] = ["means", "log_scales", "rotations", "opacity_logits", "sh"];

/// Learning rate of each parameter group (SH split into the DC term and the higher orders).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearningRates {
    pub means: f32,
    pub log_scales: f32,
    pub rotations: f32,
    pub opacity_logits: f32,
    pub sh0: f32,
    pub sh_rest: f32,
}

impl LearningRates {
    /// gsplat's defaults for the update after `step` scheduler steps (gsplat's 0-based step: the
    /// first update uses `step = 0`, the undecayed rates): the means' rate is scaled by the scene
    /// size and decays exponentially to 1% at `decay_steps` (`ExponentialLR` with
    /// `gamma = 0.01^(1/decay_steps)`); the others are constant.
    pub fn gsplat(step: usize, decay_steps: usize, scene_scale: f32) -> Self {
        let decay = 0.01f64.powf(step as f64 / decay_steps.max(1) as f64) as f32;
        Self {
            means: 1.6e-4 * scene_scale * decay,
            log_scales: 5e-3,
            rotations: 1e-3,
            opacity_logits: 5e-2,
            sh0: 2.5e-3,
            sh_rest: 2.5e-3 / 20.0,
        }
    }

    /// Every rate multiplied by the matching factor of `by`.
    pub fn scaled(self, by: &LearningRates) -> Self {
        Self {
            means: self.means * by.means,
            log_scales: self.log_scales * by.log_scales,
            rotations: self.rotations * by.rotations,
            opacity_logits: self.opacity_logits * by.opacity_logits,
            sh0: self.sh0 * by.sh0,
            sh_rest: self.sh_rest * by.sh_rest,
        }
    }
}

/// What a step renders toward.
pub struct Target<B: Backend> {
    /// [H, W, 3] in [0, 1].
    pub image: Tensor<B, 3>,
    /// [H, W, 1], 1 where the loss counts; render and target are both zeroed elsewhere.
    pub mask: Option<Tensor<B, 3>>,
    /// The loss is multiplied by this (the refinement weighs real and pseudo views differently).
    pub weight: f32,
}

/// Wall time of one step's parts: the forward render, the loss, the backward pass (the rasterizer's
/// and burn's), the optimiser, and densification.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    pub render: Duration,
    pub loss: Duration,
    pub backward: Duration,
    pub optimizer: Duration,
    pub densify: Duration,
}

/// The outcome of [`optimize`].
pub struct StepResult {
    /// The weighted loss that was backpropagated.
    pub loss: f32,
    /// PSNR of the (masked) render against the target.
    pub psnr: f32,
    pub times: StepTimes,
}

/// The photometric loss of 3DGS, `(1 - λ) L1 + λ (1 - SSIM)`, on images [H, W, 3], after zeroing
/// both where `mask` [H, W, 1] is 0 (as Difix3D does for its pseudo views).
pub fn photometric_loss<B: Backend>(
    render: Tensor<B, 3>,
    target: Tensor<B, 3>,
    mask: Option<Tensor<B, 3>>,
    ssim_lambda: f32,
) -> Tensor<B, 1> {
    let (render, target) = match mask {
        Some(mask) => (render * mask.clone(), target * mask),
        None => (render, target),
    };
    let l1 = (render.clone() - target.clone()).abs().mean();
    let to_nchw = |t: Tensor<B, 3>| t.permute([2, 0, 1]).unsqueeze::<4>();
    let ssim_value = ssim(to_nchw(render), to_nchw(target));
    l1 * (1.0 - ssim_lambda) + (ssim_value.neg() + 1.0) * ssim_lambda
}

fn psnr_of<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
    let mse: f32 = (a - b).powi_scalar(2).mean().into_scalar().elem();
    -10.0 * mse.max(1e-12).log10()
}

/// How one step renders and weighs its loss.
pub struct StepSettings<'a> {
    pub options: &'a RenderOptions,
    /// Composite the render over this colour (gsplat's `random_bkgd`) before the loss.
    pub background: Option<[f32; 3]>,
    pub ssim_lambda: f32,
    pub lr: LearningRates,
    /// Adam's step count for bias correction (1-based).
    pub adam_step: usize,
}

/// Renders `camera`, takes the loss against `target`, and updates `state` in place.
pub fn optimize<B: Backend>(
    state: &mut State<B>,
    renderer: &Arc<SplatRenderer>,
    camera: &Camera,
    target: &Target<B>,
    settings: &StepSettings,
    device: &B::Device,
) -> Result<StepResult, TrainError> {
    type Ad<B> = Autodiff<B>;
    let p = &state.params;
    let params = SplatTensors::<Ad<B>> {
        means: Tensor::from_inner(p.means.clone()).require_grad(),
        log_scales: Tensor::from_inner(p.log_scales.clone()).require_grad(),
        rotations: Tensor::from_inner(p.rotations.clone()).require_grad(),
        opacity_logits: Tensor::from_inner(p.opacity_logits.clone()).require_grad(),
        sh: Tensor::from_inner(p.sh.clone()).require_grad(),
        sh_degree: p.sh_degree,
    };
    let t_render = Instant::now();
    let image = render(renderer, &params, camera, settings.options)?;
    let t_loss = Instant::now();
    let [h, w, _] = image.dims();
    let mut colour = image.clone().slice([0..h, 0..w, 0..3]);
    if let Some(bkgd) = settings.background {
        // Rendered over black, so adding bkgd * (1 - alpha) puts it over the colour.
        let bkgd = Tensor::<Ad<B>, 3>::from_data(TensorData::new(bkgd.to_vec(), [1, 1, 3]), device);
        let alpha = image.slice([0..h, 0..w, 3..4]);
        colour = colour + bkgd * (alpha.neg() + 1.0);
    }
    let mask = target.mask.clone().map(Tensor::<Ad<B>, 3>::from_inner);
    let target_image = Tensor::<Ad<B>, 3>::from_inner(target.image.clone());
    let loss = photometric_loss(colour.clone(), target_image, mask, settings.ssim_lambda) * target.weight;
    let loss_value: f32 = loss.clone().into_scalar().elem();
    let psnr = match &target.mask {
        Some(m) => psnr_of(colour.inner() * m.clone(), target.image.clone() * m.clone()),
        None => psnr_of(colour.inner(), target.image.clone()),
    };
    let t_backward = Instant::now();
    log::debug!(
        "step: rendered and took the loss ({loss_value}) in {:?}",
        t_backward - t_render
    );
    let grads = loss.backward();
    if let Some(message) = renderer.take_backward_error() {
        return Err(TrainError::Backward(message));
    }
    let t_optimizer = Instant::now();
    log::debug!("step: backward pass in {:?}", t_optimizer - t_backward);

    let lr = &settings.lr;
    let k = scene::sh_coeffs(p.sh_degree);
    let mut sh_lr = vec![lr.sh_rest; k * 3];
    sh_lr[..3].fill(lr.sh0);
    let rate = |v: Vec<f32>| {
        let n = v.len();
        Tensor::<B, 2>::from_data(TensorData::new(v, [1, n]), device)
    };
    let rates = [
        rate(vec![lr.means]),
        rate(vec![lr.log_scales]),
        rate(vec![lr.rotations]),
        rate(vec![lr.opacity_logits]),
        rate(sh_lr),
    ];
    let mut updated = Vec::with_capacity(5);
    for ((t, moments), rate) in groups(&params).into_iter().zip(state.moments.iter_mut()).zip(rates) {
        let g = t
            .grad(&grads)
            .ok_or_else(|| TrainError::Input("a parameter group got no gradient".into()))?;
        updated.push(adam::step(t.clone().inner(), g, moments, rate, settings.adam_step));
    }
    let [means, log_scales, rotations, opacity_logits, sh]: [Tensor<B, 2>; 5] = updated
        .try_into()
        .map_err(|_| TrainError::Input("lost a parameter group".into()))?;
    state.params = SplatTensors {
        means,
        log_scales,
        rotations,
        opacity_logits,
        sh,
        sh_degree: state.params.sh_degree,
    };
    Ok(StepResult {
        loss: loss_value,
        psnr,
        times: StepTimes {
            render: t_loss - t_render,
            loss: t_backward - t_loss,
            backward: t_optimizer - t_backward,
            optimizer: t_optimizer.elapsed(),
            densify: Duration::ZERO,
        },
    })
}

/// An 8-bit image as a [H, W, 3] tensor in [0, 1].
pub fn image_tensor<B: Backend>(image: &image::RgbImage, device: &B::Device) -> Tensor<B, 3> {
    let (w, h) = image.dimensions();
    let values: Vec<f32> = image.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
    Tensor::from_data(TensorData::new(values, [h as usize, w as usize, 3]), device)
}
