//! `difix3d record` end to end: a 3-keyframe path through the sample dataset's cameras, rendered and
//! fixed by the tiny random-weight Difix with the nearest training photo as reference.

use std::path::{Path, PathBuf};

use difix3d::camera_path::CameraPath;
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::difix::Difix;
use difix3d::nn::backend::CpuBackend;
use difix3d::render::{GpuSplats, RenderOptions};

use crate::{asset, difix3d, gpu, repo};

fn tiny() -> PathBuf {
    repo().join("tests/fixtures/difix/tiny")
}

fn scene() -> PathBuf {
    repo().join("tests/fixtures/render/maupertuis_sh3.ply")
}

fn pngs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    names
}

/// Saves a path through the dataset's three training cameras taking 1.5 s: at 2 fps its frames sit
/// exactly on the keyframes.
fn write_path(data: &Path, file: &Path) -> CameraPath {
    let dataset = difix3d::data::open_dataset(data, 8).unwrap();
    assert_eq!(dataset.train.len(), 3, "maupertuis: 4 images, the first is eval");
    let path = CameraPath::through_cameras(dataset.train.iter().map(|v| &v.camera), 1.5);
    path.save(file).unwrap();
    path
}

#[test]
fn record_renders_every_frame_and_fixes_it_like_the_pipeline() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let path_file = dir.path().join("path.json");
    let path = write_path(&data, &path_file);
    let out = dir.path().join("frames");
    let (code, stdout, stderr) = difix3d(&[
        "record",
        "--scene",
        scene().to_str().unwrap(),
        "--path",
        path_file.to_str().unwrap(),
        "--fps",
        "2",
        "--size",
        "64x40",
        "--fix",
        "--model",
        tiny().to_str().unwrap(),
        "--backend",
        "cpu",
        "--ref",
        "auto",
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "8",
        "--side-by-side",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("recorded 3 frame(s)"), "{stdout}");
    let expected = vec!["00000.png", "00001.png", "00002.png"];
    assert_eq!(pngs(&out), expected, "three fixed frames, no temporary files");
    assert_eq!(pngs(&out.join("raw")), expected);
    assert_eq!(pngs(&out.join("side_by_side")), expected);

    let dataset = difix3d::data::open_dataset(&data, 8).unwrap();
    let (ctx, rasterizer) = gpu();
    let splats = GpuSplats::upload(ctx, &difix3d::scene::load(&scene()).unwrap()).unwrap();
    // The same backend `--backend cpu` runs, so the comparison below can be exact (across CPU
    // backends the sums differ in order, and an 8-bit level can flip).
    let mut difix = Difix::<CpuBackend>::load(&tiny(), None, &Default::default()).unwrap();
    for (i, name) in expected.iter().enumerate() {
        // The raw frame is the render of the path's camera for that frame...
        let camera = path.frame_camera(i, 3, 64, 40);
        assert!(camera.position().distance(dataset.train[i].camera.position()) < 1e-4);
        let render = {
            let mut r = rasterizer.lock().unwrap();
            r.render(ctx, &splats, &camera, &RenderOptions::default()).unwrap();
            difix3d::image_io::to_rgb8(&r.read_image(ctx).unwrap())
        };
        let raw = image::open(out.join("raw").join(name)).unwrap().to_rgb8();
        let worst = raw
            .as_raw()
            .iter()
            .zip(render.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "frame {i}: raw frame differs from the render by {worst} levels"
        );
        // ...and the fixed frame is the pipeline applied to it, with the nearest training photo (the
        // keyframe's own camera) as reference.
        let reference = image::open(&dataset.train[i].image_path).unwrap().to_rgb8();
        let fixed = difix
            .fix_image(&raw, Some(&reference), SizePolicy::Native, DEFAULT_PROMPT)
            .unwrap();
        let recorded = image::open(out.join(name)).unwrap().to_rgb8();
        assert_eq!(
            recorded, fixed,
            "frame {i}: fixed frame differs from the pipeline's output"
        );
        let side = image::open(out.join("side_by_side").join(name)).unwrap().to_rgb8();
        assert_eq!(side.dimensions(), (128, 40));
    }
}

