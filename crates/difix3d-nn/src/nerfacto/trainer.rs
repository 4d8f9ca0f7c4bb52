//! Training nerfacto on a dataset folder (COLMAP or the Difix3D layout, as the splat trainer reads
//! them): `difix3d train --method nerfacto`.
//!
//! - World frame: nerfstudio's dataparsers first turn a COLMAP world (y and z swapped,
//!   `assume_colmap_world_coordinate_convention`; a transforms.json from `ns-process-data` is in
//!   that turned world already), then (`orientation_method="up"`, `center_method="poses"`,
//!   `auto_scale_poses=True`) turn the poses so the mean camera up vector is +z, move the mean
//!   camera centre to the origin and scale so the largest centre coordinate is 1, which is what
//!   nerfacto's scene contraction expects. [`Normalization`] does the same; the run saves it as
//!   `dataparser_transforms.json` (nerfstudio's file and layout) so cameras of the dataset's frame
//!   can be rendered (`difix3d nerfacto-render --dataparser-transforms`).
//! - Batches: each ray picks a training image, then a pixel, uniformly (nerfstudio's `PixelSampler`
//!   on images of one size, [`super::batches`]), through the pixel centre; the photo's colour is the
//!   target; the image's index picks the appearance code.
//! - The saved model records its last step (`step` metadata, 0-based as in nerfstudio's
//!   checkpoints), where `difix3d refine --method nerfacto` continues.
//! - Steps: [`super::training::NerfactoTrainer`] (nerfstudio's losses, optimisers, schedules).
//! - Evaluation: the eval views rendered as nerfstudio renders outside training, mean PSNR, before
//!   training, after each of `eval_steps`, and at the end (renders in `out/eval/`).
//! - Output in `out/`: `nerfacto.safetensors` (the state dict with nerfstudio's `_model.` keys,
//!   [`super::state::save`]), `nerfacto.json` (the config with every size, for `--config`),
//!   `dataparser_transforms.json`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::batches::{PixelSampler, Views};
use super::camera_optimizer::CorrectionMetrics;
use super::config::NerfactoConfig;
use super::model::Nerfacto;
use super::training::{NerfactoTrainer, StepLosses, RAYS_PER_BATCH};
use super::NerfactoError;
use crate::data::{self, Camera, Dataset};
use crate::rng::Rng;

/// Why a nerfacto run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum NerfactoTrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Nerfacto(#[from] NerfactoError),
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
}

/// A nerfacto run.
#[derive(Clone, Debug)]
pub struct NerfactoRunConfig {
    pub data: PathBuf,
    pub factor: u32,
    pub split: data::Split,
    pub steps: usize,
    pub out: PathBuf,
    /// Sizes and sample counts (`ns-train nerfacto`'s defaults where absent).
    pub model: NerfactoConfig,
    pub rays_per_batch: usize,
    pub seed: u64,
    /// Steps after which to measure the eval PSNR.
    pub eval_steps: Vec<usize>,
    /// Rays rendered at once when evaluating.
    pub eval_chunk: usize,
}

impl NerfactoRunConfig {
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            factor: 1,
            split: data::Split::Default,
            steps: 30_000,
            out,
            model: NerfactoConfig::default(),
            rays_per_batch: RAYS_PER_BATCH,
            seed: 42,
            eval_steps: Vec::new(),
            eval_chunk: 4096,
        }
    }

    /// Checks every number, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        use crate::validate;
        let flag = |name: &'static str| move |m: String| format!("--{name}: {m}");
        validate::at_least_one(self.factor as usize).map_err(flag("factor"))?;
        validate::steps(self.steps).map_err(flag("steps"))?;
        validate::at_least_one(self.rays_per_batch).map_err(flag("rays-per-batch"))?;
        if self.rays_per_batch > MAX_RAYS_PER_BATCH {
            return Err(format!(
                "--rays-per-batch: {} is more than {MAX_RAYS_PER_BATCH}",
                self.rays_per_batch
            ));
        }
        for &step in &self.eval_steps {
            validate::at_least_one(step).map_err(flag("eval-steps"))?;
            validate::steps(step).map_err(flag("eval-steps"))?;
        }
        self.model.validate().map_err(|m| format!("--nerfacto-config: {m}"))
    }
}

