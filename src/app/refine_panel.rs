//! The Refinement panel: the Difix3D progressive update of the scene on screen with the open
//! dataset, as a background job (the same refiner as `difix3d refine`). It shows the round, the
//! progress bar, the loss/PSNR plot and raw vs fixed thumbnails of the newest novel views; the view
//! follows the splats as they improve and stays free to fly.

use std::path::PathBuf;

use difix3d::jobs::train::Finished;
use difix3d::nn::backend::BackendKind;
use difix3d::refine::refiner::{RefineConfig, SceneSource, Targets};
use difix3d::refine::round::RoundEvent;

use super::job_monitor::JobMonitor;
use super::train_panel::{backend_ui, default_run_folder, factor_ui, run_folder_ui};
use super::ViewerApp;

/// Where the novel cameras head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetChoice {
    Eval,
    /// The Record panel's camera path.
    RecordPath,
}

/// Settings a refinement starts with from the command line (`difix3d view --refine-steps ...`).
#[derive(Clone, Debug)]
pub struct RefineStart {
    pub steps: usize,
    pub every: usize,
    pub factor: u32,
    pub model: PathBuf,
    pub backend: BackendKind,
}

pub struct RefinePanel {
    model: String,
    reference: bool,
    targets: TargetChoice,
    path_samples: usize,
    steps: usize,
    every: usize,
    distance: f32,
    factor: u32,
    out: String,
    backend: BackendKind,
    pub monitor: JobMonitor,
    /// "round 2: fixing 3/8" while a round runs, "round 2 done" after.
    round_status: Option<String>,
    /// Raw vs fixed of the newest round.
    thumbnails: Vec<(egui::TextureHandle, egui::TextureHandle)>,
    /// Rounds finished in this run, and whether the run has ended.
    pub rounds_done: usize,
    pub finished: bool,
    pub unfold: bool,
}

impl Default for RefinePanel {
    fn default() -> Self {
        Self {
            model: String::new(),
            reference: true,
            targets: TargetChoice::Eval,
            path_samples: 16,
            steps: 30_000,
            every: 2000,
            distance: 0.5,
            factor: 4,
            out: String::new(),
            backend: BackendKind::Wgpu,
            monitor: JobMonitor::default(),
            round_status: None,
            thumbnails: Vec::new(),
            rounds_done: 0,
            finished: false,
            unfold: false,
        }
    }
}

impl ViewerApp {
    pub(super) fn refine_panel_ui(&mut self, ui: &mut egui::Ui) {
        let (Some(dataset), Some(splats)) = (self.dataset.clone(), self.splats.clone()) else {
            ui.label("Open a dataset folder, then the trained scene (.ply), to refine the scene with Difix.");
            return;
        };
        if self.refine.model.is_empty() {
            self.refine.model = self.fix.model.clone();
        }
        let panel = &mut self.refine;
        if panel.out.is_empty() {
            panel.out = default_run_folder(&dataset.root, "_refined");
        }
        ui.label(format!(
            "Refines the scene on screen ({} splats) with {}",
            splats.len(),
            dataset.root.file_name().unwrap_or_default().to_string_lossy()
        ));
        ui.add_enabled_ui(!panel.monitor.running(), |ui| {
            ui.horizontal(|ui| {
                ui.label("Difix model");
                ui.add(egui::TextEdit::singleline(&mut panel.model).desired_width(150.0));
            });
            ui.checkbox(&mut panel.reference, "nearest training photo as reference");
            ui.horizontal(|ui| {
                ui.label("toward");
                ui.selectable_value(&mut panel.targets, TargetChoice::Eval, "eval cameras");
                ui.selectable_value(&mut panel.targets, TargetChoice::RecordPath, "camera path");
            });
            if panel.targets == TargetChoice::RecordPath {
                ui.add(
                    egui::DragValue::new(&mut panel.path_samples)
                        .range(1..=256)
                        .prefix("targets along the path "),
                );
            }
            ui.horizontal(|ui| {
                ui.add(
                    egui::DragValue::new(&mut panel.steps)
                        .range(1..=1_000_000)
                        .prefix("steps "),
                );
                ui.add(
                    egui::DragValue::new(&mut panel.every)
                        .range(1..=100_000)
                        .prefix("round every "),
                );
            });
            ui.horizontal(|ui| {
                ui.add(
                    egui::DragValue::new(&mut panel.distance)
                        .range(0.01..=10.0)
                        .speed(0.01)
                        .prefix("move "),
                );
                factor_ui(ui, "refine factor", &mut panel.factor);
            });
            run_folder_ui(ui, &mut panel.out);
            backend_ui(ui, "Difix + loss backend", &mut panel.backend);
        });
        if panel.monitor.controls_ui(ui, "▶ Refine") {
            self.start_refine();
        }
        let panel = &self.refine;
        if let Some(status) = &panel.round_status {
            ui.label(status);
        }
        panel.monitor.progress_ui(ui);
        if !panel.thumbnails.is_empty() {
            ui.label("newest novel views: render | fixed");
            let width = (ui.available_width() / 2.0 - 8.0).clamp(40.0, 160.0);
            for (raw, fixed) in &panel.thumbnails {
                ui.horizontal(|ui| {
                    for texture in [raw, fixed] {
                        let [w, h] = texture.size();
                        let size = egui::vec2(width, width * h as f32 / w.max(1) as f32);
                        ui.add(egui::Image::new((texture.id(), size)));
                    }
                });
            }
        }
    }

