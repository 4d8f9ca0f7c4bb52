//! The Difix3D progressive 3D update (`simple_trainer_difix3d.py` in nv-tlabs/Difix3D), on our
//! trainer: continue training a finished scene with reduced learning rates and no densification;
//! every `every` steps (and at the start) move the novel cameras `distance` closer to the targets,
//! render them, fix them with Difix, and train on them as pseudo ground truth, drawn with probability
//! 0.3 (newest round only), loss weight 0.3 and the render's alpha mask; real photos weigh 1.5.
//!
//! Deliberate differences, all small: the first round runs before the first step (the reference runs
//! it after the first step, which re-trains the checkpoint's last step); no round runs at the very
//! last step (the reference does, and never trains on it); the novel cameras take the intrinsics of
//! their target (the reference uses the first camera's, which is the same on single-camera datasets).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use glam::Affine3A;
use serde::{Deserialize, Serialize};

use super::poses::shift_poses;
use super::round::{self, PseudoView, RoundError, RoundEvent, RoundJob};
use crate::camera_path::CameraPath;
use crate::data::Camera;
use crate::difix::images::SizePolicy;
use crate::difix::pipeline::DEFAULT_PROMPT;
use crate::difix::{Difix, DifixError};
use crate::reference_photo::{Reference, ReferenceCache};
use crate::render::diff_render::SplatRenderer;
use crate::render::{GpuContext, RasterMode, RenderOptions};
use crate::rng::Rng;
use crate::scene::{self, Splats};
use crate::train::checkpoint;
use crate::train::eval::{self, EvalReport};
use crate::train::step::{self, image_tensor, LearningRates, State, StepSettings, Target};
use crate::train::trainer::{StepReport, TrainError, TrainObserver, TrainingData, ViewSource};

