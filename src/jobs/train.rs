//! A training or refinement run on its own thread: progress events out, commands (pause, resume,
//! save, stop) in. The viewer's Training and Refinement panels drive it; the CLI calls the trainer
//! and the refiner directly with the same observer interface.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use crossbeam_channel::{Receiver, Sender};

use crate::difix::backend::{run_on, BackendKind, Precision, WithBackend};
use crate::refine::refiner::{self, RefineConfig, RefineSummary};
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
    Done(Result<Finished, String>),
}

/// What a run that ended well produced.
#[derive(Clone, Debug)]
pub enum Finished {
    Train(TrainSummary),
    Refine(RefineSummary),
}

pub struct TrainHandle {
    pub events: Receiver<TrainEvent>,
    pub commands: Sender<TrainCommand>,
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
}

impl TrainObserver for ChannelObserver {
    fn step(&mut self, report: &StepReport) -> StepRequest {
        let _ = self.events.send(TrainEvent::Step(report.clone()));
        let mut save = false;
        while let Ok(command) = self.commands.try_recv() {
            save |= self.apply(command);
        }
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

    fn round(&mut self, event: &RoundEvent) {
        let _ = self.events.send(TrainEvent::Round(event.clone()));
    }
}

enum Config {
    Train(TrainConfig),
    Refine(RefineConfig),
}

struct Job {
    config: Config,
    gpu: GpuContext,
    observer: ChannelObserver,
}

impl WithBackend for Job {
    type Output = Result<Finished, String>;

    fn run<B: Backend>(mut self, device: B::Device) -> Self::Output {
        let stop = self.observer.stop.clone();
        let observer = &mut self.observer;
        match &self.config {
            Config::Train(c) => trainer::train::<B>(c, self.gpu, &device, observer, &stop)
                .map(Finished::Train)
                .map_err(|e| e.to_string()),
            Config::Refine(c) => refiner::refine::<B>(c, self.gpu, &device, observer, &stop)
                .map(Finished::Refine)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Starts training `config` with the loss on `backend`, rendering on `gpu`.
pub fn spawn(config: TrainConfig, gpu: GpuContext, backend: BackendKind) -> TrainHandle {
    spawn_job(Config::Train(config), gpu, backend)
}

/// Starts refining per `config` with Difix and the loss on `backend`, rendering on `gpu`.
pub fn spawn_refine(config: RefineConfig, gpu: GpuContext, backend: BackendKind) -> TrainHandle {
    spawn_job(Config::Refine(config), gpu, backend)
}

fn spawn_job(config: Config, gpu: GpuContext, backend: BackendKind) -> TrainHandle {
    let (event_tx, events) = crossbeam_channel::unbounded();
    let (commands, command_rx) = crossbeam_channel::unbounded();
    let done_tx = event_tx.clone();
    let name = match config {
        Config::Train(_) => "train",
        Config::Refine(_) => "refine",
    };
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let observer = ChannelObserver {
            events: event_tx,
            commands: command_rx,
            stop: Arc::new(AtomicBool::new(false)),
            last_snapshot: Instant::now(),
        };
        let result = run_on(backend, Precision::Fp32, Job { config, gpu, observer })
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let _ = done_tx.send(TrainEvent::Done(result));
    });
    if let Err(e) = spawned {
        log::error!("cannot start the {name} thread: {e}");
    }
    TrainHandle { events, commands }
}
