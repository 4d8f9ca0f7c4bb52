//! The real viewer window under X11 (Xvfb when there is no display): it opens the sample scene, and
//! what the window shows in its 3D view must be the headless render of the same camera.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use difix3d::data::Camera;
use difix3d::render::{GpuSplats, RenderOptions};

use crate::{asset, gpu};

struct Xvfb(Option<Child>);

impl Drop for Xvfb {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Uses the current X display, or starts a private Xvfb.
fn display() -> Option<(String, Xvfb)> {
    if let Ok(d) = std::env::var("DISPLAY") {
        if !d.is_empty() {
            return Some((d, Xvfb(None)));
        }
    }
    let number = 90 + std::process::id() % 50;
    let name = format!(":{number}");
    let child = Command::new("Xvfb")
        .args([&name, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(child) => {
            std::thread::sleep(Duration::from_secs(2));
            Some((name, Xvfb(Some(child))))
        }
        Err(e) => {
            eprintln!("SKIPPED: no DISPLAY and Xvfb cannot start ({e}); run scripts/setup.sh");
            None
        }
    }
}

#[derive(serde::Deserialize)]
struct ShotMeta {
    camera: Camera,
    screen_rect: [f32; 4],
    sh_degree: u32,
    background: [f32; 3],
}

#[test]
fn viewer_window_shows_the_scene() {
    let Some(scene) = asset("bonsai-7k-mini.splat") else {
        return;
    };
    let Some((display, _xvfb)) = display() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let runtime = dir.path().join("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_difix3d"))
        .args([
            "view",
            scene.to_str().unwrap(),
            "--size",
            "900x560",
            "--screenshot",
            shot.to_str().unwrap(),
        ])
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the viewer");
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the viewer did not take its screenshot within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "viewer exited with {status}: {stderr}");
    assert!(shot.exists(), "no screenshot written; stderr: {stderr}");

    let meta: ShotMeta = serde_json::from_str(&std::fs::read_to_string(shot.with_extension("json")).unwrap()).unwrap();
    let window = image::open(&shot).unwrap().to_rgb8();
    let (ctx, rasterizer) = gpu();
    let splats = GpuSplats::upload(&ctx.device, &difix3d::scene::load(&scene).unwrap());
    let mut rasterizer = rasterizer.lock().unwrap();
    rasterizer
        .render(
            ctx,
            &splats,
            &meta.camera,
            &RenderOptions {
                sh_degree: meta.sh_degree,
                background: meta.background,
            },
        )
        .unwrap();
    let headless = difix3d::image_io::to_rgb8(&rasterizer.read_image(ctx).unwrap());

    // Compare the lower two thirds of the 3D view (the top-left carries the fps overlay).
    let [x0, y0, x1, y1] = meta.screen_rect.map(|v| v.round() as u32);
    let (w, h) = (headless.width(), headless.height());
    assert!(
        (x1 - x0).abs_diff(w) <= 1 && (y1 - y0).abs_diff(h) <= 1,
        "view rect {:?} vs render {w}x{h}",
        meta.screen_rect
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for y in h / 3..h.min(y1 - y0) {
        for x in 0..w.min(x1 - x0) {
            a.extend(window.get_pixel(x0 + x, y0 + y).0.map(|v| v as f32 / 255.0));
            b.extend(headless.get_pixel(x, y).0.map(|v| v as f32 / 255.0));
        }
    }
    let p = difix3d::metrics::psnr(&a, &b);
    eprintln!("window vs headless render: PSNR {p:.1} dB over {} pixels", a.len() / 3);
    assert!(p > 30.0, "the window does not show the rendered scene (PSNR {p:.1} dB)");
    let lit = b.chunks(3).filter(|c| c.iter().any(|&v| v > 0.04)).count();
    assert!(
        lit > b.len() / 3 / 2,
        "the compared region is mostly empty; pick a better default view"
    );
}
