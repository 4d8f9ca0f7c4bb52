//! The Training panel's Difix mode: fine-tunes Difix on a pair JSON in the background (the same
//! trainer as `difix3d train-difix`), with pause/save/stop, the loss plot, the newest evaluation on
//! the test pairs, and a button that hands the result to the post-render fix.

use std::path::PathBuf;

use crossbeam_channel::Receiver;
use difix3d::difix::train::data::{ImagePrep, ImagePrepKind};
use difix3d::difix::train::trainer::{DifixTrainConfig, DifixTrainSummary};
use difix3d::nn::backend::BackendKind;
use difix3d::perceptual::lpips::LpipsFiles;

use super::actions::{Action, Jobs};
use super::job_monitor::JobMonitor;
use super::pick;
use super::train_panel::{backend_ui, run_folder_ui};

/// Settings a fine-tuning run starts with from the command line (`difix3d view --train-difix ...`).
#[derive(Clone, Debug)]
pub struct DifixTrainStart {
    pub data: PathBuf,
    pub model: PathBuf,
    pub lpips: LpipsFiles,
    pub steps: usize,
    pub image_prep: ImagePrep,
    pub backend: BackendKind,
}

/// A path typed in or picked with the file dialog.
#[derive(Default)]
pub struct PathField {
    pub text: String,
    picking: Option<Receiver<Option<PathBuf>>>,
}

impl PathField {
    pub(super) fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            picking: None,
        }
    }

    pub(super) fn path(&self) -> Option<PathBuf> {
        let text = self.text.trim();
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    /// A labelled text box with a "…" button opening a file (or folder) dialog.
    pub(super) fn ui(&mut self, ui: &mut egui::Ui, label: &str, hint: &str, folder: bool) {
        if let Some(picked) = self.picking.as_ref().and_then(|rx| rx.try_recv().ok()) {
            self.picking = None;
            if let Some(path) = picked {
                self.text = path.display().to_string();
            }
        }
        ui.horizontal(|ui| {
            ui.label(label).on_hover_text(hint);
            ui.add(egui::TextEdit::singleline(&mut self.text).desired_width(140.0));
            if ui.add_enabled(self.picking.is_none(), egui::Button::new("…")).clicked() {
                self.picking = Some(if folder {
                    pick(|d| d.pick_folder())
                } else {
                    pick(|d| d.pick_file())
                });
            }
        });
    }
}

/// What the Difix mode edits.
struct DifixForm {
    data: PathField,
    model: PathField,
    lpips_backbone: PathField,
    lpips_lin: PathField,
    steps: usize,
    /// `resize` to `resize_hw` (height, width) or `crop` squares of `crop_side`; both sizes are kept
    /// while the choice changes.
    image_prep: ImagePrepKind,
    resize_hw: [u32; 2],
    crop_side: u32,
    grad_accumulation: usize,
    eval_every: usize,
    checkpoint_every: usize,
    /// `0,1`: data-parallel over those GPUs; empty: the backend's default device.
    devices: String,
    out: String,
    backend: BackendKind,
}

impl Default for DifixForm {
    fn default() -> Self {
        Self {
            data: PathField::default(),
            model: PathField::new("checkpoints/difix_ref"),
            lpips_backbone: PathField::new("checkpoints/vgg16-397923af.pth"),
            lpips_lin: PathField::default(),
            steps: 10_000,
            image_prep: ImagePrepKind::Resize,
            resize_hw: [576, 1024],
            crop_side: 512,
            grad_accumulation: 1,
            eval_every: 500,
            checkpoint_every: 1000,
            devices: String::new(),
            out: "runs/difix".into(),
            backend: BackendKind::Wgpu,
        }
    }
}

impl DifixForm {
    /// The run's configuration, or what is missing.
    fn config(&self) -> Result<(DifixTrainConfig, Vec<usize>), String> {
        let data = self.data.path().ok_or("choose the pair JSON to train on")?;
        let model = self.model.path().ok_or("choose the Difix model folder to start from")?;
        let backbone = self
            .lpips_backbone
            .path()
            .ok_or("choose torchvision's VGG16 weights for LPIPS")?;
        let devices = parse_devices(&self.devices)?;
        let lpips = LpipsFiles {
            backbone,
            lin: self.lpips_lin.path(),
        };
        let mut config = DifixTrainConfig::new(data, model, PathBuf::from(self.out.trim()), lpips);
        config.steps = self.steps;
        config.image_prep = self.image_prep();
        config.grad_accumulation = self.grad_accumulation.max(1);
        config.eval_every = self.eval_every;
        config.checkpoint_every = self.checkpoint_every;
        Ok((config, devices))
    }

    /// Starts a run with these settings (`monitor` follows it), or says in `monitor` what is missing.
    /// Returns true when a run started.
    fn start(&self, monitor: &mut JobMonitor, jobs: &Jobs) -> bool {
        match self.config() {
            Ok((config, devices)) => {
                monitor.start(jobs.train_difix(config, self.backend, devices));
                true
            }
            Err(e) => {
                monitor.message = Some(Err(e));
                false
            }
        }
    }

    fn image_prep(&self) -> ImagePrep {
        match self.image_prep {
            ImagePrepKind::Resize => ImagePrep::Resize {
                height: self.resize_hw[0],
                width: self.resize_hw[1],
            },
            ImagePrepKind::Crop => ImagePrep::Crop { side: self.crop_side },
        }
    }

    fn set_image_prep(&mut self, prep: ImagePrep) {
        self.image_prep = prep.kind();
        match prep {
            ImagePrep::Resize { height, width } => self.resize_hw = [height, width],
            ImagePrep::Crop { side } => self.crop_side = side,
        }
    }
}

