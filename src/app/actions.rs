//! What panels get and give. A panel owns its own state and reads the rest of the viewer only through
//! the handles here: [`Shared`] (what is open and where the camera is, read only) and [`Jobs`] (starts
//! background work on the viewer's GPU). Anything it wants changed outside itself it sends as an
//! [`Action`], which `ViewerApp::apply` carries out in one place.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use difix3d::camera_path::Keyframe;
use difix3d::data::Dataset;
use difix3d::difix::train::trainer::DifixTrainConfig;
use difix3d::jobs::load::{LoadError, Loaded};
use difix3d::jobs::nerf_view::NerfFiles;
use difix3d::jobs::record::RecordHandle;
use difix3d::jobs::train::TrainHandle;
use difix3d::nerfacto::trainer::NerfactoRunConfig;
use difix3d::nn::backend::BackendKind;
use difix3d::record::RecordJob;
use difix3d::refine::nerfacto::NerfactoRefineConfig;
use difix3d::refine::refiner::RefineConfig;
use difix3d::render::{GpuContext, RenderOptions};
use difix3d::scene::{SceneError, Splats};
use difix3d::train::trainer::TrainConfig;
use difix3d::view::ViewController;

/// A change a panel (or the viewport's keys) asks of the viewer.
pub enum Action {
    /// Open a scene file (with `data`: the dataset folder that goes with it), as the Scene panel does.
    Open {
        path: PathBuf,
        data: Option<PathBuf>,
    },
    /// A scene (and maybe its dataset) finished loading: show it.
    Loaded(Box<Loaded>),
    /// Show a running job's splats (training, refinement) in the view, drawn antialiased or not as
    /// the job trains them.
    ShowSplats {
        splats: Arc<Splats>,
        antialiased: bool,
    },
    /// Something went wrong: logged and shown for a while.
    Toast(String),
    /// Something the user should know that is not an error (already logged where it happened).
    Notice(String),
    /// Back to the view the scene opened with.
    ResetView,
    /// The field of view, in degrees.
    SetFov(f32),
    /// Snap the view to dataset camera `index` (train cameras first, then eval).
    SnapToCamera(usize),
    /// Step to the next (`true`) or previous dataset camera.
    StepCamera {
        next: bool,
    },
    /// Move the view to a camera-path keyframe's pose.
    GoTo(Keyframe),
    /// Append the current view to the Record panel's camera path.
    AddKeyframe,
    ToggleFlyMode,
    ToggleFix,
    CycleFixViewMode,
    /// Use this Difix model folder in the post-render fix.
    UseFixModel(String),
}

/// The shared state a panel may read. It never writes it: it sends an [`Action`].
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    pub dataset: Option<&'a Arc<Dataset>>,
    /// The files of the nerfacto NeRF on screen, when the scene is one.
    pub nerf: Option<&'a NerfFiles>,
    /// The scene on screen, on the CPU.
    pub splats: Option<&'a Arc<Splats>>,
    pub camera: &'a ViewController,
    pub render: RenderOptions,
    /// The view draws with gsplat's antialiased mode (refinement and recordings of the scene on
    /// screen follow it).
    pub antialiased: bool,
}

/// Starts background jobs (`difix3d::jobs`); the ones that render share the viewer's GPU.
pub struct Jobs {
    gpu: GpuContext,
}

impl Jobs {
    pub fn new(gpu: GpuContext) -> Self {
        Self { gpu }
    }

    /// Loads a scene file or dataset folder (with `data`: a dataset to go with the scene).
    pub fn load(&self, path: PathBuf, data: Option<PathBuf>) -> Receiver<Result<Loaded, LoadError>> {
        difix3d::jobs::load::spawn(path, data)
    }

    /// Writes `splats` to `path`, the format following its extension.
    pub fn save(&self, splats: Arc<Splats>, path: PathBuf) -> Receiver<Result<PathBuf, SceneError>> {
        difix3d::jobs::save::spawn(splats, path)
    }

    pub fn train(&self, config: TrainConfig, backend: BackendKind) -> TrainHandle {
        difix3d::jobs::train::spawn(config, self.gpu.clone(), backend)
    }

    /// Trains nerfacto, wholly on `backend` (it does not render with the viewer's GPU).
    pub fn train_nerfacto(&self, config: NerfactoRunConfig, backend: BackendKind) -> TrainHandle {
        difix3d::jobs::train::spawn_nerfacto(config, backend)
    }

    /// Refines a nerfacto NeRF (Difix3D's nerfstudio variant), wholly on `backend`.
    pub fn refine_nerfacto(&self, config: NerfactoRefineConfig, backend: BackendKind) -> TrainHandle {
        difix3d::jobs::train::spawn_nerfacto_refine(config, backend)
    }

    pub fn refine(&self, config: RefineConfig, backend: BackendKind) -> TrainHandle {
        difix3d::jobs::train::spawn_refine(config, self.gpu.clone(), backend)
    }

    /// Fine-tunes Difix (on its own devices: `devices` empty is the backend's default).
    pub fn train_difix(&self, config: DifixTrainConfig, backend: BackendKind, devices: Vec<usize>) -> TrainHandle {
        difix3d::jobs::train::spawn_difix(config, backend, devices)
    }

    pub fn record(&self, job: RecordJob) -> RecordHandle {
        difix3d::jobs::record::spawn(job, self.gpu.clone())
    }
}
