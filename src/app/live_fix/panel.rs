//! The Post-render fix panel: model, backend, precision, reference, resolution and view mode, and the
//! worker's state.

use difix3d::fix::session::WorkerState;
use difix3d::nn::backend::{BackendKind, Precision};

use super::{LiveFixPanel, Processing, ReferenceMode, ViewMode};

impl LiveFixPanel {
    /// The Post-render fix panel.
    pub fn ui(&mut self, ui: &mut egui::Ui, has_dataset: bool) {
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
                self.model_pick = Some(crate::app::pick(|d| d.pick_folder()));
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
                    self.reference_pick = Some(crate::app::pick(|d| {
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
        match self.session.state() {
            WorkerState::Loading if self.enabled => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Loading Difix…");
                });
            }
            WorkerState::Ready => {
                ui.label(format!(
                    "Fix latency {:.0} ms · {:.1} fixed frames/s",
                    self.session.latency_ms(),
                    self.session.fixed_fps()
                ));
            }
            WorkerState::Failed(message) => {
                ui.colored_label(egui::Color32::from_rgb(230, 90, 90), message);
            }
            _ => {}
        }
        if let Some(e) = self.session.last_error() {
            ui.colored_label(egui::Color32::from_rgb(230, 150, 90), e);
        }
    }
}
