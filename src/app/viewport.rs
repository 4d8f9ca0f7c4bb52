//! The 3D view: draws the splats into a texture egui shows (or shows a nerfacto field's frames from its
//! render worker, `difix3d::jobs::nerf_view`), and turns mouse and keys into camera moves.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use difix3d::data::{Camera, Dataset};
use difix3d::fix::gpu_frame::GpuFrame;
use difix3d::fix::FrameImage;
use difix3d::jobs::nerf_view::{NerfScene, NerfViewer};
use difix3d::nn::backend::BackendKind;
use difix3d::render::{GpuContext, GpuError, GpuSplats, Rasterizer, RenderOptions};
use difix3d::scene::Splats;
use difix3d::view::ViewController;
use egui_wgpu::wgpu;

use super::actions::Action;
use super::live_fix::LiveFixPanel;
use super::ViewSettings;

/// What was last drawn, to skip rendering when nothing changed and to report timings.
#[derive(Clone)]
pub struct FrameRecord {
    pub camera: Camera,
    pub options: RenderOptions,
    /// Drawn with gsplat's antialiased mode.
    pub antialiased: bool,
    /// Where the frame was shown, in physical pixels of the window.
    pub screen_rect: [f32; 4],
}

/// A nerfacto scene on screen: its render worker, the camera last asked of it, and the level of the
/// frame shown.
struct NerfView {
    viewer: NerfViewer,
    /// Where the worker renders.
    backend: BackendKind,
    requested: Option<Camera>,
    request_id: u64,
    /// The divisor of the frame on screen (1: full size; larger while the worker still refines; 0:
    /// a frame of an earlier camera).
    shown_level: u32,
    /// The full-size frame of the camera asked for last is on screen.
    complete: bool,
    /// The full-size frame on screen, for the post-render fix.
    full_frame: Option<image::RgbImage>,
}

pub struct Viewport {
    gpu: GpuContext,
    rasterizer: Rasterizer,
    /// Set while a nerfacto scene is shown (instead of `splats`).
    nerf: Option<NerfView>,
    /// Where NeRFs render; `None`: the CPU backend on a CPU adapter (lavapipe), wgpu on a GPU.
    pub nerf_backend: Option<BackendKind>,
    /// How many splats are uploaded, for the overlay.
    splat_count: usize,
    splats: Option<GpuSplats>,
    renderer: Arc<egui::mutex::RwLock<egui_wgpu::Renderer>>,
    texture: Option<(wgpu::Texture, wgpu::TextureView, egui::TextureId)>,
    last: Option<FrameRecord>,
    splats_changed: bool,
    frame_time: Duration,
    fps_window: Vec<Instant>,
    /// Counts rendered frames; the live fix matches fixed frames to renders by it.
    frame_id: u64,
}

impl Viewport {
    pub fn new(gpu: GpuContext, renderer: Arc<egui::mutex::RwLock<egui_wgpu::Renderer>>) -> Self {
        Self {
            rasterizer: Rasterizer::new(&gpu.device),
            nerf: None,
            nerf_backend: None,
            gpu,
            splat_count: 0,
            splats: None,
            renderer,
            texture: None,
            last: None,
            splats_changed: false,
            frame_time: Duration::ZERO,
            fps_window: Vec::new(),
            frame_id: 0,
        }
    }

    /// Uploads `splats` for drawing; when they do not fit the GPU, the error, and the previous splats stay.
    pub fn set_splats(&mut self, splats: &Splats) -> Result<(), GpuError> {
        self.splats = Some(GpuSplats::upload(&self.gpu, splats)?);
        self.splat_count = splats.len();
        self.splats_changed = true;
        self.nerf = None;
        Ok(())
    }

