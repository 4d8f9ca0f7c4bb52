//! LPIPS against the `lpips` package (tests/golden/lpips_golden.py): tiny random-weight VGG16 and
//! AlexNet backbones in torchvision's file layout and random linear layers in lpips's, on three
//! image pairs. Tolerances: distance 1e-4 relative, each layer's share 1e-3 relative (the deep
//! layers of random networks contribute ~1e-9), input gradients 1e-3 relative.

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, TensorData};
use difix3d::perceptual::backbone::Net;
use difix3d::perceptual::lpips::{Lpips, LpipsFiles};

use crate::repo;

type Cpu = NdArray<f32>;

fn fixture(name: &str) -> std::path::PathBuf {
    repo().join("tests/fixtures/lpips").join(name)
}

fn image<B: burn::tensor::backend::Backend>(name: &str) -> Tensor<B, 4> {
    let img = image::open(fixture(&format!("{name}.png"))).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let values: Vec<f32> = img.as_raw().iter().map(|v| *v as f32 / 255.0).collect();
    Tensor::<B, 3>::from_data(
        TensorData::new(values, [h as usize, w as usize, 3]),
        &Default::default(),
    )
    .permute([2, 0, 1])
    .unsqueeze()
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs() + 1e-12
}

#[test]
fn lpips_matches_the_lpips_package() {
    let goldens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("goldens.json")).unwrap()).unwrap();
    for (name, net) in [("vgg", Net::Vgg16), ("alex", Net::Alex)] {
        let g = &goldens[name];
        let files = LpipsFiles {
            backbone: fixture(g["backbone"].as_str().unwrap()),
            lin: Some(fixture(g["lin"].as_str().unwrap())),
        };
        let metric = Lpips::<Cpu>::load(&files, &NdArrayDevice::Cpu).unwrap();
        assert_eq!(metric.net(), net);
        for (pair, case) in g["cases"].as_object().unwrap() {
            let (x, y) = (&pair[..1], &pair[1..]);
            let got: f32 = metric.distance(image(x), image(y)).into_scalar();
            let want = case["lpips"].as_f64().unwrap();
            if pair == "aa" {
                assert!(got.abs() < 1e-7, "{name} {pair}: {got}");
                continue;
            }
            assert!(close(got as f64, want, 1e-4), "{name} {pair}: {got} vs lpips {want}");
            let layers = metric.layer_distances(image(x), image(y));
            for (k, (layer, want)) in layers.into_iter().zip(case["layers"].as_array().unwrap()).enumerate() {
                let got: f32 = layer.into_scalar();
                let want = want.as_f64().unwrap();
                assert!(
                    close(got as f64, want, 1e-3),
                    "{name} {pair} layer {k}: {got} vs {want}"
                );
            }
        }

        // Gradients with respect to the first image, as a training loss needs them.
        let metric = Lpips::<Autodiff<Cpu>>::load(&files, &NdArrayDevice::Cpu).unwrap();
        let a = image::<Autodiff<Cpu>>("a").require_grad();
        let grads = metric.distance(a.clone(), image("b")).sum().backward();
        let grad = a.grad(&grads).unwrap();
        let case = &g["cases"]["ab"];
        let sum_abs: f32 = grad.clone().abs().sum().into_scalar();
        let want = case["grad_a_sum_abs"].as_f64().unwrap();
        assert!(
            close(sum_abs as f64, want, 1e-3),
            "{name} grad sum |g| {sum_abs} vs {want}"
        );
        // Single elements to 10% of themselves, or of the mean |gradient| for elements far smaller
        // than it (their rounding noise scales with the whole gradient, not with them). The tiny
        // VGG's elements are sums that mostly cancel: on an AVX2-only CPU (AMD EPYC, no AVX-512)
        // one came out 4.8% from torch's while the sum of |gradient| above agreed to 1e-3; with
        // AVX-512 they agreed to 2e-3. A wrong gradient is off by far more.
        let mean_abs = want / grad.dims().iter().product::<usize>() as f64;
        for sample in case["grad_a_samples"].as_array().unwrap() {
            let s: Vec<f64> = sample.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let (c, y, x) = (s[0] as usize, s[1] as usize, s[2] as usize);
            let got: f32 = grad.clone().slice([0..1, c..c + 1, y..y + 1, x..x + 1]).into_scalar();
            assert!(
                (got as f64 - s[3]).abs() <= 0.1 * s[3].abs().max(mean_abs),
                "{name} grad at {c},{y},{x}: {got} vs {}",
                s[3]
            );
        }
    }
}

