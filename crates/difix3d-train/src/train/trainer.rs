//! The 3DGS training loop, following gsplat's `simple_trainer.py` defaults: initialise from the
//! COLMAP points, render a random training view per step, loss 0.8 L1 + 0.2 (1 - SSIM), Adam with
//! per-group learning rates (means decaying 100x over the run, scaled by the scene extent), SH degree
//! raised every 1000 steps, densification until step 15000 with opacity resets every 3000.
//! Checkpoints (safetensors, parameters + optimiser state) on request, every `checkpoint_every`
//! steps and when stopped; the result is exported as a `.ply`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::adam::Moments;
use super::checkpoint;
use super::densify::{self, DensifyConfig, GradStats};
use super::eval::EvalReport;
pub use super::step::StepTimes;
use super::step::{self, image_tensor, LearningRates, State, StepSettings, Target};
use crate::data::{self, Dataset};
use crate::metrics::MetricsBackend;
use crate::perceptual::lpips::{Lpips, LpipsFiles};
use crate::render::diff_render::{SplatRenderer, SplatTensors};
use crate::render::{GpuContext, RasterConstants, RasterMode, RenderOptions};
use crate::rng::{Epochs, Rng};
use crate::scene::{self, Splats};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Scene(#[from] scene::SceneError),
    #[error(transparent)]
    Gpu(#[from] crate::render::GpuError),
    #[error(transparent)]
    Image(#[from] crate::image_io::ImageError),
    /// The LPIPS network's weights.
    #[error(transparent)]
    Weights(#[from] crate::nn::weights::WeightsError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
    #[error("the rasterizer's backward pass failed: {0}")]
    Backward(String),
    /// A step failed part-way through a run (a lost GPU, say); `note` says whether the last completed
    /// step's checkpoint was saved.
    #[error("{error}; {note}")]
    Interrupted { error: Box<TrainError>, note: String },
}

/// The checkpoint metadata key saying the run was trained antialiased ("true").
pub const ANTIALIASED_KEY: &str = "antialiased";

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub factor: u32,
    /// How the dataset's views are split into train and eval.
    pub split: data::Split,
    pub steps: usize,
    pub out: PathBuf,
    pub max_sh_degree: u32,
    pub sh_degree_interval: usize,
    pub ssim_lambda: f32,
    pub checkpoint_every: Option<usize>,
    pub resume: Option<PathBuf>,
    pub densify: DensifyConfig,
    pub seed: u64,
    /// Composite each training render over a random colour (gsplat's `random_bkgd`), so splats
    /// cannot fake a black background with transparency.
    pub random_background: bool,
    /// Also measure LPIPS on the eval views with this network.
    pub lpips: Option<LpipsFiles>,
    /// Steps after which to measure the eval PSNR (for training curves; see [`TrainSummary::evals`]).
    pub eval_steps: Vec<usize>,
    /// Train (and evaluate) antialiased, as gsplat's `--antialiased` (`rasterize_mode="antialiased"`,
    /// Mip-Splatting's 2D filter). The scene must then be drawn antialiased too (`render`/`eval
    /// --antialiased`); the checkpoint records it.
    pub antialiased: bool,
}

impl TrainConfig {
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            factor: 1,
            split: data::Split::Default,
            steps: 30_000,
            out,
            max_sh_degree: 3,
            sh_degree_interval: 1000,
            ssim_lambda: 0.2,
            checkpoint_every: None,
            resume: None,
            densify: DensifyConfig::default(),
            seed: 42,
            random_background: false,
            lpips: None,
            eval_steps: Vec::new(),
            antialiased: false,
        }
    }

    /// Checks every number against its domain, naming the flag (the GUI's fields carry the same
    /// names): used by `difix3d train` and the Training panel alike, through [`train`].
    pub fn validate(&self) -> Result<(), String> {
        use crate::validate;
        let flag = |name: &'static str| move |m: String| format!("--{name}: {m}");
        validate::at_least_one(self.factor as usize).map_err(flag("factor"))?;
        crate::validate::steps(self.steps).map_err(flag("steps"))?;
        validate::sh_degree(self.max_sh_degree).map_err(flag("sh-degree"))?;
        validate::at_least_one(self.sh_degree_interval).map_err(flag("sh-degree-interval"))?;
        validate::unit_interval(f64::from(self.ssim_lambda)).map_err(flag("ssim-lambda"))?;
        if let Some(every) = self.checkpoint_every {
            validate::at_least_one(every).map_err(flag("checkpoint-every"))?;
        }
        for &step in &self.eval_steps {
            validate::at_least_one(step).map_err(flag("eval-steps"))?;
            crate::validate::steps(step).map_err(flag("eval-steps"))?;
        }
        self.densify.validate()
    }
}

