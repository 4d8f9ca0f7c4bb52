//! `difix3d train-difix` on the CPU with the tiny model and tiny LPIPS/VGG networks, on crops of the
//! real sample photos degraded by a known blur: the test loss falls clearly, a run stopped and
//! resumed ends exactly where an uninterrupted one does, the checkpoint loads in `difix3d fix`, and
//! bad input fails before any work.

use std::path::Path;

use crate::{asset, difix3d, repo};

/// Pairs (blurred photo -> photo, with a neighbouring photo as reference) in `dir`; returns the JSON.
pub(crate) fn make_pairs(photos: &Path, dir: &Path) -> std::path::PathBuf {
    let names = ["00", "01", "02", "03"];
    for name in names {
        let clean = image::open(photos.join(format!("{name}.jpg"))).unwrap().to_rgb8();
        clean.save(dir.join(format!("clean_{name}.png"))).unwrap();
        image::imageops::blur(&clean, 2.0)
            .save(dir.join(format!("blur_{name}.png")))
            .unwrap();
    }
    let entry = |i: &str, r: &str| serde_json::json!({"image": format!("blur_{i}.png"), "target_image": format!("clean_{i}.png"), "ref_image": format!("clean_{r}.png")});
    let json = serde_json::json!({
        "train": {"00": entry("00", "01"), "01": entry("01", "02"), "02": entry("02", "03")},
        "test": {"03": entry("03", "02")},
    });
    let path = dir.join("data.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

fn evals(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `difix3d train-difix` of the tiny model on the CPU on 32x32 crops (unless `extra` chooses another
/// --image-prep) with the tiny LPIPS/VGG; the Gram loss is on from step 3.
fn train(data: &Path, out: &Path, steps: &str, extra: &[&str]) -> String {
    train_model(&repo().join("tests/fixtures/difix/tiny"), data, out, steps, extra)
}

/// [`train`] starting from the model folder `tiny`.
fn train_model(tiny: &Path, data: &Path, out: &Path, steps: &str, extra: &[&str]) -> String {
    let crops: &[&str] = if extra.contains(&"--image-prep") {
        &[]
    } else {
        &["--image-prep", "crop", "--resolution", "32"]
    };
    let lpips = repo().join("tests/fixtures/lpips");
    let backbone = lpips.join("vgg_tiny_backbone.pth");
    let lin = lpips.join("vgg_tiny_lin.pth");
    let mut args = vec![
        "train-difix",
        "--data",
        data.to_str().unwrap(),
        "--model",
        tiny.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        steps,
        "--lr",
        "1e-3",
        "--gram-warmup",
        "2",
        "--gram-crop",
        "16",
        "--lpips-backbone",
        backbone.to_str().unwrap(),
        "--lpips-lin",
        lin.to_str().unwrap(),
        "--checkpoint-every",
        "2",
        "--eval-every",
        "0",
        "--backend",
        "cpu",
    ];
    args.extend_from_slice(crops);
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = difix3d(&args);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    stdout
}

/// Every tensor of a model folder's UNet and VAE, by file and key.
fn model_tensors(model: &Path) -> Vec<(String, Vec<f32>)> {
    let mut all = Vec::new();
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        let bytes = std::fs::read(model.join(file)).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = tensors.names().into_iter().map(|n| n.to_string()).collect();
        names.sort();
        for name in names {
            let view = tensors.tensor(&name).unwrap();
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            all.push((format!("{file}:{name}"), values));
        }
    }
    all
}

/// Data-parallel training on two CPU peers (burn-collective averaging their gradients) takes the
/// same steps as one device accumulating both peers' micro-batches, Gram loss included (with
/// `--image-prep resize` to a non-square size).
#[test]
fn two_data_parallel_peers_train_like_one_device_with_twice_the_batch() {
    let Some(photos) = asset("maupertuis/images_8") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = make_pairs(&photos, dir.path());
    // On the reference's image preparation at a non-square size: every image resized to 32x48, the
    // Gram crop anywhere in it.
    let resize = ["--image-prep", "resize", "--size", "32x48"];
    let one = dir.path().join("one");
    train(&data, &one, "3", &[&resize[..], &["--grad-accumulation", "2"]].concat());
    let two = dir.path().join("two");
    let stdout = train(&data, &two, "3", &[&resize[..], &["--devices", "0,1"]].concat());
    eprintln!("{stdout}");
    let (a, b) = (
        model_tensors(&one.join("checkpoint")),
        model_tensors(&two.join("checkpoint")),
    );
    let start = model_tensors(&repo().join("tests/fixtures/difix/tiny"));
    assert_eq!(a.len(), b.len());
    let (mut worst, mut moved) = (0f32, 0f32);
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other);
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
        if let Some((_, s)) = start.iter().find(|(n, _)| n == name) {
            for (p, q) in x.iter().zip(s) {
                moved = moved.max((p - q).abs());
            }
        }
    }
    eprintln!("largest weight difference {worst:e}; largest change from the start {moved:e}");
    // Three AdamW steps at lr 1e-3 move weights by up to ~3e-3; the two runs agree to 1% of one step.
    assert!(moved > 1e-3, "training did not move the weights ({moved:e})");
    assert!(worst <= 1e-5, "data-parallel weights differ by {worst:e}");
}

#[test]
fn train_difix_lowers_the_loss_resumes_exactly_and_feeds_fix() {
    let Some(photos) = asset("maupertuis/images_8") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = make_pairs(&photos, dir.path());
    let lpips = repo().join("tests/fixtures/lpips");
    let backbone = lpips.join("vgg_tiny_backbone.pth");
    let tiny = repo().join("tests/fixtures/difix/tiny");
    let run = |out: &Path, steps: &str, extra: &[&str]| train(&data, out, steps, extra);

    // Four uninterrupted steps lower the test L2 clearly.
    let whole = dir.path().join("whole");
    run(&whole, "4", &[]);
    let e = evals(&whole);
    let (first, last) = (e[0]["l2"].as_f64().unwrap(), e[e.len() - 1]["l2"].as_f64().unwrap());
    eprintln!("test L2 {first:.4} -> {last:.4} after 4 steps");
    assert!(
        last < 0.8 * first,
        "the test L2 did not fall enough: {first:.4} -> {last:.4}"
    );
    assert!(whole.join("samples/step_000004/03.png").exists());

    // Two steps, then resumed to four: the same weights as the uninterrupted run.
    let split = dir.path().join("split");
    run(&split, "2", &[]);
    run(&split, "4", &["--resume"]);
    // Equal to float rounding: the CPU backend (burn-flex) keeps weights read from a checkpoint as
    // zero-copy views (a linear layer's transposed [out, in] tensor), whose products round differently
    // in the last bit from those of the uninterrupted run's own tensors (seen: at most 6e-8 after 4
    // steps, while each AdamW step moves a weight by about the learning rate, 1e-3).
    let (whole_w, split_w) = (
        model_tensors(&whole.join("checkpoint")),
        model_tensors(&split.join("checkpoint")),
    );
    assert_eq!(whole_w.len(), split_w.len());
    for ((name, a), (_, b)) in whole_w.iter().zip(&split_w) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "a resumed run differs from an uninterrupted one in {name} by {worst:e}"
        );
    }

    // The checkpoint is a model folder `difix3d fix` uses.
    let fixed = dir.path().join("fixed");
    let model = whole.join("checkpoint");
    let (code, stdout, stderr) = difix3d(&[
        "fix",
        "--model",
        model.to_str().unwrap(),
        "--input",
        dir.path().join("blur_03.png").to_str().unwrap(),
        "--ref",
        dir.path().join("clean_02.png").to_str().unwrap(),
        "--out",
        fixed.to_str().unwrap(),
        "--native",
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(fixed.join("blur_03.png").exists());

    // Bad input: a broken pair file fails before any work; several devices are refused.
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"train": {"x": {"image": "gone.png"}}}"#,
    )
    .unwrap();
    let bad_out = dir.path().join("bad");
    let (code, _, stderr) = difix3d(&[
        "train-difix",
        "--data",
        dir.path().join("bad.json").to_str().unwrap(),
        "--model",
        tiny.to_str().unwrap(),
        "--out",
        bad_out.to_str().unwrap(),
        "--lpips-backbone",
        backbone.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("bad.json") && stderr.contains("train/x: no \"target_image\"") && stderr.contains("gone.png"),
        "{stderr}"
    );
    assert!(!bad_out.exists(), "no run folder for a run that never started");
    // Device lists: a repeated index; more GPUs than any machine here has.
    for (devices, backend, why) in [
        ("0,0", "cpu", "device 0 is listed twice"),
        ("0,7", "wgpu", "--devices names device"),
    ] {
        let (code, _, stderr) = difix3d(&[
            "train-difix",
            "--data",
            data.to_str().unwrap(),
            "--out",
            bad_out.to_str().unwrap(),
            "--lpips-backbone",
            backbone.to_str().unwrap(),
            "--devices",
            devices,
            "--backend",
            backend,
        ]);
        assert_ne!(code, 0);
        assert!(stderr.contains(why), "{stderr}");
    }
    assert!(!bad_out.exists());
}

