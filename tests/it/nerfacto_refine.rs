//! `difix3d refine --method nerfacto` (Difix3D's nerfstudio variant, issue 18) on a tiny case: the
//! nerfacto checkpoint of the parity fixtures (nerfstudio's `step-000000300.ckpt`, three appearance
//! codes), a nerfstudio dataset of three 32x24 training photos and one eval view made here, the
//! run's frame given by a `dataparser_transforms.json` that turns and halves the dataset's, and the
//! tiny random-weight Difix model. The model is random, so quality is not asserted: the mechanics
//! are (which steps run rounds, where the novel cameras go, with which intrinsics, which photo guides
//! Difix, what the run saves and that it loads again).

use std::path::{Path, PathBuf};

use difix3d::camera_path::nerfstudio::DataparserTransform;
use difix3d::data::Camera;
use difix3d::nerfacto::checkpoint::Checkpoint;
use difix3d::nerfacto::Nerfacto;
use difix3d::nn::backend::CpuBackend;
use difix3d::refine::poses;
use glam::{Affine3A, DMat4, DVec4};

use crate::{difix3d, repo};

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/nerfacto").join(name)
}

fn s(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// The dataset's cameras (OpenCV axes, the data's world): three training views half a unit apart and
/// one eval view 3 units beyond, turned 20 degrees; each with its own intrinsics.
fn dataset_cameras() -> Vec<(String, Affine3A, [f32; 4])> {
    let pose = |x: f32, yaw: f32| {
        Affine3A::from_rotation_translation(
            glam::Quat::from_rotation_y(yaw.to_radians()),
            glam::Vec3::new(x, 0.0, -3.0),
        )
    };
    vec![
        ("image_train_000.png".into(), pose(0.0, 0.0), [25.0, 26.0, 16.0, 12.0]),
        ("image_train_001.png".into(), pose(0.5, 5.0), [30.0, 30.0, 15.0, 11.0]),
        ("image_train_002.png".into(), pose(1.0, -5.0), [28.0, 27.0, 16.5, 12.5]),
        ("image_eval_000.png".into(), pose(4.0, 20.0), [35.0, 35.0, 16.0, 12.0]),
    ]
}

/// The dataparser transform of the run: a quarter turn about z, a shift, and scale 0.5.
fn transform() -> DataparserTransform {
    DataparserTransform {
        transform: DMat4::from_cols(
            DVec4::new(0.0, 1.0, 0.0, 0.0),
            DVec4::new(-1.0, 0.0, 0.0, 0.0),
            DVec4::new(0.0, 0.0, 1.0, 0.0),
            DVec4::new(0.1, 0.0, 0.2, 1.0),
        ),
        scale: 0.5,
    }
}

fn to_model(pose: &Affine3A) -> Affine3A {
    let m = glam::Mat4::from(*pose).as_dmat4();
    Affine3A::from_mat4(transform().to_nerfstudio(m).as_mat4())
}

/// Writes the dataset (transforms.json with per-frame intrinsics, the parity fixtures' photos) and
/// the run's dataparser_transforms.json under `dir`; returns (data folder, transforms file).
fn make_case(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    let photos = repo().join("tests/fixtures/train_parity/images");
    let flip = glam::Mat4::from_diagonal(glam::Vec4::new(1.0, -1.0, -1.0, 1.0));
    let mut frames = Vec::new();
    for (i, (name, pose, [fx, fy, cx, cy])) in dataset_cameras().into_iter().enumerate() {
        let source = photos.join(format!("image_train_{:03}.png", i.min(2)));
        std::fs::copy(source, data.join("images").join(&name)).unwrap();
        // OpenGL camera axes, as nerfstudio stores them.
        let gl = glam::Mat4::from(pose) * flip;
        let rows: Vec<Vec<f32>> = (0..4).map(|r| gl.row(r).to_array().to_vec()).collect();
        frames.push(serde_json::json!({
            "file_path": format!("images/{name}"),
            "transform_matrix": rows,
            "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": 32, "h": 24,
        }));
    }
    let json = serde_json::json!({"camera_model": "OPENCV", "frames": frames});
    std::fs::write(data.join("transforms.json"), json.to_string()).unwrap();
    let transforms = dir.join("dataparser_transforms.json");
    std::fs::write(&transforms, transform().to_json().to_string()).unwrap();
    (data, transforms)
}

fn read_cameras(round: &Path) -> Vec<Camera> {
    serde_json::from_str(&std::fs::read_to_string(round.join("cameras.json")).unwrap()).unwrap()
}

fn assert_pose_close(got: &Affine3A, want: &Affine3A, what: &str) {
    assert!(
        (got.translation - want.translation).abs().max_element() < 1e-4 && got.matrix3.abs_diff_eq(want.matrix3, 1e-4),
        "{what}: {got:?} vs {want:?}"
    );
}

fn refine_args<'a>(
    data: &'a str,
    checkpoint: &'a str,
    transforms: &'a str,
    out: &'a str,
    steps: &'a str,
) -> Vec<&'a str> {
    vec![
        "refine",
        "--method",
        "nerfacto",
        "--data",
        data,
        "--checkpoint",
        checkpoint,
        "--dataparser-transforms",
        transforms,
        "--model",
        tiny_difix(),
        "--steps",
        steps,
        "--every",
        "2",
        "--patch-size",
        "8",
        "--rays-per-batch",
        "200",
        "--out",
        out,
    ]
}

