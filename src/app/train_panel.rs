//! The Training panel: trains the open dataset in the background (the same trainer as
//! `difix3d train`), with pause/resume/save/stop, a progress bar, a loss/PSNR plot, and the view
//! following the splats as they train. Its NeRF mode trains nerfstudio's nerfacto on the dataset
//! instead (`difix3d train --method nerfacto`) and opens the trained field in the view at the end;
//! its Difix mode fine-tunes the fixer (`difix_train_panel`).

use std::path::PathBuf;
use std::sync::Arc;

use difix3d::data::Dataset;
use difix3d::jobs::train::Finished;
use difix3d::nerfacto::camera_optimizer::Mode as CameraOptimizerMode;
use difix3d::nerfacto::trainer::NerfactoRunConfig;
use difix3d::nerfacto::NerfactoConfig;
use difix3d::nn::backend::BackendKind;
use difix3d::train::densify::DensifyConfig;
use difix3d::train::trainer::TrainConfig;

use super::actions::{Action, Jobs, Shared};
use super::difix_train_panel::{DifixTrainPanel, DifixTrainStart};
use super::job_monitor::JobMonitor;

/// What the Training panel trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainMode {
    /// A Gaussian-splat scene on the open dataset.
    Scene,
    /// A nerfacto NeRF on the open dataset.
    Nerfacto,
    /// Difix itself, on degraded/clean image pairs.
    Difix,
}

pub struct TrainPanel {
    pub mode: TrainMode,
    /// The Difix mode's form and its last finished run.
    pub difix: DifixTrainPanel,
    steps: usize,
    factor: u32,
    out: String,
    backend: BackendKind,
    /// Densify from absolute 2D-mean gradients (gsplat's absgrad; `difix3d train --absgrad`).
    absgrad: bool,
    /// gsplat's antialiased mode (`difix3d train --antialiased`).
    antialiased: bool,
    /// The NeRF mode's own settings.
    pub nerfacto: NerfactoForm,
    pub monitor: JobMonitor,
    /// Unfold the panel on the next frame.
    pub unfold: bool,
}

/// The NeRF mode's settings besides steps and image factor.
pub struct NerfactoForm {
    out: String,
    /// Where nerfacto runs (all of it: field, losses, optimisers).
    backend: BackendKind,
    rays_per_batch: usize,
    /// nerfstudio's camera optimiser (`--camera-optimizer`).
    camera_optimizer: CameraOptimizerMode,
    /// A JSON file of nerfstudio's NerfactoModelConfig names; empty: `ns-train nerfacto`'s model.
    model_settings: String,
    /// The dataset of the running (or last) run, opened with the trained field at the end.
    data: Option<PathBuf>,
}

impl Default for NerfactoForm {
    fn default() -> Self {
        Self {
            out: String::new(),
            backend: BackendKind::Cpu,
            rays_per_batch: 4096,
            camera_optimizer: CameraOptimizerMode::SO3xR3,
            model_settings: String::new(),
            data: None,
        }
    }
}

/// Settings a nerfacto training starts with from the command line (`difix3d view --train-method
/// nerfacto`).
#[derive(Clone, Debug)]
pub struct NerfactoStart {
    pub steps: usize,
    pub factor: u32,
    pub backend: BackendKind,
    /// The model settings file (`--nerfacto-config`), if any.
    pub model_settings: Option<PathBuf>,
}

impl Default for TrainPanel {
    fn default() -> Self {
        Self {
            mode: TrainMode::Scene,
            difix: DifixTrainPanel::default(),
            steps: 30_000,
            factor: 4,
            out: String::new(),
            backend: BackendKind::Wgpu,
            absgrad: false,
            antialiased: false,
            nerfacto: NerfactoForm::default(),
            monitor: JobMonitor::default(),
            unfold: false,
        }
    }
}

