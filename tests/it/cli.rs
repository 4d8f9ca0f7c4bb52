//! The CLI end to end on the real sample data.

use crate::{asset, difix3d};

#[test]
fn render_all_eval_views_of_the_sample_dataset() {
    let (Some(data), Some(scene)) = (asset("maupertuis"), asset("luigi.ply")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Maupertuis points as a scene are produced by the golden generator; any real scene exercises the path.
    let fixture = crate::repo().join("tests/fixtures/render/maupertuis_sh3.ply");
    let scene = if fixture.exists() { fixture } else { scene };
    let out = dir.path().join("renders");
    let (code, stdout, stderr) = difix3d(&[
        "render",
        "--scene",
        scene.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "8",
        "--all-eval",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    // Maupertuis has 4 images and no split names: every 8th (index 0) is eval.
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        files,
        vec!["00.png".to_string()],
        "exactly the eval view, no temporary files"
    );
    let img = image::open(out.join("00.png")).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    assert_eq!((w, h), (240, 135), "factor 8 of 1919x1079, rounded as ImageMagick does");
    let lit = img.pixels().filter(|p| p.0.iter().any(|&c| c > 10)).count();
    assert!(
        lit > (w * h / 20) as usize,
        "the render is nearly blank ({lit} lit pixels)"
    );
}

#[test]
fn default_view_of_the_sample_scene() {
    let Some(scene) = asset("bonsai-7k-mini.splat") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = difix3d(&[
        "render",
        "--scene",
        scene.to_str().unwrap(),
        "--width",
        "160",
        "--height",
        "96",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let img = image::open(dir.path().join("view.png")).unwrap().to_rgb8();
    let lit = img.pixels().filter(|p| p.0.iter().any(|&c| c > 10)).count();
    // The sample has no captured background (it is black), so "filled" means the subject covers a
    // large part of the frame rather than a speck in its middle.
    assert!(
        lit > 160 * 96 * 3 / 10,
        "the default view should be filled by the scene ({lit} lit pixels)"
    );
}

/// The binary's allocator takes the options `src/main.rs` gives it (`thp:always`, so reused blocks
/// are zeroed in place instead of faulted in again): jemalloc prints the options it runs with when
/// asked through the environment.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[test]
fn the_allocator_zeroes_reused_memory_in_place() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difix3d"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run difix3d");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opt.thp: \"always\""), "jemalloc's options:\n{stderr}");
}
