//! The wgpu rasterizer against the float64 numpy reference (`tests/golden/reference_render.py`):
//! every golden view must match with PSNR >= 45 dB in colour and in alpha.

use difix3d::data::Camera;
use difix3d::metrics::psnr;
use difix3d::render::{GpuSplats, RenderOptions};
use difix3d::scene;

use crate::{gpu, repo};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    scene: String,
    camera: Camera,
    sh_degree: u32,
    background: [f32; 3],
    image: String,
    alpha: String,
}

fn load_png(path: &std::path::Path) -> Vec<f32> {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    img.to_rgb8()
        .pixels()
        .flat_map(|p| p.0)
        .map(|v| v as f32 / 255.0)
        .collect()
}

fn load_gray(path: &std::path::Path) -> Vec<f32> {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    img.to_luma8().pixels().map(|p| p.0[0] as f32 / 255.0).collect()
}

#[test]
fn renders_match_the_reference_implementation() {
    check_goldens(false, 45.0);
}

/// The viewer's display path (instanced quads, hardware blending into an 8-bit target, no early
/// transmittance stop) against the same goldens: for looking at, so a looser bound than the compute
/// path's, but the same picture.
#[test]
fn display_path_matches_the_reference_implementation() {
    check_goldens(true, DISPLAY_MIN_PSNR);
}

const DISPLAY_MIN_PSNR: f64 = 40.0;

fn check_goldens(display: bool, min_psnr: f64) {
    let path = if display { "display" } else { "compute" };
    let fixtures = repo().join("tests/fixtures/render");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("cases.json")).expect("cases.json"))
            .expect("parse cases.json");
    assert!(cases.len() >= 6, "expected the bonsai and maupertuis goldens");
    let (ctx, rasterizer) = gpu();
    let mut rasterizer = rasterizer.lock().unwrap();
    let mut checked = 0;
    let mut loaded: Option<(String, GpuSplats)> = None;
    for case in &cases {
        let scene_path = repo().join(&case.scene);
        if !scene_path.exists() {
            eprintln!(
                "SKIPPED golden '{}': {} is missing; run scripts/fetch_assets.sh",
                case.name,
                scene_path.display()
            );
            continue;
        }
        if loaded.as_ref().is_none_or(|(p, _)| *p != case.scene) {
            let splats = scene::load(&scene_path).unwrap();
            loaded = Some((case.scene.clone(), GpuSplats::upload(ctx, &splats).unwrap()));
        }
        let splats = &loaded.as_ref().unwrap().1;
        let options = RenderOptions {
            sh_degree: case.sh_degree,
            background: case.background,
        };
        if display {
            rasterizer.render_display(ctx, splats, &case.camera, &options).unwrap();
        } else {
            rasterizer.render(ctx, splats, &case.camera, &options).unwrap();
        }
        let image = rasterizer.read_image(ctx).unwrap();
        let ours: Vec<f32> = difix3d::image_io::to_rgb8(&image)
            .pixels()
            .flat_map(|p| p.0)
            .map(|v| v as f32 / 255.0)
            .collect();
        let ours_alpha: Vec<f32> = image
            .rgba
            .iter()
            .map(|p| difix3d::image_io::quantize(p[3]) as f32 / 255.0)
            .collect();
        let want = load_png(&fixtures.join(&case.image));
        let want_alpha = load_gray(&fixtures.join(&case.alpha));
        let p = psnr(&ours, &want);
        let pa = psnr(&ours_alpha, &want_alpha);
        eprintln!(
            "golden {} ({path}): colour PSNR {p:.1} dB, alpha PSNR {pa:.1} dB",
            case.name
        );
        assert!(
            p >= min_psnr,
            "{} ({path}): colour PSNR {p:.2} dB < {min_psnr}",
            case.name
        );
        assert!(
            pa >= min_psnr,
            "{} ({path}): alpha PSNR {pa:.2} dB < {min_psnr}",
            case.name
        );
        // Not a blank frame: the goldens were chosen to show the scene.
        let mean_alpha = ours_alpha.iter().sum::<f32>() / ours_alpha.len() as f32;
        assert!(mean_alpha > 0.05, "{}: almost nothing was drawn", case.name);
        checked += 1;
    }
    eprintln!("{checked} of {} golden views checked ({path} path)", cases.len());
}

/// gsplat's antialiased mode (checked against gsplat through the training goldens on the compute path)
/// draws the same picture on the viewer's display path: on every golden view, display against
/// compute, both antialiased, within the display path's bound.
#[test]
fn display_path_draws_antialiased_like_the_compute_path() {
    let fixtures = repo().join("tests/fixtures/render");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("cases.json")).expect("cases.json"))
            .expect("parse cases.json");
    let (ctx, rasterizer) = gpu();
    let mut rasterizer = rasterizer.lock().unwrap();
    let mut checked = 0;
    for case in &cases {
        let scene_path = repo().join(&case.scene);
        if !scene_path.exists() {
            eprintln!("SKIPPED '{}': {} is missing", case.name, scene_path.display());
            continue;
        }
        let splats = GpuSplats::upload(ctx, &scene::load(&scene_path).unwrap()).unwrap();
        let options = RenderOptions {
            sh_degree: case.sh_degree,
            background: case.background,
        };
        let mut draw = |antialiased: bool, display: bool| {
            rasterizer.set_antialiased(antialiased);
            let drawn = if display {
                rasterizer.render_display(ctx, &splats, &case.camera, &options)
            } else {
                rasterizer.render(ctx, &splats, &case.camera, &options)
            };
            // The rasterizer is shared by the tests: back to the default before anything can fail.
            rasterizer.set_antialiased(false);
            drawn.unwrap();
            let image = rasterizer.read_image(ctx).unwrap();
            image
                .rgba
                .iter()
                .flat_map(|p| [p[0], p[1], p[2], p[3]])
                .collect::<Vec<f32>>()
        };
        let compute = draw(true, false);
        let display = draw(true, true);
        let plain = draw(false, false);
        let p = psnr(&display, &compute);
        let p_plain = psnr(&plain, &compute);
        eprintln!(
            "{}: antialiased display vs compute {p:.1} dB (the default vs antialiased: {p_plain:.1} dB)",
            case.name
        );
        assert!(p >= DISPLAY_MIN_PSNR, "{}: {p:.2} dB < {DISPLAY_MIN_PSNR}", case.name);
        assert!(p_plain < p, "{}: antialiasing changed nothing", case.name);
        checked += 1;
    }
    assert!(checked > 0, "no golden scene is present; run scripts/fetch_assets.sh");
}
