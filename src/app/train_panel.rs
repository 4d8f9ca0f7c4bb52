//! The Training panel: trains the open dataset in the background (the same trainer as
//! `difix3d train`), with pause/resume/save/stop, a progress bar, a loss/PSNR plot, and the view
//! following the splats as they train. Its Difix mode fine-tunes the fixer instead
//! (`difix_train_panel`).

use std::sync::Arc;

use difix3d::difix::train::trainer::DifixTrainSummary;
use difix3d::jobs::train::Finished;
use difix3d::nn::backend::BackendKind;
use difix3d::train::densify::DensifyConfig;
use difix3d::train::trainer::TrainConfig;

use super::difix_train_panel::DifixForm;
use super::job_monitor::JobMonitor;
use super::ViewerApp;

/// What the Training panel trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainMode {
    /// A Gaussian-splat scene on the open dataset.
    Scene,
    /// Difix itself, on degraded/clean image pairs.
    Difix,
}

pub struct TrainPanel {
    pub mode: TrainMode,
    pub difix: DifixForm,
    /// The last Difix fine-tuning run that ended well.
    pub difix_done: Option<DifixTrainSummary>,
    steps: usize,
    factor: u32,
    out: String,
    backend: BackendKind,
    /// Densify from absolute 2D-mean gradients (gsplat's absgrad; `difix3d train --absgrad`).
    absgrad: bool,
    pub monitor: JobMonitor,
    /// Unfold the panel on the next frame.
    pub unfold: bool,
}

impl Default for TrainPanel {
    fn default() -> Self {
        Self {
            mode: TrainMode::Scene,
            difix: DifixForm::default(),
            difix_done: None,
            steps: 30_000,
            factor: 4,
            out: String::new(),
            backend: BackendKind::Wgpu,
            absgrad: false,
            monitor: JobMonitor::default(),
            unfold: false,
        }
    }
}