/// The largest batch accepted (each ray holds a few hundred samples' activations).
pub const MAX_RAYS_PER_BATCH: usize = 1 << 20;

/// Progress after each step.
#[derive(Clone, Copy, Debug)]
pub struct NerfactoStepReport {
    pub step: usize,
    pub steps: usize,
    pub losses: StepLosses,
    pub rays_per_second: f32,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct NerfactoSummary {
    pub steps: usize,
    pub eval_psnr_before: Option<f64>,
    pub eval_psnr_after: Option<f64>,
    /// `(step, mean eval PSNR)` after each of the run's `eval_steps` it reached.
    pub evals: Vec<(usize, f64)>,
    pub model: PathBuf,
    pub config: PathBuf,
    pub stopped_early: bool,
    /// Training rays per second over the run's steps (evaluation excluded).
    pub rays_per_second: f64,
    /// How far the camera optimiser moved the training cameras (`None` with it off).
    pub camera_corrections: Option<CorrectionMetrics>,
}

/// nerfstudio's dataparser transform: `x' = scale · R (x − centre)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub rotation: glam::Mat3,
    pub centre: glam::Vec3,
    pub scale: f32,
}

impl Normalization {
    /// From the cameras, in the data's world, and the turn nerfstudio first gives that world
    /// ([`Dataset::nerfstudio_world`]): in the turned world `auto_orient_and_center_poses(method="up",
    /// center_method="poses")`, then `auto_scale_poses`; the turn is composed into the rotation, as
    /// nerfstudio composes it into `dataparser_transform`.
    pub fn from_cameras<'a>(turn: glam::Mat3, cameras: impl Iterator<Item = &'a Camera> + Clone) -> Self {
        let count = cameras.clone().count().max(1) as f32;
        // The mean centre; turning it is the same as the turned centres' mean.
        let centre = cameras
            .clone()
            .map(|c| glam::Vec3::from(c.world_from_camera.translation))
            .sum::<glam::Vec3>()
            / count;
        // OpenGL's +y (nerfstudio's up) is OpenCV's −y.
        let up = turn
            * cameras
                .clone()
                .map(|c| -glam::Vec3::from(c.world_from_camera.matrix3.y_axis))
                .sum::<glam::Vec3>();
        let orientation = if up.length() > 1e-6 {
            glam::Mat3::from_quat(glam::Quat::from_rotation_arc(up.normalize(), glam::Vec3::Z))
        } else {
            glam::Mat3::IDENTITY
        };
        let rotation = orientation * turn;
        let largest = cameras
            .map(|c| {
                (rotation * (glam::Vec3::from(c.world_from_camera.translation) - centre))
                    .abs()
                    .max_element()
            })
            .fold(0.0f32, f32::max);
        let scale = if largest > 1e-6 { 1.0 / largest } else { 1.0 };
        Self {
            rotation,
            centre,
            scale,
        }
    }

    /// `camera` in the normalised frame.
    pub fn apply(&self, camera: &Camera) -> Camera {
        let mut c = camera.clone();
        let r = glam::Mat3A::from(self.rotation);
        c.world_from_camera.matrix3 = r * camera.world_from_camera.matrix3;
        let t = glam::Vec3::from(camera.world_from_camera.translation);
        c.world_from_camera.translation = (self.rotation * (t - self.centre) * self.scale).into();
        c
    }

    /// nerfstudio's `dataparser_transforms.json`: `{"transform": 3x4 [R | −R·centre], "scale": s}`.
    pub fn to_json(&self) -> serde_json::Value {
        let t = -(self.rotation * self.centre);
        let rows: Vec<Vec<f32>> = (0..3)
            .map(|i| {
                let row = self.rotation.row(i);
                vec![row.x, row.y, row.z, t[i]]
            })
            .collect();
        serde_json::json!({ "transform": rows, "scale": self.scale })
    }
}