/// An image side in the form (the trainer checks it is a multiple of 8 and large enough).
fn side_value(value: &mut u32) -> egui::DragValue<'_> {
    egui::DragValue::new(value).range(16..=4096).speed(8)
}

/// `"0, 1"` -> [0, 1]; empty -> [].
fn parse_devices(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("devices: '{s}' is not a GPU index")))
        .collect()
}

/// The Training panel's Difix mode: the form and the last run that ended well.
#[derive(Default)]
pub struct DifixTrainPanel {
    form: DifixForm,
    /// The last Difix fine-tuning run that ended well.
    pub done: Option<DifixTrainSummary>,
}

impl DifixTrainPanel {
    /// The form, the run's controls and progress (`monitor`: the Training panel's). Returns true when
    /// a run started.
    pub fn ui(&mut self, ui: &mut egui::Ui, monitor: &mut JobMonitor, jobs: &Jobs, out: &mut Vec<Action>) -> bool {
        let form = &mut self.form;
        ui.add_enabled_ui(!monitor.running(), |ui| {
            form.data.ui(
                ui,
                "Pairs",
                "The pair JSON: {\"train\": {ID: {\"image\", \"target_image\", \"ref_image\"?, \"prompt\"?}}, \"test\": {...}}",
                false,
            );
            form.model.ui(ui, "Model", "The Difix model folder to start from (diffusers layout)", true);
            form.lpips_backbone
                .ui(ui, "VGG16", "torchvision's vgg16-397923af.pth, for LPIPS and the Gram loss", false);
            form.lpips_lin.ui(
                ui,
                "LPIPS lin",
                "lpips's vgg.pth linear layers (empty: the copy in assets/lpips)",
                false,
            );
            ui.add(
                egui::DragValue::new(&mut form.steps)
                    .range(1..=1_000_000)
                    .prefix("steps "),
            );
            ui.horizontal(|ui| {
                ui.label("images").on_hover_text(
                    "resize: every image (input, target, reference) resized to height x width, aspect ratio not kept, \
                     as Difix3D's src/dataset.py (576x1024). crop: scaled so the shorter side fits, then a random \
                     square, the same for all three",
                );
                ui.selectable_value(&mut form.image_prep, ImagePrepKind::Resize, "resize");
                ui.selectable_value(&mut form.image_prep, ImagePrepKind::Crop, "crop");
                match form.image_prep {
                    ImagePrepKind::Resize => {
                        ui.add(side_value(&mut form.resize_hw[0]));
                        ui.label("x");
                        ui.add(side_value(&mut form.resize_hw[1]).suffix(" px"));
                    }
                    ImagePrepKind::Crop => {
                        ui.add(side_value(&mut form.crop_side).suffix(" px"));
                    }
                }
            });
            ui.horizontal(|ui| {
                ui.add(
                    egui::DragValue::new(&mut form.grad_accumulation)
                        .range(1..=64)
                        .prefix("accumulate "),
                );
                ui.add(
                    egui::DragValue::new(&mut form.eval_every)
                        .range(0..=100_000)
                        .prefix("eval every "),
                );
            });
            ui.horizontal(|ui| {
                ui.label("GPUs").on_hover_text(
                    "Data-parallel over these device indices, e.g. 0,1 (empty: the backend's default device)",
                );
                ui.add(
                    egui::TextEdit::singleline(&mut form.devices)
                        .hint_text("default")
                        .desired_width(70.0),
                );
            });
            run_folder_ui(ui, &mut form.out);
            backend_ui(ui, "backend", &mut form.backend);
        });
        let started = monitor.controls_ui(ui, "▶ Fine-tune Difix") && self.form.start(monitor, jobs);
        monitor.progress_ui(ui);
        if let Some(summary) = &self.done {
            let model = summary.checkpoint.display().to_string();
            if ui.button("Use in the post-render fix").on_hover_text(&model).clicked() {
                out.push(Action::UseFixModel(model));
            }
        }
        started
    }

    /// Starts fine-tuning from the command line's settings. Returns true when a run started.
    pub fn start(&mut self, start: DifixTrainStart, monitor: &mut JobMonitor, jobs: &Jobs) -> bool {
        let form = &mut self.form;
        form.data.text = start.data.display().to_string();
        form.model.text = start.model.display().to_string();
        form.lpips_backbone.text = start.lpips.backbone.display().to_string();
        form.lpips_lin.text = start
            .lpips
            .lin
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string());
        form.steps = start.steps;
        form.set_image_prep(start.image_prep);
        form.backend = start.backend;
        form.start(monitor, jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panel's resize/crop choice reaches the run's configuration, and a start from the command
    /// line sets it (keeping the other kind's size for when the user switches).
    #[test]
    fn image_prep_choice_reaches_the_config() {
        let mut form = DifixForm::default();
        form.data.text = "pairs.json".into();
        let (config, _) = form.config().unwrap();
        assert_eq!(config.image_prep, ImagePrep::REFERENCE);
        form.image_prep = ImagePrepKind::Crop;
        form.crop_side = 64;
        assert_eq!(form.config().unwrap().0.image_prep, ImagePrep::Crop { side: 64 });
        form.set_image_prep(ImagePrep::Resize { height: 32, width: 48 });
        assert_eq!(form.image_prep, ImagePrepKind::Resize);
        assert_eq!(form.crop_side, 64);
        assert_eq!(
            form.config().unwrap().0.image_prep,
            ImagePrep::Resize { height: 32, width: 48 }
        );
    }

    #[test]
    fn device_lists_parse_or_say_what_is_wrong() {
        assert_eq!(parse_devices(""), Ok(vec![]));
        assert_eq!(parse_devices(" 0, 1 ,"), Ok(vec![0, 1]));
        assert!(parse_devices("0,gpu1").unwrap_err().contains("'gpu1'"));
    }
}
