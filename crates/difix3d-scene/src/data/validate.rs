//! Checks on cameras and sparse points, wherever they come from (COLMAP models, camera JSON files,
//! camera paths, the refinement's own `cameras.json`): values that parse but would make a render
//! meaningless (a NaN pose, a 0x0 image, a sheared "rotation") fail here, with the rule they break,
//! instead of hanging a trainer or writing a blank PNG.

use glam::{Affine3A, Mat3};

use super::colmap::Point3D;
use super::Camera;
use crate::validate::MAX_IMAGE_SIDE;

/// How far `R^T R` may stray from the identity (per entry) for a pose's rotation to count as one:
/// generous for poses written with six or seven digits, tight enough to refuse scale or shear.
const ROTATION_TOLERANCE: f32 = 1e-3;

/// One camera: a size of 1 to [`MAX_IMAGE_SIDE`] per side, finite positive focal lengths, a finite
/// principal point, and a finite pose whose rotation is orthonormal and right-handed.
pub fn camera(camera: &Camera) -> Result<(), String> {
    let (w, h) = (camera.width, camera.height);
    if !(1..=MAX_IMAGE_SIDE).contains(&w) || !(1..=MAX_IMAGE_SIDE).contains(&h) {
        return Err(format!(
            "the size {w}x{h} must be between 1 and {MAX_IMAGE_SIDE} pixels per side"
        ));
    }
    let (fx, fy) = (camera.fx, camera.fy);
    if !(fx.is_finite() && fy.is_finite() && fx > 0.0 && fy > 0.0) {
        return Err(format!(
            "the focal lengths ({fx}, {fy}) must be finite and greater than 0"
        ));
    }
    if !(camera.cx.is_finite() && camera.cy.is_finite()) {
        return Err(format!(
            "the principal point ({}, {}) must be finite",
            camera.cx, camera.cy
        ));
    }
    pose(&camera.world_from_camera)
}

/// A camera-to-world pose: finite, with an orthonormal, right-handed rotation.
pub fn pose(pose: &Affine3A) -> Result<(), String> {
    let rotation = Mat3::from(pose.matrix3);
    if !(rotation.is_finite() && pose.translation.is_finite()) {
        return Err("the pose has a non-finite entry (NaN or infinity)".into());
    }
    let error = (rotation.transpose() * rotation - Mat3::IDENTITY)
        .to_cols_array()
        .iter()
        .fold(0.0f32, |worst, e| worst.max(e.abs()));
    if error > ROTATION_TOLERANCE || rotation.determinant() <= 0.0 {
        return Err(format!(
            "the pose's rotation is not a rotation (R^T R differs from the identity by {error:.2e}, \
             determinant {:.4}; it must be orthonormal within {ROTATION_TOLERANCE:.0e} with determinant +1)",
            rotation.determinant()
        ));
    }
    Ok(())
}

/// A list of cameras to render: at least one, each valid; errors say which camera.
pub fn cameras(cameras: &[Camera]) -> Result<(), String> {
    if cameras.is_empty() {
        return Err("the camera list is empty".into());
    }
    for (i, c) in cameras.iter().enumerate() {
        camera(c).map_err(|m| format!("camera {i} ({}): {m}", c.name))?;
    }
    Ok(())
}

/// Sparse points: every coordinate finite. Errors say which point (counting from 1, in file order).
pub fn points(points: &[Point3D]) -> Result<(), String> {
    match points.iter().position(|p| p.position.iter().any(|x| !x.is_finite())) {
        None => Ok(()),
        Some(i) => Err(format!(
            "point {} of {} has a non-finite position {:?} (every coordinate must be a finite number \
             within the f32 range)",
            i + 1,
            points.len(),
            points[i].position
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::Vec3;

    fn good() -> Camera {
        Camera::look_at("c", Vec3::new(0.0, 0.0, -3.0), Vec3::ZERO, Vec3::NEG_Y, 0.8, 64, 48)
    }

    #[test]
    fn a_good_camera_passes() {
        assert_eq!(camera(&good()), Ok(()));
        assert_eq!(cameras(&[good(), good()]), Ok(()));
    }

    #[test]
    fn each_broken_camera_value_is_refused_with_its_rule() {
        let broken = |edit: &dyn Fn(&mut Camera)| {
            let mut c = good();
            edit(&mut c);
            camera(&c).unwrap_err()
        };
        assert!(broken(&|c| c.width = 0).contains("0x48"));
        assert!(broken(&|c| c.height = MAX_IMAGE_SIDE + 1).contains("16384"));
        assert!(broken(&|c| c.fx = 0.0).contains("focal"));
        assert!(broken(&|c| c.fy = f32::NAN).contains("focal"));
        assert!(broken(&|c| c.cx = f32::INFINITY).contains("principal point"));
        assert!(broken(&|c| c.world_from_camera.translation.x = f32::NAN).contains("non-finite"));
        assert!(broken(&|c| c.world_from_camera.matrix3.x_axis *= 2.0).contains("not a rotation"));
        // A mirror is orthonormal but not a rotation.
        assert!(broken(&|c| c.world_from_camera.matrix3.x_axis *= -1.0).contains("determinant"));
        assert!(cameras(&[]).unwrap_err().contains("empty"));
        let mut second = good();
        second.fx = -1.0;
        assert!(cameras(&[good(), second]).unwrap_err().starts_with("camera 1 (c)"));
    }

    #[test]
    fn non_finite_points_are_refused() {
        let point = |x: f32| Point3D {
            position: [0.0, x, 1.0],
            color: [0, 0, 0],
        };
        assert_eq!(points(&[point(1.0)]), Ok(()));
        let error = points(&[point(1.0), point(f32::NAN)]).unwrap_err();
        assert!(error.contains("point 2 of 2"), "{error}");
        assert!(points(&[point(f32::INFINITY)]).is_err());
    }
}
