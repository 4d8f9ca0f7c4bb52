//! nerfstudio datasets: `transforms.json` (what `ns-process-data` writes, and what Brush and
//! instant-ngp style tools read), read as `nerfstudio/data/dataparsers/nerfstudio_dataparser.py` does:
//!
//! - intrinsics `fl_x`, `fl_y`, `cx`, `cy`, `w`, `h` at the top level (shared) or per frame (a
//!   top-level value wins, as there); pinhole only: a `camera_model` other than `OPENCV`/`PINHOLE`
//!   or non-zero distortion (`k1`..`k4`, `p1`, `p2`, `distortion_params`) is refused, as for COLMAP;
//! - `frames[]`: `file_path` relative to the JSON's folder (with a data factor f > 1 the image is
//!   `images_f/<file name>`, nerfstudio's `_get_fname`), `transform_matrix` camera-to-world with
//!   OpenGL camera axes;
//! - `applied_transform` (3x4, what `ns-process-data` applied to COLMAP's world: `colmap_to_json`
//!   swaps y and z) is undone, so poses and points are in the data's original (COLMAP) world, the
//!   world a gsplat/Difix3D scene of the same capture is in;
//! - `ply_file_path`: the initial points (a point-cloud PLY, `x y z` and optional `red green blue`),
//!   through the same inverse.
//!
//! Views are named by `file_path` without a leading `./` and `images/`, which for a dataset converted
//! from COLMAP is COLMAP's image name, so the split rules by name apply unchanged.

use std::path::{Path, PathBuf};

use glam::{Affine3A, DMat3, DMat4, DVec3, DVec4};
use serde_json::Value;

use super::colmap::Point3D;
use super::layout::{find_image_file, fit_to_image, View};
use super::{Camera, DataError};

/// The file a dataset path names, when it is a nerfstudio dataset: a `.json` file, or a folder with
/// `transforms.json` in it.
pub fn transforms_file(root: &Path) -> Option<PathBuf> {
    if root.is_file() && root.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        return Some(root.to_path_buf());
    }
    let file = root.join("transforms.json");
    file.is_file().then_some(file)
}

const DISTORTION: [&str; 6] = ["k1", "k2", "k3", "k4", "p1", "p2"];
const INTRINSICS: [&str; 6] = ["fl_x", "fl_y", "cx", "cy", "w", "h"];

