//! The fine-tuning loop of `difix3d train-difix`: random pairs prepared per
//! [`ImagePrep`] (resized as the reference does, or random crops), optimiser steps (with
//! gradient accumulation), the Gram loss after its warm-up, checkpoints (a model folder `difix3d
//! fix --model` loads, with the optimiser state to resume from), and evaluation on the test split
//! (PSNR, SSIM, LPIPS and L2 of the fixed input against its target, with sample images).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::collective::PeerId;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, OPTIMIZER_FILE, STATE_FILE};
use super::data::{self, ImagePrep, Pair, PairsError, Sample};
use super::export::export;
use super::parallel::{PeerSetup, Peers};
use super::step::{self, Batch, Crop, LossWeights, Losses, Nets, StepSettings, StepTimes};
use crate::difix::images::to_tensor;
use crate::difix::pipeline::{Difix, PromptEncoder};
use crate::difix::DifixError;
use crate::perceptual::gram::{self, GramLoss};
use crate::perceptual::lpips::{Lpips, LpipsFiles};
use crate::rng::Rng;

#[derive(Debug, thiserror::Error)]
pub enum DifixTrainError {
    #[error(transparent)]
    Pairs(#[from] PairsError),
    #[error(transparent)]
    Model(#[from] DifixError),
    /// The perceptual losses' weights (LPIPS, VGG16).
    #[error(transparent)]
    Weights(#[from] crate::nn::weights::WeightsError),
    #[error(transparent)]
    Backend(#[from] crate::nn::backend::BackendError),
    #[error("{0}")]
    Input(String),
    #[error("data-parallel training: {0}")]
    Parallel(String),
}

/// The reference's Gram crop side.
const DEFAULT_GRAM_CROP: usize = 400;

/// Every knob of a run; [`DifixTrainConfig::new`] gives the reference's defaults.
#[derive(Clone, Debug)]
pub struct DifixTrainConfig {
    /// The pair JSON (see [`super::data`]).
    pub data: PathBuf,
    /// The model to start from (a diffusers-layout Difix folder) and an optional trainer checkpoint.
    pub model: PathBuf,
    pub model_checkpoint: Option<PathBuf>,
    /// The run folder: `checkpoint/` (a model folder plus the optimiser state), `samples/`,
    /// `eval.jsonl`.
    pub out: PathBuf,
    pub steps: usize,
    /// How pairs are brought to the training size (the reference's resize to 576x1024 by default).
    pub image_prep: ImagePrep,
    pub lr: f64,
    pub weight_decay: f32,
    pub max_grad_norm: f32,
    pub weights: LossWeights,
    /// The Gram loss is added once the step exceeds this.
    pub gram_warmup: usize,
    /// Side of the Gram loss's random crop, from [`gram::min_crop`] to the training images' shorter
    /// side; `None`: the reference's 400, or that side when it is smaller.
    pub gram_crop: Option<usize>,
    /// LPIPS's network (VGG16 in the reference) and the VGG16 for the Gram loss (default: LPIPS's
    /// backbone).
    pub lpips: LpipsFiles,
    pub vgg16: Option<PathBuf>,
    pub grad_accumulation: usize,
    pub checkpoint_every: usize,
    /// 0: evaluate only at the end.
    pub eval_every: usize,
    /// Continue from `out/checkpoint`.
    pub resume: bool,
    pub seed: u64,
    /// Sample the VAE posterior as the reference does (the mean otherwise).
    pub sample_posterior: bool,
    /// Wait for the device between a step's phases so [`DifixStepReport::times`] splits it exactly
    /// (benchmarks; it costs GPU overlap).
    pub sync_phases: bool,
}

impl DifixTrainConfig {
    pub fn new(data: PathBuf, model: PathBuf, out: PathBuf, lpips: LpipsFiles) -> Self {
        Self {
            data,
            model,
            model_checkpoint: None,
            out,
            steps: 10_000,
            image_prep: ImagePrep::REFERENCE,
            lr: 2e-5,
            weight_decay: 1e-2,
            max_grad_norm: 1.0,
            weights: LossWeights {
                l2: 1.0,
                lpips: 1.0,
                gram: 1.0,
            },
            gram_warmup: 2000,
            gram_crop: None,
            lpips,
            vgg16: None,
            grad_accumulation: 1,
            checkpoint_every: 1000,
            eval_every: 500,
            resume: false,
            seed: 42,
            sample_posterior: true,
            sync_phases: false,
        }
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.out.join("checkpoint")
    }

    /// The Gram crop's side: [`Self::gram_crop`] or its default.
    pub fn gram_crop_side(&self) -> usize {
        self.gram_crop
            .unwrap_or(DEFAULT_GRAM_CROP.min(self.shorter_side() as usize))
    }

    /// The shorter side of the prepared training images.
    fn shorter_side(&self) -> u32 {
        let (w, h) = self.image_prep.size();
        w.min(h)
    }

    /// Checks every number against its domain before anything is loaded or written: the errors
    /// name the setting (as its `train-difix` flag) and the rule.
    pub fn validate(&self) -> Result<(), String> {
        use crate::validate;
        fn flag(name: &str) -> impl Fn(String) -> String + '_ {
            move |m| format!("--{name} {m}")
        }
        let min = gram::min_crop();
        let (sides, name, what) = match self.image_prep {
            ImagePrep::Resize { height, width } => (vec![height, width], "size", format!("{height}x{width}")),
            ImagePrep::Crop { side } => (vec![side], "resolution", side.to_string()),
        };
        for side in sides {
            validate::image_side(side).map_err(flag(name))?;
            if !side.is_multiple_of(8) || (side as usize) < min {
                return Err(format!(
                    "--{name} sides must be multiples of 8 and at least {min} (what VGG16's four 2x2 poolings before relu5_3 need), not {what}"
                ));
            }
        }
        if self.weights.gram > 0.0 {
            let crop = self.gram_crop_side();
            let short = self.shorter_side() as usize;
            if !(min..=short).contains(&crop) {
                return Err(format!(
                    "--gram-crop must be between {min} (VGG16 pools the crop 2x2 four times before relu5_3, the last layer the Gram loss reads) and the training images' shorter side {short} ({}), not {crop}",
                    self.image_prep
                ));
            }
        }
        validate::positive(self.lr).map_err(flag("lr"))?;
        validate::non_negative(f64::from(self.weight_decay)).map_err(flag("weight-decay"))?;
        validate::positive(f64::from(self.max_grad_norm)).map_err(flag("max-grad-norm"))?;
        let weights = &self.weights;
        for (name, w) in [
            ("lambda-l2", weights.l2),
            ("lambda-lpips", weights.lpips),
            ("lambda-gram", weights.gram),
        ] {
            validate::non_negative(f64::from(w)).map_err(flag(name))?;
        }
        validate::at_least_one(self.grad_accumulation).map_err(flag("grad-accumulation"))?;
        // The run's size, up front: a step count or a number of micro-batches that no run could
        // finish (or that overflows the step arithmetic) is refused with the numbers.
        crate::validate::steps(self.steps).map_err(flag("steps"))?;
        let limit = crate::validate::MAX_STEPS;
        match self.steps.checked_mul(self.grad_accumulation) {
            Some(batches) if batches <= limit => {}
            _ => {
                return Err(format!(
                    "--steps {} with --grad-accumulation {} is more than {limit} micro-batches in all",
                    self.steps, self.grad_accumulation
                ))
            }
        }
        Ok(())
    }
}

/// Progress after each optimiser step.
#[derive(Clone, Debug)]
pub struct DifixStepReport {
    pub step: usize,
    pub steps: usize,
    pub losses: Losses,
    pub grad_norm: f32,
    /// This step's phases (peer 0's, when data-parallel).
    pub times: StepTimes,
    pub steps_per_second: f32,
}

/// Metrics of the fixed test inputs against their targets (as prepared for training; centre crops
/// with [`ImagePrep::Crop`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DifixEvalReport {
    pub step: usize,
    pub l2: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub lpips: f64,
    pub samples: usize,
}

pub trait DifixTrainObserver {
    /// Hears each step; returning true saves a checkpoint now.
    fn step(&mut self, report: &DifixStepReport) -> bool;
    fn eval(&mut self, _report: &DifixEvalReport) {}
    fn saved(&mut self, _path: &Path) {}
}

#[derive(Clone, Debug)]
pub struct DifixTrainSummary {
    pub steps: usize,
    pub checkpoint: PathBuf,
    pub evals: Vec<DifixEvalReport>,
    pub stopped_early: bool,
}

#[derive(Serialize, Deserialize)]
struct TrainerState {
    step: usize,
}

/// The tensors of one sample: views [target, reference?] in [-1, 1].
fn views<B: AutodiffBackend>(sample: &Sample, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 4>, usize) {
    let t = |img: &image::RgbImage| to_tensor::<B>(img, device).mul_scalar(2.0).sub_scalar(1.0);
    match &sample.reference {
        Some(r) => (
            Tensor::cat(vec![t(&sample.image), t(r)], 0),
            Tensor::cat(vec![t(&sample.target), t(r)], 0),
            2,
        ),
        None => (t(&sample.image), t(&sample.target), 1),
    }
}

fn context<B: AutodiffBackend>(prompts: &mut PromptEncoder<B>, prompt: &str, views: usize) -> Tensor<B, 3> {
    prompts.embed(prompt).detach().repeat_dim(0, views)
}

/// One micro-batch as drawn, before it becomes tensors on the device of the peer that trains on it.
pub struct Draw<B: AutodiffBackend> {
    sample: Sample,
    /// The prompt's embedding, [1, 77, dim], detached, on the first peer's device.
    context: Tensor<B, 3>,
    gram_crop: Option<Crop>,
    noise_seed: Option<u64>,
}

impl<B: AutodiffBackend> Draw<B> {
    pub fn batch(&self, device: &B::Device) -> Batch<B> {
        let (inputs, targets, views) = views::<B>(&self.sample, device);
        Batch {
            inputs,
            targets,
            context: self.context.clone().to_device(device).repeat_dim(0, views),
            views,
            gram_crop: self.gram_crop,
            noise_seed: self.noise_seed,
        }
    }
}

/// Fine-tunes per `config` on `B`, data-parallel when given several `devices` (see
/// [`super::parallel`]; the first one evaluates and saves). Each device takes
/// `config.grad_accumulation` micro-batches per step, so N devices train as one device with N times
/// the accumulation. `observer` hears every step and evaluation; `stop` ends the run after the
/// current step, with a checkpoint.
pub fn train_difix<B: AutodiffBackend>(
    config: &DifixTrainConfig,
    devices: &[B::Device],
    observer: &mut dyn DifixTrainObserver,
    stop: &AtomicBool,
) -> Result<DifixTrainSummary, DifixTrainError> {
    let Some(device) = devices.first() else {
        return Err(DifixTrainError::Input("no device to train on".into()));
    };
    config.validate().map_err(DifixTrainError::Input)?;
    let pairs = data::load(&config.data)?;
    let checkpoint_dir = config.checkpoint_dir();
    let (model_dir, model_checkpoint, start) = if config.resume {
        let state_path = checkpoint_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path)
            .map_err(|e| DifixTrainError::Input(format!("{}: cannot resume: {e}", state_path.display())))?;
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| DifixTrainError::Input(format!("{}: {e}", state_path.display())))?;
        (checkpoint_dir.clone(), None, state.step)
    } else {
        (config.model.clone(), config.model_checkpoint.clone(), 0)
    };
    let lpips = Lpips::<B>::load(&config.lpips, device)?;
    let gram = if config.weights.gram > 0.0 {
        Some(GramLoss::<B>::load(
            config.vgg16.as_ref().unwrap_or(&config.lpips.backbone),
            device,
        )?)
    } else {
        None
    };
    let parts = Difix::<B>::load_for_training(&model_dir, model_checkpoint.as_deref(), device)?.into_training_parts();
    let (unet_keys, vae_keys, source, one_step) = (parts.unet_keys, parts.vae_keys, parts.source, parts.step);
    let mut prompts = parts.prompts;
    let mut nets = Nets {
        unet: parts.unet,
        vae: parts.vae,
    }
    .freeze_like_the_reference();
    let keys = [unet_keys.as_slice(), vae_keys.as_slice()];
    let mut optimizer = step::optimizer::<B>(config.weight_decay);
    if config.resume {
        optimizer = checkpoint::load_optimizer(optimizer, &nets, &keys, &checkpoint_dir.join(OPTIMIZER_FILE))?;
    }
    // Every input has loaded; the folder is put back as it was if the run fails before its first
    // checkpoint.
    let mut run_dir = crate::disk::RunDir::create(&config.out).map_err(|e| DifixError::io(&config.out, e))?;

