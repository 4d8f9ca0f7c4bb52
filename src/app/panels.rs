//! The Scene panel (open, save, what is loaded) and the View panel (camera and render settings), and
//! what the side panel's sections share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use difix3d::jobs::load::{LoadError, Loaded};
use difix3d::scene::{SceneError, Splats};

use super::actions::{Action, Jobs, Shared};
use super::{pick, SceneInfo, ViewSettings};

/// The Scene panel: the file dialogs, the load and save in progress, and what is open.
#[derive(Default)]
pub struct ScenePanel {
    loading: Option<(PathBuf, Receiver<Result<Loaded, LoadError>>)>,
    file_dialog: Option<Receiver<Option<PathBuf>>>,
    /// The "Save as…" dialog's answer, then the write in progress.
    save_dialog: Option<Receiver<Option<PathBuf>>>,
    saving: Option<(PathBuf, Receiver<Result<PathBuf, SceneError>>)>,
}

impl ScenePanel {
    /// Starts loading a scene file or dataset folder (with `data`: a dataset to go with the scene).
    pub fn open(&mut self, path: PathBuf, data: Option<PathBuf>, jobs: &Jobs) {
        self.loading = Some((path.clone(), jobs.load(path, data)));
    }

    /// What is loading now.
    pub fn loading(&self) -> Option<&Path> {
        self.loading.as_ref().map(|(path, _)| path.as_path())
    }

    /// Whether a dialog, load or save is under way (the window keeps polling).
    pub fn busy(&self) -> bool {
        self.loading.is_some() || self.file_dialog.is_some() || self.save_dialog.is_some() || self.saving.is_some()
    }

    /// Takes the dialogs' answers and the load's and save's results (`splats`: the scene to save).
    pub fn poll(&mut self, splats: Option<&Arc<Splats>>, jobs: &Jobs, out: &mut Vec<Action>) {
        if let Some((_, rx)) = &self.loading {
            if let Ok(result) = rx.try_recv() {
                self.loading = None;
                match result {
                    Ok(loaded) => out.push(Action::Loaded(Box::new(loaded))),
                    Err(e) => out.push(Action::Toast(e.to_string())),
                }
            }
        }
        if let Some(rx) = &self.file_dialog {
            if let Ok(choice) = rx.try_recv() {
                self.file_dialog = None;
                if let Some(path) = choice {
                    self.open(path, None, jobs);
                }
            }
        }
        if let Some(rx) = &self.save_dialog {
            if let Ok(choice) = rx.try_recv() {
                self.save_dialog = None;
                if let (Some(path), Some(splats)) = (choice, splats) {
                    let rx = jobs.save(splats.clone(), path.clone());
                    self.saving = Some((path, rx));
                }
            }
        }
        if let Some((_, rx)) = &self.saving {
            if let Ok(result) = rx.try_recv() {
                self.saving = None;
                match result {
                    Ok(path) => {
                        let message = format!("Saved the scene to {}", path.display());
                        log::info!("{message}");
                        out.push(Action::Notice(message));
                    }
                    Err(e) => out.push(Action::Toast(format!("Save failed: {e}"))),
                }
            }
        }
    }

    /// Asks where to write the scene on screen ("Save as…"); the format follows the extension.
    fn pick_save_file(&mut self, scene: Option<&SceneInfo>) {
        let name = scene
            .and_then(|s| s.path.file_stem())
            .map(|s| format!("{}.ply", s.to_string_lossy()))
            .unwrap_or_else(|| "scene.ply".into());
        self.save_dialog = Some(pick(move |d| {
            d.add_filter("Gaussian splats", &["ply", "spz", "sog", "splat", "pt"])
                .set_file_name(name)
                .save_file()
        }));
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, scene: Option<&SceneInfo>, shared: Shared) {
        ui.horizontal(|ui| {
            if ui
                .button("Open scene…")
                .on_hover_text(
                    ".ply, .compressed.ply, .splat, .spz, .sog, a gsplat checkpoint .pt or a difix3d run's \
                     checkpoint.safetensors; a NeRF: nerfstudio's nerfacto step-*.ckpt or a difix3d nerfacto \
                     run's nerfacto.safetensors",
                )
                .clicked()
            {
                self.file_dialog = Some(pick(|d| {
                    d.add_filter("Gaussian splats", &["ply", "splat", "spz", "sog", "pt", "safetensors"])
                        .add_filter("NeRF (nerfacto)", &["ckpt", "safetensors"])
                        .pick_file()
                }));
            }
            if ui
                .button("Open dataset…")
                .on_hover_text("A COLMAP / Difix3D dataset folder")
                .clicked()
            {
                self.file_dialog = Some(pick(|d| d.pick_folder()));
            }
        });
        let can_save = shared.splats.is_some() && self.saving.is_none() && self.save_dialog.is_none();
        if ui
            .add_enabled(can_save, egui::Button::new("Save as…"))
            .on_hover_text(format!(
                "Write the scene on screen; the extension picks the format: {}",
                difix3d::scene::SceneFormat::WRITABLE
            ))
            .clicked()
        {
            self.pick_save_file(scene);
        }
        if let Some((path, _)) = &self.saving {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Saving {}", file_name(path)));
            });
        }
        if let Some((path, _)) = &self.loading {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Loading {}", file_name(path)));
            });
        }
        match scene {
            Some(scene) => {
                ui.label(file_name(&scene.path).to_string())
                    .on_hover_text(scene.path.display().to_string());
                if scene.nerf.is_some() {
                    ui.label("NeRF (nerfacto) · rendered coarse first");
                } else {
                    ui.label(format!(
                        "{} splats · SH degree {}",
                        group_thousands(scene.splat_count),
                        scene.sh_degree
                    ));
                }
            }
            None => {
                ui.label("No scene loaded. Drop a file or folder on the window.");
            }
        }
        if let Some(dataset) = shared.dataset {
            ui.label(format!(
                "Dataset: {} ({} train / {} eval views)",
                file_name(&dataset.root),
                dataset.train.len(),
                dataset.eval.len()
            ));
        }
    }
}

