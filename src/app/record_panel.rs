//! The Record panel: build a camera path (keyframes from the view, the dataset's cameras, or an
//! orbit), preview it in the view, save/load it as JSON, and record it (raw or fixed) in the background.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam_channel::Receiver;
use difix3d::camera_path::nerfstudio::{DataparserTransform, RenderSettings};
use difix3d::camera_path::{CameraPath, Keyframe};
use difix3d::jobs::record::{RecordEvent, RecordHandle};
use difix3d::record::{FixSettings, Progress};
use difix3d::view::ViewController;

use super::actions::{Action, Jobs, Shared};
use super::difix_train_panel::PathField;

pub struct RecordPanel {
    pub path: CameraPath,
    selected: Option<usize>,
    /// When the preview started playing.
    preview: Option<Instant>,
    fps: f32,
    size: [u32; 2],
    out: String,
    fix_frames: bool,
    side_by_side: bool,
    job: Option<(RecordHandle, Progress)>,
    /// The outcome of the last recording, for the panel.
    outcome: Option<Result<String, String>>,
    load_pick: Option<Receiver<Option<PathBuf>>>,
    save_pick: Option<Receiver<Option<PathBuf>>>,
    /// "Save for nerfstudio…": the path as nerfstudio's camera_path.json at the panel's size and fps.
    save_ns_pick: Option<Receiver<Option<PathBuf>>>,
    /// nerfstudio's dataparser_transforms.json, for Load and "Save for nerfstudio…" (empty: nerfstudio's
    /// world is the scene's).
    dataparser: PathField,
    out_pick: Option<Receiver<Option<PathBuf>>>,
}

impl Default for RecordPanel {
    fn default() -> Self {
        Self {
            path: CameraPath::default(),
            selected: None,
            preview: None,
            fps: 30.0,
            size: [1280, 720],
            out: "flythrough.mp4".into(),
            fix_frames: false,
            side_by_side: false,
            job: None,
            outcome: None,
            load_pick: None,
            save_pick: None,
            save_ns_pick: None,
            dataparser: PathField::default(),
            out_pick: None,
        }
    }
}

impl RecordPanel {
    /// The pose the preview shows now, or `None` when not previewing (the preview stops at the end).
    pub fn preview_pose(&mut self) -> Option<Keyframe> {
        let start = self.preview?;
        let t = start.elapsed().as_secs_f32() / self.path.duration_s.max(1e-3);
        if t > 1.0 && !self.path.looped {
            self.preview = None;
            return self.path.sample(1.0);
        }
        self.path.sample(t.fract())
    }

    pub fn busy(&self) -> bool {
        self.job.is_some() || self.preview.is_some()
    }

    /// Appends the view `camera` shows to the path (the Add keyframe button and the K key).
    pub fn add_keyframe(&mut self, camera: &ViewController) {
        self.path.keyframes.push(Keyframe::from_camera(&camera.camera(2, 2)));
    }

