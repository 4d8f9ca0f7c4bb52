//! Data-parallel fine-tuning over several devices, as PyTorch's DDP does it: every device holds a
//! copy of the networks and of the optimiser state; each step every copy backpropagates its own
//! share of the micro-batches, burn-collective averages the gradients across the copies
//! (all-reduce, mean), and each copy clips and applies the same AdamW update, so the copies stay
//! identical without ever sending weights.
//!
//! The calling thread is peer 0 (it keeps doing the checkpoints and evaluations); the other devices
//! each get a worker thread. Their gradients meet in burn-collective's in-process server, so all
//! peers live in one process. (burn-collective 0.21's multi-machine mode was tried with two processes
//! on one machine and failed: the global ring all-reduce rejects unevenly split tensors, the tree and
//! centralized strategies stall; see the README.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

use burn::collective::{self, CollectiveConfig, PeerId};
use burn::module::Module;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use crossbeam_channel::{Receiver, Sender};

use super::step::{self, DifixOptimizer, LossWeights, Losses, Nets, StepSettings};
use super::trainer::{DifixTrainError, Draw};
use crate::difix::scheduler::OneStep;
use crate::perceptual::gram::GramLoss;
use crate::perceptual::lpips::{Lpips, LpipsFiles};

/// What every peer needs to compute the loss and take a step, besides the networks.
#[derive(Clone)]
pub struct PeerSetup {
    pub lpips: LpipsFiles,
    /// VGG16 for the Gram loss; `None` when the Gram loss is off.
    pub gram_vgg16: Option<std::path::PathBuf>,
    pub one_step: OneStep,
    pub weights: LossWeights,
    pub weight_decay: f32,
    pub max_grad_norm: f32,
}

/// One step's share of a worker.
struct Work<B: AutodiffBackend> {
    draws: Vec<Draw<B>>,
    lr: f64,
}

enum Report {
    Ready(Result<(), String>),
    Stepped(Result<Losses, String>),
}

/// The workers of peers 1.. (peer 0 is the caller). Dropping it ends them.
pub struct Peers<B: AutodiffBackend> {
    senders: Vec<Sender<Work<B>>>,
    reports: Receiver<(usize, Report)>,
    handles: Vec<JoinHandle<()>>,
    count: usize,
    registered: bool,
}

impl<B: AutodiffBackend> Peers<B> {
    /// Starts a worker for each of `devices[1..]` with a copy of `nets` and of `optimizer`'s state,
    /// and waits until each has loaded its loss networks.
    pub fn start(
        devices: &[B::Device],
        nets: &Nets<B>,
        optimizer: &DifixOptimizer<B>,
        setup: &PeerSetup,
    ) -> Result<Self, DifixTrainError> {
        let count = devices.len();
        let (report_tx, reports) = crossbeam_channel::unbounded();
        let mut peers = Peers {
            senders: Vec::new(),
            reports,
            handles: Vec::new(),
            count,
            registered: false,
        };
        // A previous run that failed part-way may have left peers registered.
        collective::reset_collective::<B::InnerBackend>();
        for (index, device) in devices.iter().enumerate().skip(1) {
            let (tx, rx) = crossbeam_channel::bounded::<Work<B>>(1);
            let worker = Worker {
                index,
                count,
                device: device.clone(),
                nets: nets.clone().fork(device),
                optimizer: optimizer.to_record(),
                setup: setup.clone(),
            };
            let reports = report_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("difix-peer-{index}"))
                .spawn(move || worker.run(rx, reports))
                .map_err(|e| DifixTrainError::Parallel(format!("cannot start a worker thread: {e}")))?;
            peers.senders.push(tx);
            peers.handles.push(handle);
        }
        for _ in 1..count {
            if let Report::Ready(Err(e)) = peers.next_report()?.1 {
                return Err(DifixTrainError::Parallel(e));
            }
        }
        Ok(peers)
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Hands each worker its draws (`shares[i]` to peer `i + 1`). The first time, registers every
    /// peer with burn-collective: the workers on reading their first work, peer 0 here (each
    /// registration returns once all peers have registered).
    pub fn dispatch(&mut self, device: &B::Device, shares: Vec<Vec<Draw<B>>>, lr: f64) -> Result<(), DifixTrainError> {
        for (sender, draws) in self.senders.iter().zip(shares) {
            sender
                .send(Work { draws, lr })
                .map_err(|_| DifixTrainError::Parallel("a worker stopped unexpectedly".into()))?;
        }
        if !self.registered {
            self.registered = true;
            collective::register::<B::InnerBackend>(PeerId(0), device.clone(), config(self.count))
                .map_err(|e| DifixTrainError::Parallel(format!("registering peer 0: {e:?}")))?;
        }
        Ok(())
    }

