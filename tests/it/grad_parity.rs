//! The rasterizer's backward pass against torch autograd of the float64 reference
//! (`tests/golden/reference_grad.py`, itself checked by finite differences there), and against f32
//! finite differences of our own forward pass.
//!
//! Tolerance: per parameter group, ||ours - reference|| / ||reference|| <= 1e-3 (L2 over the group).

use std::path::Path;

use difix3d::data::Camera;
use difix3d::render::{GpuSplats, RenderOptions, SplatGradients};
use difix3d::scene::Splats;

use crate::{gpu, repo};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    file: String,
    camera: Camera,
    sh_degree: u32,
    background: [f32; 3],
}

struct Golden {
    splats: Splats,
    v_out: Vec<[f32; 4]>,
    expected: SplatGradients,
}

fn f32s(tensors: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    let view = tensors.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    bytemuck::pod_collect_to_vec(view.data())
}

fn rows<const N: usize>(v: Vec<f32>) -> Vec<[f32; N]> {
    v.chunks_exact(N).map(|c| std::array::from_fn(|i| c[i])).collect()
}

fn load(path: &Path, sh_degree: u32) -> Golden {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let splats = Splats {
        means: rows(f32s(&t, "means")),
        log_scales: rows(f32s(&t, "log_scales")),
        rotations: rows(f32s(&t, "quats")),
        opacity_logits: f32s(&t, "opacity_logits"),
        sh_degree,
        sh: rows(f32s(&t, "sh")),
    };
    let colour = f32s(&t, "v_colour");
    let alpha = f32s(&t, "v_alpha");
    let v_out = alpha
        .iter()
        .enumerate()
        .map(|(i, a)| [colour[3 * i], colour[3 * i + 1], colour[3 * i + 2], *a])
        .collect();
    let expected = SplatGradients {
        means: rows(f32s(&t, "grad_means")),
        log_scales: rows(f32s(&t, "grad_log_scales")),
        rotations: rows(f32s(&t, "grad_quats")),
        opacity_logits: f32s(&t, "grad_opacity_logits"),
        sh: rows(f32s(&t, "grad_sh")),
        mean2d: rows(f32s(&t, "grad_mean2d")),
        mean2d_abs: Vec::new(),
    };
    Golden {
        splats,
        v_out,
        expected,
    }
}

/// ||a - b|| / ||b||, or ||a|| when the reference is all zeros.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

fn groups(g: &SplatGradients) -> Vec<(&'static str, Vec<f32>)> {
    vec![
        ("means", g.means.iter().flatten().copied().collect()),
        ("log_scales", g.log_scales.iter().flatten().copied().collect()),
        ("rotations", g.rotations.iter().flatten().copied().collect()),
        ("opacity_logits", g.opacity_logits.clone()),
        ("sh", g.sh.iter().flatten().copied().collect()),
        ("mean2d", g.mean2d.iter().flatten().copied().collect()),
    ]
}

/// Renders `splats` and returns L = sum(v_out . [colour, alpha]) and the backward pass's gradients.
fn loss_and_grads(
    splats: &Splats,
    camera: &Camera,
    options: &RenderOptions,
    v_out: &[[f32; 4]],
    with_grads: bool,
) -> (f64, Option<SplatGradients>) {
    let (ctx, rasterizer) = gpu();
    let gpu_splats = GpuSplats::upload(ctx, splats).unwrap();
    let mut r = rasterizer.lock().unwrap();
    r.render(ctx, &gpu_splats, camera, options).unwrap();
    let image = r.read_image(ctx).unwrap();
    let loss = image
        .rgba
        .iter()
        .zip(v_out)
        .map(|(p, v)| (0..4).map(|c| p[c] as f64 * v[c] as f64).sum::<f64>())
        .sum();
    let grads = with_grads.then(|| r.backward(ctx, &gpu_splats, v_out).unwrap());
    (loss, grads)
}

#[test]
fn gradients_match_torch_autograd_of_the_reference() {
    let dir = repo().join("tests/fixtures/grad");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).unwrap();
    assert!(cases.len() >= 3, "expected random and real-scene cases");
    for case in &cases {
        let golden = load(&dir.join(&case.file), case.sh_degree);
        let options = RenderOptions {
            sh_degree: case.sh_degree,
            background: case.background,
        };
        let (_, grads) = loss_and_grads(&golden.splats, &case.camera, &options, &golden.v_out, true);
        let grads = grads.unwrap();
        for ((name, ours), (_, reference)) in groups(&grads).into_iter().zip(groups(&golden.expected)) {
            let e = relative_error(&ours, &reference);
            eprintln!("{}: {name}: relative error {e:.2e}", case.name);
            assert!(e <= 1e-3, "{}: {name}: relative error {e:.2e} > 1e-3", case.name);
        }
    }
}

