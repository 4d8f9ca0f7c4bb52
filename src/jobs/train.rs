//! A training run on its own thread: progress events out, commands (pause, resume, save, stop) in.
//! The viewer's Training panel drives it; the CLI calls the trainer directly with the same observer
//! interface.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use crossbeam_channel::{Receiver, Sender};

use crate::difix::backend::{run_on, BackendKind, Precision, WithBackend};
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
    Done(Result<TrainSummary, String>),
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
}

struct Job {
    config: TrainConfig,
    gpu: GpuContext,
    observer: ChannelObserver,
}

impl WithBackend for Job {
    type Output = Result<TrainSummary, trainer::TrainError>;

    fn run<B: Backend>(mut self, device: B::Device) -> Self::Output {
        let stop = self.observer.stop.clone();
        trainer::train::<B>(&self.config, self.gpu, &device, &mut self.observer, &stop)
    }
}

/// Starts training `config` with the loss on `backend`, rendering on `gpu`.
pub fn spawn(config: TrainConfig, gpu: GpuContext, backend: BackendKind) -> TrainHandle {
    let (event_tx, events) = crossbeam_channel::unbounded();
    let (commands, command_rx) = crossbeam_channel::unbounded();
    let done_tx = event_tx.clone();
    let spawned = std::thread::Builder::new().name("train".into()).spawn(move || {
        let observer = ChannelObserver {
            events: event_tx,
            commands: command_rx,
            stop: Arc::new(AtomicBool::new(false)),
            last_snapshot: Instant::now(),
        };
        let result = run_on(backend, Precision::Fp32, Job { config, gpu, observer })
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let _ = done_tx.send(TrainEvent::Done(result));
    });
    if let Err(e) = spawned {
        log::error!("cannot start the training thread: {e}");
    }
    TrainHandle { events, commands }
}
