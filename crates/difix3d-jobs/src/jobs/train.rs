//! A training (splats or nerfacto), refinement or Difix fine-tuning run on its own thread: progress events out, commands
//! (pause, resume, save, stop) in. The viewer's Training and Refinement panels drive it; the CLI
//! calls the trainers and the refiner directly with the same observer interfaces.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use crossbeam_channel::{Receiver, Sender};

use crate::difix::train::trainer::{
    self as difix_trainer, DifixEvalReport, DifixStepReport, DifixTrainConfig, DifixTrainObserver, DifixTrainSummary,
};
use crate::nerfacto::trainer::{self as nerfacto_trainer, NerfactoRunConfig, NerfactoStepReport, NerfactoSummary};
use crate::nn::backend::{devices, run_on, run_on_renderer_device, BackendKind, Precision, WithBackend};
use crate::refine::nerfacto::{
    self as nerfacto_refine, NerfactoRefineConfig, NerfactoRefineObserver, NerfactoRefineStep, NerfactoRefineSummary,
    ValPoint,
};
use crate::refine::refiner::{self, RefineConfig, RefineObserver, RefineSummary};
use crate::refine::round::RoundEvent;
use crate::render::GpuContext;
use crate::scene::Splats;
use crate::train::trainer::{self, StepReport, StepRequest, TrainConfig, TrainObserver, TrainSummary};

pub enum TrainCommand {
    Pause,
    Resume,
    Save,
    Stop,
}

pub enum TrainEvent {
    Step(StepReport),
    /// The splats as they are now (about once a second), for the view.
    Snapshot(Arc<Splats>),
    Saved(PathBuf),
    Paused(bool),
    /// Progress of a refinement round.
    Round(RoundEvent),
    /// A Difix fine-tuning step, and its evaluations on the test pairs.
    DifixStep(DifixStepReport),
    DifixEval(DifixEvalReport),
    /// A nerfacto training step.
    NerfactoStep(NerfactoStepReport),
    /// A nerfacto refinement step, and its measurements of the eval views.
    NerfactoRefineStep(NerfactoRefineStep),
    NerfactoVal(ValPoint),
    Done(Result<Finished, String>),
}

/// What a run that ended well produced.
#[derive(Clone, Debug)]
pub enum Finished {
    Train(TrainSummary),
    Refine(RefineSummary),
    Difix(DifixTrainSummary),
    Nerfacto(NerfactoSummary),
    NerfactoRefine(Box<NerfactoRefineSummary>),
}

pub struct TrainHandle {
    pub events: Receiver<TrainEvent>,
    pub commands: Sender<TrainCommand>,
    /// Whether [`TrainCommand::Save`] saves mid-run (nerfacto training saves only at its end).
    pub saves: bool,
}

/// How often the view gets new splats.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

struct ChannelObserver {
    events: Sender<TrainEvent>,
    commands: Receiver<TrainCommand>,
    stop: Arc<AtomicBool>,
    last_snapshot: Instant,
}

impl ChannelObserver {
    /// Applies one command; returns whether to save now.
    fn apply(&mut self, command: TrainCommand) -> bool {
        let mut save = false;
        match command {
            TrainCommand::Save => save = true,
            TrainCommand::Stop => self.stop.store(true, Ordering::Relaxed),
            TrainCommand::Pause => {
                let _ = self.events.send(TrainEvent::Paused(true));
                // Block here until resumed or stopped: the run waits between steps.
                while let Ok(next) = self.commands.recv() {
                    match next {
                        TrainCommand::Resume => break,
                        TrainCommand::Stop => {
                            self.stop.store(true, Ordering::Relaxed);
                            break;
                        }
                        TrainCommand::Save => save = true,
                        TrainCommand::Pause => {}
                    }
                }
                let _ = self.events.send(TrainEvent::Paused(false));
            }
            TrainCommand::Resume => {}
        }
        save
    }