/// Central differences of our own f32 forward pass agree with the backward pass on the parameters with
/// the largest gradients (f32 differences are noisy: 3 % relative).
#[test]
fn gradients_match_finite_differences_of_the_forward_pass() {
    let dir = repo().join("tests/fixtures/grad");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).unwrap();
    let case = &cases[0];
    let golden = load(&dir.join(&case.file), case.sh_degree);
    let options = RenderOptions {
        sh_degree: case.sh_degree,
        background: case.background,
    };
    let (_, grads) = loss_and_grads(&golden.splats, &case.camera, &options, &golden.v_out, true);
    let grads = grads.unwrap();
    // (group, flat index) of the largest gradient of each group.
    let mut checked = 0;
    for (name, values) in groups(&grads) {
        if name == "mean2d" {
            continue;
        }
        let (index, g) = values
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, g)| (i, *g))
            .unwrap();
        let h = 1e-3f32;
        let perturbed = |delta: f32| {
            let mut s = golden.splats.clone();
            let slot: &mut f32 = match name {
                "means" => &mut s.means[index / 3][index % 3],
                "log_scales" => &mut s.log_scales[index / 3][index % 3],
                "rotations" => &mut s.rotations[index / 4][index % 4],
                "opacity_logits" => &mut s.opacity_logits[index],
                _ => &mut s.sh[index / 3][index % 3],
            };
            *slot += delta;
            loss_and_grads(&s, &case.camera, &options, &golden.v_out, false).0
        };
        let fd = (perturbed(h) - perturbed(-h)) / (2.0 * h as f64);
        let rel = (fd - g as f64).abs() / (g as f64).abs().max(1e-6);
        eprintln!("{name}[{index}]: backward {g:.5e}, finite difference {fd:.5e} (rel {rel:.1e})");
        assert!(rel < 3e-2, "{name}[{index}]: backward {g} vs finite difference {fd}");
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// Gradients by parameter group.
type Groups = Vec<(&'static str, Vec<f32>)>;

/// The image and parameter gradients of `sum(image · v_out)` through burn's autodiff on backend `I`,
/// for the first golden case, with the golden's expected gradients.
fn autodiff_gradients<I: burn::tensor::backend::Backend>(device: &I::Device) -> (Vec<f32>, Groups, Groups) {
    use burn::backend::Autodiff;
    use burn::tensor::{Tensor, TensorData};
    use difix3d::render::diff_render::{render, SplatRenderer, SplatTensors};

    let dir = repo().join("tests/fixtures/grad");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).unwrap();
    let case = &cases[0];
    let golden = load(&dir.join(&case.file), case.sh_degree);
    let renderer = SplatRenderer::new(gpu().0.clone());
    let p = SplatTensors::<Autodiff<I>>::from_splats(&golden.splats, device);
    let p = SplatTensors {
        means: p.means.require_grad(),
        log_scales: p.log_scales.require_grad(),
        rotations: p.rotations.require_grad(),
        opacity_logits: p.opacity_logits.require_grad(),
        sh: p.sh.require_grad(),
        sh_degree: p.sh_degree,
    };
    let options = RenderOptions {
        sh_degree: case.sh_degree,
        background: case.background,
    };
    let image = render(&renderer, &p, &case.camera, &options).unwrap();
    let [h, w, _] = image.dims();
    let weights: Vec<f32> = golden.v_out.iter().flatten().copied().collect();
    let weights = Tensor::<Autodiff<I>, 3>::from_data(TensorData::new(weights, [h, w, 4]), device);
    let values: Vec<f32> = image.clone().into_data().convert::<f32>().to_vec().unwrap();
    let grads = (image * weights).sum().backward();
    let grad = |t: &Tensor<Autodiff<I>, 2>| -> Vec<f32> {
        t.grad(&grads)
            .expect("a gradient")
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap()
    };
    let ours = vec![
        ("means", grad(&p.means)),
        ("log_scales", grad(&p.log_scales)),
        ("rotations", grad(&p.rotations)),
        ("opacity_logits", grad(&p.opacity_logits)),
        ("sh", grad(&p.sh)),
    ];
    (values, ours, groups(&golden.expected))
}

/// The same gradients through burn's autodiff: the loss is ordinary burn code over the image the
/// rasterizer op returns (parameters, image and gradients through the CPU, burn on ndarray).
#[test]
fn burn_autodiff_through_the_render_op_matches_the_reference() {
    let (_, ours, reference) = autodiff_gradients::<burn::backend::NdArray<f32>>(&Default::default());
    for ((name, ours), (_, reference)) in ours.into_iter().zip(reference) {
        let e = relative_error(&ours, &reference);
        eprintln!("burn autodiff {name}: relative error {e:.2e}");
        assert!(e <= 1e-3, "{name}: relative error {e:.2e}");
    }
}

/// With burn on the renderer's own wgpu device, parameters, image and gradients stay on the GPU
/// (GPU-side copies only): the same image and gradients as the path through the CPU, and as torch.
#[test]
fn the_render_op_on_the_renderers_device_stays_on_the_gpu_and_agrees() {
    use difix3d::render::burn_bridge::SharedBackend;
    let device = gpu().0.burn_device();
    let (image, ours, reference) = autodiff_gradients::<SharedBackend>(&device);
    let (cpu_image, cpu, _) = autodiff_gradients::<burn::backend::NdArray<f32>>(&Default::default());
    assert_eq!(image, cpu_image, "the image differs between the GPU and CPU hand-offs");
    for (((name, ours), (_, reference)), (_, cpu)) in ours.into_iter().zip(reference).zip(cpu) {
        let e = relative_error(&ours, &reference);
        let e_cpu = relative_error(&ours, &cpu);
        eprintln!("on the shared device {name}: relative error {e:.2e} vs torch, {e_cpu:.2e} vs the CPU path");
        assert!(e <= 1e-3, "{name}: relative error {e:.2e}");
        // Not bit-identical: the backward kernels accumulate with atomics, in no fixed order.
        assert!(e_cpu <= 1e-4, "{name}: {e_cpu:.2e} from the CPU path");
    }
}