    /// Starts refining the scene on screen with the open dataset and the panel's settings.
    pub(super) fn start_refine(&mut self) {
        let (Some(dataset), Some(splats)) = (&self.dataset, &self.splats) else {
            return;
        };
        let panel = &mut self.refine;
        if panel.out.trim().is_empty() {
            panel.out = default_run_folder(&dataset.root, "_refined");
        }
        let out = PathBuf::from(panel.out.trim());
        let mut config = RefineConfig::new(
            dataset.root.clone(),
            SceneSource::Splats(splats.clone()),
            PathBuf::from(panel.model.trim()),
            out.clone(),
        );
        config.factor = panel.factor;
        config.reference = panel.reference;
        config.steps = panel.steps;
        config.every = panel.every;
        config.distance = panel.distance;
        if panel.targets == TargetChoice::RecordPath {
            // The path the Record panel holds now, saved with the run so it can be repeated.
            let file = out.join("targets.json");
            let saved = std::fs::create_dir_all(&out)
                .map_err(|e| e.to_string())
                .and_then(|_| self.record.path.save(&file).map_err(|e| e.to_string()));
            if let Err(e) = saved {
                panel.monitor.message = Some(Err(format!("cannot use the camera path: {e}")));
                return;
            }
            // Already in the scene's world (a nerfstudio path went through its dataparser transform
            // when the Record panel loaded it).
            config.targets = Targets::Path {
                file,
                samples: panel.path_samples,
                dataparser: None,
            };
        }
        panel.round_status = None;
        panel.thumbnails.clear();
        panel.rounds_done = 0;
        panel.finished = false;
        panel.unfold = true;
        let handle = difix3d::jobs::train::spawn_refine(config, self.gpu.clone(), panel.backend);
        panel.monitor.start(handle);
    }

    /// Applies the refinement's settings from the command line and starts it.
    pub(super) fn start_refine_with(&mut self, start: RefineStart) {
        let panel = &mut self.refine;
        panel.steps = start.steps;
        panel.every = start.every;
        panel.factor = start.factor;
        panel.model = start.model.display().to_string();
        panel.backend = start.backend;
        self.start_refine();
    }

    /// Takes the refinement's events: rounds (with thumbnails), snapshots for the view, the end.
    pub(super) fn poll_refine(&mut self, ctx: &egui::Context) {
        let polled = self.refine.monitor.poll();
        if let Some(splats) = polled.snapshot {
            self.show_splats(splats);
        }
        let panel = &mut self.refine;
        for event in polled.rounds {
            match event {
                RoundEvent::Started { round, views, .. } => {
                    panel.round_status = Some(format!("round {}: rendering and fixing {views} novel views", round + 1));
                }
                RoundEvent::Fixed { round, done, total } => {
                    panel.round_status = Some(format!("round {}: fixed {done}/{total} novel views", round + 1));
                }
                RoundEvent::Done(report) => {
                    panel.rounds_done += 1;
                    panel.round_status = Some(format!(
                        "round {} done at step {}: {} views (render {:.1} s, Difix {:.1} s)",
                        report.round + 1,
                        report.step,
                        report.views,
                        report.render.as_secs_f64(),
                        report.fix.as_secs_f64()
                    ));
                    panel.thumbnails = report
                        .thumbnails
                        .iter()
                        .enumerate()
                        .map(|(i, (raw, fixed))| {
                            let texture = |name: &str, image: &image::RgbImage| {
                                let size = [image.width() as usize, image.height() as usize];
                                ctx.load_texture(
                                    format!("refine {name} {i}"),
                                    egui::ColorImage::from_rgb(size, image.as_raw()),
                                    egui::TextureOptions::LINEAR,
                                )
                            };
                            (texture("raw", raw), texture("fixed", fixed))
                        })
                        .collect();
                }
            }
        }
        match polled.done {
            Some(Ok(Finished::Refine(s))) => {
                panel.finished = true;
                // Bring the results (table, thumbnails) into sight.
                panel.unfold = true;
                let psnr = |r: &Option<difix3d::train::eval::EvalReport>| {
                    r.as_ref().map_or("n/a".into(), |r| format!("{:.2} dB", r.psnr))
                };
                panel.monitor.message = Some(Ok(format!(
                    "{} after {} steps, {} rounds. Eval PSNR: 3DGS {} · +Difix3D {} · +Difix3D+ {}; {}",
                    if s.stopped_early { "Stopped" } else { "Done" },
                    s.steps,
                    s.rounds,
                    psnr(&s.eval.baseline),
                    psnr(&s.eval.refined),
                    psnr(&s.eval.refined_post),
                    s.ply.display()
                )));
            }
            Some(_) => panel.finished = true,
            None => {}
        }
    }
}