#[derive(Debug, thiserror::Error)]
pub enum RefineError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error(transparent)]
    Difix(#[from] DifixError),
    #[error(transparent)]
    Scene(#[from] scene::SceneError),
    #[error(transparent)]
    Path(#[from] crate::camera_path::PathError),
    #[error(transparent)]
    Nerfstudio(#[from] crate::camera_path::nerfstudio::NerfstudioError),
    #[error("{0}")]
    Input(String),
}

/// The scene a refinement starts from.
#[derive(Clone, Debug)]
pub enum SceneSource {
    /// A training checkpoint (`.safetensors`, parameters only: the optimiser starts fresh, as in the
    /// reference) or a `.ply` / `.splat` scene in the dataset's coordinates.
    File(PathBuf),
    /// Splats already in memory (the viewer's scene).
    Splats(Arc<Splats>),
}

/// The poses the novel cameras move toward.
#[derive(Clone, Debug)]
pub enum Targets {
    /// The dataset's eval cameras (the reference's choice).
    Eval,
    /// A camera path (the Record panel's JSON or nerfstudio's camera_path.json), sampled at
    /// `samples` evenly spaced times; a nerfstudio path goes through nerfstudio's
    /// `dataparser_transforms.json` when `dataparser` names one (see [`path_targets`]).
    Path {
        file: PathBuf,
        samples: usize,
        dataparser: Option<PathBuf>,
    },
}

#[derive(Clone, Debug)]
pub struct RefineConfig {
    pub data: PathBuf,
    pub factor: u32,
    /// How the dataset's views are split into train and eval.
    pub split: crate::data::Split,
    pub scene: SceneSource,
    /// The Difix model folder (diffusers layout) and an optional trainer checkpoint over it.
    pub model: PathBuf,
    pub model_checkpoint: Option<PathBuf>,
    /// Guide Difix with the nearest training photo (`difix_ref`); otherwise no reference (`difix`).
    pub reference: bool,
    pub targets: Targets,
    /// Refinement steps (the reference continues a 30k-step scene to 60k).
    pub steps: usize,
    /// Steps between fix rounds (the reference's `fix_steps` every 2000).
    pub every: usize,
    /// How far each round moves the novel cameras toward their targets (world units + radians).
    pub distance: f32,
    /// Chance that a step trains on a pseudo view once there are any (the reference's 1 - 0.7).
    pub novel_probability: f32,
    /// Loss weights of pseudo views (`novel_data_lambda`) and of real photos.
    pub novel_weight: f32,
    pub photo_weight: f32,
    pub ssim_lambda: f32,
    /// Multipliers on gsplat's learning rates (the reference's /10, /5, /5, /5, /50, /50).
    pub lr_scale: LearningRates,
    /// The means' rate decays to 1% over this many steps from the start (the reference's
    /// `max_steps`, 60000: 10% after the default 30000 refinement steps).
    pub lr_decay_steps: usize,
    pub random_background: bool,
    /// Draw antialiased (gsplat's `rasterize_mode="antialiased"`), for a scene trained with
    /// `train --antialiased`.
    pub antialiased: bool,
    pub out: PathBuf,
    /// Continue a refinement from its `checkpoint.safetensors` (rounds reload from `out`).
    pub resume: Option<PathBuf>,
    pub checkpoint_every: Option<usize>,
    pub seed: u64,
    /// Also evaluate the refined scene with the Difix3D+ post-render fix on the eval views.
    pub post_render_eval: bool,
    /// Also measure LPIPS on the eval views with this network.
    pub lpips: Option<crate::perceptual::lpips::LpipsFiles>,
}

impl RefineConfig {
    /// Checks every number against its domain, naming the flag: used by `difix3d refine` and the
    /// Refinement panel alike, through [`refine`].
    pub fn validate(&self) -> Result<(), String> {
        use crate::validate;
        let flag = |name: &'static str| move |m: String| format!("--{name}: {m}");
        validate::at_least_one(self.factor as usize).map_err(flag("factor"))?;
        crate::validate::steps(self.steps).map_err(flag("steps"))?;
        validate::at_least_one(self.every).map_err(flag("every"))?;
        validate::positive(f64::from(self.distance)).map_err(flag("distance"))?;
        if let Targets::Path { samples, .. } = &self.targets {
            validate::at_least_one(*samples).map_err(flag("path-samples"))?;
        }
        if let Some(every) = self.checkpoint_every {
            validate::at_least_one(every).map_err(flag("checkpoint-every"))?;
        }
        validate::unit_interval(f64::from(self.novel_probability)).map_err(flag("novel-probability"))?;
        validate::unit_interval(f64::from(self.ssim_lambda)).map_err(flag("ssim-lambda"))?;
        for (name, weight) in [("novel-weight", self.novel_weight), ("photo-weight", self.photo_weight)] {
            validate::non_negative(f64::from(weight)).map_err(flag(name))?;
        }
        validate::at_least_one(self.lr_decay_steps).map_err(flag("lr-decay-steps"))?;
        let scales = &self.lr_scale;
        for (group, scale) in [
            ("means", scales.means),
            ("log_scales", scales.log_scales),
            ("rotations", scales.rotations),
            ("opacity_logits", scales.opacity_logits),
            ("sh0", scales.sh0),
            ("sh_rest", scales.sh_rest),
        ] {
            validate::non_negative(f64::from(scale)).map_err(|m| format!("learning-rate scale of {group}: {m}"))?;
        }
        Ok(())
    }

    /// The reference's defaults.
    pub fn new(data: PathBuf, scene: SceneSource, model: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            factor: 1,
            split: crate::data::Split::Default,
            scene,
            model,
            model_checkpoint: None,
            reference: true,
            targets: Targets::Eval,
            steps: 30_000,
            every: 2000,
            distance: 0.5,
            novel_probability: 0.3,
            novel_weight: 0.3,
            photo_weight: 1.5,
            ssim_lambda: 0.2,
            lr_scale: LearningRates {
                means: 0.1,
                log_scales: 0.2,
                rotations: 0.2,
                opacity_logits: 0.2,
                sh0: 0.02,
                sh_rest: 0.02,
            },
            lr_decay_steps: 60_000,
            random_background: false,
            antialiased: false,
            out,
            resume: None,
            checkpoint_every: None,
            seed: 42,
            post_render_eval: true,
            lpips: None,
        }
    }

    /// Where the rounds are saved.
    pub fn rounds_dir(&self) -> PathBuf {
        self.out.join("rounds")
    }
}

/// The paper's ablation rows on the eval views: the starting scene, the refined scene, and the
/// refined scene with the post-render fix.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ablation {
    pub baseline: Option<EvalReport>,
    pub refined: Option<EvalReport>,
    pub refined_post: Option<EvalReport>,
}

impl Ablation {
    /// A text table like the paper's (`n/a` where a metric is missing, LPIPS without a network);
    /// `base` names the first row: the scene's method ("3DGS", "Nerfacto").
    pub fn table(&self, base: &str) -> String {
        let mut out = format!("{:<14}{:>8}{:>8}{:>8}\n", "", "PSNR", "SSIM", "LPIPS");
        for (name, report) in [
            (base, &self.baseline),
            ("+ Difix3D", &self.refined),
            ("+ Difix3D+", &self.refined_post),
        ] {
            let cell = |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
            let r = report.as_ref();
            out += &format!(
                "{name:<14}{:>8}{:>8}{:>8}\n",
                cell(r.map(|r| r.psnr), 2),
                cell(r.map(|r| r.ssim), 4),
                cell(r.and_then(|r| r.lpips), 4)
            );
        }
        out
    }
}

#[derive(Clone, Debug)]
pub struct RefineSummary {
    pub steps: usize,
    pub rounds: usize,
    pub splats: usize,
    pub eval: Ablation,
    pub ply: PathBuf,
    pub checkpoint: PathBuf,
    pub stopped_early: bool,
}

/// Checkpoint metadata keys of the refinement's own state.
const META_ROUNDS: &str = "refine_rounds";
const META_ROUND_STEP: &str = "refine_round_step";

/// The pseudo views of the newest round, as loss targets.
struct Novel<B: Backend> {
    views: Vec<PseudoView>,
    targets: Vec<Target<B>>,
    /// Epoch order (reshuffled each pass, like the reference's shuffled data loader) and position.
    order: Vec<usize>,
    next: usize,
}

impl<B: Backend> Novel<B> {
    fn new(views: Vec<PseudoView>, weight: f32, device: &B::Device) -> Self {
        let targets = views
            .iter()
            .map(|v| {
                let (w, h) = (v.camera.width as usize, v.camera.height as usize);
                let mask: Vec<f32> = v.mask().iter().map(|m| if *m { 1.0 } else { 0.0 }).collect();
                Target {
                    image: image_tensor::<B>(&v.fixed, device),
                    mask: Some(Tensor::from_data(TensorData::new(mask, [h, w, 1]), device)),
                    weight,
                }
            })
            .collect();
        Self {
            views,
            targets,
            order: Vec::new(),
            next: 0,
        }
    }

    fn draw(&mut self, rng: &mut Rng) -> usize {
        if self.next >= self.order.len() {
            self.order = (0..self.views.len()).collect();
            for i in (1..self.order.len()).rev() {
                self.order.swap(i, rng.below(i + 1));
            }
            self.next = 0;
        }
        self.next += 1;
        self.order[self.next - 1]
    }
}

/// The target cameras of the run: their poses drive the schedule, their intrinsics the renders.
fn target_cameras(config: &RefineConfig, data: &TrainingData<impl Backend>) -> Result<Vec<Camera>, RefineError> {
    let cameras: Vec<Camera> = match &config.targets {
        Targets::Eval => data.dataset.eval.iter().map(|v| v.camera.clone()).collect(),
        Targets::Path {
            file,
            samples,
            dataparser,
        } => {
            let first = &data.dataset.train[0].camera;
            path_targets(file, dataparser.as_deref(), *samples, first.width, first.height)?
        }
    };
    if cameras.is_empty() {
        return Err(RefineError::Input(match &config.targets {
            Targets::Eval => format!(
                "{}: the dataset has no eval views to move the novel cameras toward; give a camera path as the targets",
                config.data.display()
            ),
            Targets::Path { file, .. } => format!("{}: no target cameras (samples must be at least 1)", file.display()),
        }));
    }
    Ok(cameras)
}

/// `samples` cameras of `width` x `height` at evenly spaced times along the camera path in `file`
/// (ours, or nerfstudio's, whose poses are mapped back to the data's world through the
/// `dataparser_transforms.json` at `dataparser` when given; refused for our own paths).
pub fn path_targets(
    file: &Path,
    dataparser: Option<&Path>,
    samples: usize,
    width: u32,
    height: u32,
) -> Result<Vec<Camera>, RefineError> {
    let dataparser = dataparser
        .map(crate::camera_path::nerfstudio::DataparserTransform::load)
        .transpose()?;
    let (path, _) = CameraPath::load_with(file, dataparser.as_ref())?;
    Ok((0..samples)
        .map(|i| path.frame_camera(i, samples, width, height))
        .collect())
}

/// Refuses a refinement whose files cannot fit where it writes: checkpoint and `.ply` of the
/// scene, each round's four PNGs per target (pred, fixed, reference, alpha) and the eval renders
/// (before, after and fixed).
fn check_refine_fits(
    config: &RefineConfig,
    splats: &Splats,
    targets: &[Camera],
    eval_views: usize,
) -> Result<(), RefineError> {
    let files = crate::disk::run_files_lower_bound(splats.len(), splats.sh_degree);
    let rounds = config.steps.div_ceil(config.every).max(1) as u64;
    let per_round: u64 = targets
        .iter()
        .map(|c| 4 * crate::disk::png_lower_bound(c.width, c.height))
        .sum();
    let eval = targets
        .first()
        .map_or(0, |c| crate::disk::png_lower_bound(c.width, c.height))
        .saturating_mul(3 * eval_views as u64);
    let needed = files
        .saturating_add(per_round.saturating_mul(rounds))
        .saturating_add(eval);
    let what = format!(
        "{rounds} round(s) of {} novel view(s), a checkpoint of {} splats and the eval renders",
        targets.len(),
        splats.len()
    );
    crate::disk::check_fits(&config.out, needed, &what).map_err(RefineError::Input)
}

/// Follows a refinement: every step, snapshot and checkpoint as a training run's
/// [`TrainObserver`] does, and the progress of each Difix3D round.
pub trait RefineObserver: TrainObserver {
    fn round(&mut self, _event: &RoundEvent) {}
}

impl<F: FnMut(&StepReport)> RefineObserver for F {}

/// Refines per `config`: the loss, the optimiser and Difix run on `B`, the rasterizer on `gpu`.
/// `observer` hears every step and round; `stop` ends the run (mid-round too) with a checkpoint.
pub fn refine<B: Backend>(
    config: &RefineConfig,
    gpu: GpuContext,
    device: &B::Device,
    observer: &mut dyn RefineObserver,
    stop: &AtomicBool,
) -> Result<RefineSummary, RefineError> {
    config.validate().map_err(RefineError::Input)?;
    let data = TrainingData::<B>::open(&config.data, config.factor, config.split, config.lpips.as_ref(), device)?;
    let targets = target_cameras(config, &data)?;
    // The model is loaded before any work, so missing weights fail at once.
    let mut model = Difix::<B>::load(&config.model, config.model_checkpoint.as_deref(), device)?;
    let mode = RasterMode {
        antialiased: config.antialiased,
        ..RasterMode::default()
    };
    let renderer = SplatRenderer::with_mode(gpu, mode);
    let dataset = data.dataset.clone();
    let reference = if config.reference {
        Reference::NearestTrain(dataset.clone())
    } else {
        Reference::None
    };
    let rounds_dir = config.rounds_dir();
    let baseline_path = config.out.join("eval_before.json");

    let mut rounds = 0;
    let mut round_step: Option<usize> = None;
    let mut novel: Option<Novel<B>> = None;
    let mut current: Vec<Affine3A> = dataset.train.iter().map(|v| v.camera.world_from_camera).collect();
    let (mut state, start_step, baseline, mut run_dir) = match &config.resume {
        Some(path) => {
            let loaded = checkpoint::load::<B>(path, device)?;
            let number = |key: &str| loaded.metadata.get(key).and_then(|v| v.parse::<usize>().ok());
            let Some(done) = number(META_ROUNDS) else {
                return Err(TrainError::File {
                    path: path.clone(),
                    message: "not a refinement checkpoint (no round state); refine from it with --scene instead".into(),
                }
                .into());
            };
            rounds = done;
            round_step = number(META_ROUND_STEP);
            if let Some(s) = round_step {
                let views = round::load_round(&round::round_dir(&rounds_dir, s))?;
                current = views.iter().map(|v| v.camera.world_from_camera).collect();
                novel = Some(Novel::new(views, config.novel_weight, device));
            }
            let baseline = std::fs::read_to_string(&baseline_path)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok());
            let run_dir = crate::train::trainer::create_run_dir(&config.out)?;
            (loaded.state, loaded.step, baseline, run_dir)
        }
        None => {
            let splats = match &config.scene {
                SceneSource::Splats(splats) => splats.as_ref().clone(),
                SceneSource::File(path) => scene::load(path)?,
            };
            // Every input has loaded: size the run, then from here on it writes into its folder.
            check_refine_fits(config, &splats, &targets, data.dataset.eval.len())?;
            let run_dir = crate::train::trainer::create_run_dir(&config.out)?;
            let baseline = data.evaluate(&renderer, &splats, Some(&config.out.join("eval_before")))?;
            if let Some(report) = &baseline {
                write_json(&baseline_path, report)?;
            }
            (State::new(&splats, device), 0, baseline, run_dir)
        }
    };

    let mut rng = Rng(config.seed ^ 0xD1F1 ^ start_step as u64);
    let options = RenderOptions {
        sh_degree: state.params.sh_degree,
        background: [0.0; 3],
    };
    let target_poses: Vec<Affine3A> = targets.iter().map(|c| c.world_from_camera).collect();
    let checkpoint_path = config.out.join("checkpoint.safetensors");
    let save = |state: &State<B>, step: usize, rounds: usize, round_step: Option<usize>| {
        let mut meta = vec![(META_ROUNDS, rounds.to_string())];
        meta.extend(round_step.map(|s| (META_ROUND_STEP, s.to_string())));
        checkpoint::save(state, step, &meta, &checkpoint_path)
    };
    let started = Instant::now();
    let mut step = start_step;
    let mut stopped_early = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            stopped_early = true;
            break;
        }
        if step % config.every == 0 && step < config.steps && round_step != Some(step) {
            let poses = shift_poses(&current, &target_poses, config.distance);
            let cameras: Vec<Camera> = poses
                .iter()
                .zip(&targets)
                .enumerate()
                .map(|(i, (pose, target))| Camera {
                    name: format!("novel_{i:04}"),
                    world_from_camera: *pose,
                    ..target.clone()
                })
                .collect();
            let job = RoundJob {
                round: rounds,
                step,
                cameras: &cameras,
                reference: &reference,
                out: &rounds_dir,
            };
            let splats = state.params.to_splats();
            let mut progress = |e: RoundEvent| observer.round(&e);
            let Some(output) = round::fix_novel_views(&renderer, &splats, &mut model, &job, &mut progress, stop)?
            else {
                stopped_early = true;
                break;
            };
            observer.round(&RoundEvent::Done(output.report));
            current = poses;
            novel = Some(Novel::new(output.views, config.novel_weight, device));
            rounds += 1;
            round_step = Some(step);
        }
        if step >= config.steps {
            break;
        }
        step += 1;
        let photo;
        let (camera, target, view) = match &mut novel {
            Some(n) if rng.uniform() < config.novel_probability => {
                let index = n.draw(&mut rng);
                let view = ViewSource::Novel {
                    round: rounds - 1,
                    index,
                };
                (&n.views[index].camera, &n.targets[index], view)
            }
            _ => {
                let index = rng.below(dataset.train.len());
                photo = Target {
                    image: data.train_images[index].clone(),
                    mask: None,
                    weight: config.photo_weight,
                };
                (&dataset.train[index].camera, &photo, ViewSource::Photo(index))
            }
        };
        let background = config
            .random_background
            .then(|| [rng.uniform(), rng.uniform(), rng.uniform()]);
        let settings = StepSettings {
            options: &options,
            background,
            ssim_lambda: config.ssim_lambda,
            lr: LearningRates::gsplat(step, config.lr_decay_steps, data.scene_scale).scaled(&config.lr_scale),
            adam_step: step,
        };
        let result = match step::optimize(&mut state, &renderer, camera, target, &settings, device) {
            Ok(result) => result,
            Err(error) => {
                // A saved checkpoint keeps the run folder (its cleanup is for runs that produced nothing).
                let save = || {
                    save(&state, step - 1, rounds, round_step)?;
                    run_dir.keep();
                    Ok(())
                };
                return Err(crate::train::trainer::rescue(save, step - 1, &checkpoint_path, error).into());
            }
        };
        // No densification: the reference refines after gsplat's densification has stopped.
        let _ = renderer.take_view_gradients();
        let elapsed = started.elapsed().as_secs_f32().max(1e-6);
        let request = observer.step(&StepReport {
            step,
            steps: config.steps,
            loss: result.loss,
            psnr: result.psnr,
            splats: state.len(),
            steps_per_second: (step - start_step) as f32 / elapsed,
            times: result.times,
            view,
            weight: target.weight,
        });
        if request.snapshot {
            observer.snapshot(state.params.to_splats());
        }
        let periodic = config
            .checkpoint_every
            .is_some_and(|every| every > 0 && step % every == 0);
        if request.save || periodic {
            save(&state, step, rounds, round_step)?;
            run_dir.keep();
            observer.saved(&checkpoint_path);
        }
    }
    save(&state, step, rounds, round_step)?;
    run_dir.keep();
    let splats = state.params.to_splats();
    // The view ends on the final splats, not on the last periodic snapshot.
    observer.snapshot(splats.clone());
    let ply = config.out.join("point_cloud.ply");
    scene::ply::write_ply(&splats, &ply)?;
    scene::gsplat::write_run_result(&splats, step, &config.out)?;

    let refined = data.evaluate(&renderer, &splats, Some(&config.out.join("eval")))?;
    let refined_post = if config.post_render_eval && !stopped_early && !data.eval_views.is_empty() {
        Some(post_render_eval(
            &renderer,
            &splats,
            &data,
            &mut model,
            &reference,
            &config.out.join("eval_post"),
        )?)
    } else {
        None
    };
    let ablation = Ablation {
        baseline,
        refined,
        refined_post,
    };
    write_json(&config.out.join("eval.json"), &ablation)?;
    Ok(RefineSummary {
        steps: step,
        rounds,
        splats: splats.len(),
        eval: ablation,
        ply,
        checkpoint: checkpoint_path,
        stopped_early,
    })
}