    /// `fix_settings`: the post-render fix's settings for frames of the given width and height, for
    /// "Fix frames".
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: Shared,
        fix_settings: impl FnOnce(u32, u32) -> FixSettings,
        jobs: &Jobs,
        out: &mut Vec<Action>,
    ) {
        ui.label(format!(
            "{} keyframe(s) · {:.1} s · {} frames at {} fps",
            self.path.keyframes.len(),
            self.path.duration_s,
            self.path.frame_count(self.fps),
            self.fps
        ));
        ui.horizontal_wrapped(|ui| {
            if ui.button("Add keyframe (K)").clicked() {
                self.add_keyframe(shared.camera);
            }
            let dataset = shared.dataset;
            if ui
                .add_enabled(dataset.is_some(), egui::Button::new("Through dataset cameras"))
                .on_disabled_hover_text("Open a dataset first")
                .clicked()
            {
                if let Some(d) = dataset {
                    let duration = (d.train.len() as f32 * 0.5).max(2.0);
                    self.path = CameraPath::through_cameras(d.train.iter().map(|v| &v.camera), duration);
                }
            }
            if ui
                .button("Orbit")
                .on_hover_text("Around the orbit centre, from the current view")
                .clicked()
            {
                let c = shared.camera;
                self.path = CameraPath::orbit(c.centre(), c.up, c.position, c.fov_y.to_degrees(), 8.0);
            }
        });
        let mut goto = None;
        let mut action = None;
        egui::ScrollArea::vertical()
            .max_height(160.0)
            .id_salt("keyframes")
            .show(ui, |ui| {
                for i in 0..self.path.keyframes.len() {
                    ui.horizontal(|ui| {
                        let p = self.path.keyframes[i].position;
                        let label = format!("#{i}  ({:.2}, {:.2}, {:.2})", p.x, p.y, p.z);
                        if ui.selectable_label(self.selected == Some(i), label).clicked() {
                            self.selected = Some(i);
                            goto = Some(i);
                        }
                        if ui.small_button("⏶").on_hover_text("Earlier").clicked() {
                            action = Some((i, -1));
                        }
                        if ui.small_button("⏷").on_hover_text("Later").clicked() {
                            action = Some((i, 1));
                        }
                        if ui.small_button("🗑").on_hover_text("Delete").clicked() {
                            action = Some((i, 0));
                        }
                    });
                }
            });
        if let Some((i, step)) = action {
            let keys = &mut self.path.keyframes;
            match step {
                0 => {
                    keys.remove(i);
                    self.selected = None;
                }
                _ => {
                    let j = i as isize + step;
                    if j >= 0 && (j as usize) < keys.len() {
                        keys.swap(i, j as usize);
                        self.selected = Some(j as usize);
                    }
                }
            }
        }
        ui.add(
            egui::Slider::new(&mut self.path.duration_s, 0.5..=120.0)
                .logarithmic(true)
                .text("duration s"),
        );
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.path.constant_speed, "constant speed");
            ui.checkbox(&mut self.path.looped, "loop");
        });
        ui.horizontal(|ui| {
            let has_keys = !self.path.keyframes.is_empty();
            let label = if self.preview.is_some() {
                "■ Stop"
            } else {
                "▶ Preview"
            };
            if ui.add_enabled(has_keys, egui::Button::new(label)).clicked() {
                self.preview = match self.preview {
                    Some(_) => None,
                    None => Some(Instant::now()),
                };
            }
            if ui.button("Load…").clicked() {
                self.load_pick = Some(super::pick(|d| d.add_filter("camera path", &["json"]).pick_file()));
            }
            if ui.add_enabled(has_keys, egui::Button::new("Save…")).clicked() {
                self.save_pick = Some(super::pick(|d| {
                    d.add_filter("camera path", &["json"])
                        .set_file_name("camera_path.json")
                        .save_file()
                }));
            }
            if ui
                .add_enabled(has_keys, egui::Button::new("Save for nerfstudio…"))
                .on_hover_text(
                    "nerfstudio's camera_path.json (ns-render camera-path): every frame at this size and fps",
                )
                .clicked()
            {
                self.save_ns_pick = Some(super::pick(|d| {
                    d.add_filter("nerfstudio camera path", &["json"])
                        .set_file_name("camera_path_nerfstudio.json")
                        .save_file()
                }));
            }
        });
        self.dataparser.ui(
            ui,
            "nerfstudio transforms",
            "nerfstudio's dataparser_transforms.json (in its run folder outputs/.../, next to config.yml). Load maps a \
             nerfstudio camera path from the world nerfstudio trained in to the scene's, and Save for nerfstudio maps \
             ours back. Leave empty when nerfstudio ran without a dataparser transform (--orientation-method none \
             --center-method none --auto-scale-poses False, as in the Difix3D README).",
            false,
        );
        if let Some(i) = goto {
            if let Some(key) = self.path.keyframes.get(i).copied() {
                out.push(Action::GoTo(key));
            }
        }
        self.record_job_ui(ui, shared, fix_settings, jobs);
    }

    fn record_job_ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: Shared,
        fix_settings: impl FnOnce(u32, u32) -> FixSettings,
        jobs: &Jobs,
    ) {
        ui.separator();
        ui.horizontal(|ui| {
            ui.label("Size");
            ui.add(egui::DragValue::new(&mut self.size[0]).range(16..=8192));
            ui.label("x");
            ui.add(egui::DragValue::new(&mut self.size[1]).range(16..=8192));
            ui.add(egui::DragValue::new(&mut self.fps).range(1.0..=240.0).suffix(" fps"));
        });
        ui.horizontal(|ui| {
            ui.label("Out");
            ui.add(egui::TextEdit::singleline(&mut self.out).desired_width(150.0))
                .on_hover_text("A .mp4 file (needs ffmpeg) or a folder for PNG frames");
            if ui.button("…").clicked() {
                self.out_pick = Some(super::pick(|d| {
                    d.add_filter("MP4 video", &["mp4"])
                        .set_file_name("flythrough.mp4")
                        .save_file()
                }));
            }
        });
        ui.checkbox(&mut self.fix_frames, "Fix frames (Post-render fix settings)");
        ui.add_enabled(
            self.fix_frames,
            egui::Checkbox::new(&mut self.side_by_side, "also raw | fixed side by side"),
        );
        // The recording's size, as `record` checks it before the first frame.
        if let Ok(frames) = self.path.checked_frame_count(self.fps) {
            let (needed, what) = difix3d::record::output_lower_bound(
                self.size[0],
                self.size[1],
                self.fix_frames,
                self.fix_frames && self.side_by_side,
                frames,
            );
            let estimate = format!("At least {} on disk", difix3d::disk::human(needed));
            let out = std::path::Path::new(if self.out.is_empty() { "." } else { &self.out });
            match difix3d::disk::free_bytes(out) {
                Some(free) if free < needed => ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("{estimate}, but only {} is free", difix3d::disk::human(free)),
                ),
                _ => ui.label(estimate),
            }
            .on_hover_text(what);
        }
        if let Some((handle, progress)) = &self.job {
            ui.horizontal(|ui| {
                let fraction = progress.done as f32 / progress.total.max(1) as f32;
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .desired_width(170.0)
                        .text(format!("{}/{}", progress.done, progress.total)),
                );
                if ui.button("Cancel").clicked() {
                    handle.cancel();
                }
            });
        } else {
            let ready = !self.path.keyframes.is_empty() && shared.splats.is_some();
            if ui.add_enabled(ready, egui::Button::new("⏺ Record")).clicked() {
                self.start_recording(shared, fix_settings, jobs);
            }
        }
        match &self.outcome {
            Some(Ok(message)) => {
                ui.label(message);
            }
            Some(Err(message)) => {
                ui.colored_label(egui::Color32::from_rgb(230, 90, 90), message);
            }
            None => {}
        }
    }

    fn start_recording(&mut self, shared: Shared, fix_settings: impl FnOnce(u32, u32) -> FixSettings, jobs: &Jobs) {
        let Some(splats) = shared.splats.cloned() else { return };
        let [width, height] = self.size;
        let fix = self.fix_frames.then(|| fix_settings(width, height));
        let job = difix3d::record::RecordJob {
            splats,
            path: self.path.clone(),
            fps: self.fps,
            width,
            height,
            render: shared.render,
            antialiased: shared.antialiased,
            side_by_side: self.side_by_side && fix.is_some(),
            fix,
            out: PathBuf::from(self.out.trim()),
        };
        let total = job.path.frame_count(job.fps);
        self.job = Some((jobs.record(job), Progress { done: 0, total }));
        self.outcome = None;
    }

    /// Takes the recording thread's events and the file dialogs' answers (every frame, whether or
    /// not the panel is open).
    pub fn poll(&mut self) {
        if let Some(rx) = &self.load_pick {
            if let Ok(choice) = rx.try_recv() {
                self.load_pick = None;
                if let Some(file) = choice {
                    // Ours or nerfstudio's; a nerfstudio path brings its render size and fps.
                    match load_path(&file, self.dataparser.path().as_deref()) {
                        Ok((path, settings, message)) => {
                            self.path = path;
                            if let Some(s) = settings {
                                self.fps = s.fps;
                                self.size = [s.width, s.height];
                            }
                            self.outcome = Some(Ok(message));
                        }
                        Err(e) => self.outcome = Some(Err(e)),
                    }
                }
            }
        }
        if let Some(rx) = &self.save_pick {
            if let Ok(choice) = rx.try_recv() {
                self.save_pick = None;
                if let Some(file) = choice {
                    self.outcome = Some(
                        self.path
                            .save(&file)
                            .map(|()| format!("Saved {}", file.display()))
                            .map_err(|e| e.to_string()),
                    );
                }
            }
        }
        if let Some(rx) = &self.save_ns_pick {
            if let Ok(choice) = rx.try_recv() {
                self.save_ns_pick = None;
                if let Some(file) = choice {
                    let settings = RenderSettings {
                        fps: self.fps,
                        width: self.size[0],
                        height: self.size[1],
                    };
                    self.outcome = Some(save_nerfstudio(
                        &self.path,
                        &file,
                        settings,
                        self.dataparser.path().as_deref(),
                    ));
                }
            }
        }
        if let Some(rx) = &self.out_pick {
            if let Ok(Some(file)) = rx.try_recv() {
                self.out = file.display().to_string();
            }
        }
        let mut finished = None;
        if let Some((handle, progress)) = &mut self.job {
            loop {
                match handle.events.try_recv() {
                    Ok(RecordEvent::Progress(p)) => *progress = p,
                    Ok(RecordEvent::Done(result)) => {
                        finished = Some(
                            result
                                .map(|s| {
                                    let outs: Vec<String> = s.outputs.iter().map(|p| p.display().to_string()).collect();
                                    format!(
                                        "Recorded {} frames in {:.1} s -> {}",
                                        s.frames,
                                        s.seconds,
                                        outs.join(", ")
                                    )
                                })
                                .map_err(|e| e.to_string()),
                        );
                        break;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        finished = Some(Err("the recording thread stopped unexpectedly".into()));
                        break;
                    }
                }
            }
        }
        if let Some(outcome) = finished {
            self.job = None;
            self.outcome = Some(outcome);
        }
    }
}

