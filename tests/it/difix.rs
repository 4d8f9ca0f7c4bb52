//! Difix in burn against goldens from the PyTorch reference (tests/golden/difix/, tiny random-weight
//! model in the published layout). Tolerances: goldens are float64 computations; a float32 run of the
//! reference differs from them by <= 1.5e-5 (recorded in goldens.json), we allow 1e-4 absolute
//! (relative to the tensor's scale for large activations).
#![allow(clippy::single_range_in_vec_init)] // burn's slice() takes an array of ranges

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use difix3d::difix::{Difix, DifixError};
use difix3d::nn::backend::CpuBackend;

use crate::copy_dir;

/// What `--backend cpu` runs (burn-flex); ndarray, which it ran before, keeps one golden test.
type Cpu = CpuBackend;
const CPU: burn::backend::flex::FlexDevice = burn::backend::flex::FlexDevice;

fn fixtures() -> PathBuf {
    crate::repo().join("tests/fixtures/difix")
}

fn tiny() -> PathBuf {
    fixtures().join("tiny")
}

struct Golden {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn goldens() -> &'static HashMap<String, Golden> {
    static G: OnceLock<HashMap<String, Golden>> = OnceLock::new();
    G.get_or_init(|| {
        let bytes = std::fs::read(fixtures().join("goldens.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = view.data();
                let values: Vec<f32> = match view.dtype() {
                    safetensors::Dtype::F32 => data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    safetensors::Dtype::I64 => data
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect(),
                    other => panic!("{name}: dtype {other:?}"),
                };
                (
                    name,
                    Golden {
                        shape: view.shape().to_vec(),
                        values,
                    },
                )
            })
            .collect()
    })
}

fn golden<B: Backend, const D: usize>(name: &str, device: &B::Device) -> Tensor<B, D> {
    let g = &goldens()[name];
    Tensor::from_data(TensorData::new(g.values.clone(), g.shape.clone()), device)
}

/// Max |a - b| must be below `tol * max(1, max|b|)`.
fn assert_close<B: Backend, const D: usize>(name: &str, actual: Tensor<B, D>, tol: f32) {
    let expected = &goldens()[name];
    assert_eq!(actual.dims().to_vec(), expected.shape, "{name}: shape");
    let actual: Vec<f32> = actual.into_data().convert::<f32>().to_vec().unwrap();
    let scale = expected.values.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = actual
        .iter()
        .zip(&expected.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{name}: max abs diff {worst:.2e} (scale {scale:.2})");
    assert!(
        worst <= tol * scale,
        "{name}: max abs diff {worst:e} > {tol:e} x scale {scale}"
    );
}

const TOL: f32 = 1e-4;

/// Every module and the whole pipeline of the tiny model on backend `B` against the goldens.
fn check_against_goldens<B: Backend>(device: &B::Device) {
    let mut model = Difix::<B>::load(&tiny(), None, device).expect("tiny model loads");
    let g = |name: &str| golden::<B, 4>(name, device);

    // Tokenizer: exact ids.
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer_cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        // The pipeline uses the slow tokenizer; `ids` is its output.
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(model.tokenizer().encode(text), ids, "text {text:?}");
    }
    let ids: Vec<u32> = goldens()["text.ids"].values.iter().map(|&v| v as u32).collect();
    assert_eq!(model.tokenizer().encode("remove degradation"), ids);

    // Text encoder, and the cached prompt embedding.
    assert_close(
        "text.hidden",
        model.text_encoder().forward(&ids, &Default::default()),
        TOL,
    );
    assert_close("text.hidden", model.prompt_embedding("remove degradation"), TOL);

    // Scheduler.
    let step = model.step();
    assert_eq!(step.timestep, 199);
    assert!((step.alpha_cumprod as f32 - goldens()["sched.alphas_cumprod_199"].values[0]).abs() < 1e-6);
    assert!((step.a as f32 - goldens()["sched.z0_coef_sample"].values[0]).abs() < 1e-6);
    assert!((step.b as f32 - goldens()["sched.z0_coef_eps"].values[0]).abs() < 1e-6);

    // VAE encoder (mean and skips) and decoder (skips + merged LoRA).
    let encoded = model.vae().encode(g("vae.input"));
    assert_close("vae.enc.mean", encoded.mean, TOL);
    for (i, skip) in encoded.skips.into_iter().enumerate() {
        assert_close(&format!("vae.enc.skip{i}"), skip, TOL);
    }
    let skips: Vec<Tensor<B, 4>> = (0..4).map(|i| g(&format!("vae.enc.skip{i}"))).collect();
    assert_close("vae.dec.output", model.vae().decode(g("vae.dec.input"), &skips), TOL);

    // UNet: timestep embedding, one view, reference mode with one and two samples.
    let unet = model.unet();
    assert_close("unet.time_emb", unet.time_embedding(199.0, 1, device), TOL);
    let context: Tensor<B, 3> = golden("unet.encoder_hidden_states", device);
    assert_close("unet.out", unet.forward(g("unet.sample"), 199.0, &context, 1), TOL);
    assert_close(
        "unet.mv.out",
        unet.forward(g("unet.mv.sample"), 199.0, &context.clone().repeat_dim(0, 2), 2),
        TOL,
    );
    assert_close(
        "unet.mv2.out",
        unet.forward(g("unet.mv2.sample"), 199.0, &context.repeat_dim(0, 4), 2),
        TOL,
    );

    // The pipeline: single, with a reference, a list with one reference each, a broadcast reference.
    let prompt = difix3d::difix::pipeline::DEFAULT_PROMPT;
    assert_close("pipe.output", model.fix(g("pipe.input"), None, prompt).unwrap(), TOL);
    assert_close(
        "pipe.ref.output",
        model.fix(g("pipe.ref.input"), Some(g("pipe.ref.ref")), prompt).unwrap(),
        TOL,
    );
    assert_close(
        "pipe.ref2.output",
        model
            .fix(g("pipe.ref2.input"), Some(g("pipe.ref2.ref")), prompt)
            .unwrap(),
        TOL,
    );
    let inputs = g("pipe.ref2.input");
    let shared = model.fix(inputs.clone(), Some(g("pipe.ref.ref")), prompt).unwrap();
    let first = model
        .fix(inputs.clone().slice([0..1]), Some(g("pipe.ref.ref")), prompt)
        .unwrap();
    let diff: f32 = (shared.slice([0..1]) - first).abs().max().into_scalar().elem();
    assert!(
        diff < 1e-5,
        "a broadcast reference must act as that reference given to each input: {diff}"
    );

    // Inputs the pipeline cannot take.
    let three = Tensor::cat(vec![inputs.clone(), inputs.clone().slice([0..1])], 0);
    let err = model.fix(inputs, Some(three), prompt).unwrap_err();
    assert!(err.to_string().contains("3 reference images for 2 inputs"), "{err}");
    let odd = Tensor::<B, 4>::zeros([1, 3, 30, 48], device);
    let err = model.fix(odd, None, prompt).unwrap_err();
    assert!(err.to_string().contains("multiples of 8"), "{err}");
}

