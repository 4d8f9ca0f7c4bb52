//! The 3DGS training loop, following gsplat's `simple_trainer.py` defaults: initialise from the
//! COLMAP points, render a random training view per step, loss 0.8 L1 + 0.2 (1 - SSIM), Adam with
//! per-group learning rates (means decaying 100x over the run, scaled by the scene extent), SH degree
//! raised every 1000 steps, densification until step 15000 with opacity resets every 3000.
//! Checkpoints (safetensors, parameters + optimiser state) on request, every `checkpoint_every`
//! steps and when stopped; the result is exported as a `.ply`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};

use super::adam::{self, Moments};
use super::densify::{self, DensifyConfig, GradStats};
use super::diff_render::{render, SplatRenderer, SplatTensors};
use super::eval::EvalReport;
use super::ssim::ssim;
use crate::data::{self, Dataset, View};
use crate::render::{GpuContext, RenderOptions};
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
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub factor: u32,
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
}

impl TrainConfig {
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            factor: 1,
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
        }
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
}

/// Wall time of one step's parts: the forward render, the loss, the backward pass (the rasterizer's
/// and burn's), the optimiser, and densification.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    pub render: std::time::Duration,
    pub loss: std::time::Duration,
    pub backward: std::time::Duration,
    pub optimizer: std::time::Duration,
    pub densify: std::time::Duration,
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
}

/// Deterministic random numbers (SplitMix64) so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// The initial splats as gsplat makes them: one per COLMAP point, scale from the 3 nearest
/// neighbours, opacity 0.1, random rotation, colour in the DC term, higher SH zero.
pub fn initial_splats(dataset: &Dataset, max_sh_degree: u32, seed: u64) -> Result<Splats, TrainError> {
    let points: Vec<([f32; 3], [u8; 3])> = dataset.points.iter().map(|p| (p.position, p.color)).collect();
    let base = scene::init::from_points(&points).ok_or_else(|| {
        TrainError::Input(format!(
            "{}: the sparse model has no 3D points to start from",
            dataset.root.display()
        ))
    })?;
    let mut rng = Rng(seed);
    let k = scene::sh_coeffs(max_sh_degree);
    let logit = |p: f32| (p / (1.0 - p)).ln();
    let n = base.len();
    let mut sh = vec![[0.0f32; 3]; n * k];
    for i in 0..n {
        sh[i * k] = base.sh[i];
    }
    Ok(Splats {
        rotations: (0..n)
            .map(|_| [rng.uniform(), rng.uniform(), rng.uniform(), rng.uniform()])
            .collect(),
        opacity_logits: vec![logit(0.1); n],
        sh_degree: max_sh_degree,
        sh,
        ..base
    })
}

/// The learning rates of each group at `step` (gsplat's defaults).
struct LearningRates {
    means: f32,
    log_scales: f32,
    rotations: f32,
    opacity_logits: f32,
    sh0: f32,
    sh_rest: f32,
}

impl LearningRates {
    fn at(step: usize, steps: usize, scene_scale: f32) -> Self {
        let decay = 0.01f32.powf(step as f32 / steps.max(1) as f32);
        Self {
            means: 1.6e-4 * scene_scale * decay,
            log_scales: 5e-3,
            rotations: 1e-3,
            opacity_logits: 5e-2,
            sh0: 2.5e-3,
            sh_rest: 2.5e-3 / 20.0,
        }
    }
}

fn photo_tensor<B: Backend>(view: &View, device: &B::Device) -> Result<Tensor<B, 3>, TrainError> {
    let image = super::eval::load_photo(view)?;
    let (w, h) = image.dimensions();
    let values: Vec<f32> = image.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
    Ok(Tensor::from_data(
        TensorData::new(values, [h as usize, w as usize, 3]),
        device,
    ))
}

fn psnr_of<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
    let mse: f32 = (a - b).powi_scalar(2).mean().into_scalar().elem();
    -10.0 * mse.max(1e-12).log10()
}

/// All the optimisable state: parameters and Adam moments, per group.
struct State<B: Backend> {
    params: SplatTensors<B>,
    moments: [Moments<B>; 5],
}

impl<B: Backend> State<B> {
    fn new(splats: &Splats, device: &B::Device) -> Self {
        let params = SplatTensors::from_splats(splats, device);
        let moments = groups(&params).map(Moments::zeros);
        Self { params, moments }
    }
}

fn groups<B: Backend>(p: &SplatTensors<B>) -> [&Tensor<B, 2>; 5] {
    [&p.means, &p.log_scales, &p.rotations, &p.opacity_logits, &p.sh]
}

const GROUP_NAMES: [&str; 5] = ["means", "log_scales", "rotations", "opacity_logits", "sh"];

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