    /// Shows a nerfacto field instead of splats: frames come from its render worker, coarse first.
    pub fn set_nerf(&mut self, scene: Arc<NerfScene>) {
        let backend = self.nerf_backend.unwrap_or(if self.gpu.is_cpu_adapter() {
            BackendKind::Cpu
        } else {
            BackendKind::Wgpu
        });
        self.nerf = Some(NerfView {
            viewer: NerfViewer::spawn(scene, backend),
            backend,
            requested: None,
            request_id: 0,
            shown_level: 0,
            complete: false,
            full_frame: None,
        });
        self.splats = None;
        self.splat_count = 0;
        self.last = None;
    }

    /// While the NeRF worker has not yet delivered the full-size frame of the camera asked for last.
    pub fn refining(&self) -> bool {
        self.nerf.as_ref().is_some_and(|n| !n.complete)
    }

    pub fn has_frame(&self) -> bool {
        self.last.is_some()
    }

    pub fn last_frame(&self) -> Option<&FrameRecord> {
        self.last.as_ref()
    }

    /// The id of the frame on screen (0 before the first).
    pub fn frame_id(&self) -> u64 {
        self.frame_id
    }

    /// The frame on screen as a burn tensor on the same device (a GPU-side copy, for a fix worker
    /// sharing the device).
    fn capture_gpu(&self) -> Option<GpuFrame> {
        if self.nerf.is_some() {
            return None;
        }
        GpuFrame::capture(&self.gpu, &self.rasterizer)
    }

    /// The frame on screen as 8-bit RGB (a GPU read-back).
    fn read_rgb(&self) -> Option<image::RgbImage> {
        if let Some(nerf) = &self.nerf {
            return nerf.full_frame.clone();
        }
        match self.rasterizer.read_image(&self.gpu) {
            Ok(image) => Some(difix3d::image_io::to_rgb8(&image)),
            Err(e) => {
                log::error!("reading the frame back failed: {e}");
                None
            }
        }
    }

    /// Renders if the camera, settings or scene changed since the last frame. Returns the texture to show.
    fn update(
        &mut self,
        camera: &Camera,
        options: &RenderOptions,
        antialiased: bool,
        screen_rect: [f32; 4],
    ) -> Option<egui::TextureId> {
        if self.nerf.is_some() {
            return self.update_nerf(camera, options, screen_rect);
        }
        let splats = self.splats.as_ref()?;
        let unchanged = !self.splats_changed
            && self
                .last
                .as_ref()
                .is_some_and(|l| l.camera == *camera && l.options == *options && l.antialiased == antialiased);
        if let Some(last) = &mut self.last {
            last.screen_rect = screen_rect;
        }
        if unchanged {
            return self.texture.as_ref().map(|t| t.2);
        }
        let start = Instant::now();
        // The faster path for this adapter: hardware-rasterised triangles on a CPU adapter, the
        // compute rasterizer (which recording and training use) on a GPU.
        let gpu = &self.gpu;
        self.rasterizer.set_antialiased(antialiased);
        if let Err(e) = self.rasterizer.render_for_screen(gpu, splats, camera, options) {
            log::error!("render failed: {e}");
            return None;
        }
        self.ensure_texture(camera.width, camera.height);
        let (_, view, id) = self.texture.as_ref()?;
        self.rasterizer.present(&self.gpu, view);
        let _ = self.gpu.wait();
        self.frame_time = start.elapsed();
        let now = Instant::now();
        self.fps_window.push(now);
        self.fps_window
            .retain(|t| now.duration_since(*t) < Duration::from_secs(1));
        self.splats_changed = false;
        self.frame_id += 1;
        self.last = Some(FrameRecord {
            camera: camera.clone(),
            options: *options,
            antialiased,
            screen_rect,
        });
        Some(*id)
    }

