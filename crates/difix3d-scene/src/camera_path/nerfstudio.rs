//! nerfstudio's files: camera paths (`camera_paths/*.json`, what its viewer's render panel writes and
//! `ns-render camera-path` reads) and `dataparser_transforms.json` (the transform and scale its
//! dataparser applied between the data's world and the world it trained and saved paths in).
//!
//! A nerfstudio camera path lists every frame (`camera_path[]`: `camera_to_world`, a row-major 4x4
//! with OpenGL camera axes, +x right, +y up, looking down -z; the vertical `fov` in degrees; `aspect`)
//! and the size and rate to render them at (`render_width`, `render_height`, `fps`). `ns-render`
//! (`get_path_from_json` in `nerfstudio/cameras/camera_paths.py`) builds a pinhole camera per frame
//! with `fx = fy = (render_height / 2) / tan(fov / 2)` and the principal point in the centre, ignoring
//! `aspect`; so do we.
//!
//! nerfstudio's dataparser maps the data's world `x` to its own by `x_ns = scale * (T x)` (`T` the
//! 3x4 `transform`, including any `applied_transform` of transforms.json); paths are saved in that
//! world. `transform_poses_to_original_space` in `nerfstudio/data/dataparsers/base_dataparser.py`
//! undoes it: divide the translation by `scale`, then multiply by `T`'s inverse.

use std::path::{Path, PathBuf};

use crate::data::transforms::{matrix_row_major, matrix_rows};
use glam::{Affine3A, DMat3, DMat4, DVec3, DVec4, Mat3, Quat, Vec3};
use serde_json::{json, Map, Value};

use super::{CameraPath, Keyframe};

#[derive(Debug, thiserror::Error)]
pub enum NerfstudioError {
    #[error("{path}: cannot read the dataparser transforms: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a nerfstudio dataparser_transforms.json: {message}")]
    Format { path: PathBuf, message: String },
}

/// The size and rate a nerfstudio camera path is to be rendered at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenderSettings {
    pub fps: f32,
    pub width: u32,
    pub height: u32,
}

/// nerfstudio's `dataparser_transforms.json`: data world to nerfstudio world is `scale * (T x)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataparserTransform {
    /// `T` as a 4x4 (last row 0 0 0 1).
    pub transform: DMat4,
    pub scale: f64,
}

impl Default for DataparserTransform {
    fn default() -> Self {
        Self {
            transform: DMat4::IDENTITY,
            scale: 1.0,
        }
    }
}

/// Flips the y and z camera axes: OpenGL camera-to-world <-> OpenCV camera-to-world (its own inverse).
const FLIP_YZ: DMat4 = DMat4::from_cols(
    DVec4::new(1.0, 0.0, 0.0, 0.0),
    DVec4::new(0.0, -1.0, 0.0, 0.0),
    DVec4::new(0.0, 0.0, -1.0, 0.0),
    DVec4::new(0.0, 0.0, 0.0, 1.0),
);

impl DataparserTransform {
    pub fn load(path: &Path) -> Result<Self, NerfstudioError> {
        let text = std::fs::read_to_string(path).map_err(|source| NerfstudioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let format = |message: String| NerfstudioError::Format {
            path: path.to_path_buf(),
            message,
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        Self::from_json(&value).map_err(format)
    }

    pub fn from_json(value: &Value) -> Result<Self, String> {
        let rows = value.get("transform").ok_or("no \"transform\" (a 3x4 matrix)")?;
        let transform = matrix_rows(rows, 3, "transform")?;
        let scale = value
            .get("scale")
            .and_then(Value::as_f64)
            .ok_or("no \"scale\" number")?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("\"scale\" must be a positive number, not {scale}"));
        }
        let det = DMat3::from_mat4(transform).determinant();
        if !(det.is_finite() && det.abs() > 1e-9) {
            return Err("\"transform\" is not invertible".into());
        }
        Ok(Self { transform, scale })
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Vec<f64>> = (0..3).map(|r| self.transform.row(r).to_array().to_vec()).collect();
        json!({ "transform": rows, "scale": self.scale })
    }