/// Progress of a run, sent after every step.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub psnr: f32,
    pub splats: usize,
    pub steps_per_second: f32,
    /// Where this step's time went.
    pub times: StepTimes,
    /// What the step rendered toward.
    pub view: ViewSource,
    /// The weight its loss carried (`loss` already includes it).
    pub weight: f32,
}

/// The image a step trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewSource {
    /// Training photo `index` of the dataset.
    Photo(usize),
    /// Pseudo view `index` of refinement round `round` (0-based).
    Novel { round: usize, index: usize },
}

/// What the caller wants after a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepRequest {
    /// Write the checkpoint now.
    pub save: bool,
    /// Send the current splats to [`TrainObserver::snapshot`] (for a live view of the training).
    pub snapshot: bool,
}

/// Follows a run: called after every step (it may block, which pauses the run) and with snapshots.
pub trait TrainObserver {
    fn step(&mut self, report: &StepReport) -> StepRequest;
    fn snapshot(&mut self, _splats: Splats) {}
    fn saved(&mut self, _path: &Path) {}
}

impl<F: FnMut(&StepReport)> TrainObserver for F {
    fn step(&mut self, report: &StepReport) -> StepRequest {
        self(report);
        StepRequest::default()
    }
}

#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: usize,
    pub splats: usize,
    /// Mean PSNR over the eval views before training (the initial point cloud) and after.
    pub eval_psnr_before: Option<f64>,
    pub eval_psnr_after: Option<f64>,
    /// Metrics of the final splats on the eval views (renders in `out/eval/`).
    pub eval: Option<EvalReport>,
    pub ply: PathBuf,
    pub checkpoint: PathBuf,
    pub stopped_early: bool,
    /// The eval PSNR after each of [`TrainConfig::eval_steps`] the run reached.
    pub evals: Vec<EvalPoint>,
}

/// The eval PSNR (mean over the eval views) and splat count after a step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EvalPoint {
    pub step: usize,
    pub psnr: f64,
    pub splats: usize,
}

/// The initial splats as gsplat's `simple_trainer.py` makes them (`init_type="sfm"`): one per
/// COLMAP point, isotropic with the root mean square of the distances to its 3 nearest neighbours
/// as scale, opacity 0.1, a random (uniform in [0, 1)^4, then normalised by the rasterizer)
/// rotation, the point's colour in the DC term and higher SH zero.
pub fn initial_splats(dataset: &Dataset, max_sh_degree: u32, seed: u64) -> Result<Splats, TrainError> {
    if dataset.points.is_empty() {
        return Err(TrainError::Input(format!(
            "{}: the sparse model has no 3D points to start from",
            dataset.root.display()
        )));
    }
    let positions: Vec<glam::Vec3> = dataset.points.iter().map(|p| glam::Vec3::from(p.position)).collect();
    let spacing = scene::init::rms_knn_distances(&positions, 3);
    let mut rng = Rng(seed);
    let k = scene::sh_coeffs(max_sh_degree);
    let logit = |p: f32| (p / (1.0 - p)).ln();
    let n = positions.len();
    let mut sh = vec![[0.0f32; 3]; n * k];
    for (i, p) in dataset.points.iter().enumerate() {
        sh[i * k] = p.color.map(|v| (v as f32 / 255.0 - 0.5) / scene::SH_C0);
    }
    Ok(Splats {
        means: dataset.points.iter().map(|p| p.position).collect(),
        log_scales: spacing.iter().map(|d| [d.max(1e-7).ln(); 3]).collect(),
        rotations: (0..n)
            .map(|_| [rng.uniform(), rng.uniform(), rng.uniform(), rng.uniform()])
            .collect(),
        opacity_logits: vec![logit(0.1); n],
        sh_degree: max_sh_degree,
        sh,
    })
}

