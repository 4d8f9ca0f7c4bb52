//! `difix3d train` on the bundled real COLMAP dataset, on the CPU backend: a short run must raise the
//! eval PSNR clearly over the initial point cloud, write a `.ply` the viewer opens and a checkpoint a
//! later run resumes from; bad datasets fail with clear errors and no checkpoint.

use std::path::Path;

use crate::{asset, copy_dir, difix3d};

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_short_run_raises_eval_psnr_and_resumes() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let base = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "8",
        "--backend",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = difix3d(&[&base[..], &["--steps", "300"]].concat());
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let s = summary(&out);
    let before = s["eval_psnr_before"].as_f64().unwrap();
    let after = s["eval_psnr_after"].as_f64().unwrap();
    eprintln!("eval PSNR {before:.2} -> {after:.2} dB after 300 steps");
    assert!(
        after > before + 3.0,
        "training did not improve the eval view enough: {before:.2} -> {after:.2} dB"
    );
    let splats = difix3d::scene::load(&out.join("point_cloud.ply")).unwrap();
    assert_eq!(splats.len() as u64, s["splats"].as_u64().unwrap());
    assert_eq!(splats.sh_degree, 3);
    // The same splats as a gsplat checkpoint, named as gsplat names the one after 300 steps.
    let pt = difix3d::scene::load(&out.join("ckpt_299_rank0.pt")).unwrap();
    assert!(pt == splats, "the .pt and the .ply of the run differ");

    assert!(out.join("eval/00.png").exists(), "the run writes its eval renders");

    // `difix3d eval` on the exported .ply agrees with the run's own evaluation.
    let eval_out = dir.path().join("eval");
    let ply = out.join("point_cloud.ply");
    let eval_args = [
        "eval",
        "--scene",
        ply.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "8",
        "--out",
        eval_out.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = difix3d(&eval_args);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_out.join("metrics.json")).unwrap()).unwrap();
    let psnr = metrics["psnr"].as_f64().unwrap();
    let ssim = metrics["ssim"].as_f64().unwrap();
    assert!((psnr - after).abs() < 0.01, "eval {psnr:.3} vs the run's {after:.3} dB");
    assert!(ssim > 0.0 && ssim <= 1.0, "SSIM {ssim}");
    assert_eq!(s["eval"]["ssim"].as_f64().map(|v| (v - ssim).abs() < 1e-4), Some(true));
    assert!(eval_out.join("00.png").exists());
    assert!(metrics["lpips"].is_null(), "no LPIPS without its network");

    // LPIPS with the tiny test network: the CLI's value is the library's on the same render.
    let lpips_dir = crate::repo().join("tests/fixtures/lpips");
    let backbone = lpips_dir.join("alex_tiny_backbone.pth");
    let lin = lpips_dir.join("alex_tiny_lin.pth");
    let lpips_args = [
        "--lpips-backbone",
        backbone.to_str().unwrap(),
        "--lpips-lin",
        lin.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = difix3d(&[&eval_args[..], &lpips_args[..]].concat());
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_out.join("metrics.json")).unwrap()).unwrap();
    let lpips = metrics["lpips"].as_f64().expect("an LPIPS value");
    let expected = {
        use burn::tensor::{Tensor, TensorData};
        let dataset = difix3d::data::open_dataset(&data, 8).unwrap();
        let view = &dataset.eval[0];
        let splats = difix3d::scene::load(&ply).unwrap();
        let renderer = difix3d::render::diff_render::SplatRenderer::new(crate::gpu().0.clone());
        let image = renderer
            .render_image(&splats, &view.camera, &difix3d::render::RenderOptions::default())
            .unwrap();
        let (w, h) = (view.camera.width as usize, view.camera.height as usize);
        let nchw = |v: Vec<f32>| {
            Tensor::<burn::backend::NdArray<f32>, 3>::from_data(TensorData::new(v, [h, w, 3]), &Default::default())
                .permute([2, 0, 1])
                .unsqueeze::<4>()
        };
        let rendered: Vec<f32> = image
            .rgba
            .iter()
            .flat_map(|p| [p[0], p[1], p[2]].map(|c| c.clamp(0.0, 1.0)))
            .collect();
        let photo = image::open(&view.image_path).unwrap().to_rgb8();
        let photo: Vec<f32> = photo.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
        let files = difix3d::perceptual::lpips::LpipsFiles {
            backbone: backbone.clone(),
            lin: Some(lin.clone()),
        };
        let metric = difix3d::perceptual::lpips::Lpips::load(&files, &Default::default()).unwrap();
        let value: f32 = metric.distance(nchw(rendered), nchw(photo)).into_scalar();
        value as f64
    };
    assert!((lpips - expected).abs() < 1e-5, "eval LPIPS {lpips} vs {expected}");
    assert!(stdout.contains("LPIPS"), "{stdout}");
    let (code, _, stderr) = difix3d(&[&eval_args[..], &["--lpips-backbone", "vgg16.pth"]].concat());
    assert_ne!(code, 0);
    assert!(stderr.contains("vgg16.pth: no such file"), "{stderr}");

    let checkpoint = out.join("checkpoint.safetensors");
    // A checkpoint trained without antialiasing does not resume with it.
    let (code, _, stderr) = difix3d(
        &[
            &base[..],
            &[
                "--steps",
                "305",
                "--resume",
                checkpoint.to_str().unwrap(),
                "--antialiased",
            ],
        ]
        .concat(),
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("checkpoint.safetensors") && stderr.contains("not antialiased"),
        "{stderr}"
    );
    // Resuming also exercises the random-background compositing.
    let resume = [
        "--steps",
        "305",
        "--resume",
        checkpoint.to_str().unwrap(),
        "--random-background",
    ];
    let (code, stdout, stderr) = difix3d(&[&base[..], &resume[..]].concat());
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(summary(&out)["steps"].as_u64(), Some(305), "resumed at step 300");
}