    /// A nerfstudio-world camera-to-world (any camera axes) in the data's world.
    pub fn to_data(&self, ns: DMat4) -> DMat4 {
        let mut m = ns;
        m.w_axis = (m.w_axis.truncate() / self.scale).extend(1.0);
        self.transform.inverse() * m
    }

    /// A data-world camera-to-world in nerfstudio's world.
    pub fn to_nerfstudio(&self, data: DMat4) -> DMat4 {
        let mut m = self.transform * data;
        m.w_axis = (m.w_axis.truncate() * self.scale).extend(1.0);
        m
    }

    /// A data-world point in nerfstudio's world.
    pub fn point_to_nerfstudio(&self, p: DVec3) -> DVec3 {
        self.transform.transform_point3(p) * self.scale
    }

    /// A nerfstudio-world point in the data's world (the inverse of [`Self::point_to_nerfstudio`]).
    pub fn point_to_data(&self, p: DVec3) -> DVec3 {
        self.transform.inverse().transform_point3(p / self.scale)
    }
}

fn row_major(m: DMat4) -> Vec<f64> {
    (0..4).flat_map(|r| m.row(r).to_array()).collect()
}

/// Whether a JSON value is a nerfstudio camera path (it has a `camera_path` list).
pub fn is_camera_path(value: &Value) -> bool {
    value.get("camera_path").is_some()
}

/// An OpenCV camera-to-world with an orthonormal, right-handed rotation, or why not.
fn opencv_pose(gl: DMat4) -> Result<Affine3A, String> {
    let (r, t) = crate::data::transforms::opencv_rotation_translation(gl)?;
    let limit = f64::from(super::MAX_COORDINATE);
    if t.abs().max_element() > limit {
        return Err(format!("its position {t} is beyond {limit:e}"));
    }
    // Re-orthonormalised through the quaternion, so f32 rounding leaves a proper rotation.
    let q = glam::DQuat::from_mat3(&r).normalize();
    Ok(Affine3A::from_rotation_translation(q.as_quat(), t.as_vec3()))
}

/// A nerfstudio camera path as ours: one keyframe per listed frame, lasting `frames / fps` seconds,
/// so recording it at its own fps renders exactly the listed frames. Poses go through `dataparser`
/// when given (nerfstudio's world back to the data's).
pub fn path_from_json(
    value: &Value,
    dataparser: Option<&DataparserTransform>,
) -> Result<(CameraPath, RenderSettings), String> {
    let size = |key: &str| -> Result<u32, String> {
        let v = value
            .get(key)
            .ok_or_else(|| format!("no \"{key}\""))?
            .as_f64()
            .ok_or_else(|| format!("\"{key}\" must be a number"))?;
        if v.fract() != 0.0 || !(1.0..=f64::from(crate::validate::MAX_IMAGE_SIDE)).contains(&v) {
            return Err(format!(
                "\"{key}\" must be a whole number of pixels between 1 and {}, not {v}",
                crate::validate::MAX_IMAGE_SIDE
            ));
        }
        Ok(v as u32)
    };
    let width = size("render_width")?;
    let height = size("render_height")?;
    let fps = value
        .get("fps")
        .ok_or("no \"fps\"")?
        .as_f64()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 1000.0)
        .ok_or("\"fps\" must be a number in (0, 1000]")?;
    if let Some(kind) = value.get("camera_type") {
        let kind = kind.as_str().ok_or("\"camera_type\" must be a string")?;
        if !kind.eq_ignore_ascii_case("perspective") {
            return Err(format!(
                "camera_type \"{kind}\" is not supported: difix3d renders perspective (pinhole) cameras only"
            ));
        }
    }
    let frames = value
        .get("camera_path")
        .and_then(Value::as_array)
        .ok_or("\"camera_path\" must be a list of frames")?;
    if frames.is_empty() {
        return Err("\"camera_path\" has no frames".into());
    }
    let mut keyframes = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let at = |m: String| format!("camera_path[{i}]: {m}");
        let numbers: Vec<f64> = frame
            .get("camera_to_world")
            .and_then(Value::as_array)
            .ok_or_else(|| at("no \"camera_to_world\" list".into()))?
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        let mut gl = matrix_row_major(&numbers, "camera_to_world").map_err(at)?;
        if let Some(d) = dataparser {
            gl = d.to_data(gl);
        }
        let pose = opencv_pose(gl).map_err(|m| at(format!("camera_to_world: {m}")))?;
        let fov = frame
            .get("fov")
            .and_then(Value::as_f64)
            .filter(|f| *f > 0.0 && *f < 180.0)
            .ok_or_else(|| at("\"fov\" must be the vertical field of view in degrees, in (0, 180)".into()))?;
        keyframes.push(Keyframe {
            position: Vec3::from(pose.translation),
            rotation: Quat::from_mat3(&Mat3::from(pose.matrix3)),
            fov_y_deg: fov as f32,
        });
    }
    let path = CameraPath {
        duration_s: (frames.len() as f64 / fps) as f32,
        keyframes,
        ..CameraPath::default()
    };
    path.validate()?;
    Ok((
        path,
        RenderSettings {
            fps: fps as f32,
            width,
            height,
        },
    ))
}