/// The views and initial points of a transforms.json, views sorted by name, and the rotation of its
/// `applied_transform` (identity without one, or where it is not a rotation without translation).
pub fn read(file: &Path, factor: u32) -> Result<(Vec<View>, Vec<Point3D>, glam::Mat3), DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: file.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|source| DataError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let meta: Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not a nerfstudio transforms.json: {e}")))?;
    let frames = meta
        .get("frames")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("not a nerfstudio transforms.json: no \"frames\" list".into()))?;
    if frames.is_empty() {
        return Err(invalid("\"frames\" is empty: the dataset has no images".into()));
    }
    if let Some(model) = meta.get("camera_model") {
        let model = model.as_str().unwrap_or("?");
        if !(model.eq_ignore_ascii_case("OPENCV") || model.eq_ignore_ascii_case("PINHOLE")) {
            return Err(invalid(format!(
                "camera_model {model} is not supported: difix3d renders pinhole cameras (undistort the images \
                 first, e.g. with `colmap image_undistorter`)"
            )));
        }
    }
    let applied = match meta.get("applied_transform") {
        Some(rows) => matrix_rows(rows, 3, "applied_transform").map_err(invalid)?,
        None => DMat4::IDENTITY,
    };
    if DMat3::from_mat4(applied).determinant().abs() < 1e-9 {
        return Err(invalid("\"applied_transform\" is not invertible".into()));
    }
    let to_data = applied.inverse();
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();

    let mut views = Vec::with_capacity(frames.len());
    let mut missing = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let at = |m: String| invalid(format!("frames[{i}]: {m}"));
        let file_path = frame
            .get("file_path")
            .and_then(Value::as_str)
            .ok_or_else(|| at("no \"file_path\"".into()))?;
        // A top-level value applies to every frame (nerfstudio reads the frame's only when the
        // top level lacks it).
        let get = |key: &str| meta.get(key).or_else(|| frame.get(key));
        let number = |key: &str| -> Result<Option<f64>, DataError> {
            match get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|v| v.is_finite())
                    .map(Some)
                    .ok_or_else(|| at(format!("\"{key}\" must be a finite number"))),
            }
        };
        for key in DISTORTION {
            if number(key)?.is_some_and(|v| v != 0.0) {
                return Err(at(format!(
                    "the camera has lens distortion ({key} = {}); difix3d renders pinhole cameras: undistort the \
                     images first (e.g. `ns-process-data` or `colmap image_undistorter`)",
                    number(key)?.unwrap_or(0.0)
                )));
            }
        }
        if let Some(params) = get("distortion_params").and_then(Value::as_array) {
            if params.iter().any(|v| v.as_f64() != Some(0.0)) {
                return Err(at(
                    "the camera has lens distortion (distortion_params); difix3d renders pinhole cameras: undistort \
                     the images first"
                        .into(),
                ));
            }
        }
        let mut intrinsics = [0.0; 6];
        for (slot, key) in intrinsics.iter_mut().zip(INTRINSICS) {
            *slot = number(key)?.ok_or_else(|| at(format!("no \"{key}\" (neither for all frames nor this one)")))?;
        }
        let [fx, fy, cx, cy, w, h] = intrinsics;
        if !(w >= 1.0 && h >= 1.0 && w.fract() == 0.0 && h.fract() == 0.0 && w <= 1e6 && h <= 1e6) {
            return Err(at(format!(
                "the image size {w}x{h} is not a positive whole number of pixels"
            )));
        }
        let numbers: Vec<f64> = match frame.get("transform_matrix").and_then(Value::as_array) {
            Some(rows) if rows.len() == 4 => rows
                .iter()
                .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect(),
            _ => {
                return Err(at(
                    "\"transform_matrix\" must be a 4x4 matrix (4 rows of 4 numbers)".into()
                ))
            }
        };
        let gl = to_data * matrix_row_major(&numbers, "transform_matrix").map_err(at)?;
        let pose = opencv_pose(gl).map_err(|m| at(format!("transform_matrix: {m}")))?;

        let name = view_name(file_path);
        let image_path = if factor == 1 {
            dir.join(file_path)
        } else {
            let base = Path::new(file_path).file_name().unwrap_or_default();
            dir.join(format!("images_{factor}")).join(base)
        };
        let Some(image_path) = image_path
            .parent()
            .and_then(|parent| find_image_file(parent, &image_path.file_name()?.to_string_lossy()))
        else {
            missing.push(image_path.display().to_string());
            continue;
        };
        let camera = Camera {
            name,
            width: w as u32,
            height: h as u32,
            fx: fx as f32,
            fy: fy as f32,
            cx: cx as f32,
            cy: cy as f32,
            world_from_camera: pose,
        };
        let camera = fit_to_image(camera, &image_path, |c| {
            format!(
                "{} gives {}x{} for it; the aspect ratios differ",
                file.display(),
                c.width,
                c.height
            )
        })?;
        super::validate::pose(&camera.world_from_camera).map_err(&at)?;
        super::validate::camera(&camera).map_err(&at)?;
        views.push(View { camera, image_path });
    }
    if !missing.is_empty() {
        let count = missing.len();
        let mut listed = missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if count > 5 {
            listed.push_str(&format!(" and {} more", count - 5));
        }
        return Err(invalid(format!("{count} image file(s) missing: {listed}")));
    }
    views.sort_by(|a, b| a.camera.name.cmp(&b.camera.name));
    if let Some(w) = views.windows(2).find(|w| w[0].camera.name == w[1].camera.name) {
        return Err(invalid(format!("the image {} is listed twice", w[0].camera.name)));
    }

    let points = match meta.get("ply_file_path") {
        None | Some(Value::Null) => Vec::new(),
        Some(p) => {
            let p = p
                .as_str()
                .ok_or_else(|| invalid("\"ply_file_path\" must be a string".into()))?;
            let ply = dir.join(p);
            let mut points = read_point_ply(&ply)?;
            for point in &mut points {
                let p = to_data.transform_point3(glam::Vec3::from(point.position).as_dvec3());
                point.position = p.as_vec3().to_array();
            }
            points
        }
    };
    Ok((views, points, rotation_of(&applied)))
}