/// The View panel: the settings the viewport renders with, the field of view and the dataset's cameras.
pub struct ViewPanel {
    pub settings: ViewSettings,
}

impl Default for ViewPanel {
    fn default() -> Self {
        Self {
            settings: ViewSettings {
                render_scale: 1.0,
                sh_degree: 3,
                background: [0.0; 3],
                fly_mode: false,
                fly_speed: 1.0,
                antialiased: false,
            },
        }
    }
}

impl ViewPanel {
    /// `max_sh_degree`: the scene's; `selected_camera`: the dataset camera the view was snapped to.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: Shared,
        max_sh_degree: u32,
        selected_camera: Option<usize>,
        out: &mut Vec<Action>,
    ) {
        let settings = &mut self.settings;
        let mut fov = shared.camera.fov_y.to_degrees();
        if ui
            .add(egui::Slider::new(&mut fov, 10.0..=120.0).text("field of view °"))
            .changed()
        {
            out.push(Action::SetFov(fov));
        }
        ui.add(egui::Slider::new(&mut settings.render_scale, 0.25..=2.0).text("render scale"));
        ui.add_enabled(
            max_sh_degree > 0,
            egui::Slider::new(&mut settings.sh_degree, 0..=max_sh_degree).text("SH degree"),
        );
        ui.horizontal(|ui| {
            ui.color_edit_button_rgb(&mut settings.background);
            ui.label("background");
        });
        ui.checkbox(&mut settings.antialiased, "Antialiased").on_hover_text(
            "gsplat's antialiased mode (Mip-Splatting's 2D filter): scenes trained with --antialiased must be \
             drawn this way; training and refinement runs switch it to match",
        );
        ui.checkbox(&mut settings.fly_mode, "Fly mode (F)")
            .on_hover_text("Left drag looks around; WASD/QE move, shift is faster");
        ui.add(
            egui::Slider::new(&mut settings.fly_speed, 0.01..=100.0)
                .logarithmic(true)
                .text("fly speed"),
        );
        if ui.button("Reset view (R)").clicked() {
            out.push(Action::ResetView);
        }
        ui.small("Left drag: orbit · right/middle drag: pan · wheel: zoom · double-click: orbit centre");

        let Some(dataset) = shared.dataset else { return };
        ui.separator();
        ui.label("Cameras (left/right arrow keys step)");
        let names: Vec<(String, bool)> = dataset
            .train
            .iter()
            .map(|v| (v.camera.name.clone(), false))
            .chain(dataset.eval.iter().map(|v| (v.camera.name.clone(), true)))
            .collect();
        egui::ScrollArea::vertical()
            .max_height(240.0)
            .id_salt("cameras")
            .show(ui, |ui| {
                for (i, (name, eval)) in names.iter().enumerate() {
                    let label = format!("{} {name}", if *eval { "eval" } else { "train" });
                    if ui.selectable_label(selected_camera == Some(i), label).clicked() {
                        out.push(Action::SnapToCamera(i));
                    }
                }
            });
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A folded section that opens and scrolls to its top when `unfold` is set.
pub fn job_section_ui(ui: &mut egui::Ui, title: &str, unfold: bool, add_contents: impl FnOnce(&mut egui::Ui)) {
    let section = egui::CollapsingHeader::new(title)
        .default_open(false)
        .open(unfold.then_some(true))
        .show(ui, add_contents);
    if unfold {
        section
            .header_response
            .scroll_to_me_animation(Some(egui::Align::TOP), egui::style::ScrollAnimation::none());
    }
}