    /// The workers' loss terms of the step just dispatched.
    pub fn collect(&self) -> Result<Vec<Losses>, DifixTrainError> {
        let mut losses = Vec::with_capacity(self.count - 1);
        for _ in 1..self.count {
            match self.next_report()? {
                (_, Report::Stepped(Ok(l))) => losses.push(l),
                (index, Report::Stepped(Err(e))) | (index, Report::Ready(Err(e))) => {
                    return Err(DifixTrainError::Parallel(format!("peer {index}: {e}")))
                }
                (_, Report::Ready(Ok(()))) => {}
            }
        }
        Ok(losses)
    }

    /// Turns peer 0's failed all-reduce into the workers' own error when one of them failed first.
    pub fn explain(&self, error: collective::CollectiveError) -> DifixTrainError {
        match self.reports.try_recv() {
            Ok((index, Report::Stepped(Err(e)))) => DifixTrainError::Parallel(format!("peer {index}: {e}")),
            _ => DifixTrainError::Parallel(format!("averaging gradients: {error:?}")),
        }
    }

    fn next_report(&self) -> Result<(usize, Report), DifixTrainError> {
        self.reports
            .recv()
            .map_err(|_| DifixTrainError::Parallel("every worker stopped unexpectedly".into()))
    }
}

impl<B: AutodiffBackend> Drop for Peers<B> {
    fn drop(&mut self) {
        self.senders.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
        if self.registered {
            let _ = collective::finish_collective::<B::InnerBackend>(PeerId(0));
        }
    }
}

fn config(count: usize) -> CollectiveConfig {
    CollectiveConfig::default().with_num_devices(count)
}

struct Worker<B: AutodiffBackend> {
    index: usize,
    count: usize,
    device: B::Device,
    nets: Nets<B>,
    optimizer: <DifixOptimizer<B> as Optimizer<Nets<B>, B>>::Record,
    setup: PeerSetup,
}

impl<B: AutodiffBackend> Worker<B> {
    fn run(self, work: Receiver<Work<B>>, reports: Sender<(usize, Report)>) {
        let index = self.index;
        let peer = PeerId(index as u32);
        let loaded = (|| {
            let lpips = Lpips::<B>::load(&self.setup.lpips, &self.device)?;
            let gram = match &self.setup.gram_vgg16 {
                Some(path) => Some(GramLoss::<B>::load(path, &self.device)?),
                None => None,
            };
            Ok::<_, crate::nn::weights::WeightsError>((lpips, gram))
        })();
        let (lpips, gram) = match loaded {
            Ok(l) => {
                let _ = reports.send((index, Report::Ready(Ok(()))));
                l
            }
            Err(e) => {
                let _ = reports.send((index, Report::Ready(Err(e.to_string()))));
                return;
            }
        };
        let mut optimizer = step::optimizer::<B>(self.setup.weight_decay).load_record(self.optimizer);
        let mut nets = Some(self.nets);
        let mut registered = false;
        while let Ok(Work { draws, lr }) = work.recv() {
            if !registered {
                if let Err(e) = collective::register::<B::InnerBackend>(peer, self.device.clone(), config(self.count)) {
                    let _ = reports.send((index, Report::Stepped(Err(format!("registering: {e:?}")))));
                    return;
                }
                registered = true;
            }
            let settings = StepSettings {
                step: &self.setup.one_step,
                lpips: &lpips,
                gram: gram.as_ref(),
                weights: self.setup.weights,
                lr,
                max_grad_norm: self.setup.max_grad_norm,
                sync_phases: false,
            };
            let current = nets.take().expect("the networks are put back after every step");
            let stepped = catch_unwind(AssertUnwindSafe(|| {
                let batches = draws.iter().map(|d| d.batch(&self.device)).collect();
                step::train_step(current, &mut optimizer, batches, &settings, Some(peer))
            }));
            let report = match stepped {
                Ok(Ok(stepped)) => {
                    nets = Some(stepped.nets);
                    Ok(stepped.losses)
                }
                Ok(Err(e)) => Err(format!("averaging gradients: {e:?}")),
                Err(panic) => {
                    // Peer 0 waits in the all-reduce for this peer: forgetting the pending
                    // operation lets it fail instead of waiting forever.
                    collective::reset_collective::<B::InnerBackend>();
                    Err(format!("the step panicked: {}", panic_message(&panic)))
                }
            };
            let failed = report.is_err();
            let _ = reports.send((index, Report::Stepped(report)));
            if failed {
                return;
            }
        }
        if registered {
            let _ = collective::finish_collective::<B::InnerBackend>(peer);
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
