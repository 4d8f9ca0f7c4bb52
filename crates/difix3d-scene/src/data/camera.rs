//! A pinhole camera with its pose, in the OpenCV/COLMAP convention (+x right, +y down, +z forward).

use glam::{Affine3A, Mat3, Quat, Vec3};
use serde::{Deserialize, Serialize};

/// How far apart two camera poses are, as Difix3D measures it (`compute_pose_distance` in its
/// `examples/utils.py`): the distance between the centres plus the rotation angle between them in
/// radians, `arccos(2 (q1 . q2)^2 - 1)`, both weighted 1.
pub fn pose_distance(a: &Affine3A, b: &Affine3A) -> f32 {
    let translation = Vec3::from(a.translation).distance(Vec3::from(b.translation));
    let qa = Quat::from_mat3(&Mat3::from(a.matrix3)).normalize();
    let qb = Quat::from_mat3(&Mat3::from(b.matrix3)).normalize();
    let dot = qa.dot(qb);
    // Clamped: rounding can push 2 dot^2 - 1 just past 1, where the reference would get NaN.
    translation + (2.0 * dot * dot - 1.0).clamp(-1.0, 1.0).acos()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// The image name this camera belongs to (or a generated name for novel views).
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
    /// Camera-to-world pose. COLMAP stores the inverse; see [`Camera::from_colmap`].
    /// In JSON it is a row-major 4x4 matrix (the last row 0,0,0,1), like nerfstudio's `transform_matrix`.
    #[serde(with = "rows4x4")]
    pub world_from_camera: Affine3A,
}

impl Camera {
    /// Builds a camera from a COLMAP image pose: `qvec` (w, x, y, z) and `tvec` map world to camera.
    pub fn from_colmap(
        name: impl Into<String>,
        qvec: [f64; 4],
        tvec: [f64; 3],
        (width, height): (u32, u32),
        (fx, fy, cx, cy): (f64, f64, f64, f64),
    ) -> Self {
        let q = glam::DQuat::from_xyzw(qvec[1], qvec[2], qvec[3], qvec[0]).normalize();
        let camera_from_world = glam::DAffine3::from_rotation_translation(q, glam::DVec3::from(tvec));
        let world_from_camera = camera_from_world.inverse();
        Self {
            name: name.into(),
            width,
            height,
            fx: fx as f32,
            fy: fy as f32,
            cx: cx as f32,
            cy: cy as f32,
            world_from_camera: Affine3A::from_mat3_translation(
                world_from_camera.matrix3.as_mat3(),
                world_from_camera.translation.as_vec3(),
            ),
        }
    }

    /// A camera at `eye` looking at `target`, with `up` pointing roughly up in the image, and a
    /// vertical field of view in radians.
    pub fn look_at(
        name: impl Into<String>,
        eye: Vec3,
        target: Vec3,
        up: Vec3,
        fov_y: f32,
        width: u32,
        height: u32,
    ) -> Self {
        let forward = (target - eye).normalize();
        let right = forward.cross(up).normalize();
        let down = forward.cross(right);
        let rotation = Mat3::from_cols(right, down, forward);
        Self::pinhole(
            name,
            width,
            height,
            fov_y,
            Affine3A::from_mat3_translation(rotation, eye),
        )
    }

    /// An ideal pinhole camera: square pixels, principal point in the centre, vertical field of view
    /// `fov_y` in radians (the viewer's and camera paths' cameras).
    pub fn pinhole(name: impl Into<String>, width: u32, height: u32, fov_y: f32, world_from_camera: Affine3A) -> Self {
        let fy = 0.5 * height as f32 / (0.5 * fov_y).tan();
        Self {
            name: name.into(),
            width,
            height,
            fx: fy,
            fy,
            cx: 0.5 * width as f32,
            cy: 0.5 * height as f32,
            world_from_camera,
        }
    }

    pub fn camera_from_world(&self) -> Affine3A {
        self.world_from_camera.inverse()
    }

    pub fn position(&self) -> Vec3 {
        self.world_from_camera.translation.into()
    }

    pub fn rotation(&self) -> Quat {
        Quat::from_mat3a(&self.world_from_camera.matrix3)
    }

    /// The same view at another resolution: intrinsics scale with the image, as a data factor does.
    pub fn resized(&self, width: u32, height: u32) -> Self {
        let sx = width as f32 / self.width as f32;
        let sy = height as f32 / self.height as f32;
        Self {
            width,
            height,
            fx: self.fx * sx,
            fy: self.fy * sy,
            cx: self.cx * sx,
            cy: self.cy * sy,
            ..self.clone()
        }
    }

    pub fn fov_y(&self) -> f32 {
        2.0 * (0.5 * self.height as f32 / self.fy).atan()
    }
}

/// Reads a camera JSON file (one camera or a list, as the viewer writes them) and checks every
/// camera with [`super::validate::cameras`]: an empty list, a 0x0 or oversized image, a non-positive
/// focal length or a pose that is not a rotation is an error naming the file and the camera.
pub fn read_json(path: &std::path::Path) -> Result<Vec<Camera>, super::DataError> {
    let invalid = |message: String| super::DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| super::DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let cameras = if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|c| vec![c])
    };
    let cameras: Vec<Camera> = cameras.map_err(|e| invalid(format!("not a camera (or list of cameras): {e}")))?;
    super::validate::cameras(&cameras).map_err(invalid)?;
    Ok(cameras)
}

/// (De)serialises an affine transform as a row-major 4x4 matrix, the form people paste from other tools.
mod rows4x4 {
    use glam::{Affine3A, Mat4};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(a: &Affine3A, s: S) -> Result<S::Ok, S::Error> {
        let m = Mat4::from(*a).transpose().to_cols_array_2d();
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Affine3A, D::Error> {
        let rows = <[[f32; 4]; 4]>::deserialize(d)?;
        let m = Mat4::from_cols_array_2d(&rows).transpose();
        if rows.iter().flatten().any(|x| !x.is_finite()) {
            return Err(serde::de::Error::custom("world_from_camera has a non-finite entry"));
        }
        Ok(Affine3A::from_mat4(m))
    }
}
