//! The viewer window (eframe). It owns no engine state beyond what it draws: scenes arrive from the
//! loader job over a channel, and every panel sends its requests through the same typed messages.

mod panels;
mod viewport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use difix3d::data::Dataset;
use difix3d::jobs::load::{self, LoadError, Loaded};
use difix3d::render::{GpuContext, RenderOptions};
use difix3d::view::{self, ViewController};

use viewport::Viewport;

/// Options of `difix3d view` that are not part of the UI.
pub struct ViewerOptions {
    pub path: Option<PathBuf>,
    /// Save a screenshot of the window here once the scene is on screen, then quit (used by tests).
    pub screenshot: Option<PathBuf>,
    pub window_size: (u32, u32),
}

pub fn run(options: ViewerOptions) -> anyhow::Result<()> {
    let mut wgpu_options = egui_wgpu::WgpuConfiguration::default();
    if let egui_wgpu::WgpuSetup::CreateNew(setup) = &mut wgpu_options.wgpu_setup {
        // The splat kernels need more storage buffers per stage than WebGPU's defaults; ask for what the
        // adapter offers (burn, sharing this device later, needs its features too).
        setup.device_descriptor = Arc::new(|adapter| wgpu::DeviceDescriptor {
            label: Some("difix3d viewer"),
            required_features: adapter.features() - wgpu::Features::all_experimental_mask(),
            required_limits: adapter.limits(),
            ..Default::default()
        });
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
}

/// What is loaded now.
pub struct SceneInfo {
    pub path: PathBuf,
    pub splat_count: usize,
    pub sh_degree: u32,
}

pub struct ViewerApp {
    gpu: GpuContext,
    viewport: Viewport,
    scene: Option<SceneInfo>,
    dataset: Option<Dataset>,
    controller: ViewController,
    home: ViewController,
    settings: ViewSettings,
    selected_camera: Option<usize>,
    loading: Option<(PathBuf, Receiver<Result<Loaded, LoadError>>)>,
    file_dialog: Option<Receiver<Option<PathBuf>>>,
    toasts: Vec<(String, Instant)>,
    screenshot: Option<ScreenshotState>,
}

struct ScreenshotState {
    path: PathBuf,
    frames_shown: u32,
    requested: bool,
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
        let gpu = GpuContext::from_parts(state.device.clone(), state.queue.clone(), &state.adapter.get_info());
        log::info!("rendering on {}", gpu.adapter_name);
        let viewport = Viewport::new(&gpu, state.renderer.clone());
        let controller = ViewController::look_at(
            glam::Vec3::new(0.0, 0.0, -3.0),
            glam::Vec3::ZERO,
            glam::Vec3::NEG_Y,
            50f32.to_radians(),
        );
        let mut app = Self {
            gpu,
            viewport,
            scene: None,
            dataset: None,
            home: controller.clone(),
            controller,
            settings: ViewSettings {
                render_scale: 1.0,
                sh_degree: 3,
                background: [0.0; 3],
                fly_mode: false,
                fly_speed: 1.0,
            },
            selected_camera: None,
            loading: None,
            file_dialog: None,
            toasts: Vec::new(),
            screenshot: options.screenshot.map(|path| ScreenshotState {
                path,
                frames_shown: 0,
                requested: false,
            }),
        };
        if let Some(path) = options.path {
            app.open(path);
        }
        Ok(app)
    }

    /// Starts loading a scene file or dataset folder in the background.
    fn open(&mut self, path: PathBuf) {
        self.loading = Some((path.clone(), load::spawn(path)));
    }

    fn toast(&mut self, message: String) {
        log::error!("{message}");
        self.toasts.push((message, Instant::now()));
    }

    fn poll_jobs(&mut self) {
        if let Some((_, rx)) = &self.loading {
            if let Ok(result) = rx.try_recv() {
                self.loading = None;
                match result {
                    Ok(loaded) => self.on_loaded(loaded),
                    Err(e) => self.toast(e.to_string()),
                }
            }
        }
        if let Some(rx) = &self.file_dialog {
            if let Ok(choice) = rx.try_recv() {
                self.file_dialog = None;
                if let Some(path) = choice {
                    self.open(path);
                }
            }
        }
    }

    fn on_loaded(&mut self, loaded: Loaded) {
        let splats = &loaded.splats;
        if let Some(dataset) = loaded.dataset {
            self.dataset = Some(dataset);
        }
        let dataset_up = self
            .dataset
            .as_ref()
            .and_then(|d| view::up_from_cameras(d.views().map(|v| &v.camera)));
        let up = dataset_up.unwrap_or(glam::Vec3::NEG_Y);
        self.home = ViewController::default_for(splats, up);
        self.controller = self.home.clone();
        let extent = {
            let (lo, hi) = splats.robust_bounds();
            (hi - lo).length().max(1e-3)
        };
        self.settings.fly_speed = 0.25 * extent;
        self.settings.sh_degree = splats.sh_degree;
        self.selected_camera = None;
        self.scene = Some(SceneInfo {
            path: loaded.path.clone(),
            splat_count: splats.len(),
            sh_degree: splats.sh_degree,
        });
        self.viewport.set_splats(&self.gpu, splats);
    }

    fn pick_file(&mut self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let file = rfd::FileDialog::new()
                .add_filter("Gaussian splats", &["ply", "splat"])
                .pick_file();
            let _ = tx.send(file);
        });
        self.file_dialog = Some(rx);
    }

    fn pick_folder(&mut self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = tx.send(rfd::FileDialog::new().pick_folder());
        });
        self.file_dialog = Some(rx);
    }

    /// Snaps the view to dataset camera `index` (train cameras first, then eval).
    fn snap_to_camera(&mut self, index: usize) {
        let Some(dataset) = &self.dataset else { return };
        let Some(view) = dataset.views().nth(index) else { return };
        let up = self.controller.up;
        self.controller = ViewController::from_camera(&view.camera, up, self.controller.focus_distance);
        self.selected_camera = Some(index);
    }

    fn render_options(&self) -> RenderOptions {
        RenderOptions {
            sh_degree: self.settings.sh_degree,
            background: self.settings.background,
        }
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
        if let Some(image) = shot {
            let result = viewport::save_screenshot(&image, &state.path, self.viewport.last_frame());
            if let Err(e) = result {
                eprintln!("error: {e}");
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if self.scene.is_some() && self.viewport.has_frame() {
            state.frames_shown += 1;
            if state.frames_shown >= 3 && !state.requested {
                state.requested = true;
                ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(egui::UserData::default()));
            }
        }
        ctx.request_repaint();
    }
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.poll_jobs();
        let dropped: Vec<PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().filter_map(|f| f.path.clone()).collect());
        if let Some(path) = dropped.into_iter().next() {
            self.open(path);
        }
        egui::Panel::left("side")
            .default_size(300.0)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| panels::side_panel_ui(self, ui));
            });
        egui::CentralPanel::default().show(ui, |ui| self.viewport_ui(ui));
        self.toasts_ui(&ctx);
        self.screenshot_logic(&ctx);
        if self.loading.is_some() || self.file_dialog.is_some() {
            ctx.request_repaint_after(Duration::from_millis(50));
        }
    }
}
