//! The viewer window (eframe). It owns no engine state beyond what it draws: scenes arrive from the
//! loader job over a channel, and every panel sends its requests through the same typed messages.

mod actions;
mod difix_train_panel;
mod job_monitor;
mod live_fix;
mod panels;
mod record_panel;
mod refine_panel;
mod train_panel;
mod viewport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use difix3d::data::Dataset;
use difix3d::jobs::load::{Loaded, LoadedScene};
use difix3d::jobs::nerf_view::{NerfFiles, NerfScene};
use difix3d::render::{GpuContext, RenderOptions};
use difix3d::scene::Splats;
use difix3d::view::{self, ViewController};

use actions::{Action, Jobs, Shared};
pub use difix_train_panel::DifixTrainStart;
use live_fix::LiveFixPanel;
pub use live_fix::{FixStart, ViewMode};
use panels::{job_section_ui, ScenePanel, ViewPanel};
use record_panel::RecordPanel;
use refine_panel::RefinePanel;
pub use refine_panel::RefineStart;
pub use train_panel::NerfactoStart;
use train_panel::{TrainMode, TrainPanel};
use viewport::Viewport;

/// Options of `difix3d view` that are not part of the UI.
pub struct ViewerOptions {
    pub path: Option<PathBuf>,
    /// A dataset folder whose cameras and photos go with the scene at `path` (for the Refinement panel).
    pub data: Option<PathBuf>,
    /// Save a screenshot of the window here once the scene is on screen, then quit (used by tests).
    pub screenshot: Option<PathBuf>,
    pub window_size: (u32, u32),
    /// Post-render fix settings to start with.
    pub fix: FixStart,
    /// With `screenshot`: first save the raw view (`NAME_raw.png`), then press the fix key and save the
    /// fixed view once it is on screen (the GUI test of the live fix).
    pub screenshot_toggle_fix: bool,
    /// Draw antialiased from the start (`difix3d view --antialiased`).
    pub antialiased: bool,
    /// Where NeRFs render (`difix3d view --nerf-backend`); `None`: the CPU backend on a CPU adapter,
    /// wgpu on a GPU.
    pub nerf_backend: Option<difix3d::nn::backend::BackendKind>,
    /// Start training the opened dataset at launch: (steps, image factor, loss backend). With
    /// `screenshot`, the picture is taken once the view shows splats from step 20 or later.
    pub train: Option<(usize, u32, difix3d::nn::backend::BackendKind)>,
    /// Start refining the opened scene with the opened dataset at launch. With `screenshot`, the
    /// picture is taken once the run has finished.
    pub refine: Option<RefineStart>,
    /// Start fine-tuning Difix at launch (the Training panel's Difix mode). With `screenshot`, the
    /// picture is taken once the run has finished.
    pub train_difix: Option<DifixTrainStart>,
    /// Start training a nerfacto NeRF on the opened dataset at launch. With `screenshot`, the picture
    /// is taken once the run has finished and the view shows the trained field.
    pub train_nerfacto: Option<NerfactoStart>,
}

pub fn run(options: ViewerOptions) -> anyhow::Result<()> {
    let mut wgpu_options = egui_wgpu::WgpuConfiguration::default();
    if let egui_wgpu::WgpuSetup::CreateNew(setup) = &mut wgpu_options.wgpu_setup {
        // The splat kernels need more storage buffers per stage than WebGPU's defaults; ask for what the
        // adapter offers (burn, sharing this device later, needs its features too).
        setup.device_descriptor = Arc::new(GpuContext::device_descriptor);
    }
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("difix3d")
            .with_inner_size([options.window_size.0 as f32, options.window_size.1 as f32])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        ..Default::default()
    };
    eframe::run_native(
        "difix3d",
        native,
        Box::new(move |cc| Ok(Box::new(ViewerApp::new(cc, options)?))),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Settings the View panel edits.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewSettings {
    pub render_scale: f32,
    pub sh_degree: u32,
    pub background: [f32; 3],
    pub fly_mode: bool,
    /// Flying speed in scene units per second (shift: x4).
    pub fly_speed: f32,
    /// Draw with gsplat's antialiased mode (Mip-Splatting's 2D filter), as a scene trained with
    /// `difix3d train --antialiased` must be drawn.
    pub antialiased: bool,
}

impl ViewSettings {
    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            sh_degree: self.sh_degree,
            background: self.background,
        }
    }
}