    /// [`Self::update`] for a nerfacto scene: asks the worker for a changed camera and shows the
    /// newest frame it has finished (a coarse one first, sharper ones as the view stays still).
    fn update_nerf(
        &mut self,
        camera: &Camera,
        options: &RenderOptions,
        screen_rect: [f32; 4],
    ) -> Option<egui::TextureId> {
        let nerf = self.nerf.as_mut()?;
        if nerf.requested.as_ref() != Some(camera) {
            nerf.request_id += 1;
            nerf.viewer.request(nerf.request_id, camera.clone());
            nerf.requested = Some(camera.clone());
            nerf.complete = false;
        }
        if let Some(last) = &mut self.last {
            last.screen_rect = screen_rect;
        }
        let Some(frame) = nerf.viewer.latest() else {
            if nerf.viewer.stopped() {
                log::error!("the NeRF render worker stopped");
            }
            return self.texture.as_ref().map(|t| t.2);
        };
        nerf.shown_level = if frame.id == nerf.request_id { frame.level } else { 0 };
        nerf.complete = nerf.shown_level == 1;
        nerf.full_frame = (frame.level == 1).then(|| frame.image.clone());
        let (width, height) = frame.image.dimensions();
        let rgba: Vec<u8> = frame.image.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        self.ensure_texture(width, height);
        let (texture, _, id) = self.texture.as_ref()?;
        self.gpu.queue.write_texture(
            texture.as_image_copy(),
            &rgba,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(4 * width),
                rows_per_image: Some(height),
            },
            texture.size(),
        );
        let now = Instant::now();
        self.fps_window.push(now);
        self.fps_window
            .retain(|t| now.duration_since(*t) < Duration::from_secs(1));
        self.frame_id += 1;
        self.last = Some(FrameRecord {
            camera: frame.camera,
            options: *options,
            antialiased: false,
            screen_rect,
        });
        Some(*id)
    }

    fn ensure_texture(&mut self, width: u32, height: u32) {
        let gpu = &self.gpu;
        if let Some((tex, _, _)) = &self.texture {
            if tex.width() == width && tex.height() == height {
                return;
            }
        }
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("viewport"),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            // Written by the rasterizer's present pass, or by a copy (NeRF frames).
            usage: wgpu::TextureUsages::STORAGE_BINDING
                | wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        let mut renderer = self.renderer.write();
        let id = match &self.texture {
            Some((_, _, id)) => {
                renderer.update_egui_texture_from_wgpu_texture(&gpu.device, &view, wgpu::FilterMode::Linear, *id);
                *id
            }
            None => renderer.register_native_texture(&gpu.device, &view, wgpu::FilterMode::Linear),
        };
        self.texture = Some((texture, view, id));
    }

    /// The world point under pixel (x, y) of the last frame, from its depth; `None` over empty space.
    fn point_at(&mut self, x: u32, y: u32) -> Option<glam::Vec3> {
        if self.nerf.is_some() {
            // No depth from the NeRF worker yet: the orbit centre stays where it is.
            return None;
        }
        let gpu = &self.gpu;
        let last = self.last.as_ref()?;
        let cam = &last.camera;
        if !self.rasterizer.has_depth() {
            // Display frames draw no depth: the compute path renders this frame again with it.
            let splats = self.splats.as_ref()?;
            if let Err(e) = self.rasterizer.render(gpu, splats, cam, &last.options) {
                log::error!("render failed: {e}");
                return None;
            }
        }
        let depth = self.rasterizer.read_depth_at(gpu, x, y).ok()??;
        let ray = glam::Vec3::new(
            (x as f32 + 0.5 - cam.cx) / cam.fx,
            (y as f32 + 0.5 - cam.cy) / cam.fy,
            1.0,
        );
        Some(cam.world_from_camera.transform_point3(ray * depth))
    }
}

