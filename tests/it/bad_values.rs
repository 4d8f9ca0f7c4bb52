//! Bad input, part two: values that parse but make no sense (a NaN point, a 0x0 camera, a
//! billion-frame path, a zero group count, NaN weights, a cut-off photo, `--distance nan`). Each must
//! fail within seconds with an error naming the file or flag and the rule, exit non-zero, never
//! panic, and leave no output behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bad_input::{expect_clean_failure, good_vertex, ply_with, GOOD_HEADER};
use crate::{asset, copy_dir, repo};

/// Runs the binary, killing it after `limit` (a hang is a failure, not a stuck test run); returns
/// (exit code, stderr), the code -1 when it was killed.
fn run_with_limit(args: &[&str], limit: Duration) -> (i32, String) {
    run_with_env(args, &[], limit)
}

/// [`run_with_limit`] with extra environment variables.
fn run_with_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_difix3d"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run difix3d");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&err_path).unwrap_or_default())
}

/// A failure within `limit` seconds, exit 1, no panic, one `error:` line mentioning every needle.
fn expect_quick_failure(args: &[&str], limit_s: u64, needles: &[&str]) {
    expect_quick_failure_with(args, &[], limit_s, needles);
}

/// [`expect_quick_failure`] with extra environment variables.
fn expect_quick_failure_with(args: &[&str], env: &[(&str, &str)], limit_s: u64, needles: &[&str]) {
    let (code, stderr) = run_with_env(args, env, Duration::from_secs(limit_s));
    assert_ne!(code, -1, "{args:?} did not finish within {limit_s} s; stderr: {stderr}");
    assert_eq!(code, 1, "expected exit 1 for {args:?}, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    // The last one: graphics drivers may log their own `error:` lines before it.
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for needle in needles {
        assert!(
            line.contains(needle),
            "the error for {args:?} should mention '{needle}': {line}"
        );
    }
}

/// A command-line value clap's parser refuses: non-zero exit, the flag and the rule named.
fn expect_flag_refused(args: &[&str], flag: &str, rule: &str) {
    let (code, stderr) = run_with_limit(args, Duration::from_secs(30));
    assert!(
        code != 0 && code != -1,
        "{args:?} should be refused, exit {code}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    assert!(
        stderr.contains(flag) && stderr.contains(rule),
        "the error for {args:?} should name {flag} and '{rule}': {stderr}"
    );
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A copy of a sample dataset to break, or `None` (skipped loudly) when the assets are absent.
fn dataset_copy(name: &str, dir: &Path) -> Option<PathBuf> {
    let source = asset(name)?;
    let copy = dir.join(name);
    copy_dir(&source, &copy);
    Some(copy)
}

fn good_scene(dir: &Path) -> PathBuf {
    let scene = dir.join("scene.ply");
    std::fs::write(&scene, ply_with(GOOD_HEADER, &[good_vertex(), good_vertex()].concat())).unwrap();
    scene
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

// --- 1. COLMAP values -------------------------------------------------------------------------

#[test]
fn a_nan_point_in_a_text_model_fails_train_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = dataset_copy("maupertuis", dir.path()) else {
        return;
    };
    let points = data.join("colmap/sparse/0/points3D.txt");
    let text = std::fs::read_to_string(&points).unwrap();
    let mut done = false;
    let broken: Vec<String> = text
        .lines()
        .map(|line| {
            if done || line.starts_with('#') || line.trim().is_empty() {
                return line.to_string();
            }
            done = true;
            let mut fields: Vec<&str> = line.split_whitespace().collect();
            fields[2] = "nan";
            fields.join(" ")
        })
        .collect();
    std::fs::write(&points, broken.join("\n")).unwrap();
    let out = dir.path().join("run");
    expect_train_refused(&data, &out, "points3D.txt");
    assert!(!out.join("checkpoint.safetensors").exists());
}

/// `train` on `data` at 1/8 size on the CPU into `out` (the step count is the caller's).
fn cpu_train<'a>(data: &'a Path, out: &'a Path) -> [&'a str; 9] {
    [
        "train",
        "--data",
        s(data),
        "--factor",
        "8",
        "--backend",
        "cpu",
        "--out",
        s(out),
    ]
}

/// `train --steps 0` on `data` fails within a minute, naming `file` and the non-finite value.
fn expect_train_refused(data: &Path, out: &Path, file: &str) {
    let args = [&cpu_train(data, out)[..], &["--steps", "0"]].concat();
    expect_quick_failure(&args, 60, &[file, "non-finite"]);
}

#[test]
fn a_nan_point_in_a_binary_model_fails_train_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = dataset_copy("maupertuis-bin", dir.path()) else {
        return;
    };
    let points = data.join("colmap/sparse/0/points3D.bin");
    let mut bytes = std::fs::read(&points).unwrap();
    // The point count (u64), then the first point's id (u64) and its x (f64).
    bytes[16..24].copy_from_slice(&f64::NAN.to_le_bytes());
    std::fs::write(&points, bytes).unwrap();
    let out = dir.path().join("run");
    expect_train_refused(&data, &out, "points3D.bin");
}