/// What is loaded now.
pub struct SceneInfo {
    pub path: PathBuf,
    /// A nerfacto field rather than splats (no splat count, no SH): the files it came from.
    pub nerf: Option<NerfFiles>,
    pub splat_count: usize,
    pub sh_degree: u32,
}

/// The viewer: the panels (each owning its own state), the viewport, and the state they share: what
/// is open and the camera. Panels read the shared state through [`Shared`] and ask for changes with
/// [`Action`]s, which [`apply`](Self::apply) carries out.
pub struct ViewerApp {
    jobs: Jobs,
    viewport: Viewport,
    scene: Option<SceneInfo>,
    dataset: Option<Arc<Dataset>>,
    /// The scene on screen, on the CPU (for saving, recordings and refinement).
    splats: Option<Arc<Splats>>,
    controller: ViewController,
    home: ViewController,
    selected_camera: Option<usize>,
    toasts: Vec<(String, Instant)>,
    screenshot: Option<ScreenshotState>,
    scene_panel: ScenePanel,
    view: ViewPanel,
    fix: LiveFixPanel,
    record: RecordPanel,
    train: TrainPanel,
    refine: RefinePanel,
    /// Runs asked for on the command line, started once what they need is open.
    start_training: Option<(usize, u32, difix3d::nn::backend::BackendKind)>,
    start_refining: Option<RefineStart>,
    start_difix: Option<DifixTrainStart>,
    start_nerfacto: Option<NerfactoStart>,
}

struct ScreenshotState {
    path: PathBuf,
    frames_shown: u32,
    requested: bool,
    /// Still to take: the raw view before the fix key is pressed.
    raw_first: bool,
    /// Press the fix key on the next input.
    press_fix_key: bool,
}

impl ViewerApp {
    fn new(
        cc: &eframe::CreationContext<'_>,
        options: ViewerOptions,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let state = cc
            .wgpu_render_state
            .as_ref()
            .ok_or("the viewer needs eframe's wgpu renderer")?;
        let gpu = GpuContext::from_parts(
            state.adapter.clone(),
            state.device.clone(),
            state.queue.clone(),
            &state.adapter.get_info(),
        );
        log::info!("rendering on {}", gpu.adapter_name);
        let controller = ViewController::look_at(
            glam::Vec3::new(0.0, 0.0, -3.0),
            glam::Vec3::ZERO,
            glam::Vec3::NEG_Y,
            50f32.to_radians(),
        );
        let mut app = Self {
            jobs: Jobs::new(gpu.clone()),
            viewport: Viewport::new(gpu.clone(), state.renderer.clone()),
            scene: None,
            dataset: None,
            splats: None,
            home: controller.clone(),
            controller,
            selected_camera: None,
            toasts: Vec::new(),
            screenshot: options.screenshot.map(|path| ScreenshotState {
                path,
                frames_shown: 0,
                requested: false,
                raw_first: options.screenshot_toggle_fix,
                press_fix_key: false,
            }),
            scene_panel: ScenePanel::default(),
            view: ViewPanel::default(),
            fix: LiveFixPanel::new(options.fix, gpu),
            record: RecordPanel::default(),
            train: TrainPanel::default(),
            refine: RefinePanel::default(),
            start_training: options.train,
            start_refining: options.refine,
            start_difix: options.train_difix,
            start_nerfacto: options.train_nerfacto,
        };
        app.view.settings.antialiased = options.antialiased;
        app.viewport.nerf_backend = options.nerf_backend;
        if let Some(path) = options.path {
            app.scene_panel.open(path, options.data, &app.jobs);
        }
        Ok(app)
    }

