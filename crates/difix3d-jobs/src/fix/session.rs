//! A live-fix session: the worker for the current model settings, which frame it was last sent, and
//! what came back (state, latency, fixed frames per second). Everything the viewer's fix panel needs
//! except the drawing, so `bench live` measures the same code the viewer runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::{FixEvent, Frame, FrameImage, FrameReference, LiveFixer, LiveFixerOptions};
use crate::difix::images::SizePolicy;
use crate::nn::backend::{BackendKind, Precision};
use crate::render::GpuContext;

/// Which model the worker holds: changing any of these reloads it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerKey {
    pub model: PathBuf,
    pub backend: BackendKind,
    pub precision: Precision,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WorkerState {
    Off,
    Loading,
    Ready,
    Failed(String),
}

/// A frame the worker fixed.
pub struct Fixed {
    pub id: u64,
    pub image: RgbImage,
}

/// The window over which [`LiveFixSession::fixed_fps`] counts fixed frames.
const FPS_WINDOW: Duration = Duration::from_secs(2);

pub struct LiveFixSession {
    worker: Option<(WorkerKey, LiveFixer)>,
    state: WorkerState,
    last_error: Option<String>,
    /// (frame id, settings generation) last sent to the worker.
    submitted: Option<(u64, u64)>,
    /// Bumped when a setting that changes the output (reference, resolution) changes.
    generation: u64,
    latency_ms: f64,
    fixed_times: Vec<Instant>,
    prompt: String,
    /// The renderer's device, which a wgpu worker shares so frames stay on the GPU.
    gpu: Option<GpuContext>,
}

impl LiveFixSession {
    /// A session without a worker yet. With `gpu`, a wgpu worker at fp32 runs burn on the renderer's
    /// own device and takes frames on the GPU ([`FrameImage::Gpu`]).
    pub fn new(prompt: String, gpu: Option<GpuContext>) -> Self {
        Self {
            worker: None,
            state: WorkerState::Off,
            last_error: None,
            submitted: None,
            generation: 0,
            latency_ms: 0.0,
            fixed_times: Vec::new(),
            prompt,
            gpu,
        }
    }

    /// Starts (or restarts, after a model/backend change) the worker for `key`; true when it started
    /// one. After a failed load it waits for [`retry`](Self::retry) instead.
    pub fn ensure_worker(&mut self, key: WorkerKey) -> bool {
        if self.worker.as_ref().is_some_and(|(k, _)| *k == key) {
            return false;
        }
        if matches!(self.state, WorkerState::Failed(_)) {
            // These settings failed; wait for the user to change something.
            return false;
        }
        let options = LiveFixerOptions {
            model: key.model.clone(),
            backend: key.backend,
            precision: key.precision,
            prompt: self.prompt.clone(),
            shared: self
                .gpu
                .as_ref()
                .filter(|_| key.backend == BackendKind::Wgpu)
                .map(GpuContext::burn_device),
        };
        let fixer = LiveFixer::spawn(options);
        self.worker = Some((key, fixer));
        self.state = WorkerState::Loading;
        self.submitted = None;
        true
    }

    /// Takes the worker's events without waiting; returns the newest fixed frame among them.
    pub fn poll(&mut self) -> Option<Fixed> {
        let events: Vec<FixEvent> = match &self.worker {
            Some((_, fixer)) => fixer.events().try_iter().collect(),
            None => Vec::new(),
        };
        let mut newest = None;
        for event in events {
            self.note(&event);
            if let FixEvent::Fixed { id, image, .. } = event {
                newest = Some(Fixed { id, image });
            }
        }
        self.forget_old_fixes();
        newest
    }

    /// Waits up to `timeout` for the worker's next event, takes it as [`poll`](Self::poll) does, and
    /// returns it; `None` when nothing came (or there is no worker).
    pub fn next_event(&mut self, timeout: Duration) -> Option<FixEvent> {
        let event = self.worker.as_ref()?.1.events().recv_timeout(timeout).ok()?;
        self.note(&event);
        self.forget_old_fixes();
        Some(event)
    }

    /// Updates the state for one event.
    fn note(&mut self, event: &FixEvent) {
        match event {
            FixEvent::Ready => self.state = WorkerState::Ready,
            FixEvent::Fixed { millis, .. } => {
                self.latency_ms = *millis;
                self.fixed_times.push(Instant::now());
            }
            FixEvent::Error(message) => {
                if self.state == WorkerState::Loading {
                    self.state = WorkerState::Failed(message.clone());
                    self.worker = None;
                } else {
                    self.last_error = Some(message.clone());
                }
            }
        }
    }

    fn forget_old_fixes(&mut self) {
        let now = Instant::now();
        self.fixed_times.retain(|t| now.duration_since(*t) < FPS_WINDOW);
    }

    /// Whether frame `id` still has to be sent to the worker (with the current settings).
    pub fn wants(&self, id: u64) -> bool {
        self.worker.is_some() && self.submitted != Some((id, self.generation))
    }

    /// Whether frames go to the worker on the GPU (it shares the renderer's device).
    pub fn takes_gpu_frames(&self) -> bool {
        self.worker.as_ref().is_some_and(|(_, fixer)| fixer.takes_gpu_frames())
    }

    /// Sends frame `id` to the worker (replacing one it has not started yet).
    pub fn submit(&mut self, id: u64, image: FrameImage, reference: Option<FrameReference>, policy: SizePolicy) {
        let Some((_, fixer)) = &self.worker else { return };
        fixer.submit(Frame {
            id,
            image,
            reference,
            policy,
        });
        self.submitted = Some((id, self.generation));
    }

    /// A settings change that makes earlier fixed frames wrong: the current frame is sent again.
    pub fn invalidate(&mut self) {
        self.generation += 1;
    }

    /// Forgets a failed load so the next [`ensure_worker`](Self::ensure_worker) tries again.
    pub fn retry(&mut self) {
        if matches!(self.state, WorkerState::Failed(_)) {
            self.state = WorkerState::Off;
            self.submitted = None;
        }
    }

    pub fn state(&self) -> &WorkerState {
        &self.state
    }

    /// Why the model could not be loaded, if it could not.
    pub fn failure(&self) -> Option<&str> {
        match &self.state {
            WorkerState::Failed(message) => Some(message),
            _ => None,
        }
    }

    /// The last error after the model loaded (a frame or its reference photo).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// How long the newest fixed frame took, in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        self.latency_ms
    }

    /// Fixed frames per second over the last two seconds.
    pub fn fixed_fps(&self) -> f64 {
        self.fixed_times.len() as f64 / FPS_WINDOW.as_secs_f64()
    }
}
