//! The live post-render pass in the viewer: the Post-render fix panel, the Difix worker it drives, and
//! how raw and fixed frames are shown (fixed only, side by side, or a split slider).
//!
//! Each rendered frame gets an id. A fixed frame is shown only while its id is the frame on screen, so
//! while the camera moves faster than the model the raw render shows, and a fixed frame never appears
//! over a different pose than the one it was made from.
//!
//! The worker, what it was sent and what came back live in the engine's
//! [`LiveFixSession`](difix3d::fix::session::LiveFixSession) (which also looks up and decodes the
//! reference photos on the worker thread); this module keeps the panel's settings and the fixed
//! frame's texture. The panel is drawn by `panel`, the frames over the viewport by `overlay`.

mod overlay;
mod panel;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use difix3d::data::{Camera, Dataset};
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::fix::session::{LiveFixSession, WorkerKey, WorkerState};
use difix3d::fix::{FrameImage, FrameReference};
use difix3d::nn::backend::{BackendKind, Precision};
use difix3d::reference_photo::Reference;
use difix3d::render::GpuContext;

/// Where the reference photo for each frame comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceMode {
    None,
    /// The training photo nearest to the current view (needs a dataset).
    Nearest,
    Image(PathBuf),
}

/// The resolution Difix works at, relative to the render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processing {
    /// The render's own size (floored to multiples of 8).
    Render,
    Half,
    /// 576x1024, the size the published models were trained at.
    Trained,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewMode {
    Fixed,
    SideBySide,
    Split,
}

/// Options of `difix3d view` for the fix.
#[derive(Clone, Debug)]
pub struct FixStart {
    pub model: PathBuf,
    pub backend: BackendKind,
    pub enabled: bool,
    pub view_mode: ViewMode,
}

pub struct FixedFrame {
    pub id: u64,
    pub texture: egui::TextureHandle,
}

pub struct LiveFixPanel {
    pub enabled: bool,
    pub model: String,
    pub backend: BackendKind,
    pub precision: Precision,
    pub reference: ReferenceMode,
    pub processing: Processing,
    pub view_mode: ViewMode,
    /// Position of the split line, as a fraction of the view's width.
    pub split: f32,
    session: LiveFixSession,
    pub shown: Option<FixedFrame>,
    reference_pick: Option<Receiver<Option<PathBuf>>>,
    model_pick: Option<Receiver<Option<PathBuf>>>,
}

impl LiveFixPanel {
    pub fn new(start: FixStart, gpu: GpuContext) -> Self {
        Self {
            enabled: start.enabled,
            model: start.model.display().to_string(),
            backend: start.backend,
            precision: Precision::Fp32,
            reference: ReferenceMode::None,
            processing: Processing::Render,
            view_mode: start.view_mode,
            split: 0.5,
            session: LiveFixSession::new(DEFAULT_PROMPT.into(), Some(gpu)),
            shown: None,
            reference_pick: None,
            model_pick: None,
        }
    }

    fn key(&self) -> WorkerKey {
        WorkerKey {
            model: PathBuf::from(self.model.trim()),
            backend: self.backend,
            precision: self.precision,
        }
    }

    /// Starts (or restarts, after a model/backend change) the worker while the fix is on. Turning the
    /// fix off keeps the loaded model, so turning it back on is instant.
    fn ensure_worker(&mut self) {
        if self.enabled && self.session.ensure_worker(self.key()) {
            self.shown = None;
        }
    }

    /// A settings change that makes earlier fixed frames wrong.
    fn invalidate(&mut self) {
        self.session.invalidate();
        self.shown = None;
    }

    /// Takes the worker's events (and the file dialogs' answers).
    pub fn poll(&mut self, ctx: &egui::Context) {
        self.poll_pickers();
        self.ensure_worker();
        if let Some(fixed) = self.session.poll() {
            let size = [fixed.image.width() as usize, fixed.image.height() as usize];
            let color = egui::ColorImage::from_rgb(size, fixed.image.as_raw());
            let texture = match self.shown.take() {
                Some(mut shown) => {
                    shown.texture.set(color, egui::TextureOptions::LINEAR);
                    shown.texture
                }
                None => ctx.load_texture("fixed frame", color, egui::TextureOptions::LINEAR),
            };
            self.shown = Some(FixedFrame { id: fixed.id, texture });
        }
        if self.enabled && matches!(self.session.state(), WorkerState::Loading | WorkerState::Ready) {
            // Keep polling while results may arrive.
            ctx.request_repaint_after(Duration::from_millis(30));
        }
    }