/// The panel's Load: a camera path, ours or nerfstudio's (mapped through the dataparser transforms
/// file when one is given), with a nerfstudio path's render size and fps, and what to tell the user.
fn load_path(file: &Path, dataparser: Option<&Path>) -> Result<(CameraPath, Option<RenderSettings>, String), String> {
    let transform = dataparser
        .map(DataparserTransform::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    let (path, settings) = CameraPath::load_with(file, transform.as_ref()).map_err(|e| e.to_string())?;
    let message = match (&settings, dataparser) {
        (None, _) => format!("Loaded {}", file.display()),
        (Some(s), Some(dp)) => format!(
            "Loaded nerfstudio path {} ({} frames, {}x{} at {} fps) through {}",
            file.display(),
            path.keyframes.len(),
            s.width,
            s.height,
            s.fps,
            dp.display()
        ),
        (Some(s), None) => format!(
            "Loaded nerfstudio path {} ({} frames, {}x{} at {} fps) in nerfstudio's world as is; if nerfstudio's \
             dataparser moved the data, choose its dataparser_transforms.json and load again",
            file.display(),
            path.keyframes.len(),
            s.width,
            s.height,
            s.fps
        ),
    };
    Ok((path, settings, message))
}

/// The panel's "Save for nerfstudio…": every frame at `settings`, through the dataparser transforms
/// file when one is given.
fn save_nerfstudio(
    path: &CameraPath,
    file: &Path,
    settings: RenderSettings,
    dataparser: Option<&Path>,
) -> Result<String, String> {
    let transform = dataparser
        .map(DataparserTransform::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    path.save_nerfstudio(file, settings, transform.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(format!("Saved {} (nerfstudio)", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Load with the dataparser transforms: a nerfstudio path whose world is `scale * (T x)` comes back
    /// at the data-world poses it was saved from; without the file it stays in nerfstudio's world and
    /// the message says how to map it; our own path with the file is refused, naming the path.
    #[test]
    fn load_maps_nerfstudio_paths_through_the_dataparser_transforms() {
        let dir = tempfile::tempdir().unwrap();
        let dp = dir.path().join("dataparser_transforms.json");
        let transform = serde_json::json!({
            "transform": [[0.0, -1.0, 0.0, 0.3], [1.0, 0.0, 0.0, -0.2], [0.0, 0.0, 1.0, 1.0]],
            "scale": 0.5,
        });
        std::fs::write(&dp, transform.to_string()).unwrap();
        let ours = CameraPath::orbit(
            glam::Vec3::ZERO,
            glam::Vec3::NEG_Y,
            glam::Vec3::new(0.0, -1.0, -4.0),
            50.0,
            2.0,
        );
        let settings = RenderSettings {
            fps: 4.0,
            width: 64,
            height: 48,
        };
        let ns = dir.path().join("camera_path.json");
        assert!(save_nerfstudio(&ours, &ns, settings, Some(&dp))
            .unwrap()
            .contains("nerfstudio"));

        let (loaded, got, message) = load_path(&ns, Some(&dp)).unwrap();
        assert_eq!(got, Some(settings));
        assert!(
            message.contains("through") && message.contains("dataparser_transforms.json"),
            "{message}"
        );
        let frames = ours.frame_count(settings.fps);
        assert_eq!(loaded.keyframes.len(), frames);
        for (i, key) in loaded.keyframes.iter().enumerate() {
            let expected = ours.sample(ours.frame_time(i, frames)).unwrap();
            assert!(key.position.distance(expected.position) < 1e-4, "frame {i}");
            assert!(key.rotation.angle_between(expected.rotation) < 1e-3, "frame {i}");
        }

        let (raw, _, message) = load_path(&ns, None).unwrap();
        assert!(
            message.contains("dataparser_transforms.json and load again"),
            "{message}"
        );
        assert!(raw.keyframes[0].position.distance(loaded.keyframes[0].position) > 0.1);

        let ours_file = dir.path().join("ours.json");
        ours.save(&ours_file).unwrap();
        let e = load_path(&ours_file, Some(&dp)).unwrap_err();
        assert!(
            e.contains("ours.json") && e.contains("nerfstudio camera paths only"),
            "{e}"
        );
        let e = load_path(&ns, Some(&dir.path().join("gone.json"))).unwrap_err();
        assert!(e.contains("gone.json"), "{e}");
    }
}
