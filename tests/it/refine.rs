//! One round of Difix3D pseudo ground truth on the real sample dataset with the tiny Difix model.

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use difix3d::data::Camera;
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::difix::Difix;
use difix3d::refine::{poses, round};
use difix3d::render::RenderOptions;
use difix3d::train::diff_render::SplatRenderer;

use crate::{asset, gpu, repo};

#[test]
fn a_round_renders_fixes_and_saves_the_novel_views() {
    let Some(data) = asset("maupertuis") else { return };
    let dataset = std::sync::Arc::new(difix3d::data::open_dataset(&data, 8).unwrap());
    let splats = difix3d::scene::load(&repo().join("tests/fixtures/render/maupertuis_sh3.ply")).unwrap();
    // The first round starts from the training poses and moves toward the eval pose.
    let train: Vec<_> = dataset.train.iter().map(|v| v.camera.world_from_camera).collect();
    let targets: Vec<_> = dataset.eval.iter().map(|v| v.camera.world_from_camera).collect();
    let shifted = poses::shift_poses(&train, &targets, 0.5);
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
    let device = NdArrayDevice::Cpu;
    let tiny = repo().join("tests/fixtures/difix/tiny");
    let mut model = Difix::<NdArray<f32>>::load(&tiny, None, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let views = round::fix_novel_views(&renderer, &splats, &cameras, &dataset, &mut model, 30_000, dir.path()).unwrap();
    assert_eq!(views.len(), 1);

    let round_dir = dir.path().join("round_030000");
    for sub in ["pred", "fixed", "ref", "alpha"] {
        assert!(round_dir.join(sub).join("novel_000.png").exists(), "{sub}");
    }
    let saved: Vec<Camera> =
        serde_json::from_str(&std::fs::read_to_string(round_dir.join("cameras.json")).unwrap()).unwrap();
    assert_eq!(saved, cameras);

    // The fixed view is Difix on the saved render with the nearest training photo as reference.
    let pred = image::open(round_dir.join("pred/novel_000.png")).unwrap().to_rgb8();
    let nearest = dataset.nearest_train_view(&cameras[0]).unwrap();
    let reference = image::open(&nearest.image_path).unwrap().to_rgb8();
    let expected = model
        .fix_image(&pred, Some(&reference), SizePolicy::Native, DEFAULT_PROMPT)
        .unwrap();
    assert_eq!(views[0].fixed, expected);
    assert_eq!(
        image::open(round_dir.join("ref/novel_000.png")).unwrap().to_rgb8(),
        reference
    );
    // The mask is the render's alpha > 0.5.
    let rendered = renderer
        .render_image(&splats, &cameras[0], &RenderOptions::default())
        .unwrap();
    let mask: Vec<bool> = rendered.rgba.iter().map(|p| p[3] > 0.5).collect();
    assert_eq!(views[0].mask, mask);
    assert!(
        mask.iter().any(|m| *m) && mask.iter().any(|m| !*m),
        "a mask with both kinds of pixels"
    );
}