#[test]
fn bad_datasets_fail_clearly_without_a_checkpoint() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = |data: &Path, out: &Path| {
        difix3d(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--factor",
            "8",
            "--steps",
            "2",
            "--backend",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // A missing image.
    let broken = dir.path().join("missing_image");
    copy_dir(&data, &broken);
    std::fs::remove_file(broken.join("images_8/02.jpg")).unwrap();
    let out = dir.path().join("out1");
    let (code, _, stderr) = run(&broken, &out);
    assert_ne!(code, 0);
    assert!(stderr.contains("02.jpg"), "{stderr}");
    assert!(!out.join("checkpoint.safetensors").exists());

    // No 3D points.
    let empty = dir.path().join("no_points");
    copy_dir(&data, &empty);
    std::fs::write(empty.join("colmap/sparse/0/points3D.txt"), "# no points\n").unwrap();
    let out = dir.path().join("out2");
    let (code, _, stderr) = run(&empty, &out);
    assert_ne!(code, 0);
    assert!(stderr.contains("no 3D points"), "{stderr}");
    assert!(!out.join("checkpoint.safetensors").exists());

    // An output folder that cannot be created (a file is in the way).
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let (code, _, stderr) = run(&data, &blocker.join("run"));
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot create the output folder"), "{stderr}");
}

#[test]
fn bench_train_reports_the_step_split_and_files_its_row() {
    let Some(data) = asset("maupertuis") else { return };
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCH.md");
    std::fs::write(
        &md,
        "| date | bench | data | size | adapter / loss backend | it/s | render / loss / backward / optimiser / densify ms |\n|---|\nafter\n",
    )
    .unwrap();
    let (code, stdout, stderr) = difix3d(&[
        "bench",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--factor",
        "8",
        "--steps",
        "8",
        "--backend",
        "cpu",
        "--append-md",
        md.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout[..stdout.rfind('}').unwrap() + 1]).unwrap();
    assert!(json["its"].as_f64().unwrap() > 0.0);
    assert!(json["backward_ms"].as_f64().unwrap() > 0.0);
    let text = std::fs::read_to_string(&md).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[2].contains("| train | maupertuis | 240x135 |"), "{text}");
    assert_eq!(lines.last(), Some(&"after"));
}