    let prep = config.image_prep;
    let (width, height) = prep.size();
    let gram_size = config.gram_crop_side();
    let mut evals = Vec::new();
    let run_eval = |nets: &Nets<B>,
                    prompts: &mut PromptEncoder<B>,
                    step: usize,
                    observer: &mut dyn DifixTrainObserver,
                    evals: &mut Vec<DifixEvalReport>|
     -> Result<(), DifixTrainError> {
        if pairs.test.is_empty() {
            return Ok(());
        }
        let report = evaluate(nets, prompts, &pairs.test, &one_step, &lpips, prep, step, &config.out)?;
        observer.eval(&report);
        append_eval(&config.out.join("eval.jsonl"), &report)?;
        evals.push(report);
        Ok(())
    };
    if start == 0 {
        run_eval(&nets, &mut prompts, 0, observer, &mut evals)?;
    }
    let save = |nets: &Nets<B>, optimizer: &step::DifixOptimizer<B>, step: usize| {
        export(nets, &unet_keys, &vae_keys, &source, &checkpoint_dir, &mut |dir| {
            checkpoint::save_optimizer(optimizer, nets, &keys, &dir.join(OPTIMIZER_FILE))?;
            let state =
                serde_json::to_string(&TrainerState { step }).map_err(|e| DifixError::format(dir, e.to_string()))?;
            std::fs::write(dir.join(STATE_FILE), state).map_err(|e| DifixError::io(dir, e))
        })
    };