#[test]
fn tiny_difix_matches_the_reference_on_ndarray() {
    check_against_goldens::<NdArray<f32>>(&NdArrayDevice::Cpu);
}

/// The CPU backend `--backend cpu` runs (burn-flex: gemm convolutions, flash attention, threads).
#[test]
fn tiny_difix_matches_the_reference_on_the_cpu_backend() {
    check_against_goldens::<Cpu>(&CPU);
}

#[test]
fn tiny_difix_matches_the_reference_on_wgpu() {
    check_against_goldens::<burn::backend::Wgpu<f32>>(&burn::backend::wgpu::WgpuDevice::DefaultDevice);
}

// --- the weight loader -----------------------------------------------------------------------

type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_tensors(path: &Path, tensors: &Tensors) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn load_err(dir: &Path) -> DifixError {
    match Difix::<Cpu>::load(dir, None, &CPU) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_weights_say_where_to_put_them() {
    let dir = tempfile::tempdir().unwrap();
    let msg = load_err(&dir.path().join("nothing")).to_string();
    assert!(msg.contains("huggingface-cli download nvidia/difix"), "{msg}");
    assert!(msg.contains("checkpoints/README.md"), "{msg}");
}

#[test]
fn wrong_shape_missing_and_unexpected_keys_are_named() {
    let unet_file = tiny().join("unet/diffusion_pytorch_model.safetensors");
    let original = read_tensors(&unet_file);
    let key = "down_blocks.0.resnets.0.conv1.weight";

    // Wrong shape: [16,16,3,3] stored as [16,16,9].
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny(), dir.path());
    let mut t = original.clone();
    let entry = t.iter_mut().find(|e| e.0 == key).unwrap();
    entry.2 = vec![entry.2[0], entry.2[1], entry.2[2] * entry.2[3]];
    write_tensors(&dir.path().join("unet/diffusion_pytorch_model.safetensors"), &t);
    let msg = load_err(dir.path()).to_string();
    assert!(
        msg.contains(key) && msg.contains("diffusion_pytorch_model.safetensors"),
        "{msg}"
    );
    assert!(
        msg.contains("[16, 16, 9]") && msg.contains("[16, 16, 3, 3]"),
        "both shapes: {msg}"
    );

    // Missing key.
    let t: Tensors = original.iter().filter(|e| e.0 != key).cloned().collect();
    write_tensors(&dir.path().join("unet/diffusion_pytorch_model.safetensors"), &t);
    let msg = load_err(dir.path()).to_string();
    assert!(msg.contains(key) && msg.contains("missing"), "{msg}");

    // Unexpected key.
    let mut t = original.clone();
    t.push((
        "down_blocks.9.extra.weight".into(),
        safetensors::Dtype::F32,
        vec![1],
        vec![0; 4],
    ));
    write_tensors(&dir.path().join("unet/diffusion_pytorch_model.safetensors"), &t);
    let msg = load_err(dir.path()).to_string();
    assert!(
        msg.contains("down_blocks.9.extra.weight") && msg.contains("unexpected"),
        "{msg}"
    );
}