#[test]
fn bench_train_difix_reports_speed_and_files_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCH.md");
    std::fs::write(
        &md,
        "| date | bench | backend | model | size | ref | float | it/s | s per step |\n|---|\nafter\n",
    )
    .unwrap();
    let lpips = repo().join("tests/fixtures/lpips");
    let (code, stdout, stderr) = difix3d(&[
        "bench",
        "train-difix",
        "--model",
        repo().join("tests/fixtures/difix/tiny").to_str().unwrap(),
        "--lpips-backbone",
        lpips.join("vgg_tiny_backbone.pth").to_str().unwrap(),
        "--lpips-lin",
        lpips.join("vgg_tiny_lin.pth").to_str().unwrap(),
        "--resolution",
        "32",
        "--steps",
        "2",
        "--backend",
        "cpu",
        "--append-md",
        md.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout[..stdout.rfind('}').unwrap() + 1]).unwrap();
    assert!(json["its"].as_f64().unwrap() > 0.0);
    assert_eq!(json["steps"].as_u64(), Some(2));
    let text = std::fs::read_to_string(&md).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[2].contains("| train-difix | cpu | tiny | 32x32 | yes |"),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"after"));
}

/// The tiny model with a plain SD VAE, as SD-Turbo's `vae/` is: no skip convs, no LoRA (PEFT's
/// `M.base_layer.weight` back to `M.weight`), no Difix keys in its config.
fn plain_sd_turbo(to: &Path) {
    crate::copy_dir(&repo().join("tests/fixtures/difix/tiny"), to);
    let file = to.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.contains("skip_conv") && !name.contains(".lora_"))
        .map(|(name, view)| (name.replace(".base_layer.", "."), view))
        .collect();
    std::fs::write(&file, safetensors::serialize(kept, None).unwrap()).unwrap();
    let config = to.join("vae/config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for key in ["gamma", "ignore_skip", "lora_rank"] {
        json.as_object_mut().unwrap().remove(key);
    }
    std::fs::write(&config, json.to_string()).unwrap();
}

