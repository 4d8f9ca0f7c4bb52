//! Bad input through the CLI: each case must exit non-zero with one clear line naming the file and
//! the problem, never a panic, and never leave an output file behind.

use std::path::Path;

use crate::difix3d;

/// Runs `difix3d render` on `scene` and checks the failure is clean and mentions every `needles`.
pub(crate) fn expect_clean_failure(args: &[&str], needles: &[&str]) {
    let (code, _stdout, stderr) = difix3d(args);
    assert_eq!(code, 1, "expected exit 1 for {args:?}, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for needle in needles {
        assert!(
            line.contains(needle),
            "error line for {args:?} should mention '{needle}': {line}"
        );
    }
}

fn render_scene(scene: &Path, out: &Path) -> Vec<String> {
    vec![
        "render".into(),
        "--scene".into(),
        scene.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]
}

fn check_scene_error(file_name: &str, contents: &[u8], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join(file_name);
    std::fs::write(&scene, contents).unwrap();
    let out = dir.path().join("out");
    let args = render_scene(&scene, &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut all = vec![file_name];
    all.extend_from_slice(needles);
    expect_clean_failure(&args, &all);
    let written = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "no output may be written for a bad scene");
}

pub(crate) const GOOD_HEADER: &str = "ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nproperty float f_dc_0\nproperty float f_dc_1\nproperty float f_dc_2\nproperty float opacity\nproperty float scale_0\nproperty float scale_1\nproperty float scale_2\nproperty float rot_0\nproperty float rot_1\nproperty float rot_2\nproperty float rot_3\nend_header\n";

pub(crate) fn ply_with(header: &str, values: &[f32]) -> Vec<u8> {
    let mut bytes = header.as_bytes().to_vec();
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

pub(crate) fn good_vertex() -> Vec<f32> {
    vec![0.0, 0.0, 3.0, 0.5, 0.5, 0.5, 0.0, -2.0, -2.0, -2.0, 1.0, 0.0, 0.0, 0.0]
}

#[test]
fn missing_scene_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    expect_clean_failure(
        &[
            "render",
            "--scene",
            "/no/such/scene.ply",
            "--out",
            out.to_str().unwrap(),
        ],
        &["/no/such/scene.ply"],
    );
}

#[test]
fn truncated_ply() {
    let mut values = good_vertex();
    values.extend(&good_vertex()[..5]);
    check_scene_error("truncated.ply", &ply_with(GOOD_HEADER, &values), &["truncated"]);
}

#[test]
fn malformed_ply_header() {
    check_scene_error(
        "garbage.ply",
        b"ply\nformat binary_little_endian 1.0\nelement vertex two\nend_header\n",
        &[],
    );
}

#[test]
fn wrong_property_type() {
    let header = GOOD_HEADER.replace("property float opacity", "property uchar opacity");
    check_scene_error("types.ply", &ply_with(&header, &[]), &["opacity", "uchar"]);
}

#[test]
fn empty_scene() {
    let header = GOOD_HEADER.replace("element vertex 2", "element vertex 0");
    check_scene_error("empty.ply", &ply_with(&header, &[]), &["no splats"]);
}

/// A splat with a NaN position is dropped, an infinite opacity clamped, and the render goes on, with
/// one warning saying so; a scene with nothing but broken splats is still an error.
#[test]
fn nan_in_scene() {
    let dir = tempfile::tempdir().unwrap();
    let mut values = good_vertex();
    values[6] = f32::INFINITY; // opacity: alpha exactly 1
    let mut second = good_vertex();
    second[1] = f32::NAN;
    values.extend(second);
    let scene = dir.path().join("nan.ply");
    std::fs::write(&scene, ply_with(GOOD_HEADER, &values)).unwrap();
    let out = dir.path().join("out");
    let args = render_scene(&scene, &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _stdout, stderr) = difix3d(&args);
    assert_eq!(code, 0, "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("nan.ply")).collect();
    assert_eq!(warnings.len(), 1, "one warning: {stderr}");
    assert!(
        warnings[0].contains("dropped 1 of 2 splats") && warnings[0].contains("clamped 1 infinite opacity"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "one render");

    let mut all_bad = good_vertex();
    all_bad[0] = f32::NAN;
    all_bad.extend(all_bad.clone());
    check_scene_error("all_nan.ply", &ply_with(GOOD_HEADER, &all_bad), &["no splats left"]);
}

#[test]
fn splat_file_with_a_partial_record() {
    check_scene_error("partial.splat", &[0u8; 40], &[]);
}

#[test]
fn unknown_scene_format() {
    check_scene_error("scene.obj", b"v 0 0 0\n", &["format"]);
}

/// A one-camera COLMAP text model in the Difix3D layout.
fn write_dataset(root: &Path, camera_line: &str, with_image: bool) {
    let sparse = root.join("colmap/sparse/0");
    std::fs::create_dir_all(&sparse).unwrap();
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::write(sparse.join("cameras.txt"), format!("{camera_line}\n")).unwrap();
    std::fs::write(sparse.join("images.txt"), "1 1 0 0 0 0 0 0 1 view.png\n\n").unwrap();
    std::fs::write(sparse.join("points3D.txt"), "1 0 0 3 255 0 0 0.1 1 0\n").unwrap();
    if with_image {
        image::RgbImage::new(8, 6).save(root.join("images/view.png")).unwrap();
    }
}

fn render_dataset(root: &Path, needles: &[&str]) {
    let scene = tempfile::Builder::new().suffix(".ply").tempfile().unwrap();
    std::fs::write(
        scene.path(),
        ply_with(GOOD_HEADER, &[good_vertex(), good_vertex()].concat()),
    )
    .unwrap();
    let out = root.join("out");
    let args = [
        "render",
        "--scene",
        scene.path().to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--camera",
        "view.png",
        "--out",
        out.to_str().unwrap(),
    ];
    expect_clean_failure(&args, needles);
}

#[test]
fn colmap_model_referencing_missing_images() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), "1 PINHOLE 8 6 8 8 4 3", false);
    render_dataset(dir.path(), &["view.png"]);
}

#[test]
fn unsupported_camera_model() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), "1 OPENCV 8 6 8 8 4 3 0.1 0.01 0 0", true);
    render_dataset(dir.path(), &["OPENCV", "undistort"]);
}

#[test]
fn unwritable_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("ok.ply");
    std::fs::write(&scene, ply_with(GOOD_HEADER, &[good_vertex(), good_vertex()].concat())).unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    expect_clean_failure(
        &[
            "render",
            "--scene",
            scene.to_str().unwrap(),
            "--out",
            blocker.to_str().unwrap(),
        ],
        &["a-file"],
    );
}
