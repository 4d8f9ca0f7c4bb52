//! What the Training and Refinement panels share: a background run's handle, its pause/save/stop
//! buttons, the progress bar, the loss plot (with PSNR for scenes, the LPIPS term for Difix
//! fine-tuning), and the events it sends.

use std::sync::Arc;

use difix3d::difix::train::trainer::{DifixEvalReport, DifixStepReport};
use difix3d::jobs::train::{Finished, TrainCommand, TrainEvent, TrainHandle};
use difix3d::nerfacto::trainer::NerfactoStepReport;
use difix3d::refine::nerfacto::{BatchSource, NerfactoRefineStep, ValPoint};
use difix3d::refine::round::RoundEvent;
use difix3d::scene::Splats;
use difix3d::train::trainer::StepReport;

use crate::allocator::KeepFreedMemory;

/// Plot points kept; older history is thinned out beyond this.
const MAX_POINTS: usize = 2000;

#[derive(Default)]
pub struct JobMonitor {
    handle: Option<TrainHandle>,
    /// (step, loss, PSNR) for scenes; (step, loss, LPIPS term) for Difix fine-tuning.
    history: Vec<(usize, f32, f32)>,
    pub last: Option<StepReport>,
    pub last_difix: Option<DifixStepReport>,
    pub last_nerfacto: Option<NerfactoStepReport>,
    pub last_nerfacto_refine: Option<NerfactoRefineStep>,
    /// The newest evaluation of a Difix fine-tuning run on its test pairs.
    pub last_eval: Option<DifixEvalReport>,
    /// The newest measurement of a nerfacto refinement's eval views.
    pub last_val: Option<ValPoint>,
    paused: bool,
    pub message: Option<Result<String, String>>,
    /// The step of the splats the view shows, once a snapshot has arrived.
    pub snapshot_step: Option<usize>,
    /// Held while the run goes on: its steps reuse freed memory instead of faulting fresh pages in.
    memory: Option<KeepFreedMemory>,
}

/// What one poll brought besides steps.
#[derive(Default)]
pub struct Polled {
    /// The newest splats, for the view.
    pub snapshot: Option<Arc<Splats>>,
    pub rounds: Vec<RoundEvent>,
    /// The run ended (its handle is gone).
    pub done: Option<Result<Finished, String>>,
}

impl JobMonitor {
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

    /// Follows a new run, forgetting the last one.
    pub fn start(&mut self, handle: TrainHandle) {
        *self = Self {
            handle: Some(handle),
            memory: Some(KeepFreedMemory::hold()),
            ..Self::default()
        };
    }

    /// Takes the run's events: steps go to the plot, the rest is returned.
    pub fn poll(&mut self) -> Polled {
        let mut polled = Polled::default();
        let Some(events) = self.handle.as_ref().map(|h| h.events.clone()) else {
            return polled;
        };
        while let Ok(event) = events.try_recv() {
            match event {
                TrainEvent::Step(r) => {
                    self.record((r.step, r.loss, r.psnr));
                    self.last = Some(r);
                }
                TrainEvent::DifixStep(r) => {
                    self.record((r.step, r.losses.total, r.losses.lpips));
                    self.last_difix = Some(r);
                }
                TrainEvent::DifixEval(r) => self.last_eval = Some(r),
                TrainEvent::NerfactoVal(point) => self.last_val = Some(point),
                TrainEvent::NerfactoStep(r) => {
                    self.record((r.step, r.losses.total, r.losses.psnr));
                    self.last_nerfacto = Some(r);
                }
                TrainEvent::NerfactoRefineStep(r) => {
                    self.record((r.step, r.losses.total, r.losses.psnr));
                    self.last_nerfacto_refine = Some(r);
                }
                TrainEvent::Snapshot(splats) => polled.snapshot = Some(splats),
                TrainEvent::Saved(path) => self.message = Some(Ok(format!("Saved {}", path.display()))),
                TrainEvent::Paused(p) => self.paused = p,
                TrainEvent::Round(event) => polled.rounds.push(event),
                TrainEvent::Done(result) => polled.done = Some(result),
            }
        }
        if polled.snapshot.is_some() {
            self.snapshot_step = self.last.as_ref().map(|r| r.step);
        }
        if let Some(result) = &polled.done {
            self.handle = None;
            self.memory = None;
            self.paused = false;
            if let Err(e) = result {
                self.message = Some(Err(e.clone()));
            }
        }
        polled
    }

    fn record(&mut self, point: (usize, f32, f32)) {
        self.history.push(point);
        if self.history.len() > MAX_POINTS {
            let thinned: Vec<_> = self.history.iter().step_by(2).copied().collect();
            self.history = thinned;
        }
    }

