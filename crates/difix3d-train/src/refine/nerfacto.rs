//! Difix3D's nerfstudio variant (`difix3d refine --method nerfacto`): fine-tune a trained nerfacto
//! NeRF with Difix-fixed novel views, as `ns-train difix3d` does in nv-tlabs/Difix3D's
//! `examples/nerfstudio/difix3d/` (`difix3d_pipeline.py`, `difix3d_datamanager.py`,
//! `difix3d_config.py`), on nerfstudio 1.1.5. Where each value comes from:
//!
//! - The run continues a checkpoint (`--load-checkpoint` in Difix3D's README): nerfstudio's
//!   `Trainer._load_checkpoint` resumes at the checkpoint's `step` + 1, and its loop
//!   (`for step in range(start, start + max_num_iterations)` in nerfstudio 1.1.5's `Trainer.train`)
//!   takes `max_num_iterations` more steps: 30000 in `difix3d_config.py`, our `steps`. The learning
//!   rates and the proposal-weight annealing follow the step number, so they continue too
//!   ([`NerfactoTrainer::starting_at`]).
//! - Rounds (`Difix3DPipeline.get_train_loss_dict`): at every step with `step % steps_per_fix == 0`
//!   (`steps_per_fix = 2000`, our `every`), after that step's batch is drawn and before its update,
//!   `fix(step)` runs: the novel poses are `shift_poses(current_novel_poses, testing_poses,
//!   distance=0.5)` (examples/utils.py's `CameraPoseInterpolator`, our [`super::poses`]), where the
//!   current novel poses start as the training poses and become each round's novel poses, and the
//!   testing poses are the eval split's. Every novel camera takes the FIRST training camera's
//!   intrinsics and size (`cameras.fx[0]`, `cy[0]`, `height[0]`, ...); each is rendered, saved as 8
//!   bits by truncation (`(rgb * 255).astype(np.uint8)`), fixed by Difix (`nvidia/difix_ref`, prompt
//!   "remove degradation", one step at timestep 199, at the render's size floored to multiples of 8,
//!   the output resized back to the render's size) with the reference photo of the training camera
//!   nearest in pose (`find_nearest_assignments`: translation distance + rotation angle, the first
//!   on ties), and the fixed views become a new data manager.
//! - Batches: each step draws from the training photos when there is no novel set yet or when
//!   `random.random() < 0.6`, else from the NEWEST novel set only (`novel_datamanagers[-1]`):
//!   our `novel_probability` 0.4 ([`choose_source`]). Both data managers are
//!   `Difix3DDataManagerConfig(train_num_rays_per_batch=16384, patch_size=32)`, so batches are 16
//!   square 32x32 patches (nerfstudio's `PatchPixelSampler`, [`PixelSampler::Patches`]). A novel
//!   view's rays carry its own index as camera index, which picks that index's appearance code (the
//!   field's embedding has one code per training image; more novel views than that would index past
//!   it, so such a run is refused), and with the camera optimiser on that index's correction too
//!   (more novel views than training images are then refused as well).
//! - The camera optimiser: off by default, as Difix3D's README runs this variant
//!   (`--pipeline.model.camera-optimizer.mode off`). `difix3d_config.py` sets
//!   `CameraOptimizerConfig(mode="SO3xR3")` with the `camera_opt` group of nerfacto's optimisers;
//!   [`NerfactoRefineConfig::camera_optimizer`] (`--camera-optimizer SO3xR3`) runs that, a
//!   checkpoint's corrections and their Adam moments continuing.
//! - The model: `Difix3DModelConfig(average_init_density=0.01)`, which is also `ns-train nerfacto`'s
//!   and our default; a `--nerfacto-config` describing the checkpoint is followed as given.
//!   Difix3D's field differs from nerfacto's only by a `freeze_appearance_embedding` switch that is
//!   off by default.
//! - World: nerfstudio trains and renders in its dataparser's frame; the dataset's cameras are moved
//!   there through the run's `dataparser_transforms.json`, so pose distances (the 0.5 step, the
//!   nearest reference) are measured in the model's frame, as the reference measures them.
//!
//! Not done, and said where it matters: mixed precision (`mixed_precision=True`, CUDA only) is not
//! used: everything runs in f32. The pipeline's `val(step)` (every `steps_per_val` = 5000 steps, after that
//! step's round and before its update) renders each eval view; ours are saved like the final eval
//! renders (`val/STEP/`, named after the photos, rounded to 8 bits) and also measured (PSNR, SSIM in
//! the summary); a stop during them ends the run there, without that step's partial `val/STEP/`. As `Trainer._load_checkpoint` does, the optimisers continue
//! with the Adam moments and step counts saved in the checkpoint: nerfstudio's, or ours (`train
//! --method nerfacto` and this refine save them beside the model, as nerfstudio does).
//!
//! Output in `out/`: `rounds/round_STEP/{pred,fixed,ref,alpha}/novel_NNNN.png` and `cameras.json`
//! (the cameras in the model's frame, as `nerfacto-render --camera-json` takes them; alpha is the
//! accumulated weight, saved for inspection only: the reference trains on every pixel), the
//! fine-tuned model as `nerfacto.safetensors` (recording its last step), `nerfacto.json`,
//! `dataparser_transforms.json`, the eval renders in `eval/` (and `val/STEP/` during the run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use glam::Affine3A;
use image::{GrayImage, RgbImage};