    /// Carries out what the panels and the viewport asked for, in order.
    fn apply(&mut self, ctx: &egui::Context, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        for action in actions {
            match action {
                Action::Open { path, data } => self.scene_panel.open(path, data, &self.jobs),
                Action::Loaded(loaded) => self.on_loaded(*loaded),
                Action::ShowSplats { splats, antialiased } => {
                    self.view.settings.antialiased = antialiased;
                    self.show_splats(splats);
                }
                Action::Toast(message) => self.toast(message),
                Action::Notice(message) => self.toasts.push((message, Instant::now())),
                Action::ResetView => self.controller = self.home.clone(),
                Action::SetFov(degrees) => self.controller.fov_y = degrees.to_radians(),
                Action::SnapToCamera(index) => self.snap_to_camera(index),
                Action::StepCamera { next } => self.step_camera(next),
                Action::GoTo(key) => self.apply_pose(&key),
                Action::AddKeyframe => self.record.add_keyframe(&self.controller),
                Action::ToggleFlyMode => self.view.settings.fly_mode = !self.view.settings.fly_mode,
                Action::ToggleFix => self.fix.toggle(),
                Action::CycleFixViewMode => self.fix.cycle_view_mode(),
                Action::UseFixModel(model) => self.fix.model = model,
            }
        }
        // Show the change on the next frame even without new input.
        ctx.request_repaint();
    }

    fn toast(&mut self, message: String) {
        log::error!("{message}");
        self.toasts.push((message, Instant::now()));
    }

    fn on_loaded(&mut self, loaded: Loaded) {
        if let Some(notice) = &loaded.notice {
            // Already logged (as a warning) by the loader; shown once here.
            self.toasts.push((notice.clone(), Instant::now()));
        }
        let splats = match loaded.scene {
            LoadedScene::Splats(splats) => splats,
            LoadedScene::Nerf(scene) => return self.on_nerf_loaded(loaded.path, scene, loaded.dataset),
        };
        if let Err(e) = self.viewport.set_splats(&splats) {
            let kept = if self.scene.is_some() {
                "; the previous scene stays open"
            } else {
                ""
            };
            self.toast(format!("{}: cannot show this scene: {e}{kept}", loaded.path.display()));
            return;
        }
        if let Some(dataset) = loaded.dataset {
            self.dataset = Some(Arc::new(dataset));
        }
        let dataset_up = self
            .dataset
            .as_ref()
            .and_then(|d| view::up_from_cameras(d.views().map(|v| &v.camera)));
        let up = dataset_up.unwrap_or(glam::Vec3::NEG_Y);
        self.home = ViewController::default_for(&splats, up);
        self.controller = self.home.clone();
        let extent = {
            let (lo, hi) = splats.robust_bounds();
            (hi - lo).length().max(1e-3)
        };
        self.view.settings.fly_speed = 0.25 * extent;
        self.view.settings.sh_degree = splats.sh_degree;
        self.selected_camera = None;
        self.scene = Some(SceneInfo {
            path: loaded.path.clone(),
            nerf: None,
            splat_count: splats.len(),
            sh_degree: splats.sh_degree,
        });
        self.splats = Some(Arc::new(splats));
    }

    /// A nerfacto field opened: the view shows its worker's frames, from the first training camera of
    /// the dataset when one is open, else from the scene's home camera.
    fn on_nerf_loaded(&mut self, path: PathBuf, scene: Box<NerfScene>, dataset: Option<Dataset>) {
        if let Some(dataset) = dataset {
            self.dataset = Some(Arc::new(dataset));
        }
        let (eye, target) = scene.home();
        let up = self
            .dataset
            .as_ref()
            .and_then(|d| view::up_from_cameras(d.views().map(|v| &v.camera)))
            .unwrap_or(glam::Vec3::NEG_Y);
        self.home = match self.dataset.as_ref().and_then(|d| d.views().next()) {
            Some(first) => ViewController::from_camera(&first.camera, up, (eye - target).length()),
            None => ViewController::look_at(eye, target, up, self.controller.fov_y),
        };
        self.controller = self.home.clone();
        self.view.settings.fly_speed = 0.25 * (eye - target).length();
        self.selected_camera = None;
        let files = scene.files.clone();
        self.viewport.set_nerf(Arc::from(scene));
        self.scene = Some(SceneInfo {
            path,
            nerf: Some(files),
            splat_count: 0,
            sh_degree: 0,
        });
        self.splats = None;
    }