/// The rotation of `applied` (3x4 as a 4x4), identity where it is not a rotation with no
/// translation.
fn rotation_of(applied: &DMat4) -> glam::Mat3 {
    let m = DMat3::from_mat4(*applied);
    let orthonormal = (m.transpose() * m - DMat3::IDENTITY)
        .to_cols_array()
        .iter()
        .all(|v| v.abs() < 1e-6);
    let proper = (m.determinant() - 1.0).abs() < 1e-6;
    if orthonormal && proper && applied.w_axis.truncate().length() < 1e-9 {
        m.as_mat3()
    } else {
        glam::Mat3::IDENTITY
    }
}

/// `file_path` without a leading `./` and `images/`: COLMAP's image name for converted datasets.
fn view_name(file_path: &str) -> String {
    let mut name = file_path.replace('\\', "/");
    while let Some(rest) = name.strip_prefix("./") {
        name = rest.to_string();
    }
    name.strip_prefix("images/").map(str::to_string).unwrap_or(name)
}

/// An OpenGL camera-to-world (+y up, looking down -z) as an OpenCV one's rotation and translation,
/// the rotation checked to be orthonormal and right-handed. Shared with nerfstudio camera paths.
pub(crate) fn opencv_rotation_translation(gl: DMat4) -> Result<(DMat3, DVec3), String> {
    let flip = DMat4::from_cols(DVec4::X, DVec4::NEG_Y, DVec4::NEG_Z, DVec4::W);
    let cv = gl * flip;
    let r = DMat3::from_mat4(cv);
    let off = (r.transpose() * r - DMat3::IDENTITY)
        .to_cols_array()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    if off > 1e-3 || r.determinant() <= 0.0 {
        return Err("its rotation is not a rotation (scaled, sheared or mirrored)".into());
    }
    Ok((r, cv.w_axis.truncate()))
}

/// An OpenGL camera-to-world as an OpenCV one, its rotation checked.
fn opencv_pose(gl: DMat4) -> Result<Affine3A, String> {
    let (r, t) = opencv_rotation_translation(gl)?;
    Ok(Affine3A::from_mat3_translation(r.as_mat3(), t.as_vec3()))
}

/// The vertices of a point-cloud PLY (ASCII or binary little-endian; `x y z` float or double, and
/// `red green blue` bytes when present, else grey).
pub fn read_point_ply(path: &Path) -> Result<Vec<Point3D>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_point_ply(&bytes).map_err(|message| DataError::Invalid {
        path: path.to_path_buf(),
        message: format!("cannot read the point cloud: {message}"),
    })
}