/// Difix3D+: the eval renders fixed by Difix (with the nearest training photo when `reference` says
/// so), compared with the photos; the fixed renders are written to `out`.
fn post_render_eval<B: Backend>(
    renderer: &SplatRenderer,
    splats: &Splats,
    data: &TrainingData<B>,
    model: &mut Difix<B>,
    reference: &Reference,
    out: &Path,
) -> Result<EvalReport, RefineError> {
    crate::train::trainer::create_dir(out)?;
    let mut references = ReferenceCache::default();
    let mut metrics = Vec::with_capacity(data.eval_views.len());
    for (view, photo) in &data.eval_views {
        let image = renderer
            .render_image(splats, &view.camera, &RenderOptions::default())
            .map_err(TrainError::from)?;
        let raw = crate::image_io::to_rgb8(&image);
        let guide = references
            .for_camera(reference, &view.camera)
            .map_err(RoundError::from)?;
        let fixed = model.fix_image(&raw, guide, SizePolicy::Native, DEFAULT_PROMPT)?;
        crate::image_io::save_png(&fixed, &out.join(eval::render_name(view))).map_err(TrainError::from)?;
        let values: Vec<f32> = fixed.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
        metrics.push(crate::metrics::compare(
            &view.camera.name,
            &values,
            photo,
            data.lpips.as_ref(),
        ));
    }
    Ok(eval::summarize(metrics))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RefineError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RefineError::Input(e.to_string()))?;
    crate::image_io::write_atomic(path, |tmp| std::fs::write(tmp, text).map_err(|e| e.to_string()))
        .map_err(|e| RefineError::Train(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::{DMat4, DVec4};

    /// A nerfstudio camera path in a world nerfstudio's dataparser moved (`scale * (T x)`), read with
    /// its dataparser_transforms.json, gives the listed cameras in the data's world; without it the
    /// cameras land elsewhere, and our own path with a dataparser file is refused, naming the path.
    #[test]
    fn nerfstudio_path_targets_go_through_the_dataparser_transform() {
        let dir = tempfile::tempdir().unwrap();
        let t = DMat4::from_cols_array_2d(&[
            [0.0, 1.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.3, -0.2, 1.0, 1.0],
        ]);
        let scale = 0.5;
        // Three OpenCV camera-to-world poses in the data's world.
        let poses: Vec<Affine3A> = [
            (0.0f32, [0.0f32, 0.0, -3.0]),
            (0.4, [1.0, 0.2, -2.5]),
            (0.9, [2.0, 0.5, -1.0]),
        ]
        .iter()
        .map(|(yaw, p)| Affine3A::from_rotation_translation(glam::Quat::from_rotation_y(*yaw), (*p).into()))
        .collect();
        let flip = DMat4::from_diagonal(DVec4::new(1.0, -1.0, -1.0, 1.0));
        let frames: Vec<serde_json::Value> = poses
            .iter()
            .map(|pose| {
                let mut ns = t * glam::Mat4::from(*pose).as_dmat4() * flip;
                ns.w_axis = (ns.w_axis.truncate() * scale).extend(1.0);
                let rows: Vec<f64> = (0..4).flat_map(|r| ns.row(r).to_array()).collect();
                serde_json::json!({"camera_to_world": rows, "fov": 50.0, "aspect": 1.5})
            })
            .collect();
        let ns_file = dir.path().join("camera_path.json");
        let json = serde_json::json!({"render_width": 48, "render_height": 32, "fps": 3, "camera_path": frames});
        std::fs::write(&ns_file, json.to_string()).unwrap();
        let dp_file = dir.path().join("dataparser_transforms.json");
        let rows: Vec<Vec<f64>> = (0..3).map(|r| t.row(r).to_array().to_vec()).collect();
        std::fs::write(
            &dp_file,
            serde_json::json!({"transform": rows, "scale": scale}).to_string(),
        )
        .unwrap();

        let cameras = path_targets(&ns_file, Some(&dp_file), 3, 48, 32).unwrap();
        assert_eq!(cameras.len(), 3);
        for (camera, pose) in cameras.iter().zip(&poses) {
            let (a, b) = (camera.world_from_camera, *pose);
            assert!(
                (a.translation - b.translation).abs().max_element() < 1e-4,
                "{a:?} vs {b:?}"
            );
            assert!(a.matrix3.abs_diff_eq(b.matrix3, 1e-4), "{a:?} vs {b:?}");
            assert_eq!((camera.width, camera.height), (48, 32));
        }
        let raw = path_targets(&ns_file, None, 3, 48, 32).unwrap();
        assert!((raw[1].world_from_camera.translation - poses[1].translation).length() > 0.1);

        let ours = dir.path().join("ours.json");
        CameraPath::through_cameras(cameras.iter(), 2.0).save(&ours).unwrap();
        let e = path_targets(&ours, Some(&dp_file), 3, 48, 32).unwrap_err().to_string();
        assert!(
            e.contains("ours.json") && e.contains("nerfstudio camera paths only"),
            "{e}"
        );
        let e = path_targets(&ns_file, Some(&dir.path().join("none.json")), 3, 48, 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.json"), "{e}");
    }
}