/// Writes parameters, Adam moments and the step to `path` atomically.
fn save_checkpoint<B: Backend>(state: &State<B>, step: usize, path: &Path) -> Result<(), TrainError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, t: &Tensor<B, 2>| {
        let values: Vec<f32> = t.clone().into_data().convert::<f32>().to_vec().expect("f32 tensor");
        tensors.push((name, t.dims().to_vec(), bytemuck::cast_slice(&values).to_vec()));
    };
    for ((name, p), m) in GROUP_NAMES.iter().zip(groups(&state.params)).zip(&state.moments) {
        add(name.to_string(), p);
        add(format!("adam_m.{name}"), &m.m);
        add(format!("adam_v.{name}"), &m.v);
    }
    let metadata = HashMap::from([
        ("step".to_string(), step.to_string()),
        ("sh_degree".to_string(), state.params.sh_degree.to_string()),
    ]);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .expect("shape and byte count agree");
            (n.clone(), view)
        })
        .collect();
    crate::image_io::write_atomic(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(|e| e.to_string())
    })?;
    Ok(())
}

fn load_checkpoint<B: Backend>(path: &Path, device: &B::Device) -> Result<(State<B>, usize), TrainError> {
    let err = |message: String| TrainError::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read the checkpoint: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let info = meta.metadata().clone().unwrap_or_default();
    let number = |key: &str| -> Result<usize, TrainError> {
        info.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(format!("no `{key}` in the checkpoint's metadata")))
    };
    let step = number("step")?;
    let sh_degree = number("sh_degree")? as u32;
    let tensor = |name: &str| -> Result<Tensor<B, 2>, TrainError> {
        let view = tensors.tensor(name).map_err(|e| err(format!("`{name}`: {e}")))?;
        let shape = view.shape();
        if view.dtype() != safetensors::Dtype::F32 || shape.len() != 2 {
            return Err(err(format!("`{name}` is not a 2D f32 tensor")));
        }
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        Ok(Tensor::from_data(TensorData::new(values, [shape[0], shape[1]]), device))
    };
    let p = |i: usize| tensor(GROUP_NAMES[i]);
    let params = SplatTensors {
        means: p(0)?,
        log_scales: p(1)?,
        rotations: p(2)?,
        opacity_logits: p(3)?,
        sh: p(4)?,
        sh_degree,
    };
    let mut moments = Vec::new();
    for name in GROUP_NAMES {
        moments.push(Moments {
            m: tensor(&format!("adam_m.{name}"))?,
            v: tensor(&format!("adam_v.{name}"))?,
        });
    }
    let moments: [Moments<B>; 5] = moments
        .try_into()
        .map_err(|_| err("optimiser state is incomplete".into()))?;
    Ok((State { params, moments }, step))
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
    type Ad<B> = Autodiff<B>;
    let dataset = data::open_dataset(&config.data, config.factor)?;
    if dataset.train.is_empty() {
        return Err(TrainError::Input(format!(
            "{}: the dataset has no training views",
            config.data.display()
        )));
    }
    std::fs::create_dir_all(&config.out).map_err(|e| TrainError::File {
        path: config.out.clone(),
        message: format!("cannot create the output folder: {e}"),
    })?;
    // Images are checked and loaded up front: a bad file fails the run before any work.
    let train_images = dataset
        .train
        .iter()
        .map(|v| photo_tensor::<B>(v, device))
        .collect::<Result<Vec<_>, _>>()?;
    let eval_views = dataset
        .eval
        .iter()
        .map(|v| Ok((v.clone(), super::eval::load_photo(v)?)))
        .collect::<Result<Vec<_>, TrainError>>()?;
    let scene_scale = dataset.scene_extent().max(1e-3);
    let renderer = SplatRenderer::new(gpu);

    let (mut state, start_step) = match &config.resume {
        Some(path) => load_checkpoint::<B>(path, device)?,
        None => (
            State::new(&initial_splats(&dataset, config.max_sh_degree, config.seed)?, device),
            0,
        ),
    };
    let eval_options = RenderOptions::default();
    let evaluate = |splats: &Splats, out: Option<&Path>| -> Result<Option<EvalReport>, TrainError> {
        if eval_views.is_empty() {
            return Ok(None);
        }
        Ok(Some(super::eval::evaluate(
            &renderer,
            splats,
            &eval_views,
            &eval_options,
            out,
        )?))
    };
    let eval_before = if start_step == 0 {
        evaluate(&state.params.to_splats(), None)?.map(|r| r.psnr)
    } else {
        None
    };
    let mut rng = Rng(config.seed ^ 0x5EED ^ start_step as u64);
    let mut stats = GradStats::new(state.params.means.dims()[0]);
    let checkpoint = config.out.join("checkpoint.safetensors");
    let started = Instant::now();
    let mut step = start_step;
    let mut stopped_early = false;
    while step < config.steps {
        if stop.load(Ordering::Relaxed) {
            stopped_early = true;
            break;
        }
        step += 1;
        let index = (rng.next_u64() % dataset.train.len() as u64) as usize;
        let (view, gt) = (&dataset.train[index], &train_images[index]);
        let sh_degree = ((step - 1) / config.sh_degree_interval.max(1)).min(config.max_sh_degree as usize) as u32;
        let options = RenderOptions {
            sh_degree,
            background: [0.0; 3],
        };

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
        let image = render(&renderer, &params, &view.camera, &options)?;
        let t_loss = Instant::now();
        let [h, w, _] = image.dims();
        let mut colour = image.clone().slice([0..h, 0..w, 0..3]);
        if config.random_background {
            // Rendered over black, so adding bkgd * (1 - alpha) puts it over the random colour.
            let bkgd = [rng.uniform(), rng.uniform(), rng.uniform()];
            let bkgd = Tensor::<Ad<B>, 3>::from_data(TensorData::new(bkgd.to_vec(), [1, 1, 3]), device);
            let alpha = image.slice([0..h, 0..w, 3..4]);
            colour = colour + bkgd * (alpha.neg() + 1.0);
        }
        let target = Tensor::<Ad<B>, 3>::from_inner(gt.clone());
        let l1 = (colour.clone() - target.clone()).abs().mean();
        let to_nchw = |t: Tensor<Ad<B>, 3>| t.permute([2, 0, 1]).unsqueeze::<4>();
        let ssim_value = ssim(to_nchw(colour.clone()), to_nchw(target));
        let loss = l1 * (1.0 - config.ssim_lambda) + (ssim_value.neg() + 1.0) * config.ssim_lambda;
        let loss_value: f32 = loss.clone().into_scalar().elem();
        let psnr = psnr_of(colour.inner(), gt.clone());
        let t_backward = Instant::now();
        let grads = loss.backward();
        let t_optimizer = Instant::now();

        let lr = LearningRates::at(step, config.steps, scene_scale);
        let k = scene::sh_coeffs(p.sh_degree);
        let mut sh_lr = vec![lr.sh_rest; k * 3];
        sh_lr[..3].fill(lr.sh0);
        let rates = [
            Tensor::<B, 2>::from_data(TensorData::new(vec![lr.means], [1, 1]), device),
            Tensor::from_data(TensorData::new(vec![lr.log_scales], [1, 1]), device),
            Tensor::from_data(TensorData::new(vec![lr.rotations], [1, 1]), device),
            Tensor::from_data(TensorData::new(vec![lr.opacity_logits], [1, 1]), device),
            Tensor::from_data(TensorData::new(sh_lr, [1, k * 3]), device),
        ];
        let tracked = [
            &params.means,
            &params.log_scales,
            &params.rotations,
            &params.opacity_logits,
            &params.sh,
        ];
        let mut updated = Vec::with_capacity(5);
        for ((t, moments), rate) in tracked.into_iter().zip(state.moments.iter_mut()).zip(rates) {
            let g = t
                .grad(&grads)
                .ok_or_else(|| TrainError::Input("a parameter group got no gradient".into()))?;
            updated.push(adam::step(t.clone().inner(), g, moments, rate.clone(), step));
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

        // Densification.
        let t_densify = Instant::now();
        if let Some(v) = renderer.take_view_gradients() {
            stats.add(&v.mean2d, &v.visible, v.width, v.height);
        }
        let d = &config.densify;
        let refine = step > d.refine_start && step % d.refine_every == 0 && step < d.refine_stop;
        let reset = step % d.reset_every == 0 && step < d.refine_stop;
        if refine || reset {
            let mut splats = state.params.to_splats();
            let mut origin: Vec<Option<usize>> = (0..splats.len()).map(Some).collect();
            if refine {
                let refined = densify::refine(&splats, &stats, d, scene_scale, step, &mut || rng.normal());
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

        let t_end = Instant::now();
        let times = StepTimes {
            render: t_loss - t_render,
            loss: t_backward - t_loss,
            backward: t_optimizer - t_backward,
            optimizer: t_densify - t_optimizer,
            densify: t_end - t_densify,
        };
        let elapsed = started.elapsed().as_secs_f32().max(1e-6);
        let request = observer.step(&StepReport {
            step,
            steps: config.steps,
            loss: loss_value,
            psnr,
            splats: state.params.means.dims()[0],
            steps_per_second: (step - start_step) as f32 / elapsed,
            times,
        });
        if request.snapshot {
            observer.snapshot(state.params.to_splats());
        }
        let periodic = config
            .checkpoint_every
            .is_some_and(|every| every > 0 && step % every == 0);
        if request.save || periodic {
            save_checkpoint(&state, step, &checkpoint)?;
            observer.saved(&checkpoint);
        }
    }
    save_checkpoint(&state, step, &checkpoint)?;
    let splats = state.params.to_splats();
    let ply = config.out.join("point_cloud.ply");
    scene::ply::write_ply(&splats, &ply)?;
    let eval_dir = config.out.join("eval");
    std::fs::create_dir_all(&eval_dir).map_err(|e| TrainError::File {
        path: eval_dir.clone(),
        message: format!("cannot create the folder: {e}"),
    })?;
    let eval_after = evaluate(&splats, Some(&eval_dir))?;
    Ok(TrainSummary {
        steps: step,
        splats: splats.len(),
        eval_psnr_before: eval_before,
        eval_psnr_after: eval_after.as_ref().map(|r| r.psnr),
        eval: eval_after,
        ply,
        checkpoint,
        stopped_early,
    })
}
