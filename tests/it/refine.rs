//! Difix3D progressive 3D update on the real sample dataset with the tiny random-weight Difix model:
//! one round's renders/fixes/saves, then whole runs whose mechanics and bookkeeping are checked
//! (the model is random, so quality is not asserted).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use difix3d::data::{Camera, Dataset};
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::difix::Difix;
use difix3d::reference_photo::Reference;
use difix3d::refine::poses;
use difix3d::refine::refiner::{self, RefineConfig, RefineObserver, SceneSource};
use difix3d::refine::round::{self, RoundEvent, RoundJob};
use difix3d::render::diff_render::SplatRenderer;
use difix3d::render::RenderOptions;
use difix3d::scene::Splats;
use difix3d::train::step::{image_tensor, photometric_loss};
use difix3d::train::trainer::{StepReport, StepRequest, TrainObserver, ViewSource};

use crate::{asset, difix3d, gpu, repo};

type Cpu = NdArray<f32>;

fn scene_fixture() -> std::path::PathBuf {
    repo().join("tests/fixtures/render/maupertuis_sh3.ply")
}

fn tiny_model() -> std::path::PathBuf {
    repo().join("tests/fixtures/difix/tiny")
}

fn poses_of<'a>(cameras: impl IntoIterator<Item = &'a Camera>) -> Vec<glam::Affine3A> {
    cameras.into_iter().map(|c| c.world_from_camera).collect()
}

fn read_cameras(dir: &Path) -> Vec<Camera> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("cameras.json")).unwrap()).unwrap()
}

