//! The Training panel: trains the open dataset in the background (the same trainer as
//! `difix3d train`), with pause/resume/save/stop, a progress bar, a loss/PSNR plot, and the view
//! following the splats as they train.

use std::sync::Arc;

use difix3d::difix::backend::BackendKind;
use difix3d::jobs::train::{TrainCommand, TrainEvent, TrainHandle};
use difix3d::train::trainer::{StepReport, TrainConfig};

use super::ViewerApp;

/// Plot points kept; older history is thinned out beyond this.
const MAX_POINTS: usize = 2000;

pub struct TrainPanel {
    steps: usize,
    factor: u32,
    out: String,
    backend: BackendKind,
    handle: Option<TrainHandle>,
    /// (step, loss, psnr)
    history: Vec<(usize, f32, f32)>,
    last: Option<StepReport>,
    paused: bool,
    message: Option<Result<String, String>>,
    /// The step of the splats the view shows, once a snapshot has arrived.
    snapshot_step: Option<usize>,
    /// Unfold the panel on the next frame.
    pub unfold: bool,
}

impl Default for TrainPanel {
    fn default() -> Self {
        Self {
            steps: 30_000,
            factor: 4,
            out: String::new(),
            backend: BackendKind::Wgpu,
            handle: None,
            history: Vec::new(),
            last: None,
            paused: false,
            message: None,
            snapshot_step: None,
            unfold: false,
        }
    }
}

impl TrainPanel {
    pub fn running(&self) -> bool {
        self.handle.is_some()
    }

    /// Why the last run failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match &self.message {
            Some(Err(m)) if self.handle.is_none() => Some(m),
            _ => None,
        }
    }

    pub fn snapshot_step(&self) -> Option<usize> {
        self.snapshot_step
    }
}

impl ViewerApp {
    pub(super) fn train_panel_ui(&mut self, ui: &mut egui::Ui) {
        let Some(dataset) = self.dataset.clone() else {
            ui.label("Open a dataset folder (Scene panel) to train on it.");
            return;
        };
        let panel = &mut self.train;
        if panel.out.is_empty() {
            panel.out = default_run_folder(&dataset.root);
        }
        ui.add_enabled_ui(!panel.running(), |ui| {
            ui.horizontal(|ui| {
                ui.add(
                    egui::DragValue::new(&mut panel.steps)
                        .range(10..=1_000_000)
                        .prefix("steps "),
                );
                egui::ComboBox::from_id_salt("factor")
                    .selected_text(format!("images ÷{}", panel.factor))
                    .show_ui(ui, |ui| {
                        for f in [1, 2, 4, 8] {
                            ui.selectable_value(&mut panel.factor, f, format!("images ÷{f}"));
                        }
                    });
            });
            ui.horizontal(|ui| {
                ui.label("Run folder");
                ui.add(egui::TextEdit::singleline(&mut panel.out).desired_width(150.0));
            });
            egui::ComboBox::from_label("loss backend")
                .selected_text(panel.backend.to_string())
                .show_ui(ui, |ui| {
                    for kind in [BackendKind::Cuda, BackendKind::Wgpu, BackendKind::Cpu] {
                        ui.selectable_value(&mut panel.backend, kind, kind.to_string());
                    }
                });
        });
        let mut start = false;
        match &panel.handle {
            None => start = ui.button("▶ Train").clicked(),
            Some(handle) => {
                ui.horizontal(|ui| {
                    let (label, command) = if panel.paused {
                        ("▶ Resume", TrainCommand::Resume)
                    } else {
                        ("⏸ Pause", TrainCommand::Pause)
                    };
                    if ui.button(label).clicked() {
                        let _ = handle.commands.send(command);
                    }
                    if ui.button("Save").clicked() {
                        let _ = handle.commands.send(TrainCommand::Save);
                    }
                    if ui.button("⏹ Stop").clicked() {
                        let _ = handle.commands.send(TrainCommand::Stop);
                        // A paused run has to wake up to stop.
                        let _ = handle.commands.send(TrainCommand::Resume);
                    }
                });
            }
        }
        if start {
            let (steps, factor, backend) = (panel.steps, panel.factor, panel.backend);
            self.start_train(steps, factor, backend);
        }
        let panel = &self.train;
        if let Some(r) = &panel.last {
            ui.add(
                egui::ProgressBar::new(r.step as f32 / r.steps.max(1) as f32).text(format!("{}/{}", r.step, r.steps)),
            );
            ui.label(format!(
                "loss {:.4} · PSNR {:.2} dB · {} splats · {:.1} it/s",
                r.loss, r.psnr, r.splats, r.steps_per_second
            ));
        }
        if panel.history.len() >= 2 {
            plot_ui(ui, &panel.history);
        }
        match &panel.message {
            Some(Ok(m)) => {
                ui.label(m);
            }
            Some(Err(m)) => {
                ui.colored_label(egui::Color32::from_rgb(230, 90, 90), m);
            }
            None => {}
        }
    }