/// gsplat's absgrad: with it on, the backward pass also sums, per splat, the absolute value of each
/// pixel's part of dL/d(2D mean). The reference takes those parts one pixel at a time (a backward
/// pass whose pixel gradients are zero except at that pixel, so the 2D-mean gradient it returns is
/// exactly that pixel's part) and sums their absolute values in f64.
#[test]
fn absgrad_sums_the_absolute_per_pixel_mean2d_gradients() {
    use difix3d::render::{RasterConstants, Rasterizer};

    let dir = repo().join("tests/fixtures/grad");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).unwrap();
    let case = &cases[0];
    let golden = load(&dir.join(&case.file), case.sh_degree);
    let options = RenderOptions {
        sh_degree: case.sh_degree,
        background: case.background,
    };
    let (width, height) = (case.camera.width as usize, case.camera.height as usize);
    // A 20x16 window across the tile boundaries at x = 16 and y = 16 (one backward pass per pixel).
    let window: Vec<usize> = (6..22)
        .flat_map(|y| (8..28).map(move |x| y * width + x))
        .filter(|&p| p < width * height)
        .collect();
    assert_eq!(window.len(), 320);
    let mut v_out = vec![[0.0f32; 4]; width * height];
    for &p in &window {
        v_out[p] = golden.v_out[p];
    }
    let ctx = &gpu().0;
    let gpu_splats = GpuSplats::upload(ctx, &golden.splats).unwrap();
    for constants in [RasterConstants::Inria, RasterConstants::Gsplat] {
        let mut r = Rasterizer::new(&ctx.device);
        r.set_constants(constants);
        r.render(ctx, &gpu_splats, &case.camera, &options).unwrap();
        let plain = r.backward(ctx, &gpu_splats, &v_out).unwrap();
        assert!(
            plain.mean2d_abs.iter().flatten().all(|v| *v == 0.0),
            "{constants:?}: absgrad off leaves mean2d_abs zero"
        );
        r.set_absgrad(true);
        let ours = r.backward(ctx, &gpu_splats, &v_out).unwrap();

        let n = golden.splats.len();
        let mut abs_sum = vec![[0.0f64; 2]; n];
        let mut signed_sum = vec![[0.0f64; 2]; n];
        for &p in &window {
            let mut one = vec![[0.0f32; 4]; width * height];
            one[p] = v_out[p];
            let part = r.backward(ctx, &gpu_splats, &one).unwrap();
            for i in 0..n {
                for c in 0..2 {
                    abs_sum[i][c] += (part.mean2d[i][c] as f64).abs();
                    signed_sum[i][c] += part.mean2d[i][c] as f64;
                }
            }
        }
        let max_abs = abs_sum.iter().flatten().fold(0.0f64, |m, v| m.max(*v));
        assert!(max_abs > 0.0, "{constants:?}: the window's pixels have gradients");
        let mut cancelling = 0;
        for i in 0..n {
            for c in 0..2 {
                let tol = |reference: f64| 1e-5 * reference.abs() + 1e-6 * max_abs;
                let (a, reference) = (ours.mean2d_abs[i][c] as f64, abs_sum[i][c]);
                assert!(
                    (a - reference).abs() <= tol(reference),
                    "{constants:?}: splat {i} axis {c}: absgrad {a:e} vs per-pixel sum {reference:e}"
                );
                // The ordinary gradient is unchanged by absgrad and is the signed per-pixel sum.
                let (s, reference) = (ours.mean2d[i][c] as f64, signed_sum[i][c]);
                assert!(
                    (s - reference).abs() <= tol(abs_sum[i][c]),
                    "{constants:?}: splat {i} axis {c}: mean2d {s:e} vs per-pixel sum {reference:e}"
                );
                assert!(
                    (s - plain.mean2d[i][c] as f64).abs() <= tol(abs_sum[i][c]),
                    "{constants:?}: splat {i} axis {c}: mean2d with absgrad {s:e} vs without {:e}",
                    plain.mean2d[i][c]
                );
                if abs_sum[i][c] > 1e-3 * max_abs && signed_sum[i][c].abs() < 0.9 * abs_sum[i][c] {
                    cancelling += 1;
                }
            }
        }
        // The case has splats whose per-pixel parts cancel (where absgrad differs from |mean2d|).
        eprintln!("{constants:?}: {cancelling} splat axes whose per-pixel parts partly cancel");
        assert!(
            cancelling > 0,
            "{constants:?}: no cancelling parts, the test would not tell them apart"
        );
    }
}