/// `train-difix --model` on a plain SD-Turbo folder: the skip convs (1e-5) and the rank-4 decoder
/// LoRA (B = 0) are created as the reference's `src/model.py` does, a few steps train them, and the
/// result is the usual model folder that `fix` loads.
#[test]
fn training_starts_from_a_plain_sd_turbo_folder() {
    let Some(photos) = asset("maupertuis/images_8") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = make_pairs(&photos, dir.path());
    let plain = dir.path().join("sd-turbo");
    plain_sd_turbo(&plain);
    let run = dir.path().join("run");
    train_model(&plain, &data, &run, "3", &[]);
    let model = run.join("checkpoint");
    let tensors = model_tensors(&model);
    let get = |key: &str| {
        let wanted = format!("vae/diffusion_pytorch_model.safetensors:{key}");
        tensors
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} is not in the trained model"))
    };
    let skip = get("decoder.skip_conv_1.weight");
    assert!(
        skip.iter().any(|v| (v - 1e-5).abs() > 1e-5),
        "the skip conv did not move from 1e-5"
    );
    for module in [
        "decoder.conv_in",
        "decoder.skip_conv_4",
        "decoder.mid_block.attentions.0.to_q",
    ] {
        let b = get(&format!("{module}.lora_B.vae_skip.weight"));
        assert!(b.iter().any(|v| *v != 0.0), "{module}'s LoRA B did not move from zero");
        get(&format!("{module}.lora_A.vae_skip.weight"));
    }
    let fixed = dir.path().join("fixed");
    let (code, stdout, stderr) = difix3d(&[
        "fix",
        "--model",
        model.to_str().unwrap(),
        "--input",
        dir.path().join("blur_03.png").to_str().unwrap(),
        "--ref",
        dir.path().join("clean_02.png").to_str().unwrap(),
        "--out",
        fixed.to_str().unwrap(),
        "--native",
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(fixed.join("blur_03.png").exists());
}