/// The tiny random-weight Difix of the fixtures.
fn tiny_difix() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| crate::repo().join("tests/fixtures/difix/tiny").display().to_string())
}

#[test]
fn nerfacto_refine_runs_rounds_at_the_multiples_of_every_and_saves_a_model_that_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (data, transforms) = make_case(dir.path());
    let out = dir.path().join("run");
    let config = s(&fixture("config.json"));
    let (d, c, t, o) = (s(&data), s(&fixture("step-000000300.ckpt")), s(&transforms), s(&out));
    let mut args = refine_args(&d, &c, &t, &o, "4");
    // With the camera optimiser of Difix3D's config (its README runs it off, our default).
    args.extend(["--config", &config, "--val-every", "3", "--camera-optimizer", "SO3xR3"]);
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = difix3d(&args);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    eprintln!("nerfacto refine: 4 steps in {:.1} s", started.elapsed().as_secs_f32());

    // The checkpoint is at step 300: the run takes steps 301..=304, with rounds at 302 and 304.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["first_step"], 301, "{summary}");
    assert_eq!(summary["steps"], 4, "{summary}");
    assert_eq!(summary["round_steps"], serde_json::json!([302, 304]), "{summary}");
    // The eval views were rendered and measured at 303 (the reference's `val(step)`), and only then.
    let val = summary["val"].as_array().unwrap();
    assert_eq!(val.len(), 1, "{summary}");
    assert_eq!(val[0]["step"], 303, "{summary}");
    assert!(val[0]["psnr"].as_f64().unwrap().is_finite(), "{summary}");
    let val_dirs: Vec<_> = std::fs::read_dir(out.join("val"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(val_dirs, ["303"]);
    let val_renders = std::fs::read_dir(out.join("val/303")).unwrap().count();
    let eval_renders = std::fs::read_dir(out.join("eval")).unwrap().count();
    assert!(
        val_renders > 0 && val_renders == eval_renders,
        "{val_renders} val renders, {eval_renders} eval renders"
    );
    // nerfstudio's checkpoint holds its Adam moments: all 22 parameters continue with them, and
    // the camera optimiser's corrections with theirs.
    assert_eq!(summary["adam_moments_restored"], 23, "{summary}");
    assert!(summary["camera_corrections"]["rotation_mean_degrees"].as_f64().unwrap() > 0.0);
    assert!(summary["eval_psnr_before"].as_f64().unwrap().is_finite());
    assert!(summary["eval_psnr_after"].as_f64().unwrap().is_finite());
    // The paper's table with NeRF rows: before, refined, refined with Difix on the eval renders.
    let ablation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(ablation, summary["eval"], "eval.json and summary.json agree");
    assert_eq!(ablation["baseline"]["psnr"], summary["eval_psnr_before"]);
    assert_eq!(ablation["refined"]["psnr"], summary["eval_psnr_after"]);
    for line in ["Nerfacto", "+ Difix3D ", "+ Difix3D+"] {
        assert!(stdout.contains(line), "the table has no `{line}` row: {stdout}");
    }
    // The Difix3D+ row measures the fixed renders it saved, against the eval photo.
    let post = &ablation["refined_post"]["views"][0];
    let name = post["name"].as_str().unwrap();
    let stem = Path::new(name).file_stem().unwrap().to_string_lossy();
    let fixed = image::open(out.join("eval_post").join(format!("{stem}.png")))
        .unwrap()
        .to_rgb8();
    let photo = image::open(data.join("images").join(name)).unwrap().to_rgb8();
    let mse = fixed
        .as_raw()
        .iter()
        .zip(photo.as_raw())
        .map(|(a, b)| ((f64::from(*a) - f64::from(*b)) / 255.0).powi(2))
        .sum::<f64>()
        / fixed.as_raw().len() as f64;
    let psnr = -10.0 * mse.log10();
    let reported = post["psnr"].as_f64().unwrap();
    assert!(
        (psnr - reported).abs() < 1e-3,
        "Difix3D+ PSNR {reported} vs {psnr} from eval_post/"
    );
    assert_ne!(
        ablation["refined_post"]["psnr"], ablation["refined"]["psnr"],
        "Difix changed nothing in the eval renders"
    );
    let mut rounds: Vec<String> = std::fs::read_dir(out.join("rounds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    rounds.sort();
    assert_eq!(rounds, ["round_000302", "round_000304"]);

    // The novel cameras: shift_poses from the training poses toward the eval pose, 0.5 per round,
    // measured in the model's frame; the FIRST training camera's intrinsics and size.
    let cameras = dataset_cameras();
    let train: Vec<Affine3A> = cameras[..3].iter().map(|c| to_model(&c.1)).collect();
    let targets = [to_model(&cameras[3].1)];
    let first_round = poses::shift_poses(&train, &targets, 0.5);
    let second_round = poses::shift_poses(&first_round, &targets, 0.5);
    let [fx, fy, cx, cy] = cameras[0].2;
    for (round, want) in [("round_000302", &first_round), ("round_000304", &second_round)] {
        let dir = out.join("rounds").join(round);
        let saved = read_cameras(&dir);
        assert_eq!(saved.len(), 1, "{round}: one novel view per eval view");
        let camera = &saved[0];
        assert_eq!(camera.name, "novel_0000");
        assert_pose_close(&camera.world_from_camera, &want[0], round);
        assert_eq!(
            (camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy),
            (32, 24, fx, fy, cx, cy),
            "{round}: the first training camera's intrinsics"
        );
        for sub in ["pred", "fixed", "ref", "alpha"] {
            let image = image::open(dir.join(sub).join("novel_0000.png")).unwrap();
            assert_eq!((image.width(), image.height()), (32, 24), "{round}/{sub}");
        }
        // Difix's reference: the photo of the training camera nearest in the model's frame.
        let nearest = poses::nearest(&train, &want[0]).unwrap();
        let photo = image::open(data.join("images").join(&cameras[nearest].0))
            .unwrap()
            .to_rgb8();
        let used = image::open(dir.join("ref/novel_0000.png")).unwrap().to_rgb8();
        assert_eq!(used, photo, "{round}: the reference is training view {nearest}");
    }
    // The rounds really moved, 0.5 each in the model's frame (the data's 3 units are 1.5 there): the
    // first round from the nearest training camera to 1.0 from the target; the second would land
    // within 0.5 of it, so it jumps there (the reference's rule), with the rotation halfway.
    let gap = |pose: &Affine3A| pose.translation.distance(targets[0].translation);
    assert!((gap(&train[2]) - 1.5).abs() < 1e-4, "{}", gap(&train[2]));
    assert!((gap(&first_round[0]) - 1.0).abs() < 1e-4, "{}", gap(&first_round[0]));
    assert!(gap(&second_round[0]) < 1e-4, "{}", gap(&second_round[0]));
    assert!(!second_round[0].matrix3.abs_diff_eq(targets[0].matrix3, 1e-3));

    // The run's model records its last step and renders back through nerfacto-render.
    assert_eq!(
        Checkpoint::read(&out.join("nerfacto.safetensors")).unwrap().step,
        Some(304)
    );
    let renders = dir.path().join("renders");
    let camera_json = out.join("rounds/round_000302/cameras.json");
    let (code, stdout, stderr) = difix3d(&[
        "nerfacto-render",
        "--checkpoint",
        &s(&out.join("nerfacto.safetensors")),
        "--config",
        &s(&out.join("nerfacto.json")),
        "--camera-json",
        &s(&camera_json),
        "--out",
        &s(&renders),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(renders.join("novel_0000.png").exists());

    // Refining the run's own output continues at step 305 with its dataparser_transforms.json found
    // beside it; 305 is no multiple of 2, so no round runs.
    let again = dir.path().join("again");
    let (c2, o2) = (s(&out.join("nerfacto.safetensors")), s(&again));
    let config2 = s(&out.join("nerfacto.json"));
    let mut args: Vec<&str> = refine_args(&d, &c2, "", &o2, "1")
        .into_iter()
        .filter(|a| !a.is_empty())
        .collect();
    let at = args.iter().position(|a| *a == "--dataparser-transforms").unwrap();
    args.remove(at);
    args.extend(["--nerfacto-config", &config2, "--camera-optimizer", "SO3xR3"]);
    let (code, stdout, stderr) = difix3d(&args);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(again.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["first_step"], 305, "{summary}");
    assert_eq!(summary["round_steps"], serde_json::json!([]), "{summary}");
    // The first run saved its Adam moments beside the model, the camera corrections' too; this one
    // continues with them.
    assert_eq!(summary["adam_moments_restored"], 23, "{summary}");
    assert!(!again.join("rounds").exists() || std::fs::read_dir(again.join("rounds")).unwrap().next().is_none());
    assert_eq!(
        Checkpoint::read(&again.join("nerfacto.safetensors")).unwrap().step,
        Some(305)
    );
}

/// A checkpoint of nerfstudio's tiny-cuda-nn implementation refines too: its Adam moments continue
/// (split as its vectors are) and the run saves in its layout, which opens again.
#[test]
fn nerfacto_refine_continues_a_tcnn_checkpoint_in_its_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (data, transforms) = make_case(dir.path());
    let out = dir.path().join("run");
    let config = s(&fixture("tcnn_config.json"));
    let (d, c, t, o) = (
        s(&data),
        s(&fixture("tcnn-step-000000041.ckpt")),
        s(&transforms),
        s(&out),
    );
    let mut args = refine_args(&d, &c, &t, &o, "2");
    args.extend(["--config", &config, "--no-post-render-eval"]);
    let (code, stdout, stderr) = difix3d(&args);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["first_step"], 42, "{summary}");
    assert_eq!(summary["round_steps"], serde_json::json!([42]), "{summary}");
    // Field: codes, two density-MLP matrices, the grid, three colour-MLP matrices and the bias of
    // its padded input; each proposal network: grid, two matrices, a bias (the camera optimiser is
    // off by default, so the checkpoint's corrections are not read).
    assert_eq!(summary["adam_moments_restored"], 16, "{summary}");
    assert!(summary["camera_corrections"].is_null(), "{summary}");
    let saved = Checkpoint::read(&out.join("nerfacto.safetensors")).unwrap();
    assert!(saved.contains("field.mlp_base.model.params") && !saved.contains("field.mlp_head.layers.0.weight"));
    let model = Nerfacto::<CpuBackend>::open(
        &out.join("nerfacto.safetensors"),
        Some(&out.join("nerfacto.json")),
        &Default::default(),
    )
    .unwrap();
    assert!(model.tcnn.is_some());
}

#[test]
fn nerfacto_refine_refuses_bad_arguments_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (data, transforms) = make_case(dir.path());
    let out = dir.path().join("run");
    let (d, t, o) = (s(&data), s(&transforms), s(&out));
    let ckpt = s(&fixture("step-000000300.ckpt"));
    let config = s(&fixture("config.json"));
    let missing = s(&dir.path().join("missing.ckpt"));
    let scene = s(&repo().join("tests/fixtures/render/maupertuis_sh3.ply"));
    let nerfacto = ["refine", "--method", "nerfacto", "--data", &d, "--out", &o];
    let with_checkpoint = [
        &nerfacto[..],
        &[
            "--checkpoint",
            &ckpt,
            "--config",
            &config,
            "--dataparser-transforms",
            &t,
        ],
    ]
    .concat();
    let splats = ["refine", "--data", &d, "--out", &o, "--scene", &scene];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (nerfacto.to_vec(), "needs --checkpoint"),
        ([&with_checkpoint[..], &["--scene", &scene]].concat(), "--scene"),
        ([&with_checkpoint[..], &["--targets", "eval"]].concat(), "--targets"),
        ([&with_checkpoint[..], &["--antialiased"]].concat(), "--antialiased"),
        ([&with_checkpoint[..], &["--backend", "cuda"]].concat(), "CUDA"),
        ([&with_checkpoint[..], &["--patch-size", "0"]].concat(), "--patch-size"),
        (
            [&with_checkpoint[..], &["--novel-probability", "1.5"]].concat(),
            "--novel-probability",
        ),
        (
            [&with_checkpoint[..], &["--rays-per-batch", "40", "--patch-size", "8"]].concat(),
            "less than one",
        ),
        // 32x32 patches (the default) do not fit in the 32x24 photos.
        (with_checkpoint.clone(), "32x32 patches do not fit in a 32x24 view"),
        ([&splats[..], &["--patch-size", "8"]].concat(), "--patch-size"),
        (
            [&splats[..], &["--camera-optimizer", "off"]].concat(),
            "--camera-optimizer",
        ),
        (
            [&with_checkpoint[..], &["--camera-optimizer", "on"]].concat(),
            "off, SO3xR3 or SE3",
        ),
        // Every other view held out: the checkpoint's corrections are for three training images.
        (
            [
                &with_checkpoint[..],
                &[
                    "--difix3d-test-every",
                    "2",
                    "--patch-size",
                    "8",
                    "--camera-optimizer",
                    "SO3xR3",
                ],
            ]
            .concat(),
            "corrects 3 camera(s)",
        ),
        ([&splats[..], &["--checkpoint", &ckpt]].concat(), "--checkpoint"),
        (
            [
                &nerfacto[..],
                &["--checkpoint", &missing, "--dataparser-transforms", &t],
            ]
            .concat(),
            "missing.ckpt",
        ),
        (
            [
                &nerfacto[..],
                &["--checkpoint", &ckpt, "--config", &config, "--patch-size", "8"],
            ]
            .concat(),
            "dataparser_transforms.json",
        ),
    ];
    for (args, expect) in cases {
        let (code, stdout, stderr) = difix3d(&args);
        assert_ne!(code, 0, "{args:?} was accepted: {stdout}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: the error does not say `{expect}`: {stderr}"
        );
        assert!(!out.exists(), "{args:?} created the output folder");
    }
}
