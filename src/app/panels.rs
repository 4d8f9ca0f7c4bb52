//! The side panel: Scene, View, Post-render fix, Record, Training and Refinement.

use super::ViewerApp;

pub fn side_panel_ui(app: &mut ViewerApp, ui: &mut egui::Ui) {
    ui.heading("difix3d");
    ui.add_space(4.0);
    egui::CollapsingHeader::new("Scene")
        .default_open(true)
        .show(ui, |ui| scene_ui(app, ui));
    egui::CollapsingHeader::new("View")
        .default_open(true)
        .show(ui, |ui| view_ui(app, ui));
    egui::CollapsingHeader::new("Post-render fix")
        .default_open(true)
        .show(ui, |ui| {
            let has_dataset = app.dataset.is_some();
            app.fix.panel_ui(ui, has_dataset)
        });
    egui::CollapsingHeader::new("Record")
        .default_open(false)
        .show(ui, |ui| app.record_panel_ui(ui));
    // Each unfolds and scrolls into sight when its run starts (from the panel or the command line).
    let unfold = std::mem::take(&mut app.train.unfold);
    job_section_ui(ui, "Training", unfold, |ui| app.train_panel_ui(ui));
    let unfold = std::mem::take(&mut app.refine.unfold);
    job_section_ui(ui, "Refinement", unfold, |ui| app.refine_panel_ui(ui));
}

fn scene_ui(app: &mut ViewerApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        if ui
            .button("Open scene…")
            .on_hover_text(
                ".ply, .compressed.ply, .splat, .spz, .sog, a gsplat checkpoint .pt or a difix3d run's \
                 checkpoint.safetensors",
            )
            .clicked()
        {
            app.pick_file();
        }
        if ui
            .button("Open dataset…")
            .on_hover_text("A COLMAP / Difix3D dataset folder")
            .clicked()
        {
            app.pick_folder();
        }
    });
    let can_save = app.splats.is_some() && app.saving.is_none() && app.save_dialog.is_none();
    if ui
        .add_enabled(can_save, egui::Button::new("Save as…"))
        .on_hover_text(format!(
            "Write the scene on screen; the extension picks the format: {}",
            difix3d::scene::SceneFormat::WRITABLE
        ))
        .clicked()
    {
        app.pick_save_file();
    }
    if let Some((path, _)) = &app.saving {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("Saving {}", file_name(path)));
        });
    }
    if let Some((path, _)) = &app.loading {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("Loading {}", file_name(path)));
        });
    }
    match &app.scene {
        Some(scene) => {
            ui.label(file_name(&scene.path).to_string())
                .on_hover_text(scene.path.display().to_string());
            ui.label(format!(
                "{} splats · SH degree {}",
                group_thousands(scene.splat_count),
                scene.sh_degree
            ));
        }
        None => {
            ui.label("No scene loaded. Drop a file or folder on the window.");
        }
    }
    if let Some(dataset) = &app.dataset {
        ui.label(format!(
            "Dataset: {} ({} train / {} eval views)",
            file_name(&dataset.root),
            dataset.train.len(),
            dataset.eval.len()
        ));
    }
}

fn view_ui(app: &mut ViewerApp, ui: &mut egui::Ui) {
    let mut fov = app.controller.fov_y.to_degrees();
    if ui
        .add(egui::Slider::new(&mut fov, 10.0..=120.0).text("field of view °"))
        .changed()
    {
        app.controller.fov_y = fov.to_radians();
    }
    ui.add(egui::Slider::new(&mut app.settings.render_scale, 0.25..=2.0).text("render scale"));
    let max_degree = app.scene.as_ref().map_or(3, |s| s.sh_degree);
    ui.add_enabled(
        max_degree > 0,
        egui::Slider::new(&mut app.settings.sh_degree, 0..=max_degree).text("SH degree"),
    );
    ui.horizontal(|ui| {
        ui.color_edit_button_rgb(&mut app.settings.background);
        ui.label("background");
    });
    ui.checkbox(&mut app.settings.fly_mode, "Fly mode (F)")
        .on_hover_text("Left drag looks around; WASD/QE move, shift is faster");
    ui.add(
        egui::Slider::new(&mut app.settings.fly_speed, 0.01..=100.0)
            .logarithmic(true)
            .text("fly speed"),
    );
    if ui.button("Reset view (R)").clicked() {
        app.controller = app.home.clone();
    }
    ui.small("Left drag: orbit · right/middle drag: pan · wheel: zoom · double-click: orbit centre");

    let Some(dataset) = &app.dataset else { return };
    ui.separator();
    ui.label("Cameras (left/right arrow keys step)");
    let names: Vec<(String, bool)> = dataset
        .train
        .iter()
        .map(|v| (v.camera.name.clone(), false))
        .chain(dataset.eval.iter().map(|v| (v.camera.name.clone(), true)))
        .collect();
    let mut clicked = None;
    egui::ScrollArea::vertical()
        .max_height(240.0)
        .id_salt("cameras")
        .show(ui, |ui| {
            for (i, (name, eval)) in names.iter().enumerate() {
                let label = format!("{} {name}", if *eval { "eval" } else { "train" });
                if ui.selectable_label(app.selected_camera == Some(i), label).clicked() {
                    clicked = Some(i);
                }
            }
        });
    if let Some(i) = clicked {
        app.snap_to_camera(i);
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
fn job_section_ui(ui: &mut egui::Ui, title: &str, unfold: bool, add_contents: impl FnOnce(&mut egui::Ui)) {
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