impl ViewerApp {
    pub(super) fn train_panel_ui(&mut self, ui: &mut egui::Ui) {
        ui.add_enabled_ui(!self.train.monitor.running(), |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.train.mode, TrainMode::Scene, "Scene (3DGS)");
                ui.selectable_value(&mut self.train.mode, TrainMode::Difix, "Difix (fine-tune)");
            });
        });
        match self.train.mode {
            TrainMode::Scene => self.scene_train_ui(ui),
            TrainMode::Difix => self.difix_train_ui(ui),
        }
    }

    fn scene_train_ui(&mut self, ui: &mut egui::Ui) {
        let Some(dataset) = self.dataset.clone() else {
            ui.label("Open a dataset folder (Scene panel) to train on it.");
            return;
        };
        let panel = &mut self.train;
        if panel.out.is_empty() {
            panel.out = default_run_folder(&dataset.root, "");
        }
        ui.add_enabled_ui(!panel.monitor.running(), |ui| {
            ui.horizontal(|ui| {
                ui.add(
                    egui::DragValue::new(&mut panel.steps)
                        .range(10..=1_000_000)
                        .prefix("steps "),
                );
                factor_ui(ui, "train factor", &mut panel.factor);
            });
            run_folder_ui(ui, &mut panel.out);
            backend_ui(ui, "loss backend", &mut panel.backend);
            ui.checkbox(&mut panel.absgrad, "absgrad").on_hover_text(
                "Densify from absolute 2D-mean gradients (gsplat's absgrad / AbsGS, growth threshold 0.0008)",
            );
        });
        if panel.monitor.controls_ui(ui, "▶ Train") {
            let (steps, factor, backend) = (panel.steps, panel.factor, panel.backend);
            self.start_train(steps, factor, backend);
        }
        self.train.monitor.progress_ui(ui);
    }

    /// Starts training the open dataset.
    pub(super) fn start_train(&mut self, steps: usize, factor: u32, backend: BackendKind) {
        let Some(dataset) = &self.dataset else { return };
        let panel = &mut self.train;
        if panel.out.is_empty() {
            panel.out = default_run_folder(&dataset.root, "");
        }
        let mut config = TrainConfig::new(dataset.root.clone(), panel.out.trim().into());
        config.steps = steps;
        config.factor = factor;
        if panel.absgrad {
            config.densify.absgrad = true;
            config.densify.grow_grad2d = DensifyConfig::ABSGRAD_GROW_GRAD2D;
        }
        (panel.steps, panel.factor, panel.backend) = (steps, factor, backend);
        panel.mode = TrainMode::Scene;
        panel.unfold = true;
        panel
            .monitor
            .start(difix3d::jobs::train::spawn(config, self.gpu.clone(), backend));
    }

    /// Takes the training thread's events: progress, snapshots for the view, the end.
    pub(super) fn poll_training(&mut self) {
        let polled = self.train.monitor.poll();
        if let Some(splats) = polled.snapshot {
            self.show_splats(splats);
        }
        if let Some(Ok(Finished::Difix(s))) = &polled.done {
            let eval = s.evals.last().map_or(String::new(), |e| {
                format!(", test PSNR {:.2} dB, LPIPS {:.4}", e.psnr, e.lpips)
            });
            self.train.monitor.message = Some(Ok(format!(
                "{} after {} steps{eval}; model in {}",
                if s.stopped_early { "Stopped" } else { "Done" },
                s.steps,
                s.checkpoint.display()
            )));
            self.train.difix_done = Some(s.clone());
        }
        if let Some(Ok(Finished::Train(s))) = polled.done {
            let psnr = |p: Option<f64>| p.map_or("n/a".into(), |v| format!("{v:.2} dB"));
            self.train.monitor.message = Some(Ok(format!(
                "{} after {} steps: {} splats, eval PSNR {} -> {}; {}",
                if s.stopped_early { "Stopped" } else { "Done" },
                s.steps,
                s.splats,
                psnr(s.eval_psnr_before),
                psnr(s.eval_psnr_after),
                s.ply.display()
            )));
        }
    }

    /// Shows splats from a running job (training or refinement) in the view.
    pub(super) fn show_splats(&mut self, splats: Arc<difix3d::scene::Splats>) {
        if let Err(e) = self.viewport.set_splats(&self.gpu, &splats) {
            self.toast(format!("cannot show the job's splats: {e}"));
            return;
        }
        // Follow the job's SH degree unless the user chose a lower one.
        let shown_max = self.scene.as_ref().map_or(0, |s| s.sh_degree);
        if self.settings.sh_degree >= shown_max {
            self.settings.sh_degree = splats.sh_degree;
        }
        if let Some(scene) = &mut self.scene {
            scene.splat_count = splats.len();
            scene.sh_degree = splats.sh_degree;
        }
        self.splats = Some(splats);
    }
}

/// `runs/DATASET_NAME` + `suffix`.
pub(super) fn default_run_folder(root: &std::path::Path, suffix: &str) -> String {
    let name = root
        .file_name()
        .map_or("scene".into(), |n| n.to_string_lossy().into_owned());
    format!("runs/{name}{suffix}")
}

pub(super) fn run_folder_ui(ui: &mut egui::Ui, out: &mut String) {
    ui.horizontal(|ui| {
        ui.label("Run folder");
        ui.add(egui::TextEdit::singleline(out).desired_width(150.0));
    });
}

pub(super) fn backend_ui(ui: &mut egui::Ui, label: &str, backend: &mut BackendKind) {
    egui::ComboBox::from_label(label)
        .selected_text(backend.to_string())
        .show_ui(ui, |ui| {
            for kind in [BackendKind::Cuda, BackendKind::Wgpu, BackendKind::Cpu] {
                ui.selectable_value(backend, kind, kind.to_string());
            }
        });
}

/// Which downscaled image folder (`images_N/`) a run trains on.
pub(super) fn factor_ui(ui: &mut egui::Ui, id: &str, factor: &mut u32) {
    egui::ComboBox::from_id_salt(id)
        .selected_text(format!("images ÷{factor}"))
        .show_ui(ui, |ui| {
            for f in [1, 2, 4, 8] {
                ui.selectable_value(factor, f, format!("images ÷{f}"));
            }
        });
}