    /// Shows splats from a running job (training or refinement) in the view.
    fn show_splats(&mut self, splats: Arc<Splats>) {
        if let Err(e) = self.viewport.set_splats(&splats) {
            self.toast(format!("cannot show the job's splats: {e}"));
            return;
        }
        // Follow the job's SH degree unless the user chose a lower one.
        let shown_max = self.scene.as_ref().map_or(0, |s| s.sh_degree);
        let settings = &mut self.view.settings;
        if settings.sh_degree >= shown_max {
            settings.sh_degree = splats.sh_degree;
        }
        if let Some(scene) = &mut self.scene {
            scene.splat_count = splats.len();
            scene.sh_degree = splats.sh_degree;
        }
        self.splats = Some(splats);
    }

    /// Moves the view to a camera-path keyframe, keeping the orbit distance and the scene's up.
    fn apply_pose(&mut self, key: &difix3d::camera_path::Keyframe) {
        self.controller.position = key.position;
        self.controller.rotation = key.rotation.normalize();
        self.controller.fov_y = key.fov_y_deg.to_radians();
    }

    /// Snaps the view to dataset camera `index` (train cameras first, then eval).
    fn snap_to_camera(&mut self, index: usize) {
        let Some(dataset) = &self.dataset else { return };
        let Some(view) = dataset.views().nth(index) else { return };
        let up = self.controller.up;
        self.controller = ViewController::from_camera(&view.camera, up, self.controller.focus_distance);
        self.selected_camera = Some(index);
    }

    /// Snaps the view to the next (or previous) dataset camera, wrapping around.
    fn step_camera(&mut self, next: bool) {
        let count = self.dataset.as_ref().map_or(0, |d| d.train.len() + d.eval.len());
        if count == 0 {
            return;
        }
        let current = self.selected_camera.unwrap_or(if next { count - 1 } else { 0 });
        let index = if next {
            (current + 1) % count
        } else {
            (current + count - 1) % count
        };
        self.snap_to_camera(index);
    }

    /// Starts the runs asked for on the command line once what they need is open.
    fn start_requested_runs(&mut self) {
        if let (Some((steps, factor, backend)), Some(dataset)) = (self.start_training, &self.dataset) {
            self.start_training = None;
            self.train.start(dataset, steps, factor, backend, &self.jobs);
        }
        if let (Some(start), Some(dataset)) = (&self.start_nerfacto, &self.dataset) {
            self.train.start_nerfacto(dataset, start.clone(), &self.jobs);
            self.start_nerfacto = None;
        }
        if let Some(start) = self.start_difix.take() {
            self.train.start_difix(start, &self.jobs);
        }
        let nerf = self.scene.as_ref().is_some_and(|s| s.nerf.is_some());
        if self.dataset.is_some() && (self.splats.is_some() || nerf) {
            if let Some(start) = self.start_refining.take() {
                let shared = shared(
                    &self.dataset,
                    &self.scene,
                    &self.splats,
                    &self.controller,
                    &self.view.settings,
                );
                self.refine.start_with(start, shared, &self.record.path, &self.jobs);
            }
        }
    }

    /// The side panel: Scene, View, Post-render fix, Record, Training and Refinement.
    fn side_panel_ui(&mut self, ui: &mut egui::Ui, out: &mut Vec<Action>) {
        let shared = shared(
            &self.dataset,
            &self.scene,
            &self.splats,
            &self.controller,
            &self.view.settings,
        );
        let jobs = &self.jobs;
        ui.heading("difix3d");
        ui.add_space(4.0);
        egui::CollapsingHeader::new("Scene")
            .default_open(true)
            .show(ui, |ui| self.scene_panel.ui(ui, self.scene.as_ref(), shared));
        let max_sh_degree = self.scene.as_ref().map_or(3, |s| s.sh_degree);
        egui::CollapsingHeader::new("View").default_open(true).show(ui, |ui| {
            self.view.ui(ui, shared, max_sh_degree, self.selected_camera, out)
        });
        egui::CollapsingHeader::new("Post-render fix")
            .default_open(true)
            .show(ui, |ui| self.fix.ui(ui, shared.dataset.is_some()));
        let fix = &self.fix;
        egui::CollapsingHeader::new("Record")
            .default_open(false)
            .show(ui, |ui| {
                let fix_settings = |width, height| fix.record_settings(shared.dataset.cloned(), width, height);
                self.record.ui(ui, shared, fix_settings, jobs, out)
            });
        // Each unfolds and scrolls into sight when its run starts (from the panel or the command line).
        let unfold = std::mem::take(&mut self.train.unfold);
        job_section_ui(ui, "Training", unfold, |ui| self.train.ui(ui, shared, jobs, out));
        let unfold = std::mem::take(&mut self.refine.unfold);
        job_section_ui(ui, "Refinement", unfold, |ui| {
            self.refine.ui(ui, shared, &fix.model, &self.record.path, jobs)
        });
    }