use super::poses::shift_poses;
use super::refiner::Ablation;
use super::round::{self, RenderedView, RoundError, RoundEvent, RoundJob};
use crate::camera_path::nerfstudio::{DataparserTransform, NerfstudioError};
use crate::data::{self, Camera, Dataset};
use crate::difix::images::SizePolicy;
use crate::difix::pipeline::DEFAULT_PROMPT;
use crate::difix::{Difix, DifixError};
use crate::metrics::MetricsBackend;
use crate::nerfacto::batches::{PixelSampler, Views};
use crate::nerfacto::camera_optimizer::{CorrectionMetrics, Mode};
use crate::nerfacto::checkpoint::{AdamMoment, Checkpoint};
use crate::nerfacto::trainer::{load_photo, NerfactoTrainError};
use crate::nerfacto::training::{NerfactoTrainer, StepLosses};
use crate::nerfacto::{Nerfacto, NerfactoConfig, NerfactoError};
use crate::perceptual::lpips::{Lpips, LpipsFiles};
use crate::reference_photo::{Reference, ReferenceCache};
use crate::rng::Rng;
use crate::train::eval::{self, EvalReport};

/// Why a nerfacto refinement could not start or finish; every message names its file or flag.
#[derive(Debug, thiserror::Error)]
pub enum NerfactoRefineError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Nerfacto(#[from] NerfactoError),
    #[error(transparent)]
    Train(#[from] NerfactoTrainError),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error(transparent)]
    Difix(#[from] DifixError),
    #[error(transparent)]
    Transforms(#[from] NerfstudioError),
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
}

/// `steps_per_fix` of `Difix3DPipelineConfig`.
pub const STEPS_PER_FIX: usize = 2000;
/// `steps_per_val` of `Difix3DPipelineConfig`: the eval views are rendered at its multiples.
pub const STEPS_PER_VAL: usize = 5000;
/// `distance=0.5` of `Difix3DPipeline.fix`.
pub const SHIFT_DISTANCE: f32 = 0.5;
/// 1 − 0.6: `get_train_loss_dict` draws the novel set when `random.random() >= 0.6`.
pub const NOVEL_PROBABILITY: f32 = 0.4;
/// `train_num_rays_per_batch=16384` of `difix3d_config.py` (and of the novel data managers).
pub const RAYS_PER_BATCH: usize = 16384;
/// `Difix3DDataManagerConfig.patch_size`.
pub const PATCH_SIZE: u32 = 32;
/// `max_num_iterations=30000` of `difix3d_config.py`: steps taken after the checkpoint's.
pub const STEPS: usize = 30_000;

/// A nerfacto refinement.
#[derive(Clone, Debug)]
pub struct NerfactoRefineConfig {
    pub data: PathBuf,
    pub factor: u32,
    pub split: data::Split,
    /// The trained model: nerfstudio's `step-*.ckpt` or our `nerfacto.safetensors`.
    pub checkpoint: PathBuf,
    /// The model's settings (nerfstudio's `NerfactoModelConfig` names); defaults otherwise.
    pub nerfacto_config: Option<PathBuf>,
    /// The camera optimiser's mode, whatever the settings say: off by default, as Difix3D's README
    /// runs this variant (`--pipeline.model.camera-optimizer.mode off`; `difix3d_config.py` says
    /// `SO3xR3`).
    pub camera_optimizer: Mode,
    /// The `dataparser_transforms.json` of the checkpoint's run; by default the one beside it
    /// ([`transforms_beside`]).
    pub dataparser_transforms: Option<PathBuf>,
    /// The Difix model folder and an optional trainer checkpoint over it.
    pub model: PathBuf,
    pub model_checkpoint: Option<PathBuf>,
    /// Guide Difix with the nearest training photo (the reference's `difix_ref`); otherwise none.
    pub reference: bool,
    /// Steps after the checkpoint's.
    pub steps: usize,
    /// A round runs at every step that is a multiple of this.
    pub every: usize,
    /// The eval views are rendered (and measured) at every step that is a multiple of this; 0:
    /// never.
    pub val_every: usize,
    /// How far each round moves the novel cameras toward the eval cameras (model-frame units +
    /// radians).
    pub distance: f32,
    /// Chance that a step trains on the newest novel set once there is one.
    pub novel_probability: f32,
    pub rays_per_batch: usize,
    /// Side of the square pixel patches (1: single pixels).
    pub patch_size: u32,
    pub out: PathBuf,
    pub seed: u64,
    /// Rays rendered at once outside training (rounds, evaluation).
    pub render_chunk: usize,
    /// Also evaluate the refined model's eval renders fixed by Difix (the Difix3D+ row).
    pub post_render_eval: bool,
    /// LPIPS for the eval rows (the `lpips` package's VGG network); none: no LPIPS column.
    pub lpips: Option<LpipsFiles>,
}

impl NerfactoRefineConfig {
    /// The reference's settings.
    pub fn new(data: PathBuf, checkpoint: PathBuf, model: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            factor: 1,
            split: data::Split::Default,
            checkpoint,
            nerfacto_config: None,
            camera_optimizer: Mode::Off,
            dataparser_transforms: None,
            model,
            model_checkpoint: None,
            reference: true,
            steps: STEPS,
            every: STEPS_PER_FIX,
            val_every: STEPS_PER_VAL,
            distance: SHIFT_DISTANCE,
            novel_probability: NOVEL_PROBABILITY,
            rays_per_batch: RAYS_PER_BATCH,
            patch_size: PATCH_SIZE,
            out,
            seed: 42,
            render_chunk: 4096,
            post_render_eval: true,
            lpips: None,
        }
    }

    /// Checks every number against its domain, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        use crate::validate;
        let flag = |name: &'static str| move |m: String| format!("--{name}: {m}");
        validate::at_least_one(self.factor as usize).map_err(flag("factor"))?;
        validate::steps(self.steps).map_err(flag("steps"))?;
        validate::at_least_one(self.every).map_err(flag("every"))?;
        validate::positive(f64::from(self.distance)).map_err(flag("distance"))?;
        validate::unit_interval(f64::from(self.novel_probability)).map_err(flag("novel-probability"))?;
        validate::at_least_one(self.rays_per_batch).map_err(flag("rays-per-batch"))?;
        if self.rays_per_batch > crate::nerfacto::trainer::MAX_RAYS_PER_BATCH {
            return Err(format!(
                "--rays-per-batch: {} is more than {}",
                self.rays_per_batch,
                crate::nerfacto::trainer::MAX_RAYS_PER_BATCH
            ));
        }
        validate::at_least_one(self.patch_size as usize).map_err(flag("patch-size"))?;
        self.sampler()
            .check(self.rays_per_batch, [])
            .map_err(|m| format!("--rays-per-batch / --patch-size: {m}"))?;
        validate::at_least_one(self.render_chunk).map_err(flag("rays-per-chunk"))?;
        Ok(())
    }

    pub fn sampler(&self) -> PixelSampler {
        PixelSampler::for_patch_size(self.patch_size)
    }

    /// Where the rounds are saved (as the splat variant saves them).
    pub fn rounds_dir(&self) -> PathBuf {
        self.out.join("rounds")
    }
}

/// Where a step's batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSource {
    /// The training photos.
    Photos,
    /// Novel set `set` (the rounds' sets, oldest first).
    Novel { set: usize },
}