impl Viewport {
    /// The 3D view: the frame (raw, or with the fixed one as the post-render fix shows it), the overlay,
    /// and mouse and keys. Mouse moves go to `camera`; keys that change more than the camera become
    /// actions. `fix` takes each new frame it wants (with its reference photo from `dataset`).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        camera: &mut ViewController,
        settings: &ViewSettings,
        fix: &mut LiveFixPanel,
        dataset: Option<&Arc<Dataset>>,
        out: &mut Vec<Action>,
    ) {
        let (rect, response) = ui.allocate_exact_size(ui.available_size(), egui::Sense::click_and_drag());
        // The split handle sits over the view and takes drags before the camera does.
        if !fix.split_drag_ui(ui, rect) {
            self.input_ui(ui, &response, rect, camera, settings, out);
        }

        let ppp = ui.ctx().pixels_per_point();
        let scale = settings.render_scale * ppp;
        // At most what the GPU holds in one frame (a huge window at a high render scale renders smaller).
        let (width, height) = difix3d::render::fit_frame_size(
            &self.gpu.device,
            (rect.width() * scale).round() as u32,
            (rect.height() * scale).round() as u32,
        );
        let view = camera.camera(width, height);
        let screen = [rect.min.x * ppp, rect.min.y * ppp, rect.max.x * ppp, rect.max.y * ppp];
        let options = settings.render_options();
        if let Some(id) = self.update(&view, &options, settings.antialiased, screen) {
            let frame_id = self.frame_id();
            if fix.wants(frame_id) {
                // NeRF frames are made on the CPU: they go over as they are.
                let image = if fix.takes_gpu_frames() && self.nerf.is_none() {
                    self.capture_gpu().map(FrameImage::Gpu)
                } else {
                    self.read_rgb().map(FrameImage::Cpu)
                };
                if let Some(image) = image {
                    fix.submit(frame_id, image, &view, dataset);
                }
            }
            fix.paint_ui(ui, rect, id, frame_id);
        }
        self.overlay_ui(ui, rect, settings, fix.status_line());
    }

    fn overlay_ui(&self, ui: &egui::Ui, rect: egui::Rect, settings: &ViewSettings, fix_status: Option<String>) {
        let fps = self.fps_window.len();
        let size = self.last.as_ref().map_or((0, 0), |l| (l.camera.width, l.camera.height));
        let fly = if settings.fly_mode { " · fly (WASD/QE)" } else { "" };
        let mut text = match &self.nerf {
            Some(nerf) => format!(
                "NeRF (nerfacto, {}) · {}x{}{}{fly}",
                nerf.backend,
                size.0,
                size.1,
                match nerf.shown_level {
                    1 => String::new(),
                    0 => " · rendering…".into(),
                    level => format!(" · 1/{level} size, refining…"),
                }
            ),
            None => format!(
                "{fps} fps · frame {:.1} ms · {} splats · {}x{}{fly}",
                self.frame_time.as_secs_f64() * 1e3,
                self.splat_count,
                size.0,
                size.1,
            ),
        };
        if let Some(fix) = fix_status {
            text.push('\n');
            text.push_str(&fix);
        }
        let galley = ui
            .painter()
            .layout_no_wrap(text, egui::FontId::monospace(12.0), egui::Color32::WHITE);
        let pos = rect.left_top() + egui::vec2(8.0, 8.0);
        ui.painter().rect_filled(
            egui::Rect::from_min_size(pos, galley.size()).expand(4.0),
            4.0,
            egui::Color32::from_black_alpha(150),
        );
        ui.painter().galley(pos, galley, egui::Color32::WHITE);
    }

    /// Mouse drags and keys: the camera moves here, the rest goes out as actions.
    fn input_ui(
        &mut self,
        ui: &egui::Ui,
        response: &egui::Response,
        rect: egui::Rect,
        camera: &mut ViewController,
        settings: &ViewSettings,
        out: &mut Vec<Action>,
    ) {
        let drag = response.drag_delta();
        if response.dragged_by(egui::PointerButton::Primary) {
            let (yaw, pitch) = (drag.x * 0.005, -drag.y * 0.005);
            if settings.fly_mode {
                camera.look(-yaw, pitch);
            } else {
                camera.orbit(yaw, pitch);
            }
        }
        if response.dragged_by(egui::PointerButton::Secondary) || response.dragged_by(egui::PointerButton::Middle) {
            camera.pan(drag.x / rect.height(), drag.y / rect.height());
        }
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                camera.zoom(scroll / 50.0);
            }
        }
        if response.double_clicked() {
            if let (Some(pos), Some(last)) = (response.interact_pointer_pos(), self.last.as_ref()) {
                let x = ((pos.x - rect.min.x) / rect.width() * last.camera.width as f32) as u32;
                let y = ((pos.y - rect.min.y) / rect.height() * last.camera.height as f32) as u32;
                if let Some(point) = self.point_at(x, y) {
                    camera.set_centre(point);
                }
            }
        }
        if ui.ctx().egui_wants_keyboard_input() {
            return;
        }
        let (dt, moves) = ui.input(|i| {
            let k = |key| if i.key_down(key) { 1.0 } else { 0.0 };
            let boost = if i.modifiers.shift { 4.0 } else { 1.0 };
            let delta = glam::Vec3::new(
                k(egui::Key::D) - k(egui::Key::A),
                k(egui::Key::E) - k(egui::Key::Q),
                k(egui::Key::W) - k(egui::Key::S),
            ) * boost;
            (i.stable_dt.min(0.1), delta)
        });
        if moves != glam::Vec3::ZERO {
            camera.fly(moves * settings.fly_speed * dt);
            ui.ctx().request_repaint();
        }
        let pressed = |key| ui.input(|i| i.key_pressed(key));
        let keys = [
            (egui::Key::X, Action::ToggleFix),
            (egui::Key::K, Action::AddKeyframe),
            (egui::Key::V, Action::CycleFixViewMode),
            (egui::Key::R, Action::ResetView),
            (egui::Key::F, Action::ToggleFlyMode),
        ];
        for (key, action) in keys {
            if pressed(key) {
                out.push(action);
            }
        }
        let next = pressed(egui::Key::ArrowRight) || pressed(egui::Key::ArrowDown);
        if next || pressed(egui::Key::ArrowLeft) || pressed(egui::Key::ArrowUp) {
            out.push(Action::StepCamera { next });
        }
    }
}