    fn toasts_ui(&mut self, ctx: &egui::Context) {
        self.toasts.retain(|(_, t)| t.elapsed() < Duration::from_secs(8));
        if self.toasts.is_empty() {
            return;
        }
        egui::Area::new(egui::Id::new("toasts"))
            .anchor(egui::Align2::RIGHT_BOTTOM, [-12.0, -12.0])
            .show(ctx, |ui| {
                for (message, _) in &self.toasts {
                    egui::Frame::popup(ui.style())
                        .fill(egui::Color32::from_rgb(110, 24, 24))
                        .show(ui, |ui| {
                            ui.set_max_width(420.0);
                            ui.colored_label(egui::Color32::WHITE, format!("⚠ {message}"));
                        });
                }
            });
        ctx.request_repaint_after(Duration::from_millis(500));
    }

    fn screenshot_logic(&mut self, ctx: &egui::Context) {
        let Some(state) = &mut self.screenshot else { return };
        let shot = ctx.input(|i| {
            i.raw.events.iter().find_map(|e| match e {
                egui::Event::Screenshot { image, .. } => Some(image.clone()),
                _ => None,
            })
        });
        let frame_id = self.viewport.frame_id();
        let fixed_shown = self.fix.fixed_for(frame_id).is_some();
        if let Some(image) = shot {
            let path = if state.raw_first {
                let stem = state.path.file_stem().unwrap_or_default().to_string_lossy();
                state.path.with_file_name(format!("{stem}_raw.png"))
            } else {
                state.path.clone()
            };
            let result = viewport::save_screenshot(
                &image,
                &path,
                self.viewport.last_frame(),
                fixed_shown,
                serde_json::json!({
                    "training_step": self.train.monitor.snapshot_step,
                    "refine_rounds": self.refine.rounds_done,
                    "refine_step": self.refine.monitor.last.as_ref().map(|r| r.step).or(self.refine.monitor.last_nerfacto_refine.map(|r| r.step)),
                    "refine_finished": self.refine.finished,
                    "difix_step": self.train.monitor.last_difix.as_ref().map(|r| r.step),
                    "difix_eval_psnr": self.train.monitor.last_eval.as_ref().map(|e| e.psnr),
                    "difix_finished": self.train.difix.done.is_some(),
                    "nerfacto_step": self.train.monitor.last_nerfacto.as_ref().map(|r| r.step),
                    "fix_gpu_frames": self.fix.takes_gpu_frames(),
                }),
            );
            if let Err(e) = result {
                eprintln!("error: {e}");
            }
            if state.raw_first {
                state.raw_first = false;
                state.press_fix_key = true;
                state.frames_shown = 0;
                state.requested = false;
            } else {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                return;
            }
        }
        // Wait for the fixed frame when the fix is on (and the raw view is not the one wanted now), and
        // when training from the command line, for the view to show splats from step 20 or later.
        let difix_mode = self.train.mode == TrainMode::Difix;
        let nerfacto_mode = self.train.mode == TrainMode::Nerfacto;
        let training_shown = self.train.monitor.snapshot_step.is_some_and(|s| s >= 20);
        let training_wanted = self.start_training.is_some()
            || (self.train.monitor.running() && self.train.mode == TrainMode::Scene)
            || training_shown;
        // When training a NeRF from the command line, wait for the run to end and its field to open.
        let nerfacto_wanted = self.start_nerfacto.is_some() || (self.train.monitor.running() && nerfacto_mode);
        // When fine-tuning Difix from the command line, wait for the run to end.
        let difix_wanted = self.start_difix.is_some() || (self.train.monitor.running() && difix_mode);
        // When refining from the command line, wait for the run to end.
        let refine_wanted = self.start_refining.is_some() || self.refine.monitor.running();
        let ready = self.scene.is_some()
            && self.viewport.has_frame()
            && !self.viewport.refining()
            && (state.raw_first || !self.fix.enabled || fixed_shown)
            && (!training_wanted || training_shown)
            && !refine_wanted
            && !difix_wanted
            && !nerfacto_wanted
            && self.scene_panel.loading().is_none();
        if ready && !state.press_fix_key {
            state.frames_shown += 1;
            if state.frames_shown >= 3 && !state.requested {
                state.requested = true;
                ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(egui::UserData::default()));
            }
        }
        if let Some(message) = self.fix.failure() {
            eprintln!("error: the live fix failed: {message}");
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if let Some(message) = self.train.monitor.failure() {
            eprintln!("error: training failed: {message}");
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if let Some(message) = self.refine.monitor.failure() {
            eprintln!("error: refinement failed: {message}");
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        ctx.request_repaint();
    }
}

/// What panels may read of the app's shared state. (A function of the fields rather than of `&self`, so
/// the panels, other fields, stay free to be borrowed mutably beside it.)
fn shared<'a>(
    dataset: &'a Option<Arc<Dataset>>,
    scene: &'a Option<SceneInfo>,
    splats: &'a Option<Arc<Splats>>,
    camera: &'a ViewController,
    view: &ViewSettings,
) -> Shared<'a> {
    Shared {
        dataset: dataset.as_ref(),
        nerf: scene.as_ref().and_then(|s| s.nerf.as_ref()),
        splats: splats.as_ref(),
        camera,
        render: view.render_options(),
        antialiased: view.antialiased,
    }
}

