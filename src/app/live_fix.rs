//! The live post-render pass in the viewer: the Post-render fix panel, the Difix worker it drives, and
//! how raw and fixed frames are shown (fixed only, side by side, or a split slider).
//!
//! Each rendered frame gets an id. A fixed frame is shown only while its id is the frame on screen, so
//! while the camera moves faster than the model the raw render shows, and a fixed frame never appears
//! over a different pose than the one it was made from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use difix3d::data::{Camera, Dataset};
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::fix::{FixEvent, Frame, FrameImage, LiveFixer, LiveFixerOptions};
use difix3d::nn::backend::{BackendKind, Precision};
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

/// Which model the worker holds: changing any of these reloads it.
#[derive(Clone, Debug, PartialEq)]
struct WorkerKey {
    model: PathBuf,
    backend: BackendKind,
    precision: Precision,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WorkerState {
    Off,
    Loading,
    Ready,
    Failed(String),
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

pub struct LiveFix {
    pub enabled: bool,
    pub model: String,
    pub backend: BackendKind,
    pub precision: Precision,
    pub reference: ReferenceMode,
    pub processing: Processing,
    pub view_mode: ViewMode,
    /// Position of the split line, as a fraction of the view's width.
    pub split: f32,
    pub state: WorkerState,
    pub last_error: Option<String>,
    worker: Option<(WorkerKey, LiveFixer)>,
    /// (frame id, settings generation) last sent to the worker.
    submitted: Option<(u64, u64)>,
    /// Bumped when a setting that changes the output (reference, resolution) changes.
    generation: u64,
    pub shown: Option<FixedFrame>,
    pub latency_ms: f64,
    fixed_times: Vec<Instant>,
    references: difix3d::reference_photo::ReferenceCache,
    reference_pick: Option<Receiver<Option<PathBuf>>>,
    model_pick: Option<Receiver<Option<PathBuf>>>,
    /// The renderer's device, which a wgpu worker shares so frames stay on the GPU.
    gpu: GpuContext,
}

impl LiveFix {
    pub fn new(start: FixStart, gpu: GpuContext) -> Self {
        Self {
            gpu,
            enabled: start.enabled,
            model: start.model.display().to_string(),
            backend: start.backend,
            precision: Precision::Fp32,
            reference: ReferenceMode::None,
            processing: Processing::Render,
            view_mode: start.view_mode,
            split: 0.5,
            state: WorkerState::Off,
            last_error: None,
            worker: None,
            submitted: None,
            generation: 0,
            shown: None,
            latency_ms: 0.0,
            fixed_times: Vec::new(),
            references: Default::default(),
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
        if !self.enabled {
            return;
        }
        let key = self.key();
        if self.worker.as_ref().is_some_and(|(k, _)| *k == key) {
            return;
        }
        if matches!(self.state, WorkerState::Failed(_)) {
            // These settings failed; wait for the user to change something (see `retry`).
            return;
        }
        let options = LiveFixerOptions {
            model: key.model.clone(),
            backend: key.backend,
            precision: key.precision,
            prompt: DEFAULT_PROMPT.into(),
            shared: (key.backend == BackendKind::Wgpu).then(|| self.gpu.burn_device()),
        };
        let fixer = LiveFixer::spawn(options);
        self.worker = Some((key, fixer));
        self.state = WorkerState::Loading;
        self.submitted = None;
        self.shown = None;
    }

    /// A settings change that makes earlier fixed frames wrong.
    fn invalidate(&mut self) {
        self.generation += 1;
        self.shown = None;
    }

    /// Takes the worker's events (and the file dialogs' answers).
    pub fn poll(&mut self, ctx: &egui::Context) {
        self.poll_pickers();
        self.ensure_worker();
        let Some((_, fixer)) = &self.worker else { return };
        let mut failed = None;
        while let Ok(event) = fixer.events().try_recv() {
            match event {
                FixEvent::Ready => self.state = WorkerState::Ready,
                FixEvent::Fixed { id, image, millis } => {
                    let size = [image.width() as usize, image.height() as usize];
                    let color = egui::ColorImage::from_rgb(size, image.as_raw());
                    let texture = match self.shown.take() {
                        Some(mut shown) => {
                            shown.texture.set(color, egui::TextureOptions::LINEAR);
                            shown.texture
                        }
                        None => ctx.load_texture("fixed frame", color, egui::TextureOptions::LINEAR),
                    };
                    self.shown = Some(FixedFrame { id, texture });
                    self.latency_ms = millis;
                    self.fixed_times.push(Instant::now());
                }
                FixEvent::Error(message) => {
                    if self.state == WorkerState::Loading {
                        failed = Some(message);
                    } else {
                        self.last_error = Some(message);
                    }
                }
            }
        }
        if let Some(message) = failed {
            self.state = WorkerState::Failed(message);
            self.worker = None;
        }
        let now = Instant::now();
        self.fixed_times
            .retain(|t| now.duration_since(*t) < Duration::from_secs(2));
        if self.enabled && matches!(self.state, WorkerState::Loading | WorkerState::Ready) {
            // Keep polling while results may arrive.
            ctx.request_repaint_after(Duration::from_millis(30));
        }
    }

    /// Fixed frames per second over the last two seconds.
    pub fn fixed_fps(&self) -> f64 {
        self.fixed_times.len() as f64 / 2.0
    }

    /// Whether frame `id` should be sent to the worker now.
    pub fn wants(&self, id: u64) -> bool {
        self.enabled && self.worker.is_some() && self.submitted != Some((id, self.generation))
    }

    /// Whether frames go to the worker on the GPU (it shares the renderer's device).
    pub fn takes_gpu_frames(&self) -> bool {
        self.worker.as_ref().is_some_and(|(_, fixer)| fixer.takes_gpu_frames())
    }

    /// Sends frame `id` (rendered from `camera`) to the worker, with the reference the settings pick.
    pub fn submit(&mut self, id: u64, image: FrameImage, camera: &Camera, dataset: Option<&Arc<Dataset>>) {
        let Some((_, fixer)) = &self.worker else { return };
        let choice = self.reference_choice(dataset);
        let reference = match self.references.for_camera(&choice, camera) {
            Ok(r) => r.map(|r| Arc::new(r.clone())),
            Err(e) => {
                self.last_error = Some(e.to_string());
                None
            }
        };
        let (width, height) = image.size();
        let policy = self.policy(width, height);
        fixer.submit(Frame {
            id,
            image,
            reference,
            policy,
        });
        self.submitted = Some((id, self.generation));
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

    fn reference_choice(&self, dataset: Option<&Arc<Dataset>>) -> difix3d::reference_photo::Reference {
        match (&self.reference, dataset) {
            (ReferenceMode::None, _) | (ReferenceMode::Nearest, None) => difix3d::reference_photo::Reference::None,
            (ReferenceMode::Nearest, Some(d)) => difix3d::reference_photo::Reference::NearestTrain(d.clone()),
            (ReferenceMode::Image(p), _) => difix3d::reference_photo::Reference::Image(p.clone()),
        }
    }

    /// Why the model could not be loaded, if it could not.
    pub fn failure(&self) -> Option<&str> {
        match &self.state {
            WorkerState::Failed(message) => Some(message),
            _ => None,
        }
    }

    /// One line for the viewport overlay.
    pub fn status_line(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        Some(match &self.state {
            WorkerState::Off => "fix: starting".into(),
            WorkerState::Loading => "fix: loading Difix…".into(),
            WorkerState::Ready => format!("fix {:.0} ms · {:.1} fixed fps", self.latency_ms, self.fixed_fps()),
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
        if matches!(self.state, WorkerState::Failed(_)) {
            self.state = WorkerState::Off;
            self.submitted = None;
        }
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

    /// The Post-render fix panel.
    pub fn panel_ui(&mut self, ui: &mut egui::Ui, has_dataset: bool) {
        let mut enabled = self.enabled;
        if ui.checkbox(&mut enabled, "Fix every frame (X)").changed() {
            self.toggle();
        }
        ui.horizontal(|ui| {
            ui.label("Model");
            let edit = ui.add(egui::TextEdit::singleline(&mut self.model).desired_width(150.0));
            if edit.lost_focus() {
                self.retry();
            }
            if ui.button("…").on_hover_text("Choose the model folder").clicked() {
                self.model_pick = Some(super::pick(|d| d.pick_folder()));
            }
        });
        let before = (self.backend, self.precision);
        egui::ComboBox::from_label("backend")
            .selected_text(self.backend.to_string())
            .show_ui(ui, |ui| {
                for kind in [BackendKind::Cuda, BackendKind::Wgpu, BackendKind::Cpu] {
                    ui.selectable_value(&mut self.backend, kind, kind.to_string());
                }
            });
        egui::ComboBox::from_label("precision")
            .selected_text(format!("{:?}", self.precision))
            .show_ui(ui, |ui| {
                for p in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
                    ui.selectable_value(&mut self.precision, p, format!("{p:?}"));
                }
            });
        if before != (self.backend, self.precision) {
            self.retry();
        }

        let mut reference = self.reference.clone();
        let ref_label = match &reference {
            ReferenceMode::None => "none".to_string(),
            ReferenceMode::Nearest => "nearest training photo".into(),
            ReferenceMode::Image(p) => p
                .file_name()
                .map_or("image".into(), |f| f.to_string_lossy().into_owned()),
        };
        egui::ComboBox::from_label("reference")
            .selected_text(ref_label)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut reference, ReferenceMode::None, "none");
                ui.add_enabled_ui(has_dataset, |ui| {
                    ui.selectable_value(&mut reference, ReferenceMode::Nearest, "nearest training photo")
                        .on_disabled_hover_text("Open a dataset to pick photos from");
                });
                if ui.selectable_label(false, "image…").clicked() {
                    self.reference_pick = Some(super::pick(|d| {
                        d.add_filter("images", &["png", "jpg", "jpeg"]).pick_file()
                    }));
                }
            });
        if reference != self.reference {
            self.reference = reference;
            self.invalidate();
        }
        let processing = self.processing;
        egui::ComboBox::from_label("resolution")
            .selected_text(match self.processing {
                Processing::Render => "render size",
                Processing::Half => "half render size",
                Processing::Trained => "576x1024",
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut self.processing, Processing::Render, "render size");
                ui.selectable_value(&mut self.processing, Processing::Half, "half render size");
                ui.selectable_value(&mut self.processing, Processing::Trained, "576x1024");
            });
        if processing != self.processing {
            self.invalidate();
        }
        ui.horizontal(|ui| {
            ui.label("Show (V)");
            ui.selectable_value(&mut self.view_mode, ViewMode::Fixed, "fixed");
            ui.selectable_value(&mut self.view_mode, ViewMode::SideBySide, "side by side");
            ui.selectable_value(&mut self.view_mode, ViewMode::Split, "split");
        });
        match &self.state {
            WorkerState::Loading if self.enabled => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Loading Difix…");
                });
            }
            WorkerState::Ready => {
                ui.label(format!(
                    "Fix latency {:.0} ms · {:.1} fixed frames/s",
                    self.latency_ms,
                    self.fixed_fps()
                ));
            }
            WorkerState::Failed(message) => {
                ui.colored_label(egui::Color32::from_rgb(230, 90, 90), message);
            }
            _ => {}
        }
        if let Some(e) = &self.last_error {
            ui.colored_label(egui::Color32::from_rgb(230, 150, 90), e);
        }
    }

    /// Draws the frame: the raw render, and the fixed one as the view mode says once it is there.
    pub fn paint_ui(&self, ui: &egui::Ui, rect: egui::Rect, raw: egui::TextureId, frame_id: u64) {
        let full = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
        let painter = ui.painter_at(rect);
        let fixed = self.fixed_for(frame_id).map(|t| t.id());
        let waiting = self.enabled && fixed.is_none();
        match (fixed, self.view_mode) {
            (None, ViewMode::SideBySide) if self.enabled => {
                let (left, _) = halves(rect);
                painter.image(raw, left, full, egui::Color32::WHITE);
            }
            (None, _) => {
                painter.image(raw, rect, full, egui::Color32::WHITE);
            }
            (Some(fixed), ViewMode::Fixed) => {
                painter.image(fixed, rect, full, egui::Color32::WHITE);
            }
            (Some(fixed), ViewMode::SideBySide) => {
                let (left, right) = halves(rect);
                painter.image(raw, left, full, egui::Color32::WHITE);
                painter.image(fixed, right, full, egui::Color32::WHITE);
            }
            (Some(fixed), ViewMode::Split) => {
                painter.image(raw, rect, full, egui::Color32::WHITE);
                let x = rect.min.x + self.split * rect.width();
                let right = egui::Rect::from_min_max(egui::pos2(x, rect.min.y), rect.max);
                let uv = egui::Rect::from_min_max(egui::pos2(self.split, 0.0), egui::pos2(1.0, 1.0));
                painter.image(fixed, right, uv, egui::Color32::WHITE);
            }
        }
        if waiting && self.state == WorkerState::Ready {
            painter.text(
                rect.right_bottom() + egui::vec2(-10.0, -10.0),
                egui::Align2::RIGHT_BOTTOM,
                "fixing…",
                egui::FontId::proportional(14.0),
                egui::Color32::from_white_alpha(200),
            );
        }
        if self.enabled && self.view_mode == ViewMode::Split {
            let x = rect.min.x + self.split * rect.width();
            painter.vline(
                x,
                rect.y_range(),
                egui::Stroke::new(2.0, egui::Color32::from_white_alpha(220)),
            );
            painter.text(
                egui::pos2(x, rect.max.y - 24.0),
                egui::Align2::CENTER_CENTER,
                "raw | fixed",
                egui::FontId::proportional(12.0),
                egui::Color32::WHITE,
            );
        }
    }

    /// The draggable split line (split view only). Returns true while it is being dragged, so the
    /// camera does not move with the same drag.
    pub fn split_drag_ui(&mut self, ui: &egui::Ui, rect: egui::Rect) -> bool {
        if !(self.enabled && self.view_mode == ViewMode::Split) {
            return false;
        }
        let x = rect.min.x + self.split * rect.width();
        let handle = egui::Rect::from_center_size(egui::pos2(x, rect.center().y), egui::vec2(12.0, rect.height()));
        let response = ui.interact(handle, ui.id().with("split handle"), egui::Sense::drag());
        if response.dragged() {
            if let Some(pos) = response.interact_pointer_pos() {
                self.split = ((pos.x - rect.min.x) / rect.width()).clamp(0.0, 1.0);
            }
        }
        if response.hovered() || response.dragged() {
            ui.ctx().set_cursor_icon(egui::CursorIcon::ResizeHorizontal);
        }
        response.dragged()
    }
}

/// The left and right halves of `rect`, each letterboxed to the full frame's aspect ratio.
fn halves(rect: egui::Rect) -> (egui::Rect, egui::Rect) {
    let aspect = rect.width() / rect.height().max(1.0);
    let half = egui::vec2(rect.width() / 2.0, rect.width() / 2.0 / aspect);
    let y = rect.center().y - half.y / 2.0;
    (
        egui::Rect::from_min_size(egui::pos2(rect.min.x, y), half),
        egui::Rect::from_min_size(egui::pos2(rect.center().x, y), half),
    )
}