    /// Pause/resume, save and stop while running; `start_label` (returns true when clicked) otherwise.
    pub fn controls_ui(&self, ui: &mut egui::Ui, start_label: &str) -> bool {
        let Some(handle) = &self.handle else {
            return ui.button(start_label).clicked();
        };
        ui.horizontal(|ui| {
            let (label, command) = if self.paused {
                ("▶ Resume", TrainCommand::Resume)
            } else {
                ("⏸ Pause", TrainCommand::Pause)
            };
            if ui.button(label).clicked() {
                let _ = handle.commands.send(command);
            }
            if handle.saves && ui.button("Save").clicked() {
                let _ = handle.commands.send(TrainCommand::Save);
            }
            if ui.button("⏹ Stop").clicked() {
                let _ = handle.commands.send(TrainCommand::Stop);
                // A paused run has to wake up to stop.
                let _ = handle.commands.send(TrainCommand::Resume);
            }
        });
        false
    }

    /// The progress bar, the latest step's numbers, the plot and the last message.
    pub fn progress_ui(&self, ui: &mut egui::Ui) {
        let bar = |ui: &mut egui::Ui, step: usize, steps: usize| {
            ui.add(egui::ProgressBar::new(step as f32 / steps.max(1) as f32).text(format!("{step}/{steps}")));
        };
        if let Some(r) = &self.last {
            bar(ui, r.step, r.steps);
            ui.label(format!(
                "loss {:.4} · PSNR {:.2} dB · {} splats · {:.1} it/s",
                r.loss, r.psnr, r.splats, r.steps_per_second
            ));
        }
        if let Some(r) = &self.last_difix {
            bar(ui, r.step, r.steps);
            let gram = r.losses.gram.map_or(String::new(), |g| format!(" · Gram {g:.4}"));
            ui.label(format!(
                "loss {:.4} (L2 {:.4} · LPIPS {:.4}{gram}) · |g| {:.3} · {:.2} it/s",
                r.losses.total, r.losses.l2, r.losses.lpips, r.grad_norm, r.steps_per_second
            ));
        }
        if let Some(r) = &self.last_nerfacto {
            bar(ui, r.step, r.steps);
            ui.label(format!(
                "loss {:.4} · PSNR {:.2} dB · {:.0} rays/s",
                r.losses.total, r.losses.psnr, r.rays_per_second
            ));
        }
        if let Some(r) = &self.last_nerfacto_refine {
            let done = r.step + 1 - r.first_step;
            ui.add(
                egui::ProgressBar::new(done as f32 / (r.last_step + 1 - r.first_step).max(1) as f32)
                    .text(format!("step {}/{}", r.step, r.last_step)),
            );
            let source = match r.source {
                BatchSource::Photos => "photos".to_string(),
                BatchSource::Novel { set } => format!("novel set {}", set + 1),
            };
            ui.label(format!(
                "loss {:.4} · PSNR {:.2} dB ({source}) · {:.0} rays/s",
                r.losses.total, r.losses.psnr, r.rays_per_second
            ));
        }
        if let Some(v) = &self.last_val {
            ui.label(format!(
                "eval views at step {}: PSNR {:.2} dB · SSIM {:.3}",
                v.step, v.psnr, v.ssim
            ));
        }
        if let Some(e) = &self.last_eval {
            ui.label(format!(
                "test pairs at step {}: PSNR {:.2} dB · SSIM {:.3} · LPIPS {:.4}",
                e.step, e.psnr, e.ssim, e.lpips
            ));
        }
        if self.history.len() >= 2 {
            let second = if self.last_difix.is_some() {
                Series {
                    name: "LPIPS",
                    unit: "",
                    decimals: 3,
                }
            } else {
                Series {
                    name: "PSNR",
                    unit: " dB",
                    decimals: 1,
                }
            };
            plot_ui(ui, &self.history, second);
        }
        match &self.message {
            Some(Ok(m)) => {
                ui.label(m);
            }
            Some(Err(m)) => {
                ui.colored_label(egui::Color32::from_rgb(230, 90, 90), m);
            }
            None => {}
        }
    }
}

/// How the plot labels its second curve.
struct Series {
    name: &'static str,
    unit: &'static str,
    decimals: usize,
}

/// Loss (orange, left scale) and the second series (blue, right scale) over the steps.
fn plot_ui(ui: &mut egui::Ui, history: &[(usize, f32, f32)], second: Series) {
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
    let (lo, hi) = series(|h| h.2, blue);
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
        format!("{} {lo:.d$}–{hi:.d$}{}", second.name, second.unit, d = second.decimals),
        font,
        blue,
    );
}