/// Runs a file dialog on its own thread (it blocks) and returns where its answer will arrive.
fn pick(dialog: impl FnOnce(rfd::FileDialog) -> Option<PathBuf> + Send + 'static) -> Receiver<Option<PathBuf>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(dialog(rfd::FileDialog::new()));
    });
    rx
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let mut actions = Vec::new();
        self.scene_panel.poll(self.splats.as_ref(), &self.jobs, &mut actions);
        self.apply(&ctx, std::mem::take(&mut actions));
        self.fix.poll(&ctx);
        if let Some(pose) = self.record.preview_pose() {
            self.apply_pose(&pose);
        }
        self.start_requested_runs();
        self.train.poll(&mut actions);
        self.refine.poll(&ctx, &mut actions);
        self.record.poll();
        self.apply(&ctx, std::mem::take(&mut actions));
        if self.record.busy() || self.train.monitor.running() || self.refine.monitor.running() {
            ctx.request_repaint();
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().filter_map(|f| f.path.clone()).collect());
        if let Some(path) = dropped.into_iter().next() {
            self.scene_panel.open(path, None, &self.jobs);
        }
        egui::Panel::left("side")
            .default_size(300.0)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.side_panel_ui(ui, &mut actions));
            });
        self.apply(&ctx, std::mem::take(&mut actions));
        egui::CentralPanel::default().show(ui, |ui| match &self.scene {
            None => viewport::placeholder_ui(ui, self.scene_panel.loading()),
            Some(_) => self.viewport.ui(
                ui,
                &mut self.controller,
                &self.view.settings,
                &mut self.fix,
                self.dataset.as_ref(),
                &mut actions,
            ),
        });
        self.apply(&ctx, actions);
        self.toasts_ui(&ctx);
        self.screenshot_logic(&ctx);
        if self.scene_panel.busy() || self.viewport.refining() {
            // Polls the loader, or the NeRF worker for its next, sharper frame.
            ctx.request_repaint_after(Duration::from_millis(50));
        }
    }

    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        if let Some(state) = &mut self.screenshot {
            if state.press_fix_key {
                state.press_fix_key = false;
                for pressed in [true, false] {
                    raw_input.events.push(egui::Event::Key {
                        key: egui::Key::X,
                        physical_key: Some(egui::Key::X),
                        pressed,
                        repeat: false,
                        modifiers: egui::Modifiers::NONE,
                    });
                }
            }
        }
    }
}
