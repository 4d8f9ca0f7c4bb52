//! Nerfacto (issue 18) against nerfstudio itself: a tiny nerfacto model built, trained for 300 steps
//! and saved by nerfstudio 1.1.5 (`tests/golden/nerfacto/make_nerfacto_golden.py`), its checkpoint
//! read here and every stage compared with nerfstudio's own outputs on the same inputs: the hash
//! encodings, the fields, the proposal sampler's passes, full renders of 64 rays and a 16x12
//! camera. Other methods' checkpoints and damaged files must give clear errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::prelude::*;
use difix3d::data::Camera;
use difix3d::nerfacto::checkpoint::Checkpoint;
use difix3d::nerfacto::config::NerfactoConfig;
use difix3d::nerfacto::encoding::level_scalings;
use difix3d::nerfacto::{Nerfacto, NerfactoError};
use difix3d::nn::backend::CpuBackend;

type B = CpuBackend;

fn fixtures() -> PathBuf {
    crate::repo().join("tests/fixtures/nerfacto")
}

fn checkpoint_path() -> PathBuf {
    fixtures().join("step-000000300.ckpt")
}

/// The golden tensors: name -> (shape, values).
type Goldens = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The golden tensors (all f32) of a file in the nerfacto fixtures.
pub(crate) fn read_goldens(file: &str) -> Goldens {
    let bytes = std::fs::read(fixtures().join(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// The torch implementation's goldens, or the tiny-cuda-nn one's (`tcnn`).
fn goldens_of(tcnn: bool) -> &'static Goldens {
    static TORCH: OnceLock<Goldens> = OnceLock::new();
    static TCNN: OnceLock<Goldens> = OnceLock::new();
    match tcnn {
        false => TORCH.get_or_init(|| read_goldens("goldens.safetensors")),
        true => TCNN.get_or_init(|| read_goldens("tcnn_goldens.safetensors")),
    }
}

fn golden_of(tcnn: bool, name: &str) -> &'static [f32] {
    &goldens_of(tcnn)
        .get(name)
        .unwrap_or_else(|| panic!("no golden `{name}`"))
        .1
}

fn golden(name: &str) -> &'static [f32] {
    golden_of(false, name)
}

fn golden_tensor_of<Bk: Backend>(tcnn: bool, name: &str, device: &Bk::Device) -> Tensor<Bk, 2> {
    let (shape, values) = goldens_of(tcnn)
        .get(name)
        .unwrap_or_else(|| panic!("no golden `{name}`"));
    let rows = shape[0];
    let cols = values.len() / rows.max(1);
    Tensor::<Bk, 1>::from_floats(values.as_slice(), device).reshape([rows, cols])
}