#[test]
fn record_encodes_mp4_and_rejects_bad_requests() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let path_file = dir.path().join("path.json");
    write_path(&data, &path_file);
    let base = |out: &Path| {
        vec![
            "record".to_string(),
            "--scene".into(),
            scene().display().to_string(),
            "--path".into(),
            path_file.display().to_string(),
            "--fps".into(),
            "4".into(),
            "--size".into(),
            "63x41".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        difix3d(&refs)
    };

    let video = dir.path().join("fly.mp4");
    if std::process::Command::new("ffmpeg").arg("-version").output().is_ok() {
        let (code, stdout, stderr) = run(base(&video));
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        // 1.5 s at 4 fps; odd sizes are padded to even for H.264.
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
            ])
            .args(["stream=nb_read_frames,width,height", "-of", "csv=p=0"])
            .arg(&video)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&probe.stdout).trim().to_string();
        assert_eq!(info, "64,42,6", "ffprobe: width,height,frames");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "staging files left behind: {leftovers:?}");
    } else {
        eprintln!("SKIPPED the MP4 part: ffmpeg is not installed (scripts/setup.sh installs it)");
    }

    // A missing path file is named.
    let mut args = base(&dir.path().join("a"));
    args[4] = dir.path().join("nope.json").display().to_string();
    let (code, _, stderr) = run(args);
    assert_ne!(code, 0);
    assert!(stderr.contains("nope.json"), "{stderr}");
    // --ref auto needs a dataset.
    let mut args = base(&dir.path().join("b"));
    args.extend(
        [
            "--fix",
            "--model",
            tiny().to_str().unwrap(),
            "--backend",
            "cpu",
            "--ref",
            "auto",
        ]
        .map(String::from),
    );
    let (code, _, stderr) = run(args);
    assert_ne!(code, 0);
    assert!(stderr.contains("--data"), "{stderr}");
    // A reference image that does not exist is named before anything is rendered.
    let mut args = base(&dir.path().join("c"));
    args.extend(
        [
            "--fix",
            "--model",
            tiny().to_str().unwrap(),
            "--backend",
            "cpu",
            "--ref",
            "missing.png",
        ]
        .map(String::from),
    );
    let (code, _, stderr) = run(args);
    assert_ne!(code, 0);
    assert!(stderr.contains("missing.png"), "{stderr}");
    assert!(!dir.path().join("c").exists(), "no output folder for a failed request");
    // A video in a folder that does not exist.
    let (code, _, stderr) = run(base(&dir.path().join("no/such/dir/fly.mp4")));
    assert_ne!(code, 0);
    assert!(stderr.contains("does not exist"), "{stderr}");
    // A broken path file.
    std::fs::write(&path_file, r#"{"keyframes": [], "duration_s": 1}"#).unwrap();
    let (code, _, stderr) = run(base(&dir.path().join("d")));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("path.json") && stderr.contains("no keyframes"),
        "{stderr}"
    );
}