// --- 2. Camera JSON and camera paths ------------------------------------------------------------

fn camera_json(width: u32, height: u32, fx: f32, rows: [[f32; 4]; 4]) -> serde_json::Value {
    serde_json::json!({
        "name": "view", "width": width, "height": height,
        "fx": fx, "fy": 50.0, "cx": 32.0, "cy": 24.0,
        "world_from_camera": rows,
    })
}

const IDENTITY: [[f32; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, -3.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn render_camera_json(contents: &serde_json::Value, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let scene = good_scene(dir.path());
    let cameras = dir.path().join("cameras.json");
    std::fs::write(&cameras, contents.to_string()).unwrap();
    let out = dir.path().join("out");
    let mut all = vec!["cameras.json"];
    all.extend_from_slice(needles);
    expect_clean_failure(
        &[
            "render",
            "--scene",
            s(&scene),
            "--camera-json",
            s(&cameras),
            "--out",
            s(&out),
        ],
        &all,
    );
    assert_eq!(count_files(&out), 0, "no image may be written for bad cameras");
}

#[test]
fn camera_json_values_that_make_no_sense_are_errors() {
    render_camera_json(&camera_json(0, 0, 50.0, IDENTITY), &["0x0"]);
    render_camera_json(&camera_json(64, 20000, 50.0, IDENTITY), &["16384"]);
    render_camera_json(&camera_json(64, 48, 0.0, IDENTITY), &["focal"]);
    render_camera_json(&camera_json(64, 48, -5.0, IDENTITY), &["focal"]);
    let mut sheared = IDENTITY;
    sheared[0][1] = 0.5;
    render_camera_json(&camera_json(64, 48, 50.0, sheared), &["not a rotation"]);
    let mut scaled = IDENTITY;
    scaled[1][1] = 2.0;
    render_camera_json(&camera_json(64, 48, 50.0, scaled), &["not a rotation"]);
    render_camera_json(&serde_json::json!([]), &["empty"]);
    // A good camera renders, so the cases above fail for their values.
    let dir = tempfile::tempdir().unwrap();
    let scene = good_scene(dir.path());
    let cameras = dir.path().join("cameras.json");
    std::fs::write(&cameras, camera_json(64, 48, 50.0, IDENTITY).to_string()).unwrap();
    let out = dir.path().join("out");
    let (code, _, stderr) = crate::difix3d(&[
        "render",
        "--scene",
        s(&scene),
        "--camera-json",
        s(&cameras),
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 0, "{stderr}");
}

fn camera_path(duration_s: f64) -> serde_json::Value {
    serde_json::json!({
        "version": 1, "duration_s": duration_s,
        "keyframes": [
            {"position": [0.0, 0.0, -3.0], "rotation": [0.0, 0.0, 0.0, 1.0], "fov_y_deg": 50.0},
            {"position": [0.5, 0.0, -3.0], "rotation": [0.0, 0.0, 0.0, 1.0], "fov_y_deg": 50.0},
        ],
    })
}

#[test]
fn a_camera_path_with_an_absurd_frame_count_is_refused_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let scene = good_scene(dir.path());
    let path = dir.path().join("path.json");
    std::fs::write(&path, camera_path(1e12).to_string()).unwrap();
    let out = dir.path().join("frames");
    expect_quick_failure(
        &[
            "record",
            "--scene",
            s(&scene),
            "--path",
            s(&path),
            "--out",
            s(&out),
            "--size",
            "32x24",
        ],
        30,
        &["path.json", "at 30 fps is", "frames, more than the limit of 1000000"],
    );
    assert_eq!(count_files(&out), 0);
}

// --- 3 and 8. Command-line values ---------------------------------------------------------------

#[test]
fn numeric_flags_outside_their_domain_are_refused_at_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let scene = good_scene(dir.path());
    let d = s(dir.path());
    let out = dir.path().join("out");
    let base_refine = ["refine", "--scene", s(&scene), "--data", d, "--out", s(&out)];
    expect_flag_refused(
        &[&base_refine[..], &["--distance", "nan"]].concat(),
        "--distance",
        "finite",
    );
    expect_flag_refused(
        &[&base_refine[..], &["--distance=-1"]].concat(),
        "--distance",
        "greater than 0",
    );
    expect_flag_refused(&[&base_refine[..], &["--every", "0"]].concat(), "--every", "at least 1");
    expect_flag_refused(
        &[&base_refine[..], &["--path-samples", "0"]].concat(),
        "--path-samples",
        "at least 1",
    );
    let base_train = ["train", "--data", d, "--out", s(&out)];
    expect_flag_refused(
        &[&base_train[..], &["--sh-degree", "4"]].concat(),
        "--sh-degree",
        "between 0 and 3",
    );
    expect_flag_refused(
        &[&base_train[..], &["--factor", "0"]].concat(),
        "--factor",
        "at least 1",
    );
    let base_render = ["render", "--scene", s(&scene), "--out", s(&out)];
    expect_flag_refused(
        &[&base_render[..], &["--width", "0", "--height", "10"]].concat(),
        "--width",
        "between 1 and 16384",
    );
    expect_flag_refused(
        &[&base_render[..], &["--sh-degree", "9"]].concat(),
        "--sh-degree",
        "between 0 and 3",
    );
    let base_record = ["record", "--scene", s(&scene), "--path", d, "--out", s(&out)];
    expect_flag_refused(&[&base_record[..], &["--fps", "0"]].concat(), "--fps", "greater than 0");
    expect_flag_refused(&[&base_record[..], &["--fps", "inf"]].concat(), "--fps", "finite");
    let base_difix = ["train-difix", "--data", d, "--out", s(&out), "--lpips-backbone", d];
    expect_flag_refused(&[&base_difix[..], &["--lr", "nan"]].concat(), "--lr", "finite");
    expect_flag_refused(
        &[&base_difix[..], &["--lambda-gram=-1"]].concat(),
        "--lambda-gram",
        "at least 0",
    );
    expect_flag_refused(
        &[&base_difix[..], &["--resolution", "0"]].concat(),
        "--resolution",
        "between 1",
    );
    expect_flag_refused(
        &[&base_difix[..], &["--image-prep", "square"]].concat(),
        "--image-prep",
        "resize",
    );
    expect_flag_refused(
        &[&base_difix[..], &["--size", "576"]].concat(),
        "--size",
        "HEIGHTxWIDTH",
    );
    assert!(!out.exists());
}

fn tiny_model() -> PathBuf {
    repo().join("tests/fixtures/difix/tiny")
}

fn lpips_fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/lpips").join(name)
}

