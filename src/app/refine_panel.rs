//! The Refinement panel: the Difix3D progressive update of the scene on screen with the open
//! dataset, as a background job (the same refiner as `difix3d refine`). It shows the round, the
//! progress bar, the loss/PSNR plot and raw vs fixed thumbnails of the newest novel views; the view
//! follows the splats as they improve and stays free to fly. With a nerfacto NeRF on screen it runs
//! Difix3D's nerfstudio variant instead (`difix3d refine --method nerfacto`) and opens the refined
//! field at the end.

use std::path::PathBuf;

use difix3d::camera_path::CameraPath;
use difix3d::jobs::nerf_view::NerfFiles;
use difix3d::jobs::train::Finished;
use difix3d::nerfacto::camera_optimizer::Mode as CameraOptimizerMode;
use difix3d::nn::backend::BackendKind;
use difix3d::refine::nerfacto::NerfactoRefineConfig;
use difix3d::refine::refiner::{RefineConfig, SceneSource, Targets};
use difix3d::refine::round::RoundEvent;

use super::actions::{Action, Jobs, Shared};
use super::job_monitor::JobMonitor;
use super::train_panel::{backend_ui, camera_optimizer_ui, default_run_folder, factor_ui, run_folder_ui};

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
    /// The running (or last) refinement draws and trains antialiased: the scene on screen was drawn
    /// that way when it started.
    antialiased: bool,
    /// A NeRF's camera optimiser (`--camera-optimizer`).
    camera_optimizer: CameraOptimizerMode,
    pub monitor: JobMonitor,
    /// "round 2: fixing 3/8" while a round runs, "round 2 done" after.
    round_status: Option<String>,
    /// Raw vs fixed of the newest round.
    thumbnails: Vec<(egui::TextureHandle, egui::TextureHandle)>,
    /// Rounds finished in this run, and whether the run has ended.
    pub rounds_done: usize,
    pub finished: bool,
    pub unfold: bool,
    /// The dataset of the running (or last) NeRF refinement, opened with the refined field at the end.
    nerf_data: Option<PathBuf>,
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
            antialiased: false,
            // As Difix3D's README runs its nerfstudio variant.
            camera_optimizer: CameraOptimizerMode::Off,
            monitor: JobMonitor::default(),
            round_status: None,
            thumbnails: Vec::new(),
            rounds_done: 0,
            finished: false,
            unfold: false,
            nerf_data: None,
        }
    }
}