    /// Starts training the open dataset.
    pub(super) fn start_train(&mut self, steps: usize, factor: u32, backend: BackendKind) {
        let Some(dataset) = &self.dataset else { return };
        let panel = &mut self.train;
        if panel.out.is_empty() {
            panel.out = default_run_folder(&dataset.root);
        }
        let mut config = TrainConfig::new(dataset.root.clone(), panel.out.trim().into());
        config.steps = steps;
        config.factor = factor;
        (panel.steps, panel.factor, panel.backend) = (steps, factor, backend);
        panel.history.clear();
        panel.last = None;
        panel.message = None;
        panel.paused = false;
        panel.snapshot_step = None;
        panel.unfold = true;
        panel.handle = Some(difix3d::jobs::train::spawn(config, self.gpu.clone(), backend));
    }

    /// Takes the training thread's events: progress, snapshots for the view, the end.
    pub(super) fn poll_training(&mut self) {
        let Some(handle) = &self.train.handle else { return };
        let mut snapshot = None;
        let mut done = None;
        while let Ok(event) = handle.events.try_recv() {
            match event {
                TrainEvent::Step(r) => {
                    let history = &mut self.train.history;
                    history.push((r.step, r.loss, r.psnr));
                    if history.len() > MAX_POINTS {
                        let thinned: Vec<_> = history.iter().step_by(2).copied().collect();
                        *history = thinned;
                    }
                    self.train.last = Some(r);
                }
                TrainEvent::Snapshot(splats) => snapshot = Some(splats),
                TrainEvent::Saved(path) => self.train.message = Some(Ok(format!("Saved {}", path.display()))),
                TrainEvent::Paused(p) => self.train.paused = p,
                TrainEvent::Done(result) => done = Some(result),
            }
        }
        if let Some(splats) = snapshot {
            self.train.snapshot_step = self.train.last.as_ref().map(|r| r.step);
            self.show_splats(splats);
        }
        if let Some(result) = done {
            self.train.handle = None;
            self.train.paused = false;
            self.train.message = Some(result.map(|s| {
                let psnr = |p: Option<f64>| p.map_or("n/a".into(), |v| format!("{v:.2} dB"));
                format!(
                    "{} after {} steps: {} splats, eval PSNR {} -> {}; {}",
                    if s.stopped_early { "Stopped" } else { "Done" },
                    s.steps,
                    s.splats,
                    psnr(s.eval_psnr_before),
                    psnr(s.eval_psnr_after),
                    s.ply.display()
                )
            }));
        }
    }

    fn show_splats(&mut self, splats: Arc<difix3d::scene::Splats>) {
        self.viewport.set_splats(&self.gpu, &splats);
        // Follow the trainer's SH degree unless the user chose a lower one.
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

fn default_run_folder(root: &std::path::Path) -> String {
    let name = root
        .file_name()
        .map_or("scene".into(), |n| n.to_string_lossy().into_owned());
    format!("runs/{name}")
}

/// Loss (orange, left scale) and PSNR (blue, right scale) over the steps.
fn plot_ui(ui: &mut egui::Ui, history: &[(usize, f32, f32)]) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(ui.available_width().min(280.0), 110.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 4.0, egui::Color32::from_gray(24));
    let first = history[0].0 as f32;
    let last = history[history.len() - 1].0 as f32;
    let span = (last - first).max(1.0);
    let series = |value: fn(&(usize, f32, f32)) -> f32, colour: egui::Color32| {
        let (lo, hi) = history
            .iter()
            .map(value)
            .filter(|v| v.is_finite())
            .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let range = (hi - lo).max(1e-6);
        let points: Vec<egui::Pos2> = history
            .iter()
            .map(|h| {
                let x = rect.min.x + 4.0 + (h.0 as f32 - first) / span * (rect.width() - 8.0);
                let y = rect.max.y - 4.0 - (value(h) - lo) / range * (rect.height() - 18.0);
                egui::pos2(x, y)
            })
            .collect();
        painter.add(egui::Shape::line(points, egui::Stroke::new(1.5, colour)));
        (lo, hi)
    };
    let orange = egui::Color32::from_rgb(240, 150, 60);
    let blue = egui::Color32::from_rgb(90, 170, 250);
    let (loss_lo, loss_hi) = series(|h| h.1, orange);
    let (psnr_lo, psnr_hi) = series(|h| h.2, blue);
    let font = egui::FontId::monospace(10.0);
    painter.text(
        rect.left_top() + egui::vec2(4.0, 2.0),
        egui::Align2::LEFT_TOP,
        format!("loss {loss_lo:.3}–{loss_hi:.3}"),
        font.clone(),
        orange,
    );
    painter.text(
        rect.right_top() + egui::vec2(-4.0, 2.0),
        egui::Align2::RIGHT_TOP,
        format!("PSNR {psnr_lo:.1}–{psnr_hi:.1} dB"),
        font,
        blue,
    );
}