/// A pair JSON over the LPIPS fixture images (32x32 or larger) in `dir`.
fn pairs(dir: &Path, image: &Path) -> PathBuf {
    let json = dir.join("pairs.json");
    let target = lpips_fixture("b.png");
    std::fs::write(
        &json,
        serde_json::json!({"train": {"x": {"image": s(image), "target_image": s(&target)}}}).to_string(),
    )
    .unwrap();
    json
}

fn train_difix_args<'a>(data: &'a Path, out: &'a Path, model: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let backbone = lpips_fixture("vgg_tiny_backbone.pth");
    let lin = lpips_fixture("vgg_tiny_lin.pth");
    let mut args: Vec<String> = [
        "train-difix",
        "--data",
        s(data),
        "--model",
        s(model),
        "--out",
        s(out),
        "--steps",
        "1",
        "--image-prep",
        "crop",
        "--resolution",
        "32",
        "--lpips-backbone",
        s(&backbone),
        "--lpips-lin",
        s(&lin),
        "--backend",
        "cpu",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

#[test]
fn a_gram_crop_smaller_than_vgg_needs_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = pairs(dir.path(), &lpips_fixture("a.png"));
    let out = dir.path().join("run");
    let model = tiny_model();
    for (crop, needles) in [("8", ["--gram-crop", "16"]), ("64", ["--gram-crop", "32"])] {
        let args = train_difix_args(&data, &out, &model, &["--gram-crop", crop]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_quick_failure(&args, 60, &needles);
    }
    assert!(!out.exists(), "no run folder for a run that never started");
}

/// `--image-prep`: the size flag of the other kind is refused, not silently unused (the reference
/// ignores its own `--resolution`); resize sizes follow the same rules as crop sides, and the Gram
/// crop must fit the shorter side of a non-square size.
#[test]
fn train_difix_image_prep_sizes_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = pairs(dir.path(), &lpips_fixture("a.png"));
    let out = dir.path().join("run");
    let model = tiny_model();
    let base = train_difix_args(&data, &out, &model, &[]);
    // Without the helper's `--image-prep crop --resolution 32`.
    let at = base.iter().position(|a| a == "--image-prep").unwrap();
    let mut plain = base.clone();
    plain.drain(at..at + 4);
    for (extra, needles) in [
        (
            &["--resolution", "512"][..],
            &["--resolution is the crop side", "--size HEIGHTxWIDTH"][..],
        ),
        (
            &["--image-prep", "crop", "--size", "32x32"],
            &["--size is the size of --image-prep resize"],
        ),
        (&["--size", "30x40"], &["--size sides must be multiples of 8", "30x40"]),
        (
            &["--size", "32x48", "--gram-crop", "40"],
            &["--gram-crop", "shorter side 32"],
        ),
    ] {
        let mut args: Vec<&str> = plain.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        expect_quick_failure(&args, 60, needles);
    }
    assert!(!out.exists(), "no run folder for a run that never started");
}