/// Rows `origin[i]` of a [n, cols] tensor (zeros where `None`).
fn gather_rows<B: Backend>(t: &Tensor<B, 2>, origin: &[Option<usize>], device: &B::Device) -> Tensor<B, 2> {
    let [_, cols] = t.dims();
    let values: Vec<f32> = t.clone().into_data().convert::<f32>().to_vec().expect("f32 tensor");
    let mut out = Vec::with_capacity(origin.len() * cols);
    for o in origin {
        match o {
            Some(i) => out.extend_from_slice(&values[i * cols..(i + 1) * cols]),
            None => out.extend(std::iter::repeat_n(0.0, cols)),
        }
    }
    Tensor::from_data(TensorData::new(out, [origin.len(), cols]), device)
}

/// A dataset ready to train on: photos checked and loaded (training photos as tensors on the loss
/// backend), eval photos for the metrics, and the scene size the means' learning rate scales with.
pub(crate) struct TrainingData<B: Backend> {
    /// Shared, so a refinement's reference lookup uses it without a copy.
    pub dataset: Arc<Dataset>,
    pub train_images: Vec<Tensor<B, 3>>,
    pub eval_views: Vec<(data::View, image::RgbImage)>,
    pub scene_scale: f32,
    pub lpips: Option<Lpips<MetricsBackend>>,
}

impl<B: Backend> TrainingData<B> {
    /// Opens `data` at `factor`, loads every photo and the LPIPS network when given (a bad file
    /// fails before any work). It writes nothing: the caller creates the run folder once every
    /// input has loaded.
    pub fn open(
        data: &Path,
        factor: u32,
        split: data::Split,
        lpips: Option<&LpipsFiles>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let dataset = data::open_dataset_split(data, factor, split)?;
        if dataset.train.is_empty() {
            return Err(TrainError::Input(format!(
                "{}: the dataset has no training views",
                data.display()
            )));
        }
        let train_images = dataset
            .train
            .iter()
            .map(|v| Ok(image_tensor::<B>(&super::eval::load_photo(v)?, device)))
            .collect::<Result<Vec<_>, TrainError>>()?;
        let eval_views = dataset
            .eval
            .iter()
            .map(|v| Ok((v.clone(), super::eval::load_photo(v)?)))
            .collect::<Result<Vec<_>, TrainError>>()?;
        let scene_scale = dataset.scene_extent().max(1e-3);
        let lpips = crate::metrics::load_lpips(lpips)?;
        Ok(Self {
            dataset: Arc::new(dataset),
            train_images,
            eval_views,
            scene_scale,
            lpips,
        })
    }

    /// Metrics of `splats` on the eval views (renders written to `out` when given); `None` without
    /// eval views.
    pub fn evaluate(
        &self,
        renderer: &SplatRenderer,
        splats: &Splats,
        out: Option<&Path>,
    ) -> Result<Option<EvalReport>, TrainError> {
        if self.eval_views.is_empty() {
            return Ok(None);
        }
        if let Some(dir) = out {
            create_dir(dir)?;
        }
        let options = RenderOptions::default();
        Ok(Some(super::eval::evaluate(
            renderer,
            splats,
            &self.eval_views,
            &options,
            self.lpips.as_ref(),
            out,
        )?))
    }
}

/// Refuses a run whose files cannot fit where it writes: its checkpoint and `.ply` at the
/// starting splat count (they only grow with densification) and the eval renders.
pub(crate) fn check_run_fits<B: Backend>(
    out: &Path,
    state: &State<B>,
    eval_views: usize,
    view: Option<&data::View>,
) -> Result<(), TrainError> {
    let splats = state.len();
    let files = crate::disk::run_files_lower_bound(splats, state.params.sh_degree);
    let render = view.map_or(0, |v| crate::disk::png_lower_bound(v.camera.width, v.camera.height));
    let needed = files.saturating_add(render.saturating_mul(eval_views as u64));
    let what = format!("a checkpoint and a .ply of {splats} splats and {eval_views} eval render(s)");
    crate::disk::check_fits(out, needed, &what).map_err(TrainError::Input)
}

/// The run folder, put back as it was if the run fails before its first checkpoint.
pub(crate) fn create_run_dir(path: &Path) -> Result<crate::disk::RunDir, TrainError> {
    crate::disk::RunDir::create(path).map_err(|e| TrainError::File {
        path: path.to_path_buf(),
        message: format!("cannot create the output folder: {e}"),
    })
}

pub(crate) fn create_dir(path: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(path).map_err(|e| TrainError::File {
        path: path.to_path_buf(),
        message: format!("cannot create the output folder: {e}"),
    })
}