impl TrainPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, shared: Shared, jobs: &Jobs, out: &mut Vec<Action>) {
        ui.add_enabled_ui(!self.monitor.running(), |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.mode, TrainMode::Scene, "Scene (3DGS)");
                ui.selectable_value(&mut self.mode, TrainMode::Nerfacto, "NeRF (nerfacto)");
                ui.selectable_value(&mut self.mode, TrainMode::Difix, "Difix (fine-tune)");
            });
        });
        match self.mode {
            TrainMode::Scene => self.scene_train_ui(ui, shared.dataset, jobs),
            TrainMode::Nerfacto => self.nerfacto_train_ui(ui, shared.dataset, jobs),
            TrainMode::Difix => {
                if self.difix.ui(ui, &mut self.monitor, jobs, out) {
                    self.started_difix();
                }
            }
        }
    }

    fn scene_train_ui(&mut self, ui: &mut egui::Ui, dataset: Option<&Arc<Dataset>>, jobs: &Jobs) {
        let Some(dataset) = dataset else {
            ui.label("Open a dataset folder (Scene panel) to train on it.");
            return;
        };
        if self.out.is_empty() {
            self.out = default_run_folder(&dataset.root, "");
        }
        ui.add_enabled_ui(!self.monitor.running(), |ui| {
            steps_and_factor_ui(ui, "train factor", &mut self.steps, &mut self.factor);
            run_folder_ui(ui, &mut self.out);
            backend_ui(ui, "loss backend", &mut self.backend);
            ui.checkbox(&mut self.absgrad, "absgrad").on_hover_text(
                "Densify from absolute 2D-mean gradients (gsplat's absgrad / AbsGS, growth threshold 0.0008)",
            );
            ui.checkbox(&mut self.antialiased, "antialiased").on_hover_text(
                "gsplat's antialiased mode (Mip-Splatting's 2D filter): the scene holds up when drawn at \
                 other resolutions, and must be drawn antialiased (the view follows)",
            );
        });
        if self.monitor.controls_ui(ui, "▶ Train") {
            let (steps, factor, backend) = (self.steps, self.factor, self.backend);
            self.start(dataset, steps, factor, backend, jobs);
        }
        self.monitor.progress_ui(ui);
    }

    fn nerfacto_train_ui(&mut self, ui: &mut egui::Ui, dataset: Option<&Arc<Dataset>>, jobs: &Jobs) {
        let Some(dataset) = dataset else {
            ui.label("Open a dataset folder (Scene panel) to train a NeRF on it.");
            return;
        };
        let form = &mut self.nerfacto;
        if form.out.is_empty() {
            form.out = default_run_folder(&dataset.root, "_nerfacto");
        }
        ui.add_enabled_ui(!self.monitor.running(), |ui| {
            steps_and_factor_ui(ui, "nerfacto factor", &mut self.steps, &mut self.factor);
            ui.add(
                egui::DragValue::new(&mut form.rays_per_batch)
                    .range(64..=65_536)
                    .prefix("rays per batch "),
            );
            camera_optimizer_ui(ui, "nerfacto camera optimiser", &mut form.camera_optimizer);
            run_folder_ui(ui, &mut form.out);
            ui.horizontal(|ui| {
                ui.label("Model settings");
                ui.add(
                    egui::TextEdit::singleline(&mut form.model_settings)
                        .hint_text("ns-train nerfacto's")
                        .desired_width(130.0),
                )
                .on_hover_text(
                    "A JSON file with nerfstudio's NerfactoModelConfig names (num_levels, hidden_dim, ...); \
                     empty: ns-train nerfacto's model",
                );
            });
            backend_ui(ui, "nerfacto backend", &mut form.backend);
        });
        if self.monitor.controls_ui(ui, "▶ Train NeRF") {
            let settings = form.model_settings.trim();
            let start = NerfactoStart {
                steps: self.steps,
                factor: self.factor,
                backend: form.backend,
                model_settings: (!settings.is_empty()).then(|| settings.into()),
            };
            self.start_nerfacto(dataset, start, jobs);
        }
        self.monitor.progress_ui(ui);
    }

    /// Starts training a nerfacto NeRF on `dataset` (the open one). A model settings file that cannot
    /// be read is the run's failure, shown in the panel.
    pub fn start_nerfacto(&mut self, dataset: &Dataset, start: NerfactoStart, jobs: &Jobs) {
        let form = &mut self.nerfacto;
        if form.out.is_empty() {
            form.out = default_run_folder(&dataset.root, "_nerfacto");
        }
        let mut config = NerfactoRunConfig::new(dataset.root.clone(), form.out.trim().into());
        config.steps = start.steps;
        config.factor = start.factor;
        config.rays_per_batch = form.rays_per_batch;
        (self.steps, self.factor, form.backend) = (start.steps, start.factor, start.backend);
        if let Some(path) = &start.model_settings {
            form.model_settings = path.display().to_string();
        }
        self.mode = TrainMode::Nerfacto;
        self.unfold = true;
        form.data = Some(dataset.root.clone());
        match start.model_settings.as_deref().map(NerfactoConfig::read).transpose() {
            Ok(model) => {
                if let Some(model) = model {
                    config.model = model;
                }
                config.model.camera_optimizer.mode = form.camera_optimizer;
                self.monitor.start(jobs.train_nerfacto(config, start.backend));
            }
            Err(e) => self.monitor.message = Some(Err(e.to_string())),
        }
    }

    /// Starts training `dataset` (the open one).
    pub fn start(&mut self, dataset: &Dataset, steps: usize, factor: u32, backend: BackendKind, jobs: &Jobs) {
        if self.out.is_empty() {
            self.out = default_run_folder(&dataset.root, "");
        }
        let mut config = TrainConfig::new(dataset.root.clone(), self.out.trim().into());
        config.steps = steps;
        config.factor = factor;
        if self.absgrad {
            config.densify.absgrad = true;
            config.densify.grow_grad2d = DensifyConfig::ABSGRAD_GROW_GRAD2D;
        }
        config.antialiased = self.antialiased;
        (self.steps, self.factor, self.backend) = (steps, factor, backend);
        self.mode = TrainMode::Scene;
        self.unfold = true;
        self.monitor.start(jobs.train(config, backend));
    }

    /// Starts fine-tuning Difix from the command line's settings.
    pub fn start_difix(&mut self, start: DifixTrainStart, jobs: &Jobs) {
        if self.difix.start(start, &mut self.monitor, jobs) {
            self.started_difix();
        }
    }

    /// A Difix fine-tuning run started: the panel shows it.
    fn started_difix(&mut self) {
        self.mode = TrainMode::Difix;
        self.unfold = true;
        self.difix.done = None;
    }

    /// Takes the training thread's events: progress, snapshots for the view, the end.
    pub fn poll(&mut self, out: &mut Vec<Action>) {
        let polled = self.monitor.poll();
        if let Some(splats) = polled.snapshot {
            out.push(Action::ShowSplats {
                splats,
                antialiased: self.antialiased,
            });
        }
        if let Some(Ok(Finished::Difix(s))) = &polled.done {
            let eval = s.evals.last().map_or(String::new(), |e| {
                format!(", test PSNR {:.2} dB, LPIPS {:.4}", e.psnr, e.lpips)
            });
            self.monitor.message = Some(Ok(format!(
                "{} after {} steps{eval}; model in {}",
                if s.stopped_early { "Stopped" } else { "Done" },
                s.steps,
                s.checkpoint.display()
            )));
            self.difix.done = Some(s.clone());
        }
        if let Some(Ok(Finished::Nerfacto(s))) = &polled.done {
            let psnr = |p: Option<f64>| p.map_or("n/a".into(), |v| format!("{v:.2} dB"));
            self.monitor.message = Some(Ok(format!(
                "{} after {} steps: eval PSNR {} -> {}; {}",
                if s.stopped_early { "Stopped" } else { "Done" },
                s.steps,
                psnr(s.eval_psnr_before),
                psnr(s.eval_psnr_after),
                s.model.display()
            )));
            // The view opens the trained field, with the dataset it was trained on.
            out.push(Action::Open {
                path: s.model.clone(),
                data: self.nerfacto.data.clone(),
            });
        }
        if let Some(Ok(Finished::Train(s))) = polled.done {
            let psnr = |p: Option<f64>| p.map_or("n/a".into(), |v| format!("{v:.2} dB"));
            self.monitor.message = Some(Ok(format!(
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

/// nerfstudio's camera optimiser for a nerfacto run (`--camera-optimizer`).
pub(super) fn camera_optimizer_ui(ui: &mut egui::Ui, id: &str, mode: &mut CameraOptimizerMode) {
    ui.horizontal(|ui| {
        ui.label("camera optimiser");
        egui::ComboBox::from_id_salt(id)
            .selected_text(format!("{mode:?}"))
            .show_ui(ui, |ui| {
                for m in [
                    CameraOptimizerMode::SO3xR3,
                    CameraOptimizerMode::SE3,
                    CameraOptimizerMode::Off,
                ] {
                    ui.selectable_value(mode, m, format!("{m:?}"));
                }
            });
    })
    .response
    .on_hover_text(
        "Learns a pose correction per training photo while training (nerfstudio's SO3xR3 by default; \
         Difix3D's README runs it off)",
    );
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

/// A run's step count and image factor, on one row.
fn steps_and_factor_ui(ui: &mut egui::Ui, factor_id: &str, steps: &mut usize, factor: &mut u32) {
    ui.horizontal(|ui| {
        ui.add(egui::DragValue::new(steps).range(10..=1_000_000).prefix("steps "));
        factor_ui(ui, factor_id, factor);
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