fn parse_point_ply(bytes: &[u8]) -> Result<Vec<Point3D>, String> {
    const END: &[u8] = b"end_header\n";
    let end = bytes
        .windows(END.len())
        .position(|w| w == END)
        .ok_or("not a PLY file (no end_header)")?;
    let header = std::str::from_utf8(&bytes[..end]).map_err(|_| "the header is not text")?;
    let body = &bytes[end + END.len()..];
    let mut lines = header.lines().map(str::trim);
    if lines.next() != Some("ply") {
        return Err("not a PLY file (no `ply` magic)".into());
    }
    let mut ascii = None;
    let mut count = None;
    let mut props: Vec<(String, String)> = Vec::new();
    let mut in_vertex = false;
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["format", "ascii", _] => ascii = Some(true),
            ["format", "binary_little_endian", _] => ascii = Some(false),
            ["format", other, _] => return Err(format!("format {other} is not supported")),
            ["element", "vertex", n] => {
                if count.is_some() || !props.is_empty() {
                    return Err("more than one vertex element".into());
                }
                count = Some(n.parse::<usize>().map_err(|_| format!("bad vertex count {n}"))?);
                in_vertex = true;
            }
            ["element", ..] => {
                if count.is_none() {
                    return Err("the vertex element must come first".into());
                }
                in_vertex = false;
            }
            ["property", "list", ..] if in_vertex => return Err("list properties on vertices are not supported".into()),
            ["property", ty, name] if in_vertex => props.push((ty.to_string(), name.to_string())),
            _ => {}
        }
    }
    let ascii = ascii.ok_or("no format line")?;
    let count = count.ok_or("no vertex element")?;
    let size = |ty: &str| -> Result<usize, String> {
        Ok(match ty {
            "char" | "uchar" | "int8" | "uint8" => 1,
            "short" | "ushort" | "int16" | "uint16" => 2,
            "int" | "uint" | "float" | "int32" | "uint32" | "float32" => 4,
            "double" | "float64" => 8,
            other => return Err(format!("property type {other} is not supported")),
        })
    };
    let index = |name: &str| props.iter().position(|(_, n)| n == name);
    let xyz = [index("x"), index("y"), index("z")];
    let [Some(ix), Some(iy), Some(iz)] = xyz else {
        return Err("the vertices have no x, y, z".into());
    };
    let rgb = [index("red"), index("green"), index("blue")];
    let stride: usize = props.iter().map(|(ty, _)| size(ty)).sum::<Result<_, _>>()?;
    let mut values = vec![0.0f64; props.len()];
    let mut points = Vec::with_capacity(count.min(1 << 24));
    let mut text = if ascii {
        Some(
            std::str::from_utf8(body)
                .map_err(|_| "the ASCII body is not text")?
                .split_whitespace(),
        )
    } else {
        if body.len() / stride.max(1) < count {
            return Err(format!(
                "truncated: {count} vertices of {stride} bytes need {} bytes, the file has {}",
                count * stride,
                body.len()
            ));
        }
        None
    };
    for v in 0..count {
        if let Some(words) = &mut text {
            for value in values.iter_mut() {
                let word = words.next().ok_or_else(|| format!("truncated at vertex {v}"))?;
                *value = word
                    .parse()
                    .map_err(|_| format!("vertex {v}: {word} is not a number"))?;
            }
        } else {
            let mut at = v * stride;
            for (value, (ty, _)) in values.iter_mut().zip(&props) {
                let n = size(ty)?;
                let b = &body[at..at + n];
                *value = match ty.as_str() {
                    "char" | "int8" => f64::from(b[0] as i8),
                    "uchar" | "uint8" => f64::from(b[0]),
                    "short" | "int16" => f64::from(i16::from_le_bytes([b[0], b[1]])),
                    "ushort" | "uint16" => f64::from(u16::from_le_bytes([b[0], b[1]])),
                    "int" | "int32" => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    "uint" | "uint32" => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    "float" | "float32" => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    _ => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                };
                at += n;
            }
        }
        let position = [values[ix] as f32, values[iy] as f32, values[iz] as f32];
        if !position.iter().all(|p| p.is_finite()) {
            return Err(format!("vertex {v} has a non-finite position"));
        }
        let color = match rgb {
            [Some(r), Some(g), Some(b)] => [r, g, b].map(|i| values[i].clamp(0.0, 255.0) as u8),
            _ => [128; 3],
        };
        points.push(Point3D { position, color });
    }
    Ok(points)
}

// JSON matrices, shared with nerfstudio camera paths (`camera_path::nerfstudio`).