/// The reference's choice (`if len(self.novel_datamanagers) == 0 or random.random() < 0.6`): the
/// photos while there is no novel set (no number is drawn then), else the newest of `novel_sets`
/// sets with probability `novel_probability`.
pub fn choose_source(novel_sets: usize, novel_probability: f32, rng: &mut Rng) -> BatchSource {
    if novel_sets == 0 || rng.uniform() < 1.0 - novel_probability {
        BatchSource::Photos
    } else {
        BatchSource::Novel { set: novel_sets - 1 }
    }
}

/// Whether work done every `every` steps runs at `step` (`step % every == 0`, as the reference's
/// rounds at `steps_per_fix` and validations at `steps_per_val`); never for 0.
pub fn runs_at(step: usize, every: usize) -> bool {
    every > 0 && step.is_multiple_of(every)
}

/// The novel cameras at `poses`, each with `first`'s intrinsics and size (the reference builds them
/// from the first training camera), named `novel_NNNN` as the splat variant names them.
pub fn novel_cameras(first: &Camera, poses: &[Affine3A]) -> Vec<Camera> {
    poses
        .iter()
        .enumerate()
        .map(|(i, pose)| Camera {
            name: format!("novel_{i:04}"),
            world_from_camera: *pose,
            ..first.clone()
        })
        .collect()
}

/// The `dataparser_transforms.json` nerfstudio or `difix3d train --method nerfacto` wrote for the
/// run of `checkpoint`: beside it (our runs), or one folder up (nerfstudio keeps checkpoints in
/// `RUN/nerfstudio_models/`).
pub fn transforms_beside(checkpoint: &Path) -> Option<PathBuf> {
    let dir = checkpoint.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("dataparser_transforms.json"))
        .find(|p| p.is_file())
}

/// `camera` moved from the dataset's frame into the model's.
fn to_model_frame(transform: &DataparserTransform, camera: &Camera) -> Camera {
    let pose = glam::Mat4::from(camera.world_from_camera).as_dmat4();
    Camera {
        world_from_camera: Affine3A::from_mat4(transform.to_nerfstudio(pose).as_mat4()),
        ..camera.clone()
    }
}

/// Progress after each step.
#[derive(Clone, Copy, Debug)]
pub struct NerfactoRefineStep {
    pub step: usize,
    /// The run's first and last step.
    pub first_step: usize,
    pub last_step: usize,
    pub source: BatchSource,
    pub losses: StepLosses,
    pub rays_per_second: f32,
}

/// The eval views measured during a run (the reference's `val(step)`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ValPoint {
    /// Rendered before this step's update, as the reference renders them.
    pub step: usize,
    pub psnr: f64,
    pub ssim: f64,
}