    /// Applies the commands that arrived since the last step; returns whether to save now.
    fn apply_pending(&mut self) -> bool {
        let mut save = false;
        while let Ok(command) = self.commands.try_recv() {
            save |= self.apply(command);
        }
        save
    }
}

impl TrainObserver for ChannelObserver {
    fn step(&mut self, report: &StepReport) -> StepRequest {
        let _ = self.events.send(TrainEvent::Step(report.clone()));
        let save = self.apply_pending();
        let snapshot = self.last_snapshot.elapsed() >= SNAPSHOT_EVERY;
        if snapshot {
            self.last_snapshot = Instant::now();
        }
        StepRequest { save, snapshot }
    }

    fn snapshot(&mut self, splats: Splats) {
        let _ = self.events.send(TrainEvent::Snapshot(Arc::new(splats)));
    }

    fn saved(&mut self, path: &Path) {
        let _ = self.events.send(TrainEvent::Saved(path.to_path_buf()));
    }
}

impl ChannelObserver {
    /// A nerfacto step: reported, then pause and stop applied (there is no mid-run save).
    fn nerfacto_step(&mut self, report: &NerfactoStepReport) {
        let _ = self.events.send(TrainEvent::NerfactoStep(*report));
        self.apply_pending();
    }
}

impl NerfactoRefineObserver for ChannelObserver {
    fn step(&mut self, report: &NerfactoRefineStep) {
        let _ = self.events.send(TrainEvent::NerfactoRefineStep(*report));
        self.apply_pending();
    }

    fn round(&mut self, event: &RoundEvent) {
        let _ = self.events.send(TrainEvent::Round(event.clone()));
    }

    fn val(&mut self, point: &ValPoint) {
        let _ = self.events.send(TrainEvent::NerfactoVal(*point));
    }
}

impl RefineObserver for ChannelObserver {
    fn round(&mut self, event: &RoundEvent) {
        let _ = self.events.send(TrainEvent::Round(event.clone()));
    }
}

impl DifixTrainObserver for ChannelObserver {
    fn step(&mut self, report: &DifixStepReport) -> bool {
        let _ = self.events.send(TrainEvent::DifixStep(report.clone()));
        self.apply_pending()
    }

    fn eval(&mut self, report: &DifixEvalReport) {
        let _ = self.events.send(TrainEvent::DifixEval(report.clone()));
    }

    fn saved(&mut self, path: &Path) {
        let _ = self.events.send(TrainEvent::Saved(path.to_path_buf()));
    }
}

enum Config {
    /// Renders on the GPU context.
    Train(TrainConfig, GpuContext),
    Refine(RefineConfig, GpuContext),
    /// On the devices `--devices` would name (none: the backend's default device).
    Difix(DifixTrainConfig, BackendKind, Vec<usize>),
}

struct Job {
    config: Config,
    observer: ChannelObserver,
}

impl WithBackend for Job {
    type Output = Result<Finished, String>;