/// `rows` rows of 4 numbers (a 3x4 or 4x4 row-major matrix) as a 4x4; a 4x4's last row must be 0 0 0 1.
pub(crate) fn matrix_rows(value: &Value, rows: usize, what: &str) -> Result<DMat4, String> {
    let bad = || format!("\"{what}\" must be {rows} rows of 4 numbers");
    let list = value.as_array().ok_or_else(bad)?;
    if list.len() != rows && !(rows == 3 && list.len() == 4) {
        return Err(bad());
    }
    let mut numbers = Vec::with_capacity(16);
    for row in list {
        let row = row.as_array().filter(|r| r.len() == 4).ok_or_else(bad)?;
        for v in row {
            numbers.push(v.as_f64().filter(|v| v.is_finite()).ok_or_else(bad)?);
        }
    }
    if list.len() == 3 {
        numbers.extend([0.0, 0.0, 0.0, 1.0]);
    }
    matrix_row_major(&numbers, what)
}

/// 16 numbers, row-major, as a 4x4 whose last row is 0 0 0 1.
pub(crate) fn matrix_row_major(numbers: &[f64], what: &str) -> Result<DMat4, String> {
    if numbers.len() != 16 || numbers.iter().any(|v| !v.is_finite()) {
        return Err(format!("\"{what}\" must be 16 finite numbers (a row-major 4x4)"));
    }
    let last = &numbers[12..16];
    if last.iter().zip([0.0, 0.0, 0.0, 1.0]).any(|(a, b)| (a - b).abs() > 1e-6) {
        return Err(format!("\"{what}\"'s last row must be 0 0 0 1, not {last:?}"));
    }
    Ok(DMat4::from_cols_array(&[
        numbers[0],
        numbers[4],
        numbers[8],
        0.0,
        numbers[1],
        numbers[5],
        numbers[9],
        0.0,
        numbers[2],
        numbers[6],
        numbers[10],
        0.0,
        numbers[3],
        numbers[7],
        numbers[11],
        1.0,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_clouds_in_ascii_and_binary() {
        let ascii = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nproperty uint8 red\nproperty uint8 green\nproperty uint8 blue\nend_header\n1 2 3 10 20 30\n-1 0.5 2 0 0 255\n";
        let points = parse_point_ply(ascii).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].position, [-1.0, 0.5, 2.0]);
        assert_eq!(points[0].color, [10, 20, 30]);
        let mut binary = b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty double x\nproperty double y\nproperty double z\nend_header\n".to_vec();
        for v in [1.5f64, -2.0, 3.25] {
            binary.extend(v.to_le_bytes());
        }
        let points = parse_point_ply(&binary).unwrap();
        assert_eq!(points[0].position, [1.5, -2.0, 3.25]);
        assert_eq!(points[0].color, [128; 3]);
        binary.truncate(binary.len() - 4);
        assert!(parse_point_ply(&binary).unwrap_err().contains("truncated"));
        assert!(parse_point_ply(b"nope\nend_header\n").unwrap_err().contains("magic"));
    }

    fn repo() -> PathBuf {
        crate::repo_root()
    }

    /// A nerfstudio dataset in a temporary folder: `fixture`'s transforms.json and sparse_pc.ply
    /// (made by tests/fixtures/nerfstudio/colmap_to_transforms.py from the train_parity COLMAP
    /// model) with the train_parity images.
    fn dataset(fixture: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let from = repo().join("tests/fixtures/nerfstudio").join(fixture);
        for file in ["transforms.json", "sparse_pc.ply"] {
            std::fs::copy(from.join(file), dir.path().join(file)).unwrap();
        }
        std::fs::create_dir(dir.path().join("images")).unwrap();
        for entry in std::fs::read_dir(repo().join("tests/fixtures/train_parity/images")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join("images").join(entry.file_name())).unwrap();
        }
        dir
    }

    #[test]
    fn nerfstudio_dataset_matches_its_colmap_source() {
        let colmap = crate::data::open_dataset(&repo().join("tests/fixtures/train_parity"), 1).unwrap();
        for fixture in ["train_parity", "train_parity_per_frame"] {
            let dir = dataset(fixture);
            // The folder and the file itself both open.
            for root in [dir.path().to_path_buf(), dir.path().join("transforms.json")] {
                let ns = crate::data::open_dataset(&root, 1).unwrap();
                assert_eq!(ns.train.len(), colmap.train.len(), "{fixture}");
                assert_eq!(ns.eval.len(), colmap.eval.len(), "{fixture}");
                for (a, b) in ns.views().zip(colmap.views()) {
                    assert_eq!(a.camera.name, b.camera.name);
                    assert_eq!((a.camera.width, a.camera.height), (b.camera.width, b.camera.height));
                    for (x, y) in [
                        (a.camera.fx, b.camera.fx),
                        (a.camera.fy, b.camera.fy),
                        (a.camera.cx, b.camera.cx),
                        (a.camera.cy, b.camera.cy),
                    ] {
                        assert!((x - y).abs() < 1e-5, "{fixture} {}: {x} vs {y}", a.camera.name);
                    }
                    let (ma, mb) = (
                        glam::Mat4::from(a.camera.world_from_camera),
                        glam::Mat4::from(b.camera.world_from_camera),
                    );
                    assert!(ma.abs_diff_eq(mb, 1e-5), "{fixture} {}: {ma} vs {mb}", a.camera.name);
                    assert_eq!(a.image_path.file_name(), b.image_path.file_name());
                }
                assert_eq!(ns.points.len(), colmap.points.len());
                for (a, b) in ns.points.iter().zip(&colmap.points) {
                    let (pa, pb) = (glam::Vec3::from(a.position), glam::Vec3::from(b.position));
                    // sparse_pc.ply has 6 decimals, as nerfstudio writes it.
                    assert!(pa.abs_diff_eq(pb, 2e-6), "{pa} vs {pb}");
                    assert_eq!(a.color, b.color);
                }
            }
        }
    }

    #[test]
    fn bad_transforms_name_the_file_and_the_problem() {
        let dir = dataset("train_parity");
        let file = dir.path().join("transforms.json");
        let original: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let check = |edit: &dyn Fn(&mut Value), want: &str| {
            let mut meta = original.clone();
            edit(&mut meta);
            std::fs::write(&file, serde_json::to_string(&meta).unwrap()).unwrap();
            let e = crate::data::open_dataset(dir.path(), 1).unwrap_err().to_string();
            assert!(e.contains("transforms.json") && e.contains(want), "{want}: {e}");
        };
        check(&|m| m["k1"] = serde_json::json!(0.1), "distortion");
        check(
            &|m| m["camera_model"] = serde_json::json!("OPENCV_FISHEYE"),
            "OPENCV_FISHEYE",
        );
        check(
            &|m| {
                m.as_object_mut().unwrap().remove("fl_x");
            },
            "frames[0]: no \"fl_x\"",
        );
        check(
            &|m| m["frames"][1]["file_path"] = serde_json::json!("images/nope.png"),
            "nope.png",
        );
        check(
            &|m| m["frames"][2]["transform_matrix"] = serde_json::json!([[1, 0, 0]]),
            "frames[2]: \"transform_matrix\"",
        );
        check(&|m| m["frames"] = serde_json::json!([]), "no images");
        std::fs::write(&file, "{").unwrap();
        let e = crate::data::open_dataset(dir.path(), 1).unwrap_err().to_string();
        assert!(
            e.contains("transforms.json") && e.contains("not a nerfstudio transforms.json"),
            "{e}"
        );
    }

    #[test]
    fn names_drop_the_image_folder() {
        assert_eq!(view_name("./images/frame_00001.png"), "frame_00001.png");
        assert_eq!(view_name("images/sub/a.jpg"), "sub/a.jpg");
        assert_eq!(view_name("rgb/a.jpg"), "rgb/a.jpg");
    }
}