    let mut peers = if devices.len() > 1 {
        let setup = PeerSetup {
            lpips: config.lpips.clone(),
            gram_vgg16: gram
                .is_some()
                .then(|| config.vgg16.clone().unwrap_or(config.lpips.backbone.clone())),
            one_step,
            weights: config.weights,
            weight_decay: config.weight_decay,
            max_grad_norm: config.max_grad_norm,
        };
        Some(Peers::start(devices, &nets, &optimizer, &setup)?)
    } else {
        None
    };

    let started = Instant::now();
    let mut step = start;
    let mut stopped_early = false;
    while step < config.steps {
        if stop.load(Ordering::Relaxed) {
            stopped_early = true;
            break;
        }
        step += 1;
        // Each step's random numbers depend only on the seed and the step, so a resumed run draws
        // what an uninterrupted one would.
        let mut rng = Rng(config.seed ^ 0xD1F7 ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let gram_on = gram.is_some() && step > config.gram_warmup;
        let per_peer = config.grad_accumulation.max(1);
        let mut draws = Vec::with_capacity(per_peer * devices.len());
        for _ in 0..per_peer * devices.len() {
            let pair = &pairs.train[rng.below(pairs.train.len())];
            let sample = data::sample(pair, prep, rng.uniform(), rng.uniform())?;
            let gram_crop = gram_on.then(|| Crop {
                top: rng.below(height as usize - gram_size + 1),
                left: rng.below(width as usize - gram_size + 1),
                size: gram_size,
            });
            let noise_seed = config.sample_posterior.then(|| rng.next_u64());
            let context = prompts.embed(&sample.prompt).detach();
            draws.push(Draw {
                sample,
                context,
                gram_crop,
                noise_seed,
            });
        }
        // Peer p trains on draws [p·per_peer, (p+1)·per_peer).
        let mut shares: Vec<Vec<Draw<B>>> = Vec::with_capacity(devices.len());
        let mut rest = draws.into_iter();
        for _ in 0..devices.len() {
            shares.push(rest.by_ref().take(per_peer).collect());
        }
        let own = shares.remove(0);
        let peer = match &mut peers {
            Some(peers) => {
                peers.dispatch(device, shares, config.lr)?;
                Some(PeerId(0))
            }
            None => None,
        };
        let batches = own.iter().map(|d| d.batch(device)).collect();
        let settings = StepSettings {
            step: &one_step,
            lpips: &lpips,
            gram: gram.as_ref(),
            weights: config.weights,
            lr: config.lr,
            max_grad_norm: config.max_grad_norm,
            sync_phases: config.sync_phases,
        };
        let stepped = match step::train_step(nets, &mut optimizer, batches, &settings, peer) {
            Ok(stepped) => stepped,
            Err(e) => {
                return Err(peers
                    .as_ref()
                    .map_or(DifixTrainError::Parallel(format!("{e:?}")), |p| p.explain(e)))
            }
        };
        let mut losses = stepped.losses;
        if let Some(peers) = &peers {
            let mut all = peers.collect()?;
            all.insert(0, losses);
            losses = Losses::mean(&all);
        }
        nets = stepped.nets;
        let save_now = observer.step(&DifixStepReport {
            step,
            steps: config.steps,
            losses,
            grad_norm: stepped.grad_norm,
            times: stepped.times,
            steps_per_second: (step - start) as f32 / started.elapsed().as_secs_f32().max(1e-6),
        });
        if save_now || (config.checkpoint_every > 0 && step % config.checkpoint_every == 0) {
            save(&nets, &optimizer, step)?;
            run_dir.keep();
            observer.saved(&checkpoint_dir);
        }
        if config.eval_every > 0 && step % config.eval_every == 0 && step < config.steps {
            run_eval(&nets, &mut prompts, step, observer, &mut evals)?;
        }
    }
    save(&nets, &optimizer, step)?;
    run_dir.keep();
    observer.saved(&checkpoint_dir);
    if !stopped_early {
        run_eval(&nets, &mut prompts, step, observer, &mut evals)?;
    }
    Ok(DifixTrainSummary {
        steps: step,
        checkpoint: checkpoint_dir,
        evals,
        stopped_early,
    })
}

/// Fixes every test pair as prepared for training (the centre crop with [`ImagePrep::Crop`]), without
/// gradients, and compares with its target; writes
/// `samples/step_N/ID.png` (input | fixed | target).
#[allow(clippy::too_many_arguments)]
fn evaluate<B: AutodiffBackend>(
    nets: &Nets<B>,
    prompts: &mut PromptEncoder<B>,
    pairs: &[Pair],
    one_step: &crate::difix::scheduler::OneStep,
    lpips: &Lpips<B>,
    prep: ImagePrep,
    step: usize,
    out: &Path,
) -> Result<DifixEvalReport, DifixTrainError> {
    let inner = nets.valid();
    let dir = out.join("samples").join(format!("step_{step:06}"));
    std::fs::create_dir_all(&dir).map_err(|e| DifixError::io(&dir, e))?;
    let (mut l2, mut psnr, mut ssim, mut lp) = (0.0, 0.0, 0.0, 0.0);
    for pair in pairs {
        let sample = data::sample(pair, prep, 0.5, 0.5)?;
        let (inputs, targets, views) = views::<B>(&sample, &prompts.device().clone());
        let context = context(prompts, &sample.prompt, views).inner();
        let fixed = inner.forward(inputs.inner(), &context, views, one_step, None);
        let (w, h) = prep.size();
        let (w, h) = (w as usize, h as usize);
        let take = |t: Tensor<B::InnerBackend, 4>| t.slice([0..1, 0..3, 0..h, 0..w]).add_scalar(1.0).div_scalar(2.0);
        let (fixed, target) = (take(fixed), take(targets.inner()));
        l2 += ((fixed.clone() - target.clone()) * 2.0)
            .powi_scalar(2)
            .mean()
            .into_scalar()
            .elem::<f64>();
        let image = crate::difix::images::to_image(fixed.clone())
            .map_err(|e| DifixError::Backend(format!("reading the result back: {e}")))?;
        let values: Vec<f32> = image.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
        let m = crate::metrics::compare(&pair.id, &values, &sample.target, None);
        psnr += m.psnr;
        ssim += m.ssim;
        let distance = lpips.distance(Tensor::from_inner(fixed), Tensor::from_inner(target));
        lp += distance.into_scalar().elem::<f64>();
        let strip = crate::difix::images::side_by_side(
            &crate::difix::images::side_by_side(&sample.image, &image),
            &sample.target,
        );
        crate::image_io::save_png(&strip, &dir.join(format!("{}.png", sanitize(&pair.id))))
            .map_err(|e| DifixError::Backend(e.to_string()))?;
    }
    let n = pairs.len() as f64;
    Ok(DifixEvalReport {
        step,
        l2: l2 / n,
        psnr: psnr / n,
        ssim: ssim / n,
        lpips: lp / n,
        samples: pairs.len(),
    })
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn append_eval(path: &Path, report: &DifixEvalReport) -> Result<(), DifixTrainError> {
    use std::io::Write;
    let line = serde_json::to_string(report).map_err(|e| DifixTrainError::Input(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| DifixError::io(path, e))?;
    writeln!(file, "{line}").map_err(|e| DifixError::io(path, e))?;
    Ok(())
}