/// Follows a nerfacto refinement.
pub trait NerfactoRefineObserver {
    fn step(&mut self, report: &NerfactoRefineStep);
    fn round(&mut self, _event: &RoundEvent) {}
    fn val(&mut self, _point: &ValPoint) {}
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct NerfactoRefineSummary {
    /// The first step of the run (the checkpoint's step + 1).
    pub first_step: usize,
    /// Steps taken.
    pub steps: usize,
    /// The steps at which rounds ran.
    pub round_steps: Vec<usize>,
    /// The eval views' metrics at each multiple of `val_every` (renders in `out/val/STEP/`).
    pub val: Vec<ValPoint>,
    pub eval_psnr_before: Option<f64>,
    pub eval_psnr_after: Option<f64>,
    /// The eval views' rows (as the splat variant's `eval.json`): the model before the run, after it,
    /// and after it with Difix on its renders (Difix3D+).
    pub eval: Ablation,
    pub model: PathBuf,
    pub config: PathBuf,
    pub transforms: PathBuf,
    pub stopped_early: bool,
    /// How many parameters continued with the Adam moments saved in the checkpoint (0: the
    /// optimisers started fresh, for a file that holds none).
    pub adam_moments_restored: usize,
    /// How far the camera optimiser moved the training cameras by the end (`None` with it off).
    pub camera_corrections: Option<CorrectionMetrics>,
}

/// Everything a run reads, loaded and checked before anything is written.
struct Inputs<B: AutodiffBackend> {
    model: Nerfacto<B>,
    /// The checkpoint's saved Adam moments by parameter key, when it holds readable ones.
    moments: Option<BTreeMap<String, AdamMoment>>,
    first_step: usize,
    transform: DataparserTransform,
    train: Views,
    eval: Vec<(Camera, RgbImage)>,
    /// The dataset with its training cameras in the model's frame (for the nearest reference).
    model_frame: Arc<Dataset>,
    difix: Difix<B::InnerBackend>,
    lpips: Option<Lpips<MetricsBackend>>,
}

fn load_inputs<B: AutodiffBackend>(
    config: &NerfactoRefineConfig,
    device: &B::Device,
) -> Result<Inputs<B>, NerfactoRefineError> {
    config.validate().map_err(NerfactoRefineError::Input)?;
    let dataset = data::open_dataset_split(&config.data, config.factor, config.split)?;
    if dataset.train.is_empty() {
        return Err(NerfactoRefineError::Input(format!(
            "{}: the dataset has no training views",
            config.data.display()
        )));
    }
    if dataset.eval.is_empty() {
        return Err(NerfactoRefineError::Input(format!(
            "{}: the dataset has no eval views for the novel cameras to move toward (see --difix3d-test-every)",
            config.data.display()
        )));
    }

    let checkpoint = Checkpoint::read(&config.checkpoint)?;
    let mut settings = match &config.nerfacto_config {
        Some(path) => NerfactoConfig::read(path)?,
        None => NerfactoConfig::default(),
    };
    settings.camera_optimizer.mode = config.camera_optimizer;
    let model = Nerfacto::<B>::load(&checkpoint, settings, device)?
        .with_camera_optimizer(dataset.train.len())
        .map_err(|message| NerfactoRefineError::File {
            path: config.checkpoint.clone(),
            message,
        })?;
    // As `Trainer._load_checkpoint`'s `load_optimizers`; a state that does not fit the model is
    // reported and the run starts with fresh moments instead of failing.
    let moments = crate::nerfacto::state::read_model_moments(&model, &checkpoint).unwrap_or_else(|e| {
        log::warn!("{e}; the optimisers start with fresh Adam moments");
        None
    });
    let transforms = match &config.dataparser_transforms {
        Some(path) => path.clone(),
        None => transforms_beside(&config.checkpoint).ok_or_else(|| NerfactoRefineError::File {
            path: config.checkpoint.clone(),
            message: "no dataparser_transforms.json beside the checkpoint or one folder up; give the run's \
                      with --dataparser-transforms (for a model trained in the dataset's own frame, one with \
                      the identity transform and scale 1)"
                .into(),
        })?,
    };
    let transform = DataparserTransform::load(&transforms)?;
    let first_step = match checkpoint.step {
        Some(step) => step + 1,
        None => {
            log::warn!(
                "{}: the checkpoint records no step; continuing at step 0",
                config.checkpoint.display()
            );
            0
        }
    };
    let appearance_key = "field.embedding_appearance.embedding.weight";
    if checkpoint.contains(appearance_key) {
        let codes = checkpoint.tensor(appearance_key)?.shape.first().copied().unwrap_or(0);
        if codes != dataset.train.len() {
            return Err(NerfactoRefineError::File {
                path: config.checkpoint.clone(),
                message: format!(
                    "the model has {codes} appearance codes (one per training image) but the dataset has {} \
                     training views at --factor {}; refine on the dataset, factor and split it was trained on",
                    dataset.train.len(),
                    config.factor
                ),
            });
        }
        if dataset.eval.len() > codes {
            return Err(NerfactoRefineError::File {
                path: config.checkpoint.clone(),
                message: format!(
                    "{} eval views make {} novel views, but novel view i takes appearance code i and the model \
                     has {codes}: Difix3D's pipeline would index past them too; use fewer eval views or a \
                     model without appearance codes (appearance_embed_dim 0, as Difix3D's README trains)",
                    dataset.eval.len(),
                    dataset.eval.len()
                ),
            });
        }
    }
    if model.camera_optimizer.is_some() && dataset.eval.len() > dataset.train.len() {
        return Err(NerfactoRefineError::Input(format!(
            "{}: {} eval views make as many novel views, but novel view i takes training image i's camera \
             correction and there are {} training images: Difix3D's pipeline would index past them too; use \
             fewer eval views, or --camera-optimizer off (as Difix3D's README runs it)",
            config.data.display(),
            dataset.eval.len(),
            dataset.train.len()
        )));
    }

    let in_model_frame = |views: &[data::View]| -> Vec<data::View> {
        views
            .iter()
            .map(|v| data::View {
                camera: to_model_frame(&transform, &v.camera),
                image_path: v.image_path.clone(),
            })
            .collect()
    };
    let model_frame = Arc::new(Dataset {
        train: in_model_frame(&dataset.train),
        eval: in_model_frame(&dataset.eval),
        ..dataset.clone()
    });
    let train = Views {
        cameras: model_frame.train.iter().map(|v| v.camera.clone()).collect(),
        images: dataset.train.iter().map(load_photo).collect::<Result<_, _>>()?,
    };
    let eval = model_frame
        .eval
        .iter()
        .zip(&dataset.eval)
        .map(|(moved, view)| Ok((moved.camera.clone(), load_photo(view)?)))
        .collect::<Result<Vec<_>, NerfactoTrainError>>()?;
    let first = &train.cameras[0];
    config
        .sampler()
        .check(
            config.rays_per_batch,
            train.sizes().into_iter().chain([(first.width, first.height)]),
        )
        .map_err(|m| NerfactoRefineError::Input(format!("--patch-size {}: {m}", config.patch_size)))?;
    // Loaded last among the inputs but before anything is written, so missing weights fail at once.
    let difix = Difix::<B::InnerBackend>::load(&config.model, config.model_checkpoint.as_deref(), device)?;
    let lpips =
        crate::metrics::load_lpips(config.lpips.as_ref()).map_err(|e| NerfactoRefineError::Input(e.to_string()))?;
    Ok(Inputs {
        model,
        moments,
        first_step,
        transform,
        train,
        eval,
        model_frame,
        difix,
        lpips,
    })
}

/// Refuses a run whose files cannot fit: the model, each round's four PNGs per novel view and the
/// eval renders.
fn check_fits(config: &NerfactoRefineConfig, inputs: &Inputs<impl AutodiffBackend>) -> Result<(), NerfactoRefineError> {
    // The state dict, and the Adam moments saved beside it (two more values per parameter).
    let parameter_values: u64 = crate::nerfacto::state::parameters(&inputs.model)
        .iter()
        .map(|p| p.value.num_values() as u64)
        .sum();
    let state_values: u64 = crate::nerfacto::state::state_dict(&inputs.model)
        .values()
        .map(|t| t.values.len() as u64)
        .sum();
    let model_bytes = (state_values + 2 * parameter_values) * 4;
    let first = &inputs.train.cameras[0];
    let steps_at = |every: usize| {
        (inputs.first_step..inputs.first_step + config.steps)
            .filter(|s| runs_at(*s, every))
            .count() as u64
    };
    let rounds = steps_at(config.every);
    let per_round = 4 * crate::disk::png_lower_bound(first.width, first.height) * inputs.eval.len() as u64;
    let eval: u64 = inputs
        .eval
        .iter()
        .map(|(c, _)| crate::disk::png_lower_bound(c.width, c.height))
        .sum();
    // The eval renders once at the end, and once per validation.
    let vals = steps_at(config.val_every);
    let needed = model_bytes
        .saturating_add(per_round.saturating_mul(rounds))
        .saturating_add(eval.saturating_mul(vals + 1));
    let what = format!(
        "a nerfacto model of {}, {rounds} round(s) of {} novel view(s) and the eval renders",
        crate::disk::human(model_bytes),
        inputs.eval.len()
    );
    crate::disk::check_fits(&config.out, needed, &what).map_err(NerfactoRefineError::Input)
}

/// Difix on the eval renders, guided as the rounds are (Difix3D+).
struct PostRenderFix<'a, B: burn::tensor::backend::Backend> {
    difix: &'a mut Difix<B>,
    reference: &'a Reference,
}