    /// Whether frame `id` should be sent to the worker now.
    pub fn wants(&self, id: u64) -> bool {
        self.enabled && self.session.wants(id)
    }

    /// Whether frames go to the worker on the GPU (it shares the renderer's device).
    pub fn takes_gpu_frames(&self) -> bool {
        self.session.takes_gpu_frames()
    }

    /// Sends frame `id` (rendered from `camera`) to the worker, with the reference the settings pick
    /// (which the worker looks up and decodes).
    pub fn submit(&mut self, id: u64, image: FrameImage, camera: &Camera, dataset: Option<&Arc<Dataset>>) {
        let reference = match self.reference_choice(dataset) {
            Reference::None => None,
            choice => Some(FrameReference::Pick {
                choice,
                camera: camera.clone(),
            }),
        };
        let (width, height) = image.size();
        let policy = self.policy(width, height);
        self.session.submit(id, image, reference, policy);
    }

    fn policy(&self, width: u32, height: u32) -> SizePolicy {
        match self.processing {
            Processing::Render => SizePolicy::Native,
            Processing::Half => SizePolicy::Fixed {
                height: (height / 2 / 8 * 8).max(8),
                width: (width / 2 / 8 * 8).max(8),
            },
            Processing::Trained => SizePolicy::Fixed {
                height: 576,
                width: 1024,
            },
        }
    }

    /// The fixed frame for frame `id`, if it has arrived.
    pub fn fixed_for(&self, id: u64) -> Option<&egui::TextureHandle> {
        if !self.enabled {
            return None;
        }
        self.shown.as_ref().filter(|s| s.id == id).map(|s| &s.texture)
    }

    /// These settings for an offline recording of `width`x`height` frames (it loads its own model).
    pub fn record_settings(
        &self,
        dataset: Option<Arc<Dataset>>,
        width: u32,
        height: u32,
    ) -> difix3d::record::FixSettings {
        difix3d::record::FixSettings {
            model: self.key().model,
            checkpoint: None,
            backend: self.backend,
            precision: self.precision,
            prompt: DEFAULT_PROMPT.into(),
            policy: self.policy(width, height),
            reference: self.reference_choice(dataset.as_ref()),
        }
    }

    fn reference_choice(&self, dataset: Option<&Arc<Dataset>>) -> Reference {
        match (&self.reference, dataset) {
            (ReferenceMode::None, _) | (ReferenceMode::Nearest, None) => Reference::None,
            (ReferenceMode::Nearest, Some(d)) => Reference::NearestTrain(d.clone()),
            (ReferenceMode::Image(p), _) => Reference::Image(p.clone()),
        }
    }

    /// Why the model could not be loaded, if it could not.
    pub fn failure(&self) -> Option<&str> {
        self.session.failure()
    }

    /// One line for the viewport overlay.
    pub fn status_line(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        Some(match self.session.state() {
            WorkerState::Off => "fix: starting".into(),
            WorkerState::Loading => "fix: loading Difix…".into(),
            WorkerState::Ready => format!(
                "fix {:.0} ms · {:.1} fixed fps",
                self.session.latency_ms(),
                self.session.fixed_fps()
            ),
            WorkerState::Failed(_) => "fix: failed (see panel)".into(),
        })
    }

    fn poll_pickers(&mut self) {
        if let Some(rx) = &self.reference_pick {
            if let Ok(choice) = rx.try_recv() {
                self.reference_pick = None;
                if let Some(path) = choice {
                    self.reference = ReferenceMode::Image(path);
                    self.invalidate();
                }
            }
        }
        if let Some(rx) = &self.model_pick {
            if let Ok(choice) = rx.try_recv() {
                self.model_pick = None;
                if let Some(path) = choice {
                    self.model = path.display().to_string();
                    self.retry();
                }
            }
        }
    }

    /// Forgets a failed load so the next poll tries again.
    fn retry(&mut self) {
        self.session.retry();
    }

    pub fn toggle(&mut self) {
        self.enabled = !self.enabled;
        self.retry();
    }

    pub fn cycle_view_mode(&mut self) {
        self.view_mode = match self.view_mode {
            ViewMode::Fixed => ViewMode::SideBySide,
            ViewMode::SideBySide => ViewMode::Split,
            ViewMode::Split => ViewMode::Fixed,
        };
    }
}