/// What the view shows before a scene is open.
pub fn placeholder_ui(ui: &mut egui::Ui, loading: Option<&Path>) {
    let (rect, _) = ui.allocate_exact_size(ui.available_size(), egui::Sense::click_and_drag());
    let message = match loading {
        Some(path) => format!("Loading {} …", path.display()),
        None => "Open a .ply/.splat scene or a dataset folder (Scene panel), or drop one here.".into(),
    };
    ui.painter().text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        message,
        egui::FontId::proportional(16.0),
        egui::Color32::GRAY,
    );
}

/// Saves the window screenshot and, beside it, the camera and screen rectangle of the 3D view, so a
/// test can render the same view headless and compare.
pub fn save_screenshot(
    image: &egui::ColorImage,
    path: &Path,
    frame: Option<&FrameRecord>,
    fixed_shown: bool,
    jobs: serde_json::Value,
) -> anyhow::Result<()> {
    let [w, h] = image.size;
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| [c.r(), c.g(), c.b()]).collect();
    let rgb =
        image::RgbImage::from_raw(w as u32, h as u32, bytes).ok_or_else(|| anyhow::anyhow!("bad screenshot size"))?;
    difix3d::image_io::save_png(&rgb, path)?;
    if let Some(frame) = frame {
        let meta = serde_json::json!({ "camera": frame.camera, "screen_rect": frame.screen_rect, "sh_degree": frame.options.sh_degree, "background": frame.options.background, "antialiased": frame.antialiased, "fixed_shown": fixed_shown, "jobs": jobs });
        let meta_path = path.with_extension("json");
        difix3d::image_io::write_atomic(&meta_path, |tmp| {
            std::fs::write(tmp, meta.to_string()).map_err(|e| e.to_string())
        })?;
    }
    Ok(())
}