#[test]
fn sharded_and_half_precision_files_load() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny(), dir.path());
    // Shard the UNet in two files with an index, as diffusers does for large models.
    let unet_dir = dir.path().join("unet");
    let all = read_tensors(&unet_dir.join("diffusion_pytorch_model.safetensors"));
    std::fs::remove_file(unet_dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let (a, b) = all.split_at(all.len() / 2);
    write_tensors(
        &unet_dir.join("diffusion_pytorch_model-00001-of-00002.safetensors"),
        &a.to_vec(),
    );
    write_tensors(
        &unet_dir.join("diffusion_pytorch_model-00002-of-00002.safetensors"),
        &b.to_vec(),
    );
    let map: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                e.0.clone(),
                format!(
                    "diffusion_pytorch_model-0000{}-of-00002.safetensors",
                    1 + (i >= a.len()) as u8
                )
                .into(),
            )
        })
        .collect();
    std::fs::write(
        unet_dir.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    // Store the VAE in fp16.
    let vae_file = dir.path().join("vae/diffusion_pytorch_model.safetensors");
    let half: Tensors = read_tensors(&vae_file)
        .into_iter()
        .map(|(n, _, s, bytes)| {
            let h: Vec<u8> = bytes
                .chunks_exact(4)
                .flat_map(|c| half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                .collect();
            (n, safetensors::Dtype::F16, s, h)
        })
        .collect();
    write_tensors(&vae_file, &half);

    let mut model = Difix::<Cpu>::load(dir.path(), None, &CPU).unwrap();
    let out = model
        .fix(golden::<Cpu, 4>("pipe.input", &CPU), None, "remove degradation")
        .unwrap();
    // fp16 weights round to ~1e-3 relative; the output stays close to the fp32 golden.
    assert_close("pipe.output", out, 2e-2);
}

/// `tiny/` as a stock SD-Turbo-like directory: no skip convs, no LoRA, plain module names.
fn stock_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny(), dir.path());
    let vae_file = dir.path().join("vae/diffusion_pytorch_model.safetensors");
    let stock: Tensors = read_tensors(&vae_file)
        .into_iter()
        .filter(|e| !e.0.contains("lora") && !e.0.contains("skip"))
        .map(|(n, d, s, b)| (n.replace(".base_layer.", "."), d, s, b))
        .collect();
    write_tensors(&vae_file, &stock);
    dir
}

#[test]
fn trainer_checkpoint_over_a_stock_model_reproduces_the_model() {
    let dir = stock_dir();
    let ckpt = fixtures().join("model_tiny.pkl");
    let mut model = Difix::<Cpu>::load(dir.path(), Some(&ckpt), &CPU).unwrap();
    assert_close(
        "pipe.output",
        model
            .fix(golden::<Cpu, 4>("pipe.input", &CPU), None, "remove degradation")
            .unwrap(),
        TOL,
    );

    let bad = fixtures().join("model_tiny_bad.pkl");
    let msg = match Difix::<Cpu>::load(dir.path(), Some(&bad), &CPU) {
        Ok(_) => panic!("the bad checkpoint loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("conv_in.weight") && msg.contains("model_tiny_bad.pkl"),
        "{msg}"
    );
    assert!(msg.contains("[17, 4, 3, 3]") && msg.contains("[16, 4, 3, 3]"), "{msg}");
}

// --- the CLI ---------------------------------------------------------------------------------

fn save_golden_png(name: &str, index: usize, path: &Path) {
    let g = &goldens()[name];
    let (h, w) = (g.shape[2], g.shape[3]);
    let plane = h * w;
    let offset = index * 3 * plane;
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb(std::array::from_fn(|c| {
            (g.values[offset + c * plane + i] * 255.0).round() as u8
        }))
    });
    img.save(path).unwrap();
}

