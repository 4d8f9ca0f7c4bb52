//! What the Training and Refinement panels share: a background run's handle, its pause/save/stop
//! buttons, the progress bar, the loss/PSNR plot, and the events it sends.

use std::sync::Arc;

use difix3d::jobs::train::{Finished, TrainCommand, TrainEvent, TrainHandle};
use difix3d::refine::round::RoundEvent;
use difix3d::scene::Splats;
use difix3d::train::trainer::StepReport;

/// Plot points kept; older history is thinned out beyond this.
const MAX_POINTS: usize = 2000;

#[derive(Default)]
pub struct JobMonitor {
    handle: Option<TrainHandle>,
    /// (step, loss, psnr)
    history: Vec<(usize, f32, f32)>,
    pub last: Option<StepReport>,
    paused: bool,
    pub message: Option<Result<String, String>>,
    /// The step of the splats the view shows, once a snapshot has arrived.
    pub snapshot_step: Option<usize>,
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
            ..Self::default()
        };
    }

    /// Takes the run's events: steps go to the plot, the rest is returned.
    pub fn poll(&mut self) -> Polled {
        let mut polled = Polled::default();
        let Some(handle) = &self.handle else { return polled };
        while let Ok(event) = handle.events.try_recv() {
            match event {
                TrainEvent::Step(r) => {
                    self.history.push((r.step, r.loss, r.psnr));
                    if self.history.len() > MAX_POINTS {
                        let thinned: Vec<_> = self.history.iter().step_by(2).copied().collect();
                        self.history = thinned;
                    }
                    self.last = Some(r);
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
            self.paused = false;
            if let Err(e) = result {
                self.message = Some(Err(e.clone()));
            }
        }
        polled
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
            if ui.button("Save").clicked() {
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
        if let Some(r) = &self.last {
            ui.add(
                egui::ProgressBar::new(r.step as f32 / r.steps.max(1) as f32).text(format!("{}/{}", r.step, r.steps)),
            );
            ui.label(format!(
                "loss {:.4} · PSNR {:.2} dB · {} splats · {:.1} it/s",
                r.loss, r.psnr, r.splats, r.steps_per_second
            ));
        }
        if self.history.len() >= 2 {
            plot_ui(ui, &self.history);
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
