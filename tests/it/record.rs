//! `difix3d record` end to end: a 3-keyframe path through the sample dataset's cameras, rendered and
//! fixed by the tiny random-weight Difix with the nearest training photo as reference.

use std::path::{Path, PathBuf};

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use difix3d::camera_path::CameraPath;
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::difix::Difix;
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
    let mut difix = Difix::<NdArray<f32>>::load(&tiny(), None, &NdArrayDevice::Cpu).unwrap();
    for (i, name) in expected.iter().enumerate() {
        // The raw frame is the render of the path's camera for that frame...
        let camera = difix3d::record::frame_camera(&path, i, 3, 64, 40);
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