/// PSNR, SSIM (and LPIPS with `lpips`) of `model`'s renders of the eval views (model frame, with
/// their photos), fixed by Difix first with `fix`; the renders (8-bit) go to `out` when given. `None`
/// without eval views, or when `stop` says so between chunks of rays (`out` is then removed).
fn evaluate<B: burn::tensor::backend::Backend, D: burn::tensor::backend::Backend>(
    model: &Nerfacto<B>,
    views: &[(Camera, RgbImage)],
    chunk: usize,
    lpips: Option<&Lpips<MetricsBackend>>,
    out: Option<&Path>,
    mut fix: Option<PostRenderFix<'_, D>>,
    stop: &dyn Fn() -> bool,
) -> Result<Option<EvalReport>, NerfactoRefineError> {
    if views.is_empty() {
        return Ok(None);
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    let mut references = ReferenceCache::default();
    let mut metrics = Vec::with_capacity(views.len());
    for (camera, photo) in views {
        let Some(image) = model.render_camera_unless(camera, chunk, stop) else {
            // Stopped part-way: no half-written set of renders is left.
            if let Some(dir) = out {
                std::fs::remove_dir_all(dir).map_err(|e| file_error(dir, e))?;
            }
            return Ok(None);
        };
        let pixels = image.rgb.iter().map(|&v| crate::image_io::quantize(v)).collect();
        let raw = RgbImage::from_raw(image.width, image.height, pixels)
            .ok_or_else(|| NerfactoRefineError::Input("a render has the wrong number of pixels".into()))?;
        let (saved, values) = match fix.as_mut() {
            Some(fix) => {
                let guide = references.for_camera(fix.reference, camera).map_err(RoundError::from)?;
                let fixed = fix.difix.fix_image(&raw, guide, SizePolicy::Native, DEFAULT_PROMPT)?;
                let values = fixed.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
                (fixed, values)
            }
            None => (raw, image.rgb),
        };
        if let Some(dir) = out {
            let path = dir.join(eval::render_name_of(&camera.name));
            crate::image_io::save_png(&saved, &path).map_err(|e| file_error(&path, e))?;
        }
        metrics.push(crate::metrics::compare(&camera.name, &values, photo, lpips));
    }
    Ok(Some(eval::summarize(metrics)))
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> NerfactoRefineError {
    NerfactoRefineError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Refines per `config` with autodiff over `B` (Difix on its inner backend). `observer` hears every
/// step and round; `stop` ends the run after the current step or novel view, and the model is saved
/// either way.
pub fn refine_nerfacto<B: AutodiffBackend>(
    config: &NerfactoRefineConfig,
    device: &B::Device,
    observer: &mut dyn NerfactoRefineObserver,
    stop: &AtomicBool,
) -> Result<NerfactoRefineSummary, NerfactoRefineError> {
    let inputs = load_inputs::<B>(config, device)?;
    check_fits(config, &inputs)?;
    let Inputs {
        model,
        moments,
        first_step,
        transform,
        train,
        eval,
        model_frame,
        mut difix,
        lpips,
    } = inputs;
    let mut run_dir = crate::disk::RunDir::create(&config.out).map_err(|e| file_error(&config.out, e))?;

    let lpips = lpips.as_ref();
    let never = || false;
    let baseline =
        evaluate::<_, B::InnerBackend>(&model.valid(), &eval, config.render_chunk, lpips, None, None, &never)?;
    let reference = if config.reference {
        Reference::NearestTrain(model_frame.clone())
    } else {
        Reference::None
    };
    let targets: Vec<Affine3A> = model_frame.eval.iter().map(|v| v.camera.world_from_camera).collect();
    let mut current: Vec<Affine3A> = train.cameras.iter().map(|c| c.world_from_camera).collect();
    let passes = model.proposals.len() + 1;
    let sampler = config.sampler();
    let rounds_dir = config.rounds_dir();
    let mut trainer = NerfactoTrainer::starting_at(model, first_step);
    let adam_moments_restored = match moments.map(|m| trainer.restore_adam(&m)) {
        Some(Ok(restored)) => restored,
        Some(Err(e)) => {
            log::warn!(
                "{}: {e}; the optimisers start with fresh Adam moments",
                config.checkpoint.display()
            );
            0
        }
        None => 0,
    };
    let mut rng = Rng(config.seed ^ 0x00D1_F13D ^ first_step as u64);
    let mut novel: Option<Views> = None;
    let mut round_steps = Vec::new();
    let mut val = Vec::new();
    let mut stopped_early = false;
    let last_step = first_step + config.steps - 1;
    let started = Instant::now();
    let mut outside_training = std::time::Duration::ZERO;
    for step in first_step..first_step + config.steps {
        if stop.load(Ordering::Relaxed) {
            stopped_early = true;
            break;
        }
        let source = choose_source(round_steps.len(), config.novel_probability, &mut rng);
        let views = match (source, &novel) {
            (BatchSource::Novel { .. }, Some(newest)) => newest,
            _ => &train,
        };
        let (batch, jitter) = views.batch::<B>(&sampler, config.rays_per_batch, passes, &mut rng, device);

        if runs_at(step, config.every) {
            let round_started = Instant::now();
            let poses = shift_poses(&current, &targets, config.distance);
            let cameras = novel_cameras(&train.cameras[0], &poses);
            let job = RoundJob {
                round: round_steps.len(),
                step,
                cameras: &cameras,
                reference: &reference,
                out: &rounds_dir,
            };
            let renderer = trainer.model().valid();
            let mut render = |camera: &Camera| -> Result<RenderedView, RoundError> {
                let image = renderer.render_camera(camera, config.render_chunk);
                // 8 bits by truncation, as the reference saves its renders.
                let byte = round::alpha_byte;
                let at = |x: u32, y: u32| (y * camera.width + x) as usize;
                Ok(RenderedView {
                    rgb: RgbImage::from_fn(camera.width, camera.height, |x, y| {
                        let i = at(x, y) * 3;
                        image::Rgb([byte(image.rgb[i]), byte(image.rgb[i + 1]), byte(image.rgb[i + 2])])
                    }),
                    alpha: GrayImage::from_fn(camera.width, camera.height, |x, y| {
                        image::Luma([byte(image.accumulation[at(x, y)])])
                    }),
                })
            };
            let mut progress = |e: RoundEvent| observer.round(&e);
            let Some(output) = round::fix_rendered_views(&mut render, &mut difix, &job, &mut progress, stop)? else {
                stopped_early = true;
                break;
            };
            novel = Some(Views {
                cameras: output.views.iter().map(|v| v.camera.clone()).collect(),
                images: output.views.iter().map(|v| v.fixed.as_ref().clone()).collect(),
            });
            observer.round(&RoundEvent::Done(output.report));
            current = poses;
            round_steps.push(step);
            outside_training += round_started.elapsed();
        }
        if runs_at(step, config.val_every) {
            let val_started = Instant::now();
            let dir = config.out.join("val").join(step.to_string());
            let stopping = || stop.load(Ordering::Relaxed);
            let report = evaluate::<_, B::InnerBackend>(
                &trainer.model().valid(),
                &eval,
                config.render_chunk,
                None,
                Some(&dir),
                None,
                &stopping,
            )?;
            outside_training += val_started.elapsed();
            match report {
                Some(report) => {
                    let point = ValPoint {
                        step,
                        psnr: report.psnr,
                        ssim: report.ssim,
                    };
                    observer.val(&point);
                    val.push(point);
                }
                // Stopped part-way through the renders (which are removed): end the run here.
                None if stopping() => {
                    stopped_early = true;
                    break;
                }
                None => {}
            }
        }

        let losses = trainer.step(&batch, jitter);
        if !losses.total.is_finite() {
            return Err(NerfactoRefineError::Input(format!(
                "the loss became {} at step {step}; try fewer rays per batch",
                losses.total
            )));
        }
        let taken = step + 1 - first_step;
        let elapsed = (started.elapsed() - outside_training).as_secs_f32().max(1e-6);
        observer.step(&NerfactoRefineStep {
            step,
            first_step,
            last_step,
            source,
            losses,
            rays_per_second: (taken * sampler.rays_per_batch(config.rays_per_batch)) as f32 / elapsed,
        });
    }

    let model = trainer.model();
    let camera_corrections = model.camera_optimizer.as_ref().map(|c| c.metrics());
    let model_path = config.out.join("nerfacto.safetensors");
    // The last step taken, as nerfstudio records it; a run stopped before its first step keeps the
    // checkpoint's.
    let last_taken = trainer.steps().checked_sub(1);
    let moments = trainer.adam_moments();
    crate::nerfacto::state::save(model, last_taken, Some(&moments), &model_path)?;
    run_dir.keep();
    let config_path = config.out.join("nerfacto.json");
    let text = serde_json::to_string_pretty(&model.config).map_err(|e| file_error(&config_path, e))?;
    crate::disk::write_bytes_atomic(&config_path, text.as_bytes()).map_err(|e| file_error(&config_path, e))?;
    let transforms_path = config.out.join("dataparser_transforms.json");
    let text = serde_json::to_string_pretty(&transform.to_json()).map_err(|e| file_error(&transforms_path, e))?;
    crate::disk::write_bytes_atomic(&transforms_path, text.as_bytes()).map_err(|e| file_error(&transforms_path, e))?;
    let valid = model.valid();
    let eval_dir = config.out.join("eval");
    let refined =
        evaluate::<_, B::InnerBackend>(&valid, &eval, config.render_chunk, lpips, Some(&eval_dir), None, &never)?;
    let refined_post = if config.post_render_eval && !stopped_early {
        let fix = PostRenderFix {
            difix: &mut difix,
            reference: &reference,
        };
        evaluate(
            &valid,
            &eval,
            config.render_chunk,
            lpips,
            Some(&config.out.join("eval_post")),
            Some(fix),
            &never,
        )?
    } else {
        None
    };
    let ablation = Ablation {
        baseline,
        refined,
        refined_post,
    };
    let eval_path = config.out.join("eval.json");
    let text = serde_json::to_string_pretty(&ablation).map_err(|e| file_error(&eval_path, e))?;
    crate::disk::write_bytes_atomic(&eval_path, text.as_bytes()).map_err(|e| file_error(&eval_path, e))?;
    Ok(NerfactoRefineSummary {
        first_step,
        steps: trainer.steps() - first_step,
        round_steps,
        val,
        eval_psnr_before: ablation.baseline.as_ref().map(|r| r.psnr),
        eval_psnr_after: ablation.refined.as_ref().map(|r| r.psnr),
        eval: ablation,
        model: model_path,
        config: config_path,
        transforms: transforms_path,
        stopped_early,
        adam_moments_restored,
        camera_corrections,
    })
}

/// [`refine_nerfacto`] with autodiff over the backend `kind` names (fp32; Difix on the same backend):
/// the one entry point of the CLI and the viewer's Refinement panel.
pub fn refine_nerfacto_on(
    kind: crate::nn::backend::BackendKind,
    config: &NerfactoRefineConfig,
    observer: &mut dyn NerfactoRefineObserver,
    stop: &AtomicBool,
) -> Result<Result<NerfactoRefineSummary, NerfactoRefineError>, crate::nn::backend::BackendError> {
    struct Job<'a> {
        config: &'a NerfactoRefineConfig,
        observer: &'a mut dyn NerfactoRefineObserver,
        stop: &'a AtomicBool,
    }
    impl crate::nn::backend::WithBackend for Job<'_> {
        type Output = Result<NerfactoRefineSummary, NerfactoRefineError>;
        fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
            refine_nerfacto::<burn::backend::Autodiff<B>>(self.config, &device, self.observer, self.stop)
        }
    }
    crate::nn::backend::run_on_fp32(kind, Job { config, observer, stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop during the eval renders abandons them: no report, and the folder they were going to
    /// leaves no partial set behind; without one they are all written.
    #[test]
    fn evaluation_stops_part_way_and_leaves_no_partial_renders() {
        type Cpu = crate::nn::backend::CpuBackend;
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nerfacto");
        let model = Nerfacto::<Cpu>::open(
            &fixtures.join("step-000000300.ckpt"),
            Some(&fixtures.join("config.json")),
            &Default::default(),
        )
        .expect("the fixture opens");
        let pose = Affine3A::from_translation(glam::Vec3::new(0.0, 0.0, -3.0));
        let views: Vec<(Camera, RgbImage)> = (0..3)
            .map(|i| {
                (
                    Camera::pinhole(format!("v{i}.png"), 16, 12, 0.8, pose),
                    RgbImage::new(16, 12),
                )
            })
            .collect();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let out = dir.path().join("val/7");
        let evaluate_with = |stop: &dyn Fn() -> bool| {
            evaluate::<Cpu, Cpu>(&model, &views, 16, None, Some(&out), None, stop).expect("evaluates")
        };
        // Asked to stop once the first view is written, in the second one's renders (12 chunks
        // of 16 rays a view; asked before each).
        let chunks = std::cell::Cell::new(0);
        let first_written = std::cell::Cell::new(false);
        let later = || {
            chunks.set(chunks.get() + 1);
            if chunks.get() == 13 {
                first_written.set(out.join("v0.png").exists());
            }
            chunks.get() > 12 + 4
        };
        assert!(evaluate_with(&later).is_none());
        assert!(first_written.get(), "the first view was written before the stop");
        assert!(!out.exists(), "the partial renders are removed");
        let report = evaluate_with(&|| false).expect("a report");
        assert_eq!(report.views.len(), 3);
        assert_eq!(std::fs::read_dir(&out).expect("the renders").count(), 3);
    }

    /// The novel set is drawn with the given probability, only once one exists, and only the newest.
    #[test]
    fn batches_come_from_the_newest_novel_set_with_the_reference_probability() {
        let mut rng = Rng(11);
        // No novel set: always the photos, and no number is drawn.
        let before = rng.0;
        for _ in 0..100 {
            assert_eq!(choose_source(0, 0.4, &mut rng), BatchSource::Photos);
        }
        assert_eq!(rng.0, before, "no draw while there is no novel set");

        let draws = 20_000;
        let mut novel = 0;
        for _ in 0..draws {
            match choose_source(3, NOVEL_PROBABILITY, &mut rng) {
                BatchSource::Photos => {}
                BatchSource::Novel { set } => {
                    assert_eq!(set, 2, "only the newest set");
                    novel += 1;
                }
            }
        }
        let fraction = novel as f64 / draws as f64;
        // 0.4 ± 4 standard deviations (sqrt(0.24 / 20000) ≈ 0.0035).
        assert!((fraction - 0.4).abs() < 0.014, "novel fraction {fraction}");
        // The extremes.
        assert_eq!(choose_source(1, 0.0, &mut rng), BatchSource::Photos);
        assert_eq!(choose_source(1, 1.0, &mut rng), BatchSource::Novel { set: 0 });
    }

    #[test]
    fn rounds_run_at_the_multiples_of_every() {
        let steps: Vec<usize> = (301..=310).filter(|s| runs_at(*s, 2)).collect();
        assert_eq!(steps, [302, 304, 306, 308, 310]);
        let steps: Vec<usize> = (29_999..34_100).filter(|s| runs_at(*s, STEPS_PER_FIX)).collect();
        assert_eq!(steps, [30_000, 32_000, 34_000]);
        assert!(runs_at(0, 2000));
    }

    #[test]
    fn novel_cameras_take_the_first_cameras_intrinsics() {
        let first = Camera {
            name: "a".into(),
            width: 40,
            height: 30,
            fx: 31.0,
            fy: 32.0,
            cx: 19.0,
            cy: 14.0,
            world_from_camera: Affine3A::IDENTITY,
        };
        let poses = [
            Affine3A::from_translation(glam::Vec3::X),
            Affine3A::from_rotation_y(0.3),
        ];
        let cameras = novel_cameras(&first, &poses);
        assert_eq!(cameras.len(), 2);
        for (i, (camera, pose)) in cameras.iter().zip(&poses).enumerate() {
            assert_eq!(camera.name, format!("novel_{i:04}"));
            assert_eq!(camera.world_from_camera, *pose);
            assert_eq!(
                (camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy),
                (40, 30, 31.0, 32.0, 19.0, 14.0)
            );
        }
    }
}