// --- 9. train-difix checks every image before writing -------------------------------------------

#[test]
fn train_difix_with_a_corrupt_pair_image_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(lpips_fixture("a.png")).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &good[..good.len() * 2 / 3]).unwrap();
    let data = pairs(dir.path(), &cut);
    let out = dir.path().join("run");
    let args = train_difix_args(&data, &out, &tiny_model(), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_quick_failure(&args, 120, &["pairs.json"]);
    let (_, stderr) = run_with_limit(&args, Duration::from_secs(120));
    assert!(stderr.contains("cut.png") && stderr.contains("truncated"), "{stderr}");
    assert!(!out.exists(), "no run folder for a run that never started");
}

// --- 4 and 5. Difix model folders ---------------------------------------------------------------

fn model_copy(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    copy_dir(&tiny_model(), &model);
    model
}

fn edit_config(model: &Path, part: &str, key: &str, value: serde_json::Value) {
    let path = model.join(part).join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(&path, config.to_string()).unwrap();
}

/// `difix3d fix` with `model` on one small image.
fn fix_with(model: &Path, input: &Path, out: &Path) -> Vec<String> {
    [
        "fix",
        "--model",
        s(model),
        "--input",
        s(input),
        "--out",
        s(out),
        "--native",
        "--backend",
        "cpu",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn expect_fix_failure(model: &Path, input: &Path, needles: &[&str]) {
    let out = model.parent().unwrap().join("fixed");
    let args = fix_with(model, input, &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_quick_failure(&args, 120, needles);
    assert_eq!(count_files(&out), 0, "no output for a bad model or input");
}

#[test]
fn model_configs_that_break_the_architecture_are_errors_naming_file_and_key() {
    let input = lpips_fixture("a.png");
    for (part, key, value, rule) in [
        ("unet", "norm_num_groups", serde_json::json!(0), "greater than 0"),
        ("unet", "norm_num_groups", serde_json::json!(5), "divide"),
        ("unet", "attention_head_dim", serde_json::json!(0), "head count"),
        ("unet", "attention_head_dim", serde_json::json!([3, 3, 3, 3]), "divide"),
        ("vae", "norm_num_groups", serde_json::json!(0), "greater than 0"),
        ("vae", "latent_channels", serde_json::json!(0), "greater than 0"),
        ("text_encoder", "num_attention_heads", serde_json::json!(5), "divide"),
        (
            "text_encoder",
            "num_attention_heads",
            serde_json::json!(0),
            "greater than 0",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let model = model_copy(dir.path());
        edit_config(&model, part, key, value);
        let file = format!("{part}/config.json");
        expect_fix_failure(&model, &input, &[&file, key, rule]);
    }
}

/// Sets the first value of tensor `key` in a safetensors file to NaN.
fn poison(file: &Path, key: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header[key]["dtype"], "F32");
    let start = 8 + n + header[key]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn nan_weights_are_an_error_naming_file_and_tensor() {
    let input = lpips_fixture("a.png");
    for (file, key) in [
        ("unet/diffusion_pytorch_model.safetensors", "conv_in.bias"),
        ("vae/diffusion_pytorch_model.safetensors", "encoder.conv_in.weight"),
        ("text_encoder/model.safetensors", "text_model.final_layer_norm.weight"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let model = model_copy(dir.path());
        poison(&model.join(file), key);
        expect_fix_failure(&model, &input, &[file, key, "finite"]);
    }
}

// --- 6. Our own checkpoints ---------------------------------------------------------------------

#[test]
fn resuming_from_a_nan_checkpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = asset("maupertuis") else { return };
    let out = dir.path().join("run");
    let base = cpu_train(&data, &out);
    let (code, _, stderr) = crate::difix3d(&[&base[..], &["--steps", "0"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let checkpoint = dir.path().join("broken.safetensors");
    std::fs::copy(out.join("checkpoint.safetensors"), &checkpoint).unwrap();
    poison(&checkpoint, "means");
    let out2 = dir.path().join("resumed");
    let base2 = cpu_train(&data, &out2);
    expect_quick_failure(
        &[&base2[..], &["--steps", "1", "--resume", s(&checkpoint)]].concat(),
        60,
        &["broken.safetensors", "means", "finite"],
    );
    assert!(!out2.join("checkpoint.safetensors").exists());
}

// --- 7. Cut-off photos --------------------------------------------------------------------------

#[test]
fn a_truncated_jpeg_fails_the_fix_instead_of_being_fixed_as_if_whole() {
    let dir = tempfile::tempdir().unwrap();
    let photo = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 4, 90]));
    let whole = dir.path().join("whole.jpg");
    photo.save(&whole).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("fixed");
    let args = fix_with(&tiny_model(), &cut, &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_quick_failure(&args, 120, &["cut.jpg", "truncated"]);
    assert_eq!(count_files(&out), 0);
}

#[test]
fn a_truncated_training_photo_fails_train() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = dataset_copy("maupertuis", dir.path()) else {
        return;
    };
    let photo = data.join("images_8/01.jpg");
    let bytes = std::fs::read(&photo).unwrap();
    std::fs::write(&photo, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("run");
    expect_quick_failure(
        &[&cpu_train(&data, &out)[..], &["--steps", "0"]].concat(),
        120,
        &["01.jpg", "truncated"],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
}

// --- Long jobs size themselves first ------------------------------------------------------------

#[test]
fn a_step_count_no_run_could_finish_is_refused_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = dataset_copy("maupertuis", dir.path()) else {
        return;
    };
    let out = dir.path().join("run");
    let args = [&cpu_train(&data, &out)[..], &["--steps", "18446744073709551615"]].concat();
    expect_quick_failure(&args, 60, &["--steps", "18446744073709551615", "limit of 100000000"]);
    assert!(!out.exists(), "a refused run must not create its folder");
}

#[test]
fn a_recording_that_cannot_fit_on_the_disk_is_refused_before_any_frame() {
    let dir = tempfile::tempdir().unwrap();
    let scene = good_scene(dir.path());
    let path = dir.path().join("path.json");
    std::fs::write(&path, camera_path(2.0).to_string()).unwrap();
    let out = dir.path().join("frames");
    let args = [
        "record",
        "--scene",
        s(&scene),
        "--path",
        s(&path),
        "--size",
        "320x240",
        "--fps",
        "10",
        "--out",
        s(&out),
    ];
    // 20 frames of 320x240 need at least 20 * 14400 bytes; pretend 100 KiB are free.
    expect_quick_failure_with(
        &args,
        &[("DIFIX3D_FREE_BYTES", "102400")],
        60,
        &[
            "frames",
            "not enough free disk space",
            "20 frame(s) of 320x240",
            "100.0 KiB is free",
        ],
    );
    assert!(!out.exists(), "a refused recording must not create its folder");
}

#[test]
fn a_training_run_that_cannot_fit_on_the_disk_leaves_out_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = dataset_copy("maupertuis", dir.path()) else {
        return;
    };
    let out = dir.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "kept").unwrap();
    let args = [&cpu_train(&data, &out)[..], &["--steps", "1"]].concat();
    expect_quick_failure_with(
        &args,
        &[("DIFIX3D_FREE_BYTES", "1000")],
        120,
        &["run", "not enough free disk space", "splats"],
    );
    assert_eq!(count_files(&out), 1, "only the file from before stays");
}