#[test]
fn lpips_files_that_do_not_fit_are_refused_clearly() {
    let lin_of = |n: &str| fixture(&format!("{n}_tiny_lin.pth"));
    // VGG linear layers on an AlexNet backbone: the widths disagree.
    let files = LpipsFiles {
        backbone: fixture("alex_tiny_backbone.pth"),
        lin: Some(lin_of("vgg")),
    };
    let message = Lpips::<Cpu>::load(&files, &NdArrayDevice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("vgg_tiny_lin.pth") && message.contains("lin0.model.1.weight"),
        "{message}"
    );
    // A missing file and a file that is not a state dict.
    let files = LpipsFiles {
        backbone: fixture("nowhere.pth"),
        lin: Some(lin_of("vgg")),
    };
    let message = Lpips::<Cpu>::load(&files, &NdArrayDevice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("nowhere.pth"), "{message}");
    let files = LpipsFiles {
        backbone: fixture("a.png"),
        lin: Some(lin_of("vgg")),
    };
    let message = Lpips::<Cpu>::load(&files, &NdArrayDevice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("a.png"), "{message}");
}

#[test]
fn the_fetched_lpips_linear_layers_have_the_published_widths() {
    let Some(dir) = crate::asset("lpips") else { return };
    for (file, widths) in [
        ("vgg.pth", [64, 128, 256, 512, 512]),
        ("alex.pth", [64, 192, 384, 256, 256]),
    ] {
        let mut weights = difix3d::nn::weights::Weights::open_pickle(&dir.join(file)).unwrap();
        for (k, c) in widths.into_iter().enumerate() {
            let values = weights
                .take_values(&format!("lin{k}.model.1.weight"), &[1, c, 1, 1])
                .unwrap();
            assert!(
                values.iter().all(|v| *v >= 0.0),
                "{file} lin{k}: LPIPS weights are non-negative"
            );
        }
        weights.finish().unwrap();
    }
}

#[test]
fn gram_loss_matches_difix3d_loss_py() {
    use difix3d::perceptual::gram::GramLoss;
    let goldens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("goldens.json")).unwrap()).unwrap();
    let g = &goldens["gram"];
    let backbone = fixture(g["backbone"].as_str().unwrap());
    let loss = GramLoss::<Autodiff<Cpu>>::load(&backbone, &NdArrayDevice::Cpu).unwrap();
    for (pair, case) in g["cases"].as_object().unwrap() {
        let prediction = image::<Autodiff<Cpu>>(&pair[..1]).require_grad();
        let value = loss.loss(prediction.clone(), image(&pair[1..]));
        let got: f32 = value.clone().into_scalar();
        let want = case["loss"].as_f64().unwrap();
        assert!(close(got as f64, want, 1e-4), "{pair}: {got} vs Difix3D {want}");
        let grads = value.backward();
        let grad = prediction.grad(&grads).unwrap();
        let sum_abs: f32 = grad.clone().abs().sum().into_scalar();
        let want = case["grad_sum_abs"].as_f64().unwrap();
        assert!(
            close(sum_abs as f64, want, 1e-3),
            "{pair} grad sum |g| {sum_abs} vs {want}"
        );
        for sample in case["grad_samples"].as_array().unwrap() {
            let s: Vec<f64> = sample.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let (c, y, x) = (s[0] as usize, s[1] as usize, s[2] as usize);
            let got: f32 = grad.clone().slice([0..1, c..c + 1, y..y + 1, x..x + 1]).into_scalar();
            assert!(
                (got as f64 - s[3]).abs() <= 2e-3 * s[3].abs() + 1e-9,
                "{pair} grad at {c},{y},{x}: {got} vs {}",
                s[3]
            );
        }
    }
    // AlexNet weights are refused.
    let message = GramLoss::<Cpu>::load(&fixture("alex_tiny_backbone.pth"), &NdArrayDevice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("needs VGG16"), "{message}");
}