/// Reads the photo of `view`, which must have its camera's size.
pub fn load_photo(view: &data::View) -> Result<image::RgbImage, NerfactoTrainError> {
    let photo = crate::image_io::open_rgb(&view.image_path).map_err(|message| NerfactoTrainError::File {
        path: view.image_path.clone(),
        message,
    })?;
    if photo.dimensions() != (view.camera.width, view.camera.height) {
        return Err(NerfactoTrainError::File {
            path: view.image_path.clone(),
            message: format!(
                "the photo is {}x{} but its camera is {}x{}",
                photo.width(),
                photo.height(),
                view.camera.width,
                view.camera.height
            ),
        });
    }
    Ok(photo)
}

/// Mean PSNR of `model` over `views` (cameras normalised, photos loaded); renders written to `out`.
pub fn evaluate<B: Backend>(
    model: &Nerfacto<B>,
    views: &[(Camera, image::RgbImage)],
    chunk: usize,
    out: Option<&Path>,
) -> Result<Option<f64>, NerfactoTrainError> {
    if views.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0;
    for (camera, photo) in views {
        let image = model.render_camera(camera, chunk);
        let reference: Vec<f32> = photo.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
        total += crate::metrics::psnr(&image.rgb, &reference);
        if let Some(dir) = out {
            let pixels = image.rgb.iter().map(|&v| crate::image_io::quantize(v)).collect();
            let name = Path::new(&camera.name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "view".into());
            let path = dir.join(format!("{name}.png"));
            if let Some(rgb) = image::RgbImage::from_raw(image.width, image.height, pixels) {
                crate::image_io::save_png(&rgb, &path).map_err(|e| NerfactoTrainError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
        }
    }
    Ok(Some(total / views.len() as f64))
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> NerfactoTrainError {
    NerfactoTrainError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Trains nerfacto on `config.data` with autodiff over `B`. `observer` sees every step; `stop` ends
/// the run after the current step (the model is saved either way).
pub fn train<B: AutodiffBackend>(
    config: &NerfactoRunConfig,
    device: &B::Device,
    observer: &mut dyn FnMut(&NerfactoStepReport),
    stop: &AtomicBool,
) -> Result<NerfactoSummary, NerfactoTrainError> {
    config.validate().map_err(NerfactoTrainError::Input)?;
    let dataset: Dataset = data::open_dataset_split(&config.data, config.factor, config.split)?;
    if dataset.train.is_empty() {
        return Err(NerfactoTrainError::Input(format!(
            "{}: the dataset has no training views",
            config.data.display()
        )));
    }
    let all_cameras: Vec<&Camera> = dataset.views().map(|v| &v.camera).collect();
    let normalization = Normalization::from_cameras(dataset.nerfstudio_world, all_cameras.iter().copied());
    let train_views = Views {
        cameras: dataset.train.iter().map(|v| normalization.apply(&v.camera)).collect(),
        images: dataset.train.iter().map(load_photo).collect::<Result<_, _>>()?,
    };
    let eval_views: Vec<(Camera, image::RgbImage)> = dataset
        .eval
        .iter()
        .map(|v| Ok((normalization.apply(&v.camera), load_photo(v)?)))
        .collect::<Result<_, NerfactoTrainError>>()?;

    let sizes = super::state::resolve_sizes(&config.model);
    let label = config.out.join("nerfacto.safetensors");
    let initial = super::state::initial(&sizes, dataset.train.len(), config.seed, &label)?;
    let model = Nerfacto::<B>::load(&initial, sizes, device)?
        .with_camera_optimizer(dataset.train.len())
        .map_err(|m| NerfactoError::format(&label, m))?;
    let state_bytes: u64 = super::state::state_dict(&model)
        .values()
        .map(|t| t.values.len() as u64 * 4)
        .sum();
    let renders: u64 = eval_views
        .iter()
        .map(|(c, _)| crate::disk::png_lower_bound(c.width, c.height))
        .sum();
    crate::disk::check_fits(
        &config.out,
        state_bytes.saturating_add(renders),
        &format!(
            "a nerfacto model of {} and {} eval render(s)",
            crate::disk::human(state_bytes),
            eval_views.len()
        ),
    )
    .map_err(NerfactoTrainError::Input)?;
    let mut run_dir = crate::disk::RunDir::create(&config.out).map_err(|e| file_error(&config.out, e))?;

    let eval_before = evaluate(&model.valid(), &eval_views, config.eval_chunk, None)?;
    log::info!(
        "nerfacto: {} train / {} eval views, eval PSNR before training {eval_before:?}",
        train_views.cameras.len(),
        eval_views.len()
    );
    let passes = model.proposals.len() + 1;
    let mut trainer = NerfactoTrainer::new(model);
    let mut rng = Rng(config.seed ^ 0x4E45_5246);
    let started = Instant::now();
    let mut evals = Vec::new();
    let mut stopped_early = false;
    let mut eval_time = std::time::Duration::ZERO;
    while trainer.steps() < config.steps {
        if stop.load(Ordering::Relaxed) {
            stopped_early = true;
            break;
        }
        let (batch, jitter) =
            train_views.batch::<B>(&PixelSampler::Pixels, config.rays_per_batch, passes, &mut rng, device);
        let losses = trainer.step(&batch, jitter);
        let step = trainer.steps();
        if !losses.total.is_finite() {
            return Err(NerfactoTrainError::Input(format!(
                "the loss became {} at step {step}; try fewer rays per batch or a smaller model",
                losses.total
            )));
        }
        let elapsed = (started.elapsed() - eval_time).as_secs_f32().max(1e-6);
        observer(&NerfactoStepReport {
            step,
            steps: config.steps,
            losses,
            rays_per_second: (step * config.rays_per_batch) as f32 / elapsed,
        });
        if config.eval_steps.contains(&step) {
            let eval_started = Instant::now();
            if let Some(psnr) = evaluate(&trainer.model().valid(), &eval_views, config.eval_chunk, None)? {
                evals.push((step, psnr));
            }
            eval_time += eval_started.elapsed();
        }
    }
    let training_time = (started.elapsed() - eval_time).as_secs_f64().max(1e-9);
    let rays_per_second = (trainer.steps() * config.rays_per_batch) as f64 / training_time;
    let model = trainer.model();
    let model_path = config.out.join("nerfacto.safetensors");
    let moments = trainer.adam_moments();
    super::state::save(model, trainer.steps().checked_sub(1), Some(&moments), &model_path)?;
    run_dir.keep();
    let config_path = config.out.join("nerfacto.json");
    let text = serde_json::to_string_pretty(&model.config).map_err(|e| file_error(&config_path, e))?;
    crate::disk::write_bytes_atomic(&config_path, text.as_bytes()).map_err(|e| file_error(&config_path, e))?;
    let transforms = config.out.join("dataparser_transforms.json");
    let text = serde_json::to_string_pretty(&normalization.to_json()).map_err(|e| file_error(&transforms, e))?;
    crate::disk::write_bytes_atomic(&transforms, text.as_bytes()).map_err(|e| file_error(&transforms, e))?;
    let eval_dir = config.out.join("eval");
    if !eval_views.is_empty() {
        std::fs::create_dir_all(&eval_dir).map_err(|e| file_error(&eval_dir, e))?;
    }
    let eval_after = evaluate(&model.valid(), &eval_views, config.eval_chunk, Some(&eval_dir))?;
    Ok(NerfactoSummary {
        steps: trainer.steps(),
        eval_psnr_before: eval_before,
        eval_psnr_after: eval_after,
        evals,
        model: model_path,
        config: config_path,
        stopped_early,
        rays_per_second,
        camera_corrections: model.camera_optimizer.as_ref().map(|c| c.metrics()),
    })
}

/// [`train`] with autodiff over the backend `kind` names (fp32): the one entry point of the CLI and
/// the viewer's Training panel.
pub fn train_on(
    kind: crate::nn::backend::BackendKind,
    config: &NerfactoRunConfig,
    observer: &mut dyn FnMut(&NerfactoStepReport),
    stop: &AtomicBool,
) -> Result<Result<NerfactoSummary, NerfactoTrainError>, crate::nn::backend::BackendError> {
    struct Job<'a> {
        config: &'a NerfactoRunConfig,
        observer: &'a mut dyn FnMut(&NerfactoStepReport),
        stop: &'a AtomicBool,
    }
    impl crate::nn::backend::WithBackend for Job<'_> {
        type Output = Result<NerfactoSummary, NerfactoTrainError>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            train::<burn::backend::Autodiff<B>>(self.config, &device, self.observer, self.stop)
        }
    }
    crate::nn::backend::run_on_fp32(kind, Job { config, observer, stop })
}