/// A nerfstudio camera_path.json (OpenGL camera-to-world, row-major) through the dataset's training
/// cameras, in a nerfstudio world `scale * (T x)`: recorded with its dataparser_transforms.json, every
/// frame is the render of exactly the listed camera, at the path's own size and fps.
#[test]
fn record_renders_a_nerfstudio_path_at_its_exact_frames() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let dataset = difix3d::data::open_dataset(&data, 8).unwrap();
    // T: 90 degrees about z plus a shift; scale 0.5.
    let t = glam::DMat4::from_cols_array_2d(&[
        [0.0, 1.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.3, -0.2, 1.0, 1.0],
    ]);
    let scale = 0.5;
    let (width, height) = (64u32, 40u32);
    let fovs = [40.0f64, 50.0, 60.0];
    let flip = glam::DMat4::from_diagonal(glam::DVec4::new(1.0, -1.0, -1.0, 1.0));
    let frames: Vec<serde_json::Value> = dataset
        .train
        .iter()
        .zip(fovs)
        .map(|(view, fov)| {
            let cv = glam::Mat4::from(view.camera.world_from_camera).as_dmat4();
            let mut ns = t * cv * flip;
            ns.w_axis = (ns.w_axis.truncate() * scale).extend(1.0);
            let rows: Vec<f64> = (0..4).flat_map(|r| ns.row(r).to_array()).collect();
            serde_json::json!({"camera_to_world": rows, "fov": fov, "aspect": 1.6})
        })
        .collect();
    let ns_file = dir.path().join("camera_path.json");
    let path_json = serde_json::json!({
        "camera_type": "perspective", "render_width": width, "render_height": height, "fps": 2,
        "seconds": 1.5, "camera_path": frames,
    });
    std::fs::write(&ns_file, path_json.to_string()).unwrap();
    let dp_file = dir.path().join("dataparser_transforms.json");
    let rows: Vec<Vec<f64>> = (0..3).map(|r| t.row(r).to_array().to_vec()).collect();
    std::fs::write(
        &dp_file,
        serde_json::json!({"transform": rows, "scale": scale}).to_string(),
    )
    .unwrap();

    let out = dir.path().join("frames");
    let (code, stdout, stderr) = difix3d(&[
        "record",
        "--scene",
        scene().to_str().unwrap(),
        "--path",
        ns_file.to_str().unwrap(),
        "--dataparser-transforms",
        dp_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("recorded 3 frame(s) at 64x40"), "{stdout}");
    let (ctx, rasterizer) = gpu();
    let splats = GpuSplats::upload(ctx, &difix3d::scene::load(&scene()).unwrap()).unwrap();
    for (i, (view, fov)) in dataset.train.iter().zip(fovs).enumerate() {
        // Hand-derived: the listed camera is the training camera's pose, fx = fy = (h / 2) / tan(fov / 2),
        // principal point in the centre (ns-render's get_path_from_json).
        let f = 0.5 * height as f32 / (0.5 * (fov as f32).to_radians()).tan();
        let camera = difix3d::data::Camera {
            name: format!("{i}"),
            width,
            height,
            fx: f,
            fy: f,
            cx: 32.0,
            cy: 20.0,
            world_from_camera: view.camera.world_from_camera,
        };
        let render = {
            let mut r = rasterizer.lock().unwrap();
            r.render(ctx, &splats, &camera, &RenderOptions::default()).unwrap();
            difix3d::image_io::to_rgb8(&r.read_image(ctx).unwrap())
        };
        let frame = image::open(out.join(format!("{i:05}.png"))).unwrap().to_rgb8();
        let worst = frame
            .as_raw()
            .iter()
            .zip(render.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "frame {i}: differs from the listed camera's render by {worst} levels"
        );
    }

    // Both ways: to ours and back to nerfstudio's keeps the frames.
    let ours = dir.path().join("ours.json");
    let back = dir.path().join("back.json");
    let dp = dp_file.to_str().unwrap();
    let (code, _, stderr) = difix3d(&[
        "convert-path",
        ns_file.to_str().unwrap(),
        ours.to_str().unwrap(),
        "--dataparser-transforms",
        dp,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = difix3d(&[
        "convert-path",
        ours.to_str().unwrap(),
        back.to_str().unwrap(),
        "--dataparser-transforms",
        dp,
        "--fps",
        "2",
        "--size",
        "64x40",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&back).unwrap()).unwrap();
    assert_eq!(back["render_width"], 64);
    let listed = path_json["camera_path"].as_array().unwrap();
    let got = back["camera_path"].as_array().unwrap();
    assert_eq!(got.len(), listed.len());
    for (a, b) in listed.iter().zip(got) {
        for (x, y) in a["camera_to_world"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["camera_to_world"].as_array().unwrap())
        {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5, "{a} vs {b}");
        }
        assert!((a["fov"].as_f64().unwrap() - b["fov"].as_f64().unwrap()).abs() < 1e-4);
    }

    // Bad files name themselves.
    std::fs::write(
        &ns_file,
        r#"{"camera_path": [], "render_width": 64, "render_height": 40, "fps": 2}"#,
    )
    .unwrap();
    let (code, _, stderr) = difix3d(&[
        "record",
        "--scene",
        scene().to_str().unwrap(),
        "--path",
        ns_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("camera_path.json") && stderr.contains("no frames"),
        "{stderr}"
    );
    std::fs::write(&dp_file, r#"{"transform": [[1, 0, 0, 0]], "scale": 1}"#).unwrap();
    let (code, _, stderr) = difix3d(&[
        "record",
        "--scene",
        scene().to_str().unwrap(),
        "--path",
        ours.to_str().unwrap(),
        "--dataparser-transforms",
        dp,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("dataparser_transforms.json") && stderr.contains("transform"),
        "{stderr}"
    );
}