    fn run<B: Backend>(mut self, device: B::Device) -> Self::Output {
        let stop = self.observer.stop.clone();
        let observer = &mut self.observer;
        match self.config {
            Config::Train(c, gpu) => trainer::train::<B>(&c, gpu, &device, observer, &stop)
                .map(Finished::Train)
                .map_err(|e| e.to_string()),
            Config::Refine(c, gpu) => refiner::refine::<B>(&c, gpu, &device, observer, &stop)
                .map(Finished::Refine)
                .map_err(|e| e.to_string()),
            Config::Difix(c, kind, indices) => {
                let devices = devices::<B>(kind, &device, &indices).map_err(|e| e.to_string())?;
                difix_trainer::train_difix::<Autodiff<B>>(&c, &devices, observer, &stop)
                    .map(Finished::Difix)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// A nerfacto run: training or Difix3D's nerfstudio variant.
enum NerfactoRun {
    Train(NerfactoRunConfig),
    Refine(NerfactoRefineConfig),
}

/// Starts training nerfacto per `config`, wholly on `backend` (fp32).
pub fn spawn_nerfacto(config: NerfactoRunConfig, backend: BackendKind) -> TrainHandle {
    spawn_nerfacto_job("train-nerfacto", NerfactoRun::Train(config), backend)
}

/// Starts Difix3D's nerfstudio variant per `config`: nerfacto and Difix wholly on `backend` (fp32).
pub fn spawn_nerfacto_refine(config: NerfactoRefineConfig, backend: BackendKind) -> TrainHandle {
    spawn_nerfacto_job("refine-nerfacto", NerfactoRun::Refine(config), backend)
}

fn spawn_nerfacto_job(name: &str, config: NerfactoRun, backend: BackendKind) -> TrainHandle {
    spawn_thread(name, false, move |mut observer| {
        let stop = observer.stop.clone();
        let result = match &config {
            NerfactoRun::Train(c) => nerfacto_trainer::train_on(backend, c, &mut |r| observer.nerfacto_step(r), &stop)
                .map(|r| r.map(Finished::Nerfacto).map_err(|e| e.to_string())),
            NerfactoRun::Refine(c) => nerfacto_refine::refine_nerfacto_on(backend, c, &mut observer, &stop).map(|r| {
                r.map(|s| Finished::NerfactoRefine(Box::new(s)))
                    .map_err(|e| e.to_string())
            }),
        };
        result.map_err(|e| e.to_string()).and_then(|r| r)
    })
}

/// Starts training `config` with the loss on `backend`, rendering on `gpu`.
pub fn spawn(config: TrainConfig, gpu: GpuContext, backend: BackendKind) -> TrainHandle {
    spawn_job(Config::Train(config, gpu), backend)
}

/// Starts refining per `config` with Difix and the loss on `backend`, rendering on `gpu`.
pub fn spawn_refine(config: RefineConfig, gpu: GpuContext, backend: BackendKind) -> TrainHandle {
    spawn_job(Config::Refine(config, gpu), backend)
}

/// Starts fine-tuning Difix per `config` on `backend`, data-parallel over `devices` (as
/// `difix3d train-difix --devices`; empty: the backend's default device).
pub fn spawn_difix(config: DifixTrainConfig, backend: BackendKind, devices: Vec<usize>) -> TrainHandle {
    spawn_job(Config::Difix(config, backend, devices), backend)
}

fn spawn_job(config: Config, backend: BackendKind) -> TrainHandle {
    let name = match config {
        Config::Train(..) => "train",
        Config::Refine(..) => "refine",
        Config::Difix(..) => "train-difix",
    };
    spawn_thread(name, true, move |observer| {
        // Training and refinement render on `gpu`: burn joins that device when it is wgpu.
        let renderer = match &config {
            Config::Train(_, gpu) | Config::Refine(_, gpu) => Some(gpu.clone()),
            Config::Difix(..) => None,
        };
        let job = Job { config, observer };
        match renderer {
            Some(gpu) => run_on_renderer_device(backend, Precision::Fp32, &gpu, job),
            None => run_on(backend, Precision::Fp32, job),
        }
        .map_err(|e| e.to_string())
        .and_then(|r| r)
    })
}

/// Runs `run` on a thread named `name` with an observer wired to the returned handle, and sends
/// its result as the last event.
fn spawn_thread(
    name: &str,
    saves: bool,
    run: impl FnOnce(ChannelObserver) -> Result<Finished, String> + Send + 'static,
) -> TrainHandle {
    let (event_tx, events) = crossbeam_channel::unbounded();
    let (commands, command_rx) = crossbeam_channel::unbounded();
    let done_tx = event_tx.clone();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let observer = ChannelObserver {
            events: event_tx,
            commands: command_rx,
            stop: Arc::new(AtomicBool::new(false)),
            last_snapshot: Instant::now(),
        };
        let _ = done_tx.send(TrainEvent::Done(run(observer)));
    });
    if let Err(e) = spawned {
        log::error!("cannot start the {name} thread: {e}");
    }
    TrainHandle {
        events,
        commands,
        saves,
    }
}