fn golden_tensor<Bk: Backend>(name: &str, device: &Bk::Device) -> Tensor<Bk, 2> {
    golden_tensor_of(false, name, device)
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn tiny_config() -> NerfactoConfig {
    NerfactoConfig::read(&fixtures().join("config.json")).unwrap()
}

fn model<Bk: Backend>(device: &Bk::Device) -> Nerfacto<Bk> {
    Nerfacto::open(&checkpoint_path(), Some(&fixtures().join("config.json")), device).unwrap()
}

/// Asserts `|got - want| <= atol + rtol * |want|` everywhere and returns the largest absolute and
/// relative (to max(|want|, 1e-3)) differences, printed for the record.
fn assert_close(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> (f32, f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let (mut max_abs, mut max_rel) = (0f32, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        assert!(
            diff <= atol + rtol * w.abs(),
            "{name}[{i}]: {g} vs nerfstudio's {w} (|diff| {diff:e} > {atol:e} + {rtol:e}·|ref|)"
        );
        max_abs = max_abs.max(diff);
        max_rel = max_rel.max(diff / w.abs().max(1e-3));
    }
    eprintln!(
        "{name}: max |diff| {max_abs:.3e}, max relative {max_rel:.3e} over {} values",
        got.len()
    );
    (max_abs, max_rel)
}

#[test]
fn checkpoint_loads_with_its_sizes() {
    let checkpoint = Checkpoint::read(&checkpoint_path()).unwrap();
    // The keys nerfstudio's trainer wrote, `_model.` stripped; the duplicate proposal hash tables
    // (`encoding` and `mlp_base.0` are the same module) and the camera optimiser are there too.
    for key in [
        "field.mlp_base.model.0.hash_table",
        "field.mlp_head.layers.2.weight",
        "field.embedding_appearance.embedding.weight",
        "proposal_networks.1.mlp_base.0.hash_table",
        "camera_optimizer.pose_adjustment",
    ] {
        assert!(checkpoint.contains(key), "{key} missing");
    }
    let model = Nerfacto::<B>::load(&checkpoint, tiny_config(), &Default::default()).unwrap();
    let c = &model.config;
    assert_eq!(
        (c.num_levels, c.max_res, c.log2_hashmap_size, c.features_per_level),
        (Some(4), Some(128), Some(8), Some(2))
    );
    assert_eq!(
        (c.hidden_dim, c.hidden_dim_color, c.appearance_embed_dim),
        (Some(16), Some(16), Some(4))
    );
    let props = c.proposal_net_args_list.as_ref().unwrap();
    assert_eq!(props.len(), 2);
    assert_eq!(
        (props[1].num_levels, props[1].max_res, props[1].hidden_dim),
        (Some(3), Some(64), Some(8))
    );
    assert_eq!(model.proposals.len(), 2);

    // Without a config the sizes still come from the checkpoint (sample counts are nerfacto's).
    let defaults = Nerfacto::<B>::load(&checkpoint, NerfactoConfig::default(), &Default::default()).unwrap();
    assert_eq!(defaults.config.num_levels, Some(4));
    assert_eq!(defaults.config.num_proposal_samples_per_ray, vec![256, 96]);
}

#[test]
fn config_that_contradicts_the_checkpoint_is_refused() {
    let checkpoint = Checkpoint::read(&checkpoint_path()).unwrap();
    let mut config = tiny_config();
    config.num_levels = Some(16);
    let err = Nerfacto::<B>::load(&checkpoint, config, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("num_levels") && err.contains("step-000000300.ckpt"),
        "{err}"
    );

    let mut config = tiny_config();
    config.num_proposal_samples_per_ray = vec![32];
    let err = Nerfacto::<B>::load(&checkpoint, config, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 proposal network(s)"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"num_nerf_samples_per_ray": 0}"#).unwrap();
    let err = NerfactoConfig::read(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.json") && err.contains("num_nerf_samples_per_ray"),
        "{err}"
    );
    std::fs::write(&bad, r#"{"num_levels": 4, "typo_key": 1}"#).unwrap();
    let err = NerfactoConfig::read(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.json") && err.contains("typo_key"), "{err}");
}

#[test]
fn level_scalings_match_nerfstudio() {
    #[derive(serde::Deserialize)]
    struct Case {
        num_levels: usize,
        base_res: usize,
        max_res: usize,
        scalings: Vec<f32>,
    }
    let text = std::fs::read_to_string(fixtures().join("scalings.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases
        .iter()
        .any(|c| c.max_res == 2048 && c.scalings.last() == Some(&2047.0)));
    for c in cases {
        assert_eq!(
            level_scalings(c.num_levels, c.base_res, c.max_res),
            c.scalings,
            "{} levels {}..{}",
            c.num_levels,
            c.base_res,
            c.max_res
        );
    }
}

/// The hash encodings on the CPU backend and on ndarray (64-bit integers instead of 32-bit).
#[test]
fn hash_encodings_match_nerfstudio() {
    fn check<Bk: Backend>(label: &str) {
        let device = Default::default();
        let model = model::<Bk>(&device);
        let points = golden_tensor::<Bk>("hash_points", &device);
        let encodings = [
            ("hash_field", &model.field.encoding),
            ("hash_prop0", &model.proposals[0].encoding),
            ("hash_prop1", &model.proposals[1].encoding),
        ];
        for (name, encoding) in encodings {
            let got = values(encoding.forward(points.clone()));
            assert_close(&format!("{label} {name}"), &got, golden(name), 1e-6, 1e-5);
        }
    }
    check::<B>("flex");
    check::<burn::backend::NdArray>("ndarray");
}

/// Both implementations' checkpoints: torch's, and tiny-cuda-nn's (`tcnn`).
const IMPLEMENTATIONS: [bool; 2] = [false, true];

#[test]
fn fields_match_nerfstudio() {
    for tcnn in IMPLEMENTATIONS {
        let device = Default::default();
        let model = model_of::<B>(tcnn, &device);
        let golden = |name: &str| golden_of(tcnn, name);
        let positions = golden_tensor_of::<B>(tcnn, "field_positions", &device);
        let directions = golden_tensor_of::<B>(tcnn, "field_directions", &device);
        let out = model.field.forward(&model.mapping, positions.clone(), directions);
        let label = |name: &str| format!("{}{name}", if tcnn { "tcnn " } else { "" });
        assert_close(
            &label("field density"),
            &values(out.density),
            golden("field_density"),
            1e-7,
            1e-4,
        );
        assert_close(&label("field rgb"), &values(out.rgb), golden("field_rgb"), 1e-5, 1e-4);
        for (i, name) in ["prop0_density", "prop1_density"].into_iter().enumerate() {
            let got = values(model.proposals[i].density(&model.mapping, positions.clone()));
            assert_close(&label(name), &got, golden(name), 1e-7, 1e-4);
        }
    }
}

#[test]
fn rays_render_as_in_nerfstudio() {
    for tcnn in IMPLEMENTATIONS {
        rays_render::<B>(&Default::default(), tcnn);
    }
}

/// The same renders on burn's wgpu backend (lavapipe here): its kernels, 32-bit integer hashing.
#[test]
fn rays_render_as_in_nerfstudio_on_wgpu() {
    for tcnn in IMPLEMENTATIONS {
        rays_render::<burn::backend::Wgpu<f32>>(&burn::backend::wgpu::WgpuDevice::DefaultDevice, tcnn);
    }
}

fn rays_render<Bk: Backend>(device: &Bk::Device, tcnn: bool) {
    let model = model_of::<Bk>(tcnn, device);
    let golden = |name: &str| golden_of(tcnn, name);
    // A failure below names the golden; this says whose.
    eprintln!(
        "the {} implementation's checkpoint",
        if tcnn { "tiny-cuda-nn" } else { "torch" }
    );
    let out = model.render_rays(
        golden_tensor_of::<Bk>(tcnn, "ray_origins", device),
        golden_tensor_of::<Bk>(tcnn, "ray_directions", device),
    );
    // Each pass's bins and weights first: a mismatch shows where it starts.
    for (i, (samples, weights)) in out.passes.iter().enumerate() {
        assert_close(
            &format!("bins_{i}"),
            &values(samples.bins.clone()),
            golden(&format!("bins_{i}")),
            1e-5,
            1e-4,
        );
        assert_close(
            &format!("weights_{i}"),
            &values(weights.clone()),
            golden(&format!("weights_{i}")),
            1e-5,
            1e-3,
        );
    }
    let rgb = golden("render_rgb");
    let spread = rgb.iter().cloned().fold(f32::MIN, f32::max) - rgb.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 0.1,
        "the golden render is nearly flat ({spread}); the fixture is too weak"
    );
    assert_close("render rgb", &values(out.rgb), rgb, 1e-4, 1e-3);
    assert_close(
        "render accumulation",
        &values(out.accumulation),
        golden("render_accumulation"),
        1e-4,
        1e-3,
    );
    assert_close("render depth", &values(out.depth), golden("render_depth"), 1e-4, 1e-3);
    assert_close(
        "render expected depth",
        &values(out.expected_depth),
        golden("render_expected_depth"),
        1e-4,
        1e-3,
    );
    for (i, depth) in out.proposal_depths.into_iter().enumerate() {
        let name = format!("render_prop_depth_{i}");
        assert_close(&name, &values(depth), golden(&name), 1e-4, 1e-3);
    }
}

/// nerfstudio's OpenGL camera-to-world [3, 4] as our OpenCV camera.
fn golden_camera() -> Camera {
    golden_camera_of(false)
}

fn golden_camera_of(tcnn: bool) -> Camera {
    let m = golden_of(tcnn, "image_camera_to_world");
    let k = golden_of(tcnn, "image_intrinsics");
    let column = |c: usize| glam::Vec3::new(m[c], m[4 + c], m[8 + c]);
    let rotation = glam::Mat3::from_cols(column(0), -column(1), -column(2));
    Camera {
        name: "golden.png".into(),
        width: 16,
        height: 12,
        fx: k[0],
        fy: k[1],
        cx: k[2],
        cy: k[3],
        world_from_camera: glam::Affine3A::from_mat3_translation(rotation, column(3)),
    }
}

#[test]
fn camera_renders_as_in_nerfstudio() {
    for tcnn in IMPLEMENTATIONS {
        camera_renders(tcnn);
    }
}

fn camera_renders(tcnn: bool) {
    let model = model_of::<B>(tcnn, &Default::default());
    let golden = |name: &str| golden_of(tcnn, name);
    // A failure below names the golden; this says whose.
    eprintln!(
        "the {} implementation's checkpoint",
        if tcnn { "tiny-cuda-nn" } else { "torch" }
    );
    // Chunks smaller than the image: only the expected depth (not compared here) depends on them.
    let image = model.render_camera(&golden_camera_of(tcnn), 50);
    assert_eq!((image.width, image.height), (16, 12));
    assert_close("image rgb", &image.rgb, golden("image_rgb"), 1e-4, 1e-3);
    assert_close(
        "image accumulation",
        &image.accumulation,
        golden("image_accumulation"),
        1e-4,
        1e-3,
    );
    assert_close("image depth", &image.depth, golden("image_depth"), 1e-4, 1e-3);
}

/// `difix3d nerfacto-render` of the parity checkpoint from the golden camera (written into `dir`) to
/// `out`, with `extra` flags: exit code, stdout, stderr.
fn render_golden_camera(dir: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let cameras = dir.join("camera.json");
    std::fs::write(&cameras, serde_json::to_string(&golden_camera()).unwrap()).unwrap();
    let (checkpoint, config) = (checkpoint_path(), fixtures().join("config.json"));
    let args = [
        "nerfacto-render",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--camera-json",
        cameras.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    crate::difix3d(&[&args[..], extra].concat())
}

#[test]
fn cli_renders_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cameras = dir.path().join("camera.json");
    for backend in ["cpu", "wgpu"] {
        let out = dir.path().join(format!("out-{backend}"));
        let (code, stdout, stderr) = render_golden_camera(dir.path(), &out, &["--backend", backend]);
        assert_eq!(code, 0, "{backend}: {stdout}\n{stderr}");
        let png = image::open(out.join("golden.png")).unwrap().to_rgb8();
        for (got, want) in png.as_raw().iter().zip(golden("image_rgb")) {
            let want = (want.clamp(0.0, 1.0) * 255.0).round();
            assert!((f32::from(*got) - want).abs() <= 1.0, "{backend}: {got} vs {want}");
        }
    }

    let (code, _, stderr) = crate::difix3d(&[
        "nerfacto-render",
        "--checkpoint",
        fixtures().join("splatfacto.ckpt").to_str().unwrap(),
        "--camera-json",
        cameras.to_str().unwrap(),
        "--out",
        dir.path().join("out2").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("splatfacto"), "{stderr}");
    assert!(
        !dir.path().join("out2").exists(),
        "a refused checkpoint created the output folder"
    );
}

/// A render larger than the wgpu device can hold (lavapipe's storage buffers are small: 12M rays
/// need 144 MB for their origins alone) ends with a clear error and a non-zero exit, not burn's panic
/// on its device thread and a hang.
#[test]
fn a_render_too_large_for_the_device_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let huge = [
        "--width",
        "4000",
        "--height",
        "3000",
        "--rays-per-chunk",
        "12000000",
        "--backend",
        "wgpu",
    ];
    let (code, stdout, stderr) = render_golden_camera(dir.path(), &out, &huge);
    if code == 0 {
        eprintln!("this wgpu device holds 144 MB buffers: nothing to check here");
        return;
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("cannot hold a buffer that large"), "{stdout}\n{stderr}");
    assert!(!out.join("golden.png").exists(), "a failed render wrote its image");
}

/// `nerfacto-export` writes one splat per pixel whose accumulation passes, at the median depth along
/// the pixel's ray and with its rendered colour (`ns-export pointcloud`'s points), and refuses an
/// export with nothing in it without writing a file.
#[test]
fn cli_exports_a_checkpoint_as_splats() {
    let dir = tempfile::tempdir().unwrap();
    let camera = golden_camera();
    let cameras = dir.path().join("camera.json");
    std::fs::write(&cameras, serde_json::to_string(&camera).unwrap()).unwrap();
    let export_from = |cameras: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "nerfacto-export",
            "--checkpoint",
            checkpoint_path().to_str().unwrap(),
            "--config",
            fixtures().join("config.json").to_str().unwrap(),
            "--camera-json",
            cameras.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        crate::difix3d(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let export = |out: &Path, extra: &[&str]| export_from(&cameras, out, extra);
    let out = dir.path().join("points.ply");
    let (code, stdout, stderr) = export(&out, &["--no-crop", "--keep-outliers"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let splats = difix3d::scene::load(&out).unwrap();

    // The pixels nerfstudio's render says pass (none sits within 1e-3 of the threshold).
    let accumulation = golden("image_accumulation");
    assert!(accumulation.iter().all(|a| (a - 0.5).abs() > 1e-3));
    let kept: Vec<usize> = (0..accumulation.len()).filter(|&p| accumulation[p] > 0.5).collect();
    assert!(
        !kept.is_empty() && kept.len() < accumulation.len(),
        "the case has both kinds of pixel"
    );
    assert_eq!(splats.len(), kept.len());
    let (origins, directions) = difix3d::nerfacto::model::camera_rays(&camera);
    let (depth, rgb) = (golden("image_depth"), golden("image_rgb"));
    for (i, &p) in kept.iter().enumerate() {
        for a in 0..3 {
            let want = origins[3 * p + a] + directions[3 * p + a] * depth[p];
            let got = splats.means[i][a];
            assert!(
                (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "point {i} axis {a}: {got} vs {want}"
            );
            let colour = 0.5 + difix3d::scene::SH_C0 * splats.sh[i][a];
            assert!(
                (colour - rgb[3 * p + a].clamp(0.0, 1.0)).abs() <= 1.0 / 255.0 + 1e-3,
                "colour {i}/{a}"
            );
        }
    }

    // With the run's dataparser transform the cameras come in the dataset's frame and the points
    // go out in it: the same points, carried back by the transform's inverse.
    let transform = difix3d::camera_path::nerfstudio::DataparserTransform::from_json(&serde_json::json!({
        "transform": [[0.0, -1.0, 0.0, 0.3], [1.0, 0.0, 0.0, -0.2], [0.0, 0.0, 1.0, 0.1]],
        "scale": 0.5,
    }))
    .unwrap();
    let transforms = dir.path().join("dataparser_transforms.json");
    std::fs::write(&transforms, transform.to_json().to_string()).unwrap();
    let mut data_camera = camera.clone();
    let pose = glam::Mat4::from(camera.world_from_camera).as_dmat4();
    data_camera.world_from_camera = glam::Affine3A::from_mat4(transform.to_data(pose).as_mat4());
    let data_cameras = dir.path().join("data_camera.json");
    std::fs::write(&data_cameras, serde_json::to_string(&data_camera).unwrap()).unwrap();
    let data_out = dir.path().join("data_points.ply");
    let (code, stdout, stderr) = export_from(
        &data_cameras,
        &data_out,
        &[
            "--dataparser-transforms",
            transforms.to_str().unwrap(),
            "--no-crop",
            "--keep-outliers",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let data_splats = difix3d::scene::load(&data_out).unwrap();
    assert_eq!(data_splats.len(), splats.len());
    for (got, ns) in data_splats.means.iter().zip(&splats.means) {
        let want = transform.point_to_data(glam::Vec3::from(*ns).as_dvec3());
        for a in 0..3 {
            assert!(
                (got[a] as f64 - want[a]).abs() <= 1e-3 * (1.0 + want[a].abs()),
                "{got:?} vs {want}"
            );
        }
    }

    // ns-export's crop box and outlier removal only ever drop points.
    let cropped = dir.path().join("cropped.ply");
    let (code, stdout, stderr) = export(&cropped, &[]);
    if code == 0 {
        assert!(difix3d::scene::load(&cropped).unwrap().len() <= kept.len());
    } else {
        assert!(
            stderr.contains("nothing to export") && !cropped.exists(),
            "{stdout}\n{stderr}"
        );
    }

    // Nothing passes: a clear error naming the checkpoint, and no file.
    let empty = dir.path().join("empty.ply");
    let (code, _, stderr) = export(&empty, &["--min-accumulation", "1"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("step-000000300.ckpt") && stderr.contains("nothing to export"),
        "{stderr}"
    );
    assert!(!empty.exists());
    // A file name no format writes is refused before any work.
    let (code, _, stderr) = export(&dir.path().join("points.xyz"), &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("points.xyz"), "{stderr}");
}

fn read_error(path: &Path) -> String {
    match Checkpoint::read(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn other_methods_are_refused_by_name() {
    let err = Checkpoint::read(&fixtures().join("splatfacto.ckpt")).unwrap_err();
    assert!(matches!(err, NerfactoError::Splatfacto { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("splatfacto.ckpt") && msg.contains("splat scene"), "{msg}");

    let msg = read_error(&fixtures().join("vanilla_nerf.ckpt"));
    assert!(
        msg.contains("vanilla_nerf.ckpt") && msg.contains("not a nerfacto checkpoint") && msg.contains("field_coarse"),
        "{msg}"
    );

    // tiny-cuda-nn vectors of the wrong sizes (a few values each).
    let err = Nerfacto::<B>::open(&fixtures().join("nerfacto_tcnn.ckpt"), None, &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nerfacto_tcnn.ckpt") && msg.contains("field.mlp_base.model.params"),
        "{msg}"
    );

    // Not a checkpoint at all: a safetensors file of other tensors (read as a state dict, as a
    // `train --method nerfacto` run's is, and refused by what it holds), a missing file.
    let msg = read_error(&fixtures().join("goldens.safetensors"));
    assert!(
        msg.contains("goldens.safetensors") && msg.contains("not a nerfacto checkpoint"),
        "{msg}"
    );
    let msg = read_error(&fixtures().join("missing.ckpt"));
    assert!(msg.contains("missing.ckpt"), "{msg}");
}

/// Truncated and corrupted copies of the checkpoint: an error naming the file (or, for a flipped
/// byte inside a tensor's data, a model that still loads), never a panic.
#[test]
fn damaged_checkpoints_are_clear_errors() {
    let bytes = std::fs::read(checkpoint_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.ckpt");
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(bytes.len() / 97 + 1).collect();
    cuts.extend([1, 64, bytes.len() / 2, bytes.len() - 22, bytes.len() - 1]);
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let msg = read_error(&path);
        assert!(msg.contains("damaged.ckpt"), "cut at {cut}: {msg}");
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..60 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (state >> 33) as usize % bytes.len();
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << ((state >> 20) % 8);
        std::fs::write(&path, &damaged).unwrap();
        match Checkpoint::read(&path) {
            Ok(checkpoint) => {
                if let Err(e) = Nerfacto::<B>::load(&checkpoint, tiny_config(), &Default::default()) {
                    assert!(e.to_string().contains("damaged.ckpt"), "byte {at}: {e}");
                }
            }
            Err(e) => assert!(e.to_string().contains("damaged.ckpt"), "byte {at}: {e}"),
        }
    }
}

/// The tiny-cuda-nn implementation's checkpoint (`tests/golden/nerfacto_tcnn/make_tcnn_golden.py`:
/// nerfstudio's own model and checkpoint, tiny-cuda-nn's kernels transcribed in numpy).
fn tcnn_model<Bk: Backend>(device: &Bk::Device) -> Nerfacto<Bk> {
    let model = Nerfacto::open(
        &fixtures().join("tcnn-step-000000041.ckpt"),
        Some(&fixtures().join("tcnn_config.json")),
        device,
    )
    .unwrap();
    assert!(model.tcnn.is_some());
    model
}

/// The torch implementation's parity checkpoint, or the tiny-cuda-nn one's (`tcnn`).
fn model_of<Bk: Backend>(tcnn: bool, device: &Bk::Device) -> Nerfacto<Bk> {
    match tcnn {
        false => model(device),
        true => tcnn_model(device),
    }
}

/// A tiny-cuda-nn model saves in tiny-cuda-nn's layout, and reads back to the same renders.
#[test]
fn tcnn_models_save_in_their_layout() {
    let device = Default::default();
    let model = tcnn_model::<B>(&device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nerfacto.safetensors");
    difix3d::nerfacto::state::save(&model, Some(41), None, &path).unwrap();
    let saved = Checkpoint::read(&path).unwrap();
    let original = Checkpoint::read(&fixtures().join("tcnn-step-000000041.ckpt")).unwrap();
    // The same tiny-cuda-nn vectors (the parameterless encodings' empty ones aside).
    let vectors = |c: &Checkpoint| {
        c.shapes()
            .filter(|(k, s)| k.ends_with("params") && s.iter().product::<usize>() > 0)
            .map(|(k, s)| (k.to_string(), s.to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(vectors(&saved), vectors(&original));
    assert_eq!(vectors(&saved).len(), 8);
    let again = Nerfacto::<B>::load(&saved, tcnn_model::<B>(&device).config, &device).unwrap();
    let camera = golden_camera_of(true);
    let (a, b) = (model.render_camera(&camera, 200), again.render_camera(&camera, 200));
    assert_close("saved tcnn model", &b.rgb, &a.rgb, 1e-6, 1e-5);
}