/// Our camera path in nerfstudio's format: every frame of a recording at `settings` (as `record`
/// renders it) in `camera_path[]`, and our keyframes in the viewer's `keyframes[]` so its render
/// panel can load and edit them. Poses go through `dataparser` when given (the data's world to
/// nerfstudio's).
pub fn path_to_json(path: &CameraPath, settings: RenderSettings, dataparser: Option<&DataparserTransform>) -> Value {
    let to_ns = |camera_from: Affine3A| {
        let cv = DMat4::from(glam::DAffine3::from_mat3_translation(
            Mat3::from(camera_from.matrix3).as_dmat3(),
            Vec3::from(camera_from.translation).as_dvec3(),
        ));
        let gl = cv * FLIP_YZ;
        row_major(dataparser.map_or(gl, |d| d.to_nerfstudio(gl)))
    };
    let aspect = f64::from(settings.width) / f64::from(settings.height);
    let count = path.frame_count(settings.fps);
    let frames: Vec<Value> = (0..count)
        .map(|i| {
            let camera = path.frame_camera(i, count, settings.width, settings.height);
            json!({
                "camera_to_world": to_ns(camera.world_from_camera),
                "fov": f64::from(path.sample(path.frame_time(i, count)).map_or(50.0, |k| k.fov_y_deg)),
                "aspect": aspect,
            })
        })
        .collect();
    let keyframes: Vec<Value> = path
        .keyframes
        .iter()
        .map(|k| {
            let pose = Affine3A::from_rotation_translation(k.rotation.normalize(), k.position);
            json!({
                "matrix": to_ns(pose),
                "fov": f64::from(k.fov_y_deg),
                "aspect": aspect,
                "override_transition_enabled": false,
                "override_transition_sec": Value::Null,
            })
        })
        .collect();
    let segments = if path.looped {
        path.keyframes.len()
    } else {
        path.keyframes.len().saturating_sub(1)
    }
    .max(1);
    let mut out = Map::new();
    out.insert(
        "default_fov".into(),
        json!(path.keyframes.first().map_or(50.0, |k| f64::from(k.fov_y_deg))),
    );
    out.insert(
        "default_transition_sec".into(),
        json!(f64::from(path.duration_s) / segments as f64),
    );
    out.insert("keyframes".into(), Value::Array(keyframes));
    out.insert("camera_type".into(), json!("perspective"));
    out.insert("render_height".into(), json!(settings.height));
    out.insert("render_width".into(), json!(settings.width));
    out.insert("fps".into(), json!(f64::from(settings.fps)));
    out.insert("seconds".into(), json!(f64::from(path.duration_s)));
    out.insert("is_cycle".into(), json!(path.looped));
    out.insert("smoothness_value".into(), json!(0.5));
    out.insert("camera_path".into(), Value::Array(frames));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_path(frames: Value) -> Value {
        json!({"render_width": 64, "render_height": 48, "fps": 10, "camera_type": "perspective", "camera_path": frames})
    }

    /// Hand-derived: an OpenGL camera at (1, 2, 3) looking down world -z with +y up is an OpenCV camera
    /// with rotation diag(1, -1, -1); a second one turned 90 degrees about +y looks down world -x.
    #[test]
    fn frames_become_opencv_keyframes_at_their_exact_poses() {
        let value = ns_path(json!([
            {"camera_to_world": [1,0,0,1, 0,1,0,2, 0,0,1,3, 0,0,0,1], "fov": 60, "aspect": 1.333},
            {"camera_to_world": [0,0,1,-4, 0,1,0,5, -1,0,0,6, 0,0,0,1], "fov": 40, "aspect": 1.333},
        ]));
        let (path, settings) = path_from_json(&value, None).unwrap();
        assert_eq!(
            settings,
            RenderSettings {
                fps: 10.0,
                width: 64,
                height: 48
            }
        );
        assert_eq!(path.keyframes.len(), 2);
        assert_eq!(path.frame_count(settings.fps), 2);
        let c0 = path.frame_camera(0, 2, 64, 48);
        let want0 = Mat3::from_diagonal(Vec3::new(1.0, -1.0, -1.0));
        assert!(Mat3::from(c0.world_from_camera.matrix3).abs_diff_eq(want0, 1e-6));
        assert!(c0.position().abs_diff_eq(Vec3::new(1.0, 2.0, 3.0), 1e-6));
        let f0 = 24.0 / (30f32.to_radians()).tan();
        assert!((c0.fy - f0).abs() < 1e-3 && (c0.fx - f0).abs() < 1e-3);
        assert_eq!((c0.cx, c0.cy), (32.0, 24.0));
        let c1 = path.frame_camera(1, 2, 64, 48);
        // Camera +z (forward) is world -x, camera +y (down) world -y, camera +x (right) world -z.
        let want1 = Mat3::from_cols(Vec3::NEG_Z, Vec3::NEG_Y, Vec3::NEG_X);
        assert!(
            Mat3::from(c1.world_from_camera.matrix3).abs_diff_eq(want1, 1e-5),
            "{:?}",
            c1.world_from_camera
        );
        assert!(c1.position().abs_diff_eq(Vec3::new(-4.0, 5.0, 6.0), 1e-5));
        assert!((c1.fy - 24.0 / (20f32.to_radians()).tan()).abs() < 1e-3);
    }

    #[test]
    fn dataparser_transform_maps_back_to_the_data_world() {
        // T: rotate 90 degrees about z (x -> y), translate (1, 0, 0); scale 2.
        let d = DataparserTransform::from_json(&json!({
            "transform": [[0,-1,0,1],[1,0,0,0],[0,0,1,0]], "scale": 2.0
        }))
        .unwrap();
        // A data-world camera at (0, 0, 1), OpenGL identity rotation: in nerfstudio's world it sits at
        // 2 * (T (0,0,1)) = (2, 0, 2), rotated by T's rotation.
        let data = DMat4::from_translation(DVec3::new(0.0, 0.0, 1.0));
        let ns = d.to_nerfstudio(data);
        assert!(ns.w_axis.truncate().abs_diff_eq(DVec3::new(2.0, 0.0, 2.0), 1e-12));
        assert!(d.to_data(ns).abs_diff_eq(data, 1e-12));
        let value = ns_path(json!([{"camera_to_world": row_major(ns), "fov": 50}]));
        let (path, _) = path_from_json(&value, Some(&d)).unwrap();
        let k = path.keyframes[0];
        assert!(k.position.abs_diff_eq(Vec3::new(0.0, 0.0, 1.0), 1e-6));
        let r = Mat3::from_quat(k.rotation);
        assert!(
            r.abs_diff_eq(Mat3::from_diagonal(Vec3::new(1.0, -1.0, -1.0)), 1e-6),
            "{r}"
        );
    }

    #[test]
    fn written_paths_read_back_at_the_same_frames() {
        let path = CameraPath {
            keyframes: vec![
                Keyframe {
                    position: Vec3::ZERO,
                    rotation: Quat::IDENTITY,
                    fov_y_deg: 50.0,
                },
                Keyframe {
                    position: Vec3::new(1.0, 0.5, -2.0),
                    rotation: Quat::from_rotation_y(0.7),
                    fov_y_deg: 40.0,
                },
                Keyframe {
                    position: Vec3::new(3.0, 0.0, -1.0),
                    rotation: Quat::from_rotation_x(0.3),
                    fov_y_deg: 45.0,
                },
            ],
            duration_s: 2.0,
            ..CameraPath::default()
        };
        let settings = RenderSettings {
            fps: 12.0,
            width: 80,
            height: 60,
        };
        let d = DataparserTransform::from_json(&json!({
            "transform": [[0,1,0,0.5],[1,0,0,0],[0,0,-1,2]], "scale": 0.25
        }))
        .unwrap();
        let json = path_to_json(&path, settings, Some(&d));
        assert_eq!(json["camera_path"].as_array().unwrap().len(), 24);
        assert_eq!(json["keyframes"].as_array().unwrap().len(), 3);
        let (back, got) = path_from_json(&json, Some(&d)).unwrap();
        assert_eq!(got, settings);
        let n = path.frame_count(12.0);
        assert_eq!(back.frame_count(got.fps), n);
        for i in 0..n {
            let a = path.frame_camera(i, n, 80, 60);
            let b = back.frame_camera(i, n, 80, 60);
            assert!(a.position().abs_diff_eq(b.position(), 1e-4), "frame {i}");
            // Matrices, not angle_between: f32 acos near 1 cannot resolve angles below ~7e-4.
            let (ra, rb) = (
                Mat3::from(a.world_from_camera.matrix3),
                Mat3::from(b.world_from_camera.matrix3),
            );
            assert!(ra.abs_diff_eq(rb, 1e-5), "frame {i}: {ra} vs {rb}");
            assert!((a.fy - b.fy).abs() < 1e-2, "frame {i}");
        }
    }

    #[test]
    fn bad_paths_say_what_is_wrong() {
        let frame = json!({"camera_to_world": [1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1], "fov": 50});
        let mut v = ns_path(json!([frame.clone()]));
        v["camera_type"] = json!("fisheye");
        assert!(path_from_json(&v, None).unwrap_err().contains("fisheye"));
        let v = ns_path(json!([]));
        assert!(path_from_json(&v, None).unwrap_err().contains("no frames"));
        let v = ns_path(json!([{"camera_to_world": [1,0,0], "fov": 50}]));
        assert!(path_from_json(&v, None).unwrap_err().contains("camera_path[0]"));
        let v = ns_path(json!([{"camera_to_world": [2,0,0,0, 0,2,0,0, 0,0,2,0, 0,0,0,1], "fov": 50}]));
        assert!(path_from_json(&v, None).unwrap_err().contains("not a rotation"));
        let v = ns_path(json!([frame.clone(), {"camera_to_world": [1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1], "fov": 190}]));
        assert!(path_from_json(&v, None)
            .unwrap_err()
            .contains("camera_path[1]: \"fov\""));
        let mut v = ns_path(json!([frame]));
        v.as_object_mut().unwrap().remove("render_height");
        assert!(path_from_json(&v, None).unwrap_err().contains("render_height"));
        assert!(DataparserTransform::from_json(&json!({"transform": [[1,0,0,0]], "scale": 1})).is_err());
        assert!(
            DataparserTransform::from_json(&json!({"transform": [[1,0,0,0],[0,1,0,0],[0,0,1,0]], "scale": 0}))
                .unwrap_err()
                .contains("scale")
        );
    }
}
