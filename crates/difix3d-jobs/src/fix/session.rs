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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crossbeam_channel::RecvTimeoutError;

    use super::*;

    /// Generous: the tiny model loads and fixes a small frame in well under a second on the CPU.
    const WAIT: Duration = Duration::from_secs(120);

    fn tiny_model() -> PathBuf {
        crate::repo_root().join("tests/fixtures/difix/tiny")
    }

    fn cpu_key(model: PathBuf) -> WorkerKey {
        WorkerKey {
            model,
            backend: BackendKind::Cpu,
            precision: Precision::Fp32,
        }
    }

    /// Waits for the worker's next event of the kind `wanted` picks, taking the others on the way.
    fn wait_for(session: &mut LiveFixSession, wanted: impl Fn(&FixEvent) -> bool) -> FixEvent {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match session.next_event(Duration::from_millis(200)) {
                Some(FixEvent::Error(e)) => panic!("the worker failed: {e}"),
                Some(event) if wanted(&event) => return event,
                _ => {}
            }
        }
        panic!("no event from the worker in {WAIT:?} (state {:?})", session.state());
    }

    /// The worker's event channel, to see it end: it disconnects once the worker thread returns.
    fn worker_events(session: &LiveFixSession) -> crossbeam_channel::Receiver<FixEvent> {
        let (_, fixer) = session.worker.as_ref().expect("a worker runs");
        fixer.events().clone()
    }

    /// Whether the worker behind `events` ends (within [`WAIT`]), taking what it still sends.
    fn ends(events: &crossbeam_channel::Receiver<FixEvent>) -> bool {
        loop {
            match events.recv_timeout(WAIT) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// A frame goes in on the CPU backend (the tiny random-weight model the GUI tests use) and comes
    /// back fixed at its own size, with the latency and fps updated; changing the model settings
    /// replaces the worker, and dropping the session ends it, without waiting on either.
    #[test]
    fn a_frame_comes_back_fixed_and_the_worker_ends_with_the_session() {
        let mut session = LiveFixSession::new(crate::difix::pipeline::DEFAULT_PROMPT.into(), None);
        assert_eq!(*session.state(), WorkerState::Off);
        assert!(!session.wants(1), "no worker, nothing to send");
        assert!(session.ensure_worker(cpu_key(tiny_model())));
        assert!(
            !session.ensure_worker(cpu_key(tiny_model())),
            "the same settings keep the worker"
        );
        assert_eq!(*session.state(), WorkerState::Loading);
        assert!(!session.takes_gpu_frames(), "a CPU worker takes frames read back");
        wait_for(&mut session, |e| matches!(e, FixEvent::Ready));
        assert_eq!(*session.state(), WorkerState::Ready);

        let frame = RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]));
        assert!(session.wants(7));
        session.submit(7, FrameImage::Cpu(frame.clone()), None, SizePolicy::Native);
        assert!(!session.wants(7), "a frame is sent once");
        let FixEvent::Fixed { id, image, millis } = wait_for(&mut session, |e| matches!(e, FixEvent::Fixed { .. }))
        else {
            unreachable!()
        };
        assert_eq!(id, 7);
        assert_eq!(image.dimensions(), frame.dimensions(), "fixed at the frame's own size");
        assert_ne!(image, frame, "Difix changed the frame");
        assert!(millis > 0.0);
        assert_eq!(session.latency_ms(), millis);
        assert!(session.fixed_fps() > 0.0);
        assert!(session.last_error().is_none());
        session.invalidate();
        assert!(
            session.wants(7),
            "after a settings change the frame on screen is sent again"
        );

        // New settings replace the worker; the old one ends.
        let old = worker_events(&session);
        let same_model_elsewhere = std::fs::canonicalize(tiny_model()).unwrap();
        assert!(session.ensure_worker(cpu_key(same_model_elsewhere)));
        assert_eq!(*session.state(), WorkerState::Loading);
        assert!(ends(&old), "the replaced worker did not end");

        // Dropping the session ends its worker (loading or not).
        let events = worker_events(&session);
        drop(session);
        assert!(ends(&events), "the worker did not end with its session");
    }

    /// A model that cannot load fails the session once; it waits for a retry instead of reloading
    /// every frame.
    #[test]
    fn a_model_that_does_not_load_waits_for_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = LiveFixSession::new(crate::difix::pipeline::DEFAULT_PROMPT.into(), None);
        assert!(session.ensure_worker(cpu_key(dir.path().join("missing"))));
        let deadline = Instant::now() + WAIT;
        while session.failure().is_none() && Instant::now() < deadline {
            session.next_event(Duration::from_millis(200));
        }
        let message = session.failure().expect("the load failed").to_string();
        assert!(message.contains("missing"), "the error names the model: {message}");
        assert!(!session.wants(1));
        assert!(
            !session.ensure_worker(cpu_key(dir.path().join("missing"))),
            "no reload before a retry"
        );
        session.retry();
        assert_eq!(*session.state(), WorkerState::Off);
        assert!(session.ensure_worker(cpu_key(dir.path().join("missing"))));
    }
}