#[test]
fn fix_cli_writes_each_input_and_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, r) = (
        dir.path().join("a.png"),
        dir.path().join("b.png"),
        dir.path().join("r.png"),
    );
    save_golden_png("pipe.ref2.input", 0, &a);
    save_golden_png("pipe.ref2.input", 1, &b);
    save_golden_png("pipe.ref.ref", 0, &r);
    let out = dir.path().join("out");
    let model = tiny();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = crate::difix3d(&[
        "fix",
        "--model",
        &s(&model),
        "--input",
        &s(&a),
        &s(&b),
        "--ref",
        &s(&r),
        "--out",
        &s(&out),
        "--native",
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("fixed 2 image(s)") && stdout.contains("ms per image"),
        "{stdout}"
    );
    for name in ["a.png", "b.png"] {
        let fixed = image::open(out.join(name)).unwrap().to_rgb8();
        assert_eq!(fixed.dimensions(), (48, 32));
    }
    // The CLI result is the library's result on the 8-bit input (within PNG rounding).
    let mut lib = Difix::<Cpu>::load(&model, None, &CPU).unwrap();
    let device = CPU;
    let input = difix3d::difix::images::to_tensor::<Cpu>(&image::open(&a).unwrap().to_rgb8(), &device);
    let refimg = difix3d::difix::images::to_tensor::<Cpu>(&image::open(&r).unwrap().to_rgb8(), &device);
    let expected =
        difix3d::difix::images::to_image(lib.fix(input, Some(refimg), "remove degradation").unwrap()).unwrap();
    let actual = image::open(out.join("a.png")).unwrap().to_rgb8();
    let worst = expected
        .pixels()
        .zip(actual.pixels())
        .flat_map(|(e, a)| (0..3).map(move |c| e[c].abs_diff(a[c])))
        .max();
    assert!(worst <= Some(1), "CLI and library differ by {worst:?}");

    // Two references for one input: refused before any work, nothing written.
    let out2 = dir.path().join("out2");
    let (code, _, stderr) = crate::difix3d(&[
        "fix",
        "--model",
        &s(&model),
        "--input",
        &s(&a),
        "--ref",
        &s(&r),
        &s(&r),
        "--out",
        &s(&out2),
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("2 reference images for 1 inputs"), "{stderr}");
    assert!(!out2.exists());
    // No weights: where to get them.
    let (code, _, stderr) = crate::difix3d(&[
        "fix",
        "--model",
        &s(&dir.path().join("none")),
        "--input",
        &s(&a),
        "--out",
        &s(&out2),
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("huggingface-cli download"), "{stderr}");
    // An unreadable input names the file.
    std::fs::write(dir.path().join("bad.png"), b"not a png").unwrap();
    let (code, _, stderr) = crate::difix3d(&[
        "fix",
        "--model",
        &s(&model),
        "--input",
        &s(&dir.path().join("bad.png")),
        "--out",
        &s(&out2),
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("bad.png"), "{stderr}");
    // CUDA without the feature or without a driver: a clear refusal, not a panic.
    let (code, _, stderr) = crate::difix3d(&[
        "fix",
        "--model",
        &s(&model),
        "--input",
        &s(&a),
        "--out",
        &s(&out2),
        "--backend",
        "cuda",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("CUDA") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bench_fix_reports_and_files_its_row_under_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCH.md");
    std::fs::write(
        &md,
        "# B\n\n| date | bench | backend | model | size | ref | float | mean ms | encode / UNet / decode ms | RSS | iters |\n|---|\n\nafter\n",
    )
    .unwrap();
    let (code, stdout, stderr) = crate::difix3d(&[
        "bench",
        "fix",
        "--model",
        tiny().to_str().unwrap(),
        "--size",
        "16x24",
        "--backend",
        "cpu",
        "--iters",
        "1",
        "--append-md",
        md.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout[..stdout.rfind('}').unwrap() + 1]).unwrap();
    assert!(report["mean_ms"].as_f64().unwrap() > 0.0 && report["unet_ms"].as_f64().unwrap() > 0.0);
    let text = std::fs::read_to_string(&md).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[4].contains("| fix | cpu (flex) | tiny | 16x24 |"), "{text}");
    assert_eq!(lines.last(), Some(&"after"));
}

/// `bench fix --compare-conv` times the same calls with `nn::tap_conv` off on wgpu (the tiny model's
/// UNet up blocks read 64 channels, so the switch changes its path); other backends refuse it.
#[test]
fn bench_fix_compare_conv_times_both_ways_on_wgpu_only() {
    let tiny = tiny();
    let args = |backend| {
        let model = tiny.to_str().unwrap().to_string();
        [
            "bench",
            "fix",
            "--model",
            &model,
            "--size",
            "16x24",
            "--iters",
            "1",
            "--compare-conv",
            "--backend",
            backend,
        ]
        .map(String::from)
    };
    let wgpu = args("wgpu");
    let (code, stdout, stderr) = crate::difix3d(&wgpu.each_ref().map(String::as_str));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("all on burn's kernel"), "{stdout}");
    let json = &stdout[stdout.find("\n{").unwrap()..stdout.rfind("\n}").unwrap() + 2];
    let report: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(report["mean_ms"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["burn_conv_mean_ms"].as_f64().unwrap() > 0.0, "{report}");
    let cpu = args("cpu");
    let (code, _, stderr) = crate::difix3d(&cpu.each_ref().map(String::as_str));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--backend wgpu") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// `bench conv` times both ways on wgpu and reports each case; the CPU backend, which has no
/// matrix-product path, and a malformed case are clear errors.
#[test]
fn bench_conv_reports_both_ways_and_refuses_the_cpu() {
    let (code, stdout, stderr) = crate::difix3d(&["bench", "conv", "--cases", "64x8,64x9/2", "--iters", "1"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout[stdout.find("\n{").unwrap()..]).unwrap();
    assert_eq!(report["bench"], "conv");
    let reports = report["cases"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{stdout}");
    assert_eq!(
        (reports[1]["side"].as_u64(), reports[1]["stride"].as_u64()),
        (Some(9), Some(2))
    );
    assert!(reports
        .iter()
        .all(|r| r["burn_ms"].as_f64().unwrap() > 0.0 && r["tap_conv_ms"].as_f64().unwrap() > 0.0));
    let (code, _, stderr) = crate::difix3d(&["bench", "conv", "--backend", "cpu", "--cases", "64x8"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--backend wgpu") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (code, _, stderr) = crate::difix3d(&["bench", "conv", "--cases", "64by8"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("CHANNELSxSIDE"), "{stderr}");
}

#[test]
fn live_fixer_fixes_the_newest_frame_and_reports_load_errors() {
    use difix3d::fix::{FixEvent, Frame, FrameImage, LiveFixer, LiveFixerOptions};
    use difix3d::nn::backend::{BackendKind, Precision};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.png");
    save_golden_png("pipe.ref2.input", 0, &a);
    let image = image::open(&a).unwrap().to_rgb8();
    let options = |model: PathBuf| LiveFixerOptions {
        model,
        backend: BackendKind::Cpu,
        precision: Precision::Fp32,
        prompt: "remove degradation".into(),
        shared: None,
    };
    let fixer = LiveFixer::spawn(options(tiny()));
    // Submitted before the model is ready: only the last of these may survive the one-slot queue.
    for id in 1..=3 {
        fixer.submit(Frame {
            id,
            image: FrameImage::Cpu(image.clone()),
            reference: None,
            policy: difix3d::difix::images::SizePolicy::Native,
        });
    }
    let next = || fixer.events().recv_timeout(Duration::from_secs(120)).expect("an event");
    assert!(matches!(next(), FixEvent::Ready));
    let mut lib = Difix::<Cpu>::load(&tiny(), None, &CPU).unwrap();
    let input = difix3d::difix::images::to_tensor::<Cpu>(&image, &CPU);
    let expected = difix3d::difix::images::to_image(lib.fix(input, None, "remove degradation").unwrap()).unwrap();
    // Frames may be replaced while the worker is busy (see the LatestSlot unit test); whatever is fixed
    // comes in order, is right, and the newest frame is always among it.
    let mut last = 0;
    while last != 3 {
        let FixEvent::Fixed { id, image: fixed, .. } = next() else {
            panic!("expected a fixed frame")
        };
        assert!(id > last, "frames come back in order");
        assert_eq!(fixed, expected);
        last = id;
    }

    let broken = LiveFixer::spawn(options(dir.path().join("no-model")));
    match broken.events().recv_timeout(Duration::from_secs(60)).unwrap() {
        FixEvent::Error(msg) => assert!(msg.contains("huggingface-cli download"), "{msg}"),
        _ => panic!("a missing model must be reported"),
    }
}

/// The live path on a real render: what the worker returns for a frame equals `difix3d fix` on the
/// same frame, and a burst of frames sent while it is busy leaves no backlog (at most the frame in
/// progress and the newest one are fixed).
#[test]
fn live_fix_of_a_render_equals_the_fix_cli_and_keeps_no_backlog() {
    use difix3d::difix::images::SizePolicy;
    use difix3d::fix::{FixEvent, Frame, FrameImage, LiveFixer, LiveFixerOptions};
    use difix3d::nn::backend::{BackendKind, Precision};
    use difix3d::render::{GpuSplats, RenderOptions};
    use std::time::Duration;
    let Some(scene) = crate::asset("luigi.ply") else { return };
    let splats = difix3d::scene::load(&scene).unwrap();
    let camera = difix3d::view::ViewController::default_for(&splats, glam::Vec3::NEG_Y).camera(72, 48);
    let (ctx, rasterizer) = crate::gpu();
    let frame = {
        let gpu_splats = GpuSplats::upload(ctx, &splats).unwrap();
        let mut r = rasterizer.lock().unwrap();
        r.render(ctx, &gpu_splats, &camera, &RenderOptions::default()).unwrap();
        difix3d::image_io::to_rgb8(&r.read_image(ctx).unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("frame.png");
    frame.save(&raw).unwrap();
    let out = dir.path().join("out");
    let (code, stdout, stderr) = crate::difix3d(&[
        "fix",
        "--model",
        tiny().to_str().unwrap(),
        "--backend",
        "cpu",
        "--native",
        "--input",
        raw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let cli = image::open(out.join("frame.png")).unwrap().to_rgb8();

    let fixer = LiveFixer::spawn(LiveFixerOptions {
        model: tiny(),
        backend: BackendKind::Cpu,
        precision: Precision::Fp32,
        prompt: "remove degradation".into(),
        shared: None,
    });
    let next = || fixer.events().recv_timeout(Duration::from_secs(120)).expect("an event");
    assert!(matches!(next(), FixEvent::Ready));
    let submit = |id| {
        fixer.submit(Frame {
            id,
            image: FrameImage::Cpu(frame.clone()),
            reference: None,
            policy: SizePolicy::Native,
        })
    };
    submit(1);
    let FixEvent::Fixed { id: 1, image, .. } = next() else {
        panic!("expected frame 1 back")
    };
    assert_eq!(
        image, cli,
        "the live worker and `difix3d fix` disagree on the same frame"
    );

    // A burst far faster than the model: everything but the newest waiting frame is dropped.
    for id in 2..=20 {
        submit(id);
    }
    let mut fixed = Vec::new();
    while fixed.last() != Some(&20) {
        match next() {
            FixEvent::Fixed { id, .. } => fixed.push(id),
            _ => panic!("expected fixed frames"),
        }
    }
    assert!(fixed.len() <= 2, "a backlog was processed: {fixed:?}");
    assert!(
        fixer.events().recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing after the newest frame"
    );
}

/// With the wgpu backend the live worker shares the renderer's device and a frame reaches it as one
/// GPU-side copy: the tensor it gets equals the read-back 8-bit frame exactly, and the fixed frame is
/// the same as for the read-back frame. A worker on another backend refuses GPU frames.
#[test]
fn live_fix_takes_frames_on_the_renderers_device() {
    use difix3d::difix::images::{to_tensor, SizePolicy};
    use difix3d::fix::gpu_frame::{GpuFrame, SharedBackend};
    use difix3d::fix::{FixEvent, Frame, FrameImage, LiveFixer, LiveFixerOptions};
    use difix3d::nn::backend::{BackendKind, Precision};
    use difix3d::render::{GpuSplats, RenderOptions};
    use std::time::Duration;
    let Some(scene) = crate::asset("luigi.ply") else { return };
    let splats = difix3d::scene::load(&scene).unwrap();
    let (ctx, rasterizer) = crate::gpu();
    let gpu_splats = GpuSplats::upload(ctx, &splats).unwrap();
    // A render at this size, read back and captured on the GPU.
    let render = |width, height| {
        let camera = difix3d::view::ViewController::default_for(&splats, glam::Vec3::NEG_Y).camera(width, height);
        let mut r = rasterizer.lock().unwrap();
        r.render(ctx, &gpu_splats, &camera, &RenderOptions::default()).unwrap();
        let image = difix3d::image_io::to_rgb8(&r.read_image(ctx).unwrap());
        (image, GpuFrame::capture(ctx, &r).expect("a rendered frame"))
    };
    let (read_back, on_gpu) = render(72, 48);
    assert_eq!((on_gpu.width, on_gpu.height), (72, 48));
    let device = ctx.burn_device();
    let expected = to_tensor::<SharedBackend>(&read_back, &device).into_data();
    assert_eq!(
        on_gpu.to_input(72, 48).unwrap().into_data(),
        expected,
        "the GPU hand-off differs from the read-back frame"
    );

    let options = |backend, shared| LiveFixerOptions {
        model: tiny(),
        backend,
        precision: Precision::Fp32,
        prompt: "remove degradation".into(),
        shared,
    };
    let fixer = LiveFixer::spawn(options(BackendKind::Wgpu, Some(device.clone())));
    let next = |f: &LiveFixer| f.events().recv_timeout(Duration::from_secs(300)).expect("an event");
    assert!(matches!(next(&fixer), FixEvent::Ready));
    let frame = |id, image| Frame {
        id,
        image,
        reference: Some(difix3d::fix::FrameReference::Image(std::sync::Arc::new(
            read_back.clone(),
        ))),
        policy: SizePolicy::Native,
    };
    fixer.submit(frame(1, FrameImage::Cpu(read_back.clone())));
    let FixEvent::Fixed {
        id: 1, image: from_cpu, ..
    } = next(&fixer)
    else {
        panic!("expected frame 1 back")
    };
    fixer.submit(frame(2, FrameImage::Gpu(on_gpu.clone())));
    let FixEvent::Fixed {
        id: 2, image: from_gpu, ..
    } = next(&fixer)
    else {
        panic!("expected frame 2 back")
    };
    assert_eq!(from_gpu, from_cpu, "the GPU frame was fixed differently");
    assert_ne!(from_gpu, read_back, "the frame was not fixed at all");

    // A frame that is not a multiple of 8 is scaled on the GPU (bicubic; the CPU path uses Lanczos)
    // and comes back at its own size, close to the CPU path's result.
    let (odd_back, odd_gpu) = render(75, 50);
    fixer.submit(frame(4, FrameImage::Cpu(odd_back.clone())));
    let FixEvent::Fixed {
        id: 4, image: odd_cpu, ..
    } = next(&fixer)
    else {
        panic!("expected frame 4 back")
    };
    fixer.submit(frame(5, FrameImage::Gpu(odd_gpu)));
    let FixEvent::Fixed {
        id: 5,
        image: odd_fixed,
        ..
    } = next(&fixer)
    else {
        panic!("expected frame 5 back")
    };
    assert_eq!(odd_fixed.dimensions(), (75, 50));
    let mse = odd_fixed
        .as_raw()
        .iter()
        .zip(odd_cpu.as_raw())
        .map(|(a, b)| ((*a as f64 - *b as f64) / 255.0).powi(2))
        .sum::<f64>()
        / odd_cpu.as_raw().len() as f64;
    let psnr = -10.0 * mse.log10();
    eprintln!("scaled GPU frame vs the CPU path: {psnr:.1} dB");
    assert!(
        psnr > 30.0,
        "the scaled GPU frame is far from the CPU path's ({psnr:.1} dB)"
    );

    let cpu = LiveFixer::spawn(options(BackendKind::Cpu, Some(device)));
    assert!(matches!(next(&cpu), FixEvent::Ready));
    cpu.submit(frame(3, FrameImage::Gpu(on_gpu)));
    let FixEvent::Error(message) = next(&cpu) else {
        panic!("a CPU worker must refuse a GPU frame")
    };
    assert!(message.contains("does not share"), "{message}");
}

/// Groundwork for Difix training: the whole network (text encoder, VAE encoder with its skips, UNet
/// with reference-view attention, one-step scheduler, decoder with skip convs) is differentiable
/// burn code. Every UNet and VAE parameter (the decoder's LoRA pairs included, kept apart as for
/// training) gets a gradient from an image loss, and the gradient with respect to the input agrees
/// with central finite differences.
#[test]
fn the_tiny_difix_is_differentiable_end_to_end() {
    use burn::backend::Autodiff;
    use burn::module::list_param_ids;
    use burn::optim::GradientsParams;
    type Ad = Autodiff<Cpu>;
    let device = CPU;
    let mut model = Difix::<Ad>::load_for_training(&tiny(), None, &device).unwrap();
    let random = |seed: u64| {
        Tensor::<Ad, 4>::from_data(
            TensorData::new(
                (0..3 * 32 * 32)
                    .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32) / 1000.0)
                    .collect::<Vec<_>>(),
                [1, 3, 32, 32],
            ),
            &device,
        )
    };
    let (input, reference, target) = (random(1), random(2), random(3));
    let mut loss_of = |x: Tensor<Ad, 4>| {
        let out = model.fix(x, Some(reference.clone()), "remove degradation").unwrap();
        (out - target.clone()).powi_scalar(2).mean()
    };
    let x = input.clone().require_grad();
    let loss = loss_of(x.clone());
    let grads = loss.backward();

    // The input gradient against central differences along a fixed direction.
    let dx = x.grad(&grads).unwrap();
    let direction = random(4).inner() - 0.5;
    let analytic: f32 = (dx * direction.clone()).sum().into_scalar();
    let eps = 1e-2;
    let mut at = |s: f32| {
        let moved = Tensor::<Ad, 4>::from_inner(input.clone().inner() + direction.clone() * s);
        loss_of(moved).into_scalar()
    };
    let (plus, minus) = (at(eps), at(-eps));
    let numeric = (plus - minus) / (2.0 * eps);
    assert!(
        (analytic - numeric).abs() <= 0.05 * numeric.abs().max(1e-6),
        "d loss / d input: autodiff {analytic} vs finite differences {numeric}"
    );

    // Every trainable part gets gradients (the decoder's skip convs included).
    let loss = loss_of(random(1));
    let mut grads = loss.backward();
    let unet = (
        list_param_ids(model.unet()).len(),
        GradientsParams::from_module(&mut grads, model.unet()).len(),
    );
    let vae = (
        list_param_ids(model.vae()).len(),
        GradientsParams::from_module(&mut grads, model.vae()).len(),
    );
    for (name, (ids, with_grads)) in [("UNet", unet), ("VAE", vae)] {
        assert!(ids > 0, "{name} has parameters");
        assert_eq!(with_grads, ids, "{name}: every parameter gets a gradient");
    }
}

/// Loading for training keeps the decoder LoRA as separate pairs (one per targeted module) and gives
/// the same output as the merged model.
#[test]
fn lora_kept_apart_matches_the_merged_model() {
    use burn::module::list_param_ids;
    let device = CPU;
    let mut merged = Difix::<Cpu>::load(&tiny(), None, &device).unwrap();
    let mut apart = Difix::<Cpu>::load_for_training(&tiny(), None, &device).unwrap();
    let targets: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("vae_lora_targets.json")).unwrap()).unwrap();
    let extra = list_param_ids(apart.vae()).len() - list_param_ids(merged.vae()).len();
    assert_eq!(extra, 2 * targets.len(), "an A and a B per LoRA target");
    assert_eq!(list_param_ids(apart.unet()).len(), list_param_ids(merged.unet()).len());
    let input = Tensor::<Cpu, 4>::from_data(
        TensorData::new(
            (0..3 * 32 * 32)
                .map(|i| ((i * 37 % 101) as f32) / 101.0)
                .collect::<Vec<_>>(),
            [1, 3, 32, 32],
        ),
        &device,
    );
    let reference = input.clone().flip([3]);
    let a = merged
        .fix(input.clone(), Some(reference.clone()), "remove degradation")
        .unwrap();
    let b = apart.fix(input, Some(reference), "remove degradation").unwrap();
    let diff: f32 = (a - b).abs().max().into_scalar();
    assert!(diff < 1e-5, "merged vs separate LoRA: max |diff| {diff}");
}

/// One fine-tuning step of the tiny model equals torch's (tests/golden/difix/make_train_step.py):
/// what trains (the UNet, the decoder's LoRA pairs and skip convs), the three losses on both views,
/// the gradient norm before clipping, and the losses after one AdamW step on the same batch.
#[test]
fn a_difix_training_step_matches_torch() {
    use burn::backend::Autodiff;
    use burn::module::{Module, ModuleVisitor, Param};
    use difix3d::difix::pipeline::DEFAULT_PROMPT;
    use difix3d::difix::train::step::{self, Crop, LossWeights, Nets};
    use difix3d::perceptual::gram::GramLoss;
    use difix3d::perceptual::lpips::{Lpips, LpipsFiles};
    type Ad = Autodiff<Cpu>;
    let device = CPU;
    let dir = fixtures().join("train_step");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let value = |path: &[&str]| path.iter().fold(&golden, |v, k| &v[*k]).as_f64().unwrap();

    let mut parts = Difix::<Ad>::load_for_training(&tiny(), None, &device)
        .unwrap()
        .into_training_parts();
    let nets = Nets {
        unet: parts.unet,
        vae: parts.vae,
    }
    .freeze_like_the_reference();
    struct Trainable(usize);
    impl ModuleVisitor<Ad> for Trainable {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            let t = param.val();
            if t.is_require_grad() {
                self.0 += t.shape().num_elements();
            }
        }
    }
    let mut trainable = Trainable(0);
    nets.visit(&mut trainable);
    assert_eq!(trainable.0 as f64, value(&["trainable_params"]), "what trains");

    let load = |name: &str| {
        let img = image::open(dir.join(format!("{name}.png"))).unwrap().to_rgb8();
        difix3d::difix::images::to_tensor::<Ad>(&img, &device)
            .mul_scalar(2.0)
            .sub_scalar(1.0)
    };
    let inputs = Tensor::cat(vec![load("input"), load("ref")], 0);
    let targets = Tensor::cat(vec![load("target"), load("ref")], 0);
    let context = parts.prompts.embed(DEFAULT_PROMPT).detach().repeat_dim(0, 2);
    let lpips_dir = crate::repo().join("tests/fixtures/lpips");
    let vgg = lpips_dir.join("vgg_tiny_backbone.pth");
    let lpips = Lpips::<Ad>::load(
        &LpipsFiles {
            backbone: vgg.clone(),
            lin: Some(lpips_dir.join("vgg_tiny_lin.pth")),
        },
        &device,
    )
    .unwrap();
    let gram = GramLoss::<Ad>::load(&vgg, &device).unwrap();
    let crop = Crop {
        top: value(&["crop", "top"]) as usize,
        left: value(&["crop", "left"]) as usize,
        size: value(&["crop", "size"]) as usize,
    };
    let weights = LossWeights {
        l2: 1.0,
        lpips: 1.0,
        gram: 1.0,
    };
    let mut optimizer = step::optimizer::<Ad>(value(&["weight_decay"]) as f32);
    let batch = step::Batch {
        inputs: inputs.clone(),
        targets: targets.clone(),
        context: context.clone(),
        views: 2,
        gram_crop: Some(crop),
        noise_seed: None,
    };
    let settings = step::StepSettings {
        step: &parts.step,
        lpips: &lpips,
        gram: Some(&gram),
        weights,
        lr: value(&["lr"]),
        max_grad_norm: value(&["max_grad_norm"]) as f32,
        sync_phases: true,
    };
    let stepped = step::train_step(nets, &mut optimizer, vec![batch], &settings, None).unwrap();
    let (nets, before, norm) = (stepped.nets, stepped.losses, stepped.grad_norm);
    assert!(stepped.times.forward > std::time::Duration::ZERO && stepped.times.backward > std::time::Duration::ZERO);
    let close = |got: f32, want: f64, rel: f64| ((got as f64) - want).abs() <= rel * want.abs();
    for (name, got, rel) in [
        ("l2", before.l2, 1e-4),
        ("lpips", before.lpips, 1e-4),
        ("gram", before.gram.unwrap(), 1e-3),
        ("total", before.total, 1e-4),
    ] {
        let want = value(&["before", name]);
        assert!(close(got, want, rel), "{name} before the step: {got} vs torch {want}");
    }
    let want = value(&["grad_norm"]);
    assert!(close(norm, want, 1e-3), "gradient norm {norm} vs torch {want}");

    let prediction = nets.forward(inputs, &context, 2, &parts.step, None);
    let (_, after) = step::loss(prediction.clone(), targets, &lpips, Some((&gram, crop)), weights);
    eprintln!("after one step: {after:?}");
    for (name, got) in [
        ("l2", after.l2),
        ("lpips", after.lpips),
        ("gram", after.gram.unwrap()),
        ("total", after.total),
    ] {
        let (want, was) = (value(&["after", name]), value(&["before", name]));
        // The step itself (after - before) must match to 1%.
        assert!(
            ((got as f64 - was) - (want - was)).abs() <= 0.01 * (want - was).abs(),
            "{name} after the step: {got} vs torch {want} (before {was})"
        );
    }

    // The trained networks written as a model folder load like any Difix model (LoRA merged at
    // load) and give the trained output.
    let out = tempfile::tempdir().unwrap();
    let exported = out.path().join("trained");
    difix3d::difix::train::export::export(
        &nets,
        &parts.unet_keys,
        &parts.vae_keys,
        &parts.source,
        &exported,
        &mut |_| Ok(()),
    )
    .unwrap();
    let mut reloaded = Difix::<Cpu>::load(&exported, None, &device).unwrap();
    let load01 = |name: &str| {
        let img = image::open(dir.join(format!("{name}.png"))).unwrap().to_rgb8();
        difix3d::difix::images::to_tensor::<Cpu>(&img, &device)
    };
    let fixed = reloaded
        .fix(load01("input"), Some(load01("ref")), DEFAULT_PROMPT)
        .unwrap();
    let size = value(&["size"]) as usize;
    let trained = prediction
        .inner()
        .slice([0..1, 0..3, 0..size, 0..size])
        .add_scalar(1.0)
        .div_scalar(2.0);
    let diff: f32 = (fixed - trained).abs().max().into_scalar();
    assert!(diff < 1e-4, "exported model vs the trained networks: max |diff| {diff}");
    assert!(!out
        .path()
        .read_dir()
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().contains("partial")));
}