/// Trains on `config.data` with autodiff over the backend `B` (the loss and optimiser run there; the
/// rasterizer runs on `gpu`). `observer` follows every step; `stop` ends the run after a checkpoint.
pub fn train<B: Backend>(
    config: &TrainConfig,
    gpu: GpuContext,
    device: &B::Device,
    observer: &mut dyn TrainObserver,
    stop: &AtomicBool,
) -> Result<TrainSummary, TrainError> {
    config.validate().map_err(TrainError::Input)?;
    let data = TrainingData::<B>::open(&config.data, config.factor, config.split, config.lpips.as_ref(), device)?;
    let dataset = &data.dataset;
    log::info!(
        "training data: {} train / {} eval views of {}",
        dataset.train.len(),
        dataset.eval.len(),
        config.data.display()
    );
    // Training draws with gsplat's rasterizer constants; the eval views with the viewer's, as
    // `difix3d eval` and `render` measure the exported scene (both antialiased when asked).
    let mode = |constants| RasterMode {
        constants,
        antialiased: config.antialiased,
    };
    let renderer = SplatRenderer::for_training(gpu.clone(), mode(RasterConstants::Gsplat), config.densify.absgrad);
    let eval_renderer = SplatRenderer::with_mode(gpu, mode(RasterConstants::Inria));

    let (mut state, start_step) = match &config.resume {
        Some(path) => {
            let loaded = checkpoint::load::<B>(path, device)?;
            let antialiased = loaded.metadata.get(ANTIALIASED_KEY).is_some_and(|v| v == "true");
            if antialiased != config.antialiased {
                return Err(TrainError::File {
                    path: path.clone(),
                    message: format!(
                        "the checkpoint was trained {}antialiased; resume it {} --antialiased",
                        if antialiased { "" } else { "not " },
                        if antialiased { "with" } else { "without" }
                    ),
                });
            }
            (loaded.state, loaded.step)
        }
        None => (
            State::new(&initial_splats(dataset, config.max_sh_degree, config.seed)?, device),
            0,
        ),
    };
    // Every input has loaded: size the run, then from here on it writes into its folder.
    check_run_fits(&config.out, &state, dataset.eval.len(), dataset.train.first())?;
    let mut run_dir = create_run_dir(&config.out)?;
    let eval_before = if start_step == 0 {
        data.evaluate(&eval_renderer, &state.params.to_splats(), None)?
            .map(|r| r.psnr)
    } else {
        None
    };
    log::info!(
        "training: {} splats, evaluation before training: {eval_before:?} dB",
        state.len()
    );
    let mut rng = Rng(config.seed ^ 0x5EED ^ start_step as u64);
    let mut epochs = Epochs::new(dataset.train.len());
    let mut stats = GradStats::new(state.len());
    let checkpoint_path = config.out.join("checkpoint.safetensors");
    let extra: Vec<(&str, String)> = if config.antialiased {
        vec![(ANTIALIASED_KEY, "true".to_string())]
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let mut step = start_step;
    let mut stopped_early = false;
    let mut evals = Vec::new();
    while step < config.steps {
        if stop.load(Ordering::Relaxed) {
            stopped_early = true;
            break;
        }
        step += 1;
        // gsplat counts its steps from 0: `s` is its number for this (1-based) step; its schedules,
        // SH degree and refinement times are functions of `s`.
        let s = step - 1;
        let index = epochs.next(&mut rng);
        let sh_degree = (s / config.sh_degree_interval.max(1)).min(config.max_sh_degree as usize) as u32;
        let options = RenderOptions {
            sh_degree,
            background: [0.0; 3],
        };
        let background = config
            .random_background
            .then(|| [rng.uniform(), rng.uniform(), rng.uniform()]);
        let target = Target {
            image: data.train_images[index].clone(),
            mask: None,
            weight: 1.0,
        };
        let settings = StepSettings {
            options: &options,
            background,
            ssim_lambda: config.ssim_lambda,
            lr: LearningRates::gsplat(s, config.steps, data.scene_scale),
            adam_step: step,
        };
        let result = match step::optimize(
            &mut state,
            &renderer,
            &dataset.train[index].camera,
            &target,
            &settings,
            device,
        ) {
            Ok(result) => result,
            Err(error) => {
                // A saved checkpoint keeps the run folder (its cleanup is for runs that produced nothing).
                let save = || {
                    checkpoint::save(&state, step - 1, &extra, &checkpoint_path)?;
                    run_dir.keep();
                    Ok(())
                };
                return Err(rescue(save, step - 1, &checkpoint_path, error));
            }
        };

        // Densification.
        let t_densify = Instant::now();
        let d = &config.densify;
        let view = renderer.take_view_gradients();
        if let (Some(v), true) = (view, s < d.refine_stop) {
            // gsplat's absgrad grows from the summed absolute per-pixel gradients instead.
            let grads = if d.absgrad { &v.mean2d_abs } else { &v.mean2d };
            stats.add(grads, &v.visible, v.width, v.height);
        }
        let (refine, reset) = d.due(s);
        if refine || reset {
            let mut splats = state.params.to_splats();
            let mut origin: Vec<Option<usize>> = (0..splats.len()).map(Some).collect();
            if refine {
                let refined = densify::refine(&splats, &stats, d, data.scene_scale, s, &mut || rng.normal());
                splats = refined.splats;
                origin = refined.origin;
            }
            if reset {
                densify::reset_opacities(&mut splats, d);
            }
            let params = SplatTensors::from_splats(&splats, device);
            let mut moments = state.moments.clone();
            for m in moments.iter_mut() {
                m.m = gather_rows(&m.m, &origin, device);
                m.v = gather_rows(&m.v, &origin, device);
            }
            if reset {
                moments[3] = Moments::zeros(&params.opacity_logits);
            }
            state = State { params, moments };
            if refine {
                stats = GradStats::new(splats.len());
            }
        }
        let times = StepTimes {
            densify: t_densify.elapsed(),
            ..result.times
        };
        let elapsed = started.elapsed().as_secs_f32().max(1e-6);
        let request = observer.step(&StepReport {
            step,
            steps: config.steps,
            loss: result.loss,
            psnr: result.psnr,
            splats: state.len(),
            steps_per_second: (step - start_step) as f32 / elapsed,
            times,
            view: ViewSource::Photo(index),
            weight: 1.0,
        });
        if request.snapshot {
            observer.snapshot(state.params.to_splats());
        }
        if config.eval_steps.contains(&step) {
            if let Some(report) = data.evaluate(&eval_renderer, &state.params.to_splats(), None)? {
                evals.push(EvalPoint {
                    step,
                    psnr: report.psnr,
                    splats: state.len(),
                });
            }
        }
        let periodic = config
            .checkpoint_every
            .is_some_and(|every| every > 0 && step % every == 0);
        if request.save || periodic {
            checkpoint::save(&state, step, &extra, &checkpoint_path)?;
            run_dir.keep();
            observer.saved(&checkpoint_path);
        }
    }
    checkpoint::save(&state, step, &extra, &checkpoint_path)?;
    run_dir.keep();
    let splats = state.params.to_splats();
    // The view ends on the final splats, not on the last periodic snapshot.
    observer.snapshot(splats.clone());
    let ply = config.out.join("point_cloud.ply");
    scene::ply::write_ply(&splats, &ply)?;
    scene::gsplat::write_run_result(&splats, step, &config.out)?;
    let eval_after = data.evaluate(&eval_renderer, &splats, Some(&config.out.join("eval")))?;
    Ok(TrainSummary {
        steps: step,
        splats: splats.len(),
        eval_psnr_before: eval_before,
        eval_psnr_after: eval_after.as_ref().map(|r| r.psnr),
        eval: eval_after,
        ply,
        checkpoint: checkpoint_path,
        stopped_early,
        evals,
    })
}

/// A step failed (a lost GPU, say): saves the last completed step's checkpoint while the parameters
/// can still be read (with the renderer's device gone, a loss and optimiser on another device still
/// hold them), so the run goes on with `--resume`; the error says which happened.
pub(crate) fn rescue(
    save: impl FnOnce() -> Result<(), TrainError>,
    step: usize,
    path: &Path,
    error: TrainError,
) -> TrainError {
    // Reading tensors back from a backend whose device is gone may panic inside the backend; this is
    // the last thing the run does, so contain that here rather than lose the error.
    let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(save));
    let note = match saved {
        Ok(Ok(())) => format!(
            "the checkpoint of step {step} is saved at {} (continue with --resume)",
            path.display()
        ),
        Ok(Err(e)) => format!("no checkpoint could be saved: {e}"),
        Err(_) => "no checkpoint could be saved: the parameters could not be read back".into(),
    };
    TrainError::Interrupted {
        error: Box::new(error),
        note,
    }
}