impl RefinePanel {
    /// `fix_model`: the post-render fix's model, the default here; `camera_path`: the Record panel's,
    /// for "toward camera path".
    pub fn ui(&mut self, ui: &mut egui::Ui, shared: Shared, fix_model: &str, camera_path: &CameraPath, jobs: &Jobs) {
        let Some(dataset) = shared.dataset else {
            ui.label("Open a dataset folder, then the trained scene (.ply or a NeRF), to refine the scene with Difix.");
            return;
        };
        let what = match (shared.nerf, shared.splats) {
            (Some(_), _) => "the NeRF on screen (nerfacto)".to_string(),
            (None, Some(splats)) => format!("the scene on screen ({} splats)", splats.len()),
            (None, None) => {
                ui.label("Open the trained scene (.ply or a NeRF) to refine it with Difix.");
                return;
            }
        };
        if self.model.is_empty() {
            self.model = fix_model.to_string();
        }
        if self.out.is_empty() {
            self.out = default_run_folder(&dataset.root, "_refined");
        }
        ui.label(format!(
            "Refines {what} with {}",
            dataset.root.file_name().unwrap_or_default().to_string_lossy()
        ));
        let nerf = shared.nerf.is_some();
        ui.add_enabled_ui(!self.monitor.running(), |ui| {
            ui.horizontal(|ui| {
                ui.label("Difix model");
                ui.add(egui::TextEdit::singleline(&mut self.model).desired_width(150.0));
            });
            ui.checkbox(&mut self.reference, "nearest training photo as reference");
            if nerf {
                // Difix3D's nerfstudio variant moves its novel cameras toward the eval cameras only.
                ui.label("toward the eval cameras");
            } else {
                ui.horizontal(|ui| {
                    ui.label("toward");
                    ui.selectable_value(&mut self.targets, TargetChoice::Eval, "eval cameras");
                    ui.selectable_value(&mut self.targets, TargetChoice::RecordPath, "camera path");
                });
            }
            if !nerf && self.targets == TargetChoice::RecordPath {
                ui.add(
                    egui::DragValue::new(&mut self.path_samples)
                        .range(1..=256)
                        .prefix("targets along the path "),
                );
            }
            ui.horizontal(|ui| {
                ui.add(
                    egui::DragValue::new(&mut self.steps)
                        .range(1..=1_000_000)
                        .prefix("steps "),
                );
                ui.add(
                    egui::DragValue::new(&mut self.every)
                        .range(1..=100_000)
                        .prefix("round every "),
                );
            });
            ui.horizontal(|ui| {
                ui.add(
                    egui::DragValue::new(&mut self.distance)
                        .range(0.01..=10.0)
                        .speed(0.01)
                        .prefix("move "),
                );
                factor_ui(ui, "refine factor", &mut self.factor);
            });
            if nerf {
                camera_optimizer_ui(ui, "refine camera optimiser", &mut self.camera_optimizer);
            }
            run_folder_ui(ui, &mut self.out);
            let label = if nerf { "backend" } else { "Difix + loss backend" };
            backend_ui(ui, label, &mut self.backend);
        });
        if self.monitor.controls_ui(ui, "▶ Refine") {
            self.start(shared, camera_path, jobs);
        }
        if let Some(status) = &self.round_status {
            ui.label(status);
        }
        self.monitor.progress_ui(ui);
        if !self.thumbnails.is_empty() {
            ui.label("newest novel views: render | fixed");
            let width = (ui.available_width() / 2.0 - 8.0).clamp(40.0, 160.0);
            for (raw, fixed) in &self.thumbnails {
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
    pub fn start(&mut self, shared: Shared, camera_path: &CameraPath, jobs: &Jobs) {
        let Some(dataset) = shared.dataset else { return };
        if self.out.trim().is_empty() {
            self.out = default_run_folder(&dataset.root, "_refined");
        }
        if let Some(nerf) = shared.nerf {
            return self.start_nerfacto(nerf, dataset.root.clone(), jobs);
        }
        let Some(splats) = shared.splats else { return };
        let out = PathBuf::from(self.out.trim());
        let mut config = RefineConfig::new(
            dataset.root.clone(),
            SceneSource::Splats(splats.clone()),
            PathBuf::from(self.model.trim()),
            out.clone(),
        );
        config.factor = self.factor;
        config.reference = self.reference;
        config.steps = self.steps;
        config.every = self.every;
        config.distance = self.distance;
        config.antialiased = shared.antialiased;
        self.antialiased = shared.antialiased;
        if self.targets == TargetChoice::RecordPath {
            // The path the Record panel holds now, saved with the run so it can be repeated.
            let file = out.join("targets.json");
            let saved = std::fs::create_dir_all(&out)
                .map_err(|e| e.to_string())
                .and_then(|_| camera_path.save(&file).map_err(|e| e.to_string()));
            if let Err(e) = saved {
                self.monitor.message = Some(Err(format!("cannot use the camera path: {e}")));
                return;
            }
            // Already in the scene's world (a nerfstudio path went through its dataparser transform
            // when the Record panel loaded it).
            config.targets = Targets::Path {
                file,
                samples: self.path_samples,
                dataparser: None,
            };
        }
        self.nerf_data = None;
        self.reset_progress();
        self.monitor.start(jobs.refine(config, self.backend));
    }

    /// Starts Difix3D's nerfstudio variant on the NeRF opened from `nerf`, with the dataset at `data`.
    fn start_nerfacto(&mut self, nerf: &NerfFiles, data: PathBuf, jobs: &Jobs) {
        let mut config = NerfactoRefineConfig::new(
            data.clone(),
            nerf.checkpoint.clone(),
            PathBuf::from(self.model.trim()),
            PathBuf::from(self.out.trim()),
        );
        config.nerfacto_config = nerf.config.clone();
        config.dataparser_transforms = nerf.transforms.clone();
        config.factor = self.factor;
        config.reference = self.reference;
        config.steps = self.steps;
        config.every = self.every;
        config.distance = self.distance;
        config.camera_optimizer = self.camera_optimizer;
        self.nerf_data = Some(data);
        self.reset_progress();
        self.monitor.start(jobs.refine_nerfacto(config, self.backend));
    }

    /// Forgets the last run's rounds before a new one.
    fn reset_progress(&mut self) {
        self.round_status = None;
        self.thumbnails.clear();
        self.rounds_done = 0;
        self.finished = false;
        self.unfold = true;
    }

    /// Applies the refinement's settings from the command line and starts it.
    pub fn start_with(&mut self, start: RefineStart, shared: Shared, camera_path: &CameraPath, jobs: &Jobs) {
        self.steps = start.steps;
        self.every = start.every;
        self.factor = start.factor;
        self.model = start.model.display().to_string();
        self.backend = start.backend;
        self.start(shared, camera_path, jobs);
    }

    /// Takes the refinement's events: rounds (with thumbnails), snapshots for the view, the end.
    pub fn poll(&mut self, ctx: &egui::Context, out: &mut Vec<Action>) {
        let polled = self.monitor.poll();
        if let Some(splats) = polled.snapshot {
            out.push(Action::ShowSplats {
                splats,
                antialiased: self.antialiased,
            });
        }
        for event in polled.rounds {
            match event {
                RoundEvent::Started { round, views, .. } => {
                    self.round_status = Some(format!("round {}: rendering and fixing {views} novel views", round + 1));
                }
                RoundEvent::Fixed { round, done, total } => {
                    self.round_status = Some(format!("round {}: fixed {done}/{total} novel views", round + 1));
                }
                RoundEvent::Done(report) => {
                    self.rounds_done += 1;
                    self.round_status = Some(format!(
                        "round {} done at step {}: {} views (render {:.1} s, Difix {:.1} s)",
                        report.round + 1,
                        report.step,
                        report.views,
                        report.render.as_secs_f64(),
                        report.fix.as_secs_f64()
                    ));
                    self.thumbnails = report
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
        let psnr = |r: &Option<difix3d::train::eval::EvalReport>| {
            r.as_ref().map_or("n/a".into(), |r| format!("{:.2} dB", r.psnr))
        };
        match polled.done {
            Some(Ok(Finished::Refine(s))) => {
                self.finished = true;
                // Bring the results (table, thumbnails) into sight.
                self.unfold = true;
                self.monitor.message = Some(Ok(format!(
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
            Some(Ok(Finished::NerfactoRefine(s))) => {
                self.finished = true;
                self.unfold = true;
                self.monitor.message = Some(Ok(format!(
                    "{} after {} steps from step {}, {} rounds. Eval PSNR: Nerfacto {} · +Difix3D {} · +Difix3D+ {}; {}",
                    if s.stopped_early { "Stopped" } else { "Done" },
                    s.steps,
                    s.first_step,
                    s.round_steps.len(),
                    psnr(&s.eval.baseline),
                    psnr(&s.eval.refined),
                    psnr(&s.eval.refined_post),
                    s.model.display()
                )));
                // The view opens the refined field, with its dataset.
                out.push(Action::Open {
                    path: s.model.clone(),
                    data: self.nerf_data.clone(),
                });
            }
            Some(_) => self.finished = true,
            None => {}
        }
    }
}