#[test]
fn a_round_renders_fixes_and_saves_the_novel_views() {
    let Some(data) = asset("maupertuis") else { return };
    let dataset = Arc::new(difix3d::data::open_dataset(&data, 8).unwrap());
    let splats = difix3d::scene::load(&scene_fixture()).unwrap();
    // The first round starts from the training poses and moves toward the eval pose.
    let shifted = poses::shift_poses(
        &poses_of(dataset.train.iter().map(|v| &v.camera)),
        &poses_of(dataset.eval.iter().map(|v| &v.camera)),
        0.5,
    );
    let cameras: Vec<Camera> = shifted
        .iter()
        .zip(&dataset.eval)
        .enumerate()
        .map(|(i, (pose, eval))| Camera {
            name: format!("novel_{i:03}"),
            world_from_camera: *pose,
            ..eval.camera.clone()
        })
        .collect();
    let renderer = SplatRenderer::new(gpu().0.clone());
    let mut model = Difix::<Cpu>::load(&tiny_model(), None, &NdArrayDevice::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = RoundJob {
        round: 0,
        step: 30_000,
        cameras: &cameras,
        reference: &Reference::NearestTrain(dataset.clone()),
        out: dir.path(),
    };
    let mut events = Vec::new();
    let output = round::fix_novel_views(
        &renderer,
        &splats,
        &mut model,
        &job,
        &mut |e| events.push(e),
        &AtomicBool::new(false),
    )
    .unwrap()
    .expect("not stopped");
    let views = output.views;
    assert_eq!(views.len(), 1);
    assert!(matches!(
        events[..],
        [
            RoundEvent::Started { views: 1, .. },
            RoundEvent::Fixed { done: 1, total: 1, .. }
        ]
    ));

    let round_dir = dir.path().join("round_030000");
    assert_eq!(output.report.dir, round_dir);
    for sub in ["pred", "fixed", "ref", "alpha"] {
        assert!(round_dir.join(sub).join("novel_000.png").exists(), "{sub}");
    }
    assert_eq!(read_cameras(&round_dir), cameras);

    // The fixed view is Difix on the saved render with the nearest training photo as reference.
    let pred = image::open(round_dir.join("pred/novel_000.png")).unwrap().to_rgb8();
    let nearest = dataset.nearest_train_view(&cameras[0]).unwrap();
    let reference = image::open(&nearest.image_path).unwrap().to_rgb8();
    let expected = model
        .fix_image(&pred, Some(&reference), SizePolicy::Native, DEFAULT_PROMPT)
        .unwrap();
    assert_eq!(*views[0].fixed, expected);
    assert_eq!(
        image::open(round_dir.join("ref/novel_000.png")).unwrap().to_rgb8(),
        reference
    );
    // The mask is the reference's: alpha truncated to 8 bits, / 255 > 0.5.
    let rendered = renderer
        .render_image(&splats, &cameras[0], &RenderOptions::default())
        .unwrap();
    let mask: Vec<bool> = rendered
        .rgba
        .iter()
        .map(|p| ((p[3].clamp(0.0, 1.0) * 255.0) as u8) as f32 / 255.0 > 0.5)
        .collect();
    assert_eq!(views[0].mask(), mask);
    assert!(
        mask.iter().any(|m| *m) && mask.iter().any(|m| !*m),
        "a mask with both kinds of pixels"
    );

    // A saved round reads back as the same pseudo views; a stopped round leaves nothing behind.
    let loaded = round::load_round(&round_dir).unwrap();
    assert_eq!(loaded[0].fixed, views[0].fixed);
    assert_eq!(loaded[0].alpha, views[0].alpha);
    let stopped_job = RoundJob { step: 30_002, ..job };
    let stopped = round::fix_novel_views(
        &renderer,
        &splats,
        &mut model,
        &stopped_job,
        &mut |_| {},
        &AtomicBool::new(true),
    )
    .unwrap();
    assert!(stopped.is_none());
    assert!(!dir.path().join("round_030002").exists());
}

/// Records every step, every round event, and the splats before each step.
#[derive(Default)]
struct Recorder {
    steps: Vec<(StepReport, Arc<Splats>)>,
    rounds: Vec<round::RoundReport>,
    current: Option<Arc<Splats>>,
}

impl TrainObserver for Recorder {
    fn step(&mut self, report: &StepReport) -> StepRequest {
        self.steps
            .push((report.clone(), self.current.clone().expect("splats before the step")));
        StepRequest {
            save: false,
            snapshot: true,
        }
    }

    fn snapshot(&mut self, splats: Splats) {
        self.current = Some(Arc::new(splats));
    }
}

impl RefineObserver for Recorder {
    fn round(&mut self, event: &RoundEvent) {
        if let RoundEvent::Done(report) = event {
            self.rounds.push(report.clone());
        }
    }
}

/// The loss a step should have reported: the splats before it rendered from `camera`, against
/// `target` (masked by `alpha` when given), times `weight`.
fn expected_loss(
    splats: &Splats,
    camera: &Camera,
    target: &image::RgbImage,
    alpha: Option<&image::GrayImage>,
    weight: f32,
) -> f32 {
    let renderer = SplatRenderer::new(gpu().0.clone());
    let image = renderer
        .render_image(splats, camera, &RenderOptions::default())
        .unwrap();
    let (w, h) = (camera.width as usize, camera.height as usize);
    let device = NdArrayDevice::Cpu;
    let colour: Vec<f32> = image.rgba.iter().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let colour = Tensor::<Cpu, 3>::from_data(TensorData::new(colour, [h, w, 3]), &device);
    let mask = alpha.map(|a| {
        let m: Vec<f32> = a
            .as_raw()
            .iter()
            .map(|v| if *v as f32 / 255.0 > 0.5 { 1.0 } else { 0.0 })
            .collect();
        Tensor::<Cpu, 3>::from_data(TensorData::new(m, [h, w, 1]), &device)
    });
    let loss: f32 = photometric_loss(colour, image_tensor::<Cpu>(target, &device), mask, 0.2).into_scalar();
    loss * weight
}

#[test]
fn a_refinement_runs_rounds_on_schedule_and_trains_on_them() {
    let Some(data) = asset("maupertuis") else { return };
    let dataset: Dataset = difix3d::data::open_dataset(&data, 8).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let start = Arc::new(difix3d::scene::load(&scene_fixture()).unwrap());
    let mut config = RefineConfig::new(
        data.clone(),
        SceneSource::Splats(start.clone()),
        tiny_model(),
        out.clone(),
    );
    config.factor = 8;
    config.steps = 9;
    config.every = 4;
    // More pseudo-view steps than the reference's 0.3, so a short run surely has some.
    config.novel_probability = 0.6;
    let lpips = repo().join("tests/fixtures/lpips");
    config.lpips = Some(difix3d::perceptual::lpips::LpipsFiles {
        backbone: lpips.join("vgg_tiny_backbone.pth"),
        lin: Some(lpips.join("vgg_tiny_lin.pth")),
    });
    let mut recorder = Recorder {
        current: Some(start.clone()),
        ..Default::default()
    };
    let summary = refiner::refine::<Cpu>(
        &config,
        gpu().0.clone(),
        &NdArrayDevice::Cpu,
        &mut recorder,
        &AtomicBool::new(false),
    )
    .unwrap();

    // Rounds at the start and every 4 steps; each moves the novel cameras 0.5 toward the eval camera.
    assert_eq!(summary.rounds, 3);
    assert_eq!(recorder.rounds.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 4, 8]);
    let targets = poses_of(dataset.eval.iter().map(|v| &v.camera));
    let mut current = poses_of(dataset.train.iter().map(|v| &v.camera));
    let rounds_dir = out.join("rounds");
    for step in [0, 4, 8] {
        let dir = round::round_dir(&rounds_dir, step);
        let cameras = read_cameras(&dir);
        let expected = poses::shift_poses(&current, &targets, 0.5);
        assert_eq!(poses_of(&cameras), expected, "round at step {step}");
        assert_eq!(
            cameras[0].width, dataset.eval[0].camera.width,
            "the target's intrinsics"
        );
        for sub in ["pred", "fixed", "ref", "alpha"] {
            assert!(dir.join(sub).join("novel_0000.png").exists(), "{sub} at step {step}");
        }
        current = expected;
    }

    // Steps trained on photos (weight 1.5) and on pseudo views of the newest round (weight 0.3,
    // masked); each reported loss is recomputed from the splats before its step.
    assert_eq!(recorder.steps.len(), 9);
    let (mut novel, mut photo) = (0, 0);
    for (report, before) in &recorder.steps {
        let newest = (report.step - 1) / 4;
        let expected = match report.view {
            ViewSource::Novel { round, index } => {
                novel += 1;
                assert_eq!(round, newest, "step {} used an old round", report.step);
                assert_eq!(report.weight, 0.3);
                let dir = round::round_dir(&rounds_dir, round * 4);
                let camera = &read_cameras(&dir)[index];
                let fixed = image::open(dir.join("fixed/novel_0000.png")).unwrap().to_rgb8();
                let alpha = image::open(dir.join("alpha/novel_0000.png")).unwrap().to_luma8();
                expected_loss(before, camera, &fixed, Some(&alpha), 0.3)
            }
            ViewSource::Photo(index) => {
                photo += 1;
                assert_eq!(report.weight, 1.5);
                let view = &dataset.train[index];
                let photo = image::open(&view.image_path).unwrap().to_rgb8();
                expected_loss(before, &view.camera, &photo, None, 1.5)
            }
        };
        assert!(
            (report.loss - expected).abs() <= 1e-4 * expected.abs().max(1e-3),
            "step {}: reported loss {} vs recomputed {expected} ({:?})",
            report.step,
            report.loss,
            report.view
        );
        // No densification: the splat count never changes.
        assert_eq!(report.splats, start.len());
    }
    assert!(novel > 0 && photo > 0, "{novel} pseudo-view steps, {photo} photo steps");

    // The exported scene and the checkpoint load; the ablation rows are written.
    let ply = difix3d::scene::load(&summary.ply).unwrap();
    assert_eq!(ply.len(), start.len());
    // The checkpoint opens as a scene: the same splats (the .ply stores normalised quaternions).
    let mut from_checkpoint = difix3d::scene::load(&summary.checkpoint).unwrap();
    for q in &mut from_checkpoint.rotations {
        let n = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        *q = q.map(|v| v / n);
    }
    for (a, b) in from_checkpoint.rotations.iter().zip(&ply.rotations) {
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6), "{a:?} vs {b:?}");
    }
    from_checkpoint.rotations = ply.rotations.clone();
    assert!(
        from_checkpoint == ply,
        "the checkpoint's splats differ from the exported .ply"
    );
    // And as a gsplat checkpoint beside it, for going back to gsplat / Difix3D.
    let run_dir = summary.ply.parent().unwrap();
    let pts: Vec<_> = std::fs::read_dir(run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pt"))
        .collect();
    assert_eq!(pts.len(), 1, "{pts:?}");
    assert!(
        difix3d::scene::load(&pts[0]).unwrap() == ply,
        "the run's .pt differs from its .ply"
    );
    let last = &recorder.steps.last().unwrap().1;
    assert_ne!(ply.means, last.means, "the last step changed the splats");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    for row in ["baseline", "refined", "refined_post"] {
        let psnr = eval[row]["psnr"].as_f64().unwrap_or(f64::NAN);
        assert!(psnr.is_finite() && psnr > 0.0, "{row}: {psnr}");
        let lpips = eval[row]["lpips"].as_f64().unwrap_or(f64::NAN);
        assert!(lpips.is_finite() && lpips > 0.0, "{row} LPIPS: {lpips}");
    }
    assert!(out.join("eval_post/00.png").exists());

    // Resuming continues the schedule: the round at step 8 is read back from disk (no new round at
    // 8), the next comes at 12.
    let mut resumed_config = config.clone();
    resumed_config.resume = Some(summary.checkpoint.clone());
    resumed_config.steps = 13;
    resumed_config.post_render_eval = false;
    let mut resumed = Recorder {
        current: Some(Arc::new(ply)),
        ..Default::default()
    };
    let summary = refiner::refine::<Cpu>(
        &resumed_config,
        gpu().0.clone(),
        &NdArrayDevice::Cpu,
        &mut resumed,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(summary.rounds, 4);
    assert_eq!(resumed.rounds.iter().map(|r| r.step).collect::<Vec<_>>(), [12]);
    assert_eq!(resumed.steps.first().unwrap().0.step, 10);
    let expected = poses::shift_poses(&current, &targets, 0.5);
    assert_eq!(poses_of(&read_cameras(&round::round_dir(&rounds_dir, 12))), expected);
    for (report, _) in &resumed.steps {
        if let ViewSource::Novel { round, .. } = report.view {
            assert_eq!(round, if report.step <= 12 { 2 } else { 3 });
        }
    }
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert!(
        eval["baseline"]["psnr"].as_f64().is_some(),
        "the baseline survives a resume"
    );
    assert!(eval["refined_post"].is_null());
}

#[test]
fn refine_cli_reports_bad_input_clearly() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let scene = scene_fixture();
    let tiny = tiny_model();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "refine",
            "--data",
            data.to_str().unwrap(),
            "--factor",
            "8",
            "--backend",
            "cpu",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "2",
            "--every",
            "1",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| difix3d(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let missing = dir.path().join("no-model");
    let (code, _, stderr) = run(args(&[
        "--scene",
        scene.to_str().unwrap(),
        "--model",
        missing.to_str().unwrap(),
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("no-model"), "{stderr}");
    assert!(!out.join("checkpoint.safetensors").exists());

    let (code, _, stderr) = run(args(&["--scene", "nowhere.ply", "--model", tiny.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(stderr.contains("nowhere.ply"), "{stderr}");

    let (code, _, stderr) = run(args(&[
        "--scene",
        scene.to_str().unwrap(),
        "--model",
        tiny.to_str().unwrap(),
        "--targets",
        "nowhere.json",
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("nowhere.json"), "{stderr}");

    // A camera path as the targets: two cameras sampled along it, fixed each round.
    let path = dir.path().join("path.json");
    let dataset = difix3d::data::open_dataset(&data, 8).unwrap();
    difix3d::camera_path::CameraPath::through_cameras(dataset.train.iter().map(|v| &v.camera), 2.0)
        .save(&path)
        .unwrap();
    let (code, stdout, stderr) = run(args(&[
        "--scene",
        scene.to_str().unwrap(),
        "--model",
        tiny.to_str().unwrap(),
        "--targets",
        path.to_str().unwrap(),
        "--path-samples",
        "2",
        "--no-post-render-eval",
    ]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("+ Difix3D"), "{stdout}");
    assert_eq!(read_cameras(&out.join("rounds/round_000001")).len(), 2);

    // --dataparser-transforms maps a nerfstudio path given as --targets (checked in
    // refine::refiner's unit test); with the eval cameras, or with our own path (already in the
    // scene's world), it is refused before any work, naming the file.
    let dp = dir.path().join("dataparser_transforms.json");
    std::fs::write(
        &dp,
        r#"{"transform": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "scale": 1}"#,
    )
    .unwrap();
    let fresh = dir.path().join("fresh");
    let fresh_args = |extra: &[&str]| {
        let mut a = args(extra);
        let at = a.iter().position(|x| x == "--out").unwrap();
        a[at + 1] = fresh.to_str().unwrap().to_string();
        a
    };
    for (targets, needles) in [
        ("eval", ["--dataparser-transforms", "not to --targets eval"]),
        (path.to_str().unwrap(), ["path.json", "nerfstudio camera paths only"]),
    ] {
        let (code, _, stderr) = run(fresh_args(&[
            "--scene",
            scene.to_str().unwrap(),
            "--model",
            tiny.to_str().unwrap(),
            "--targets",
            targets,
            "--dataparser-transforms",
            dp.to_str().unwrap(),
        ]));
        assert_ne!(code, 0);
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
        }
        assert!(!fresh.exists(), "no run folder for a refusal");
    }

    // A training checkpoint is a scene to refine from, not a refinement to resume.
    let train_out = dir.path().join("train");
    let (code, _, stderr) = difix3d(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "8",
        "--backend",
        "cpu",
        "--steps",
        "1",
        "--out",
        train_out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let checkpoint = train_out.join("checkpoint.safetensors");
    let (code, _, stderr) = run(args(&[
        "--resume",
        checkpoint.to_str().unwrap(),
        "--model",
        tiny.to_str().unwrap(),
    ]));
    assert_ne!(code, 0);
    assert!(stderr.contains("not a refinement checkpoint"), "{stderr}");
    let (code, stdout, stderr) = run(args(&[
        "--scene",
        checkpoint.to_str().unwrap(),
        "--model",
        tiny.to_str().unwrap(),
        "--no-reference",
    ]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        !out.join("rounds/round_000000/ref/novel_0000.png").exists(),
        "no reference photo is used with --no-reference"
    );
}

#[test]
fn bench_refine_reports_the_round_split_and_files_its_row() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCH.md");
    std::fs::write(
        &md,
        "| date | bench | data | size | adapter / backend | model | views per round | step / render per view / Difix per view ms |\n|---|\nafter\n",
    )
    .unwrap();
    let (code, stdout, stderr) = difix3d(&[
        "bench",
        "refine",
        "--scene",
        scene_fixture().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "8",
        "--model",
        tiny_model().to_str().unwrap(),
        "--steps",
        "4",
        "--every",
        "2",
        "--backend",
        "cpu",
        "--append-md",
        md.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout[..stdout.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(json["rounds"].as_u64(), Some(2));
    assert_eq!(json["views_per_round"].as_u64(), Some(1));
    for key in [
        "step_ms",
        "render_ms_per_view",
        "difix_ms_per_view",
        "round_of_2000_steps_s",
    ] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{key}");
    }
    let text = std::fs::read_to_string(&md).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[2].contains("| refine | maupertuis | 240x135 |"), "{text}");
    assert_eq!(lines.last(), Some(&"after"));
}
