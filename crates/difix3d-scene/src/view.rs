//! Where the camera is and how user input moves it: the orbit/pan/zoom/fly controller shared by the
//! viewer and the CLI's default view. Pure maths, no window, so it is unit-tested.

use glam::{Affine3A, Mat3, Quat, Vec3};

use crate::data::Camera;
use crate::scene::Splats;

/// A camera pose plus the state of an orbit: the centre sits `focus_distance` in front of the camera.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewController {
    pub position: Vec3,
    /// world_from_camera rotation, OpenCV axes (+x right, +y down, +z forward).
    pub rotation: Quat,
    pub focus_distance: f32,
    /// The scene's up direction; orbiting and flying keep the horizon level with respect to it.
    pub up: Vec3,
    /// Vertical field of view in radians.
    pub fov_y: f32,
}

impl ViewController {
    /// Looks at `target` from `eye`.
    pub fn look_at(eye: Vec3, target: Vec3, up: Vec3, fov_y: f32) -> Self {
        let cam = Camera::look_at("", eye, target, up, fov_y, 2, 2);
        Self {
            position: eye,
            rotation: cam.rotation(),
            focus_distance: (target - eye).length().max(1e-3),
            up: up.normalize(),
            fov_y,
        }
    }

    /// Adopts a dataset camera's pose and field of view, keeping the scene's up.
    pub fn from_camera(camera: &Camera, up: Vec3, focus_distance: f32) -> Self {
        Self {
            position: camera.position(),
            rotation: camera.rotation(),
            focus_distance,
            up: up.normalize(),
            fov_y: camera.fov_y(),
        }
    }

    /// A view that frames the bulk of the splats from slightly above, for files without cameras.
    pub fn default_for(splats: &Splats, up: Vec3) -> Self {
        // Frame the bulk of the scene (10-90% of the splats), centred on the median: captured scenes
        // have long tails of background splats that would otherwise push the camera far away.
        let (lo, centre, hi) = splats.quantiles(0.1);
        let radius = 0.5 * (hi - lo).length().max(1e-3);
        let up = up.normalize();
        // A horizontal direction: the world axis most perpendicular to up, made exactly perpendicular.
        let axis = [Vec3::X, Vec3::Z, Vec3::Y]
            .into_iter()
            .min_by(|a, b| a.dot(up).abs().total_cmp(&b.dot(up).abs()))
            .unwrap_or(Vec3::X);
        let horizontal = (axis - up * axis.dot(up)).normalize();
        let fov_y = 50f32.to_radians();
        let elevation = 25f32.to_radians();
        let distance = 1.0 * radius / (0.5 * fov_y).tan();
        let eye = centre + (horizontal * elevation.cos() + up * elevation.sin()) * distance;
        Self::look_at(eye, centre, up, fov_y)
    }

    pub fn forward(&self) -> Vec3 {
        self.rotation * Vec3::Z
    }

    pub fn right(&self) -> Vec3 {
        self.rotation * Vec3::X
    }

    /// The image-down direction.
    pub fn down(&self) -> Vec3 {
        self.rotation * Vec3::Y
    }

    pub fn centre(&self) -> Vec3 {
        self.position + self.forward() * self.focus_distance
    }

    /// Turns around the orbit centre: `yaw` about the scene's up, `pitch` about the camera's right axis
    /// (radians). Pitch stops short of the poles so the view never flips.
    pub fn orbit(&mut self, yaw: f32, pitch: f32) {
        let centre = self.centre();
        self.turn(yaw, pitch);
        self.position = centre - self.forward() * self.focus_distance;
    }

    /// Turns the camera in place (mouse look).
    pub fn look(&mut self, yaw: f32, pitch: f32) {
        self.turn(yaw, pitch);
    }

    fn turn(&mut self, yaw: f32, pitch: f32) {
        let elevation = self.forward().dot(self.up).clamp(-1.0, 1.0).asin();
        let max = 88f32.to_radians();
        let pitch = (elevation + pitch).clamp(-max, max) - elevation;
        let yaw_q = Quat::from_axis_angle(self.up, -yaw);
        let pitch_q = Quat::from_axis_angle(self.right(), pitch);
        let forward = (yaw_q * pitch_q * self.forward()).normalize();
        self.rotation = level_rotation(forward, self.up);
    }

    /// Moves camera and centre together, by screen-space fractions of the view height.
    pub fn pan(&mut self, dx: f32, dy: f32) {
        let scale = 2.0 * self.focus_distance * (0.5 * self.fov_y).tan();
        self.position += (-self.right() * dx - self.down() * dy) * scale;
    }

    /// Moves towards (positive) or away from the centre; the centre stays put.
    pub fn zoom(&mut self, steps: f32) {
        let centre = self.centre();
        self.focus_distance = (self.focus_distance * (-0.1 * steps).exp()).clamp(1e-3, 1e6);
        self.position = centre - self.forward() * self.focus_distance;
    }

    /// Flies by `delta` given in camera axes (x right, y *up*, z forward), keeping the orbit distance.
    pub fn fly(&mut self, delta: Vec3) {
        self.position += self.right() * delta.x + self.up * delta.y + self.forward() * delta.z;
    }

    /// Turns to face `point` and makes it the orbit centre (double-click).
    pub fn set_centre(&mut self, point: Vec3) {
        let offset = point - self.position;
        if offset.length() < 1e-6 {
            return;
        }
        self.focus_distance = offset.length();
        self.rotation = level_rotation(offset.normalize(), self.up);
    }

    pub fn camera(&self, width: u32, height: u32) -> Camera {
        let pose = Affine3A::from_rotation_translation(self.rotation, self.position);
        Camera::pinhole("view", width, height, self.fov_y, pose)
    }
}

/// The rotation looking along `forward` with the image's up as close to `up` as possible.
fn level_rotation(forward: Vec3, up: Vec3) -> Quat {
    let right = forward.cross(up);
    let right = if right.length_squared() < 1e-10 {
        forward.any_orthonormal_vector()
    } else {
        right.normalize()
    };
    let down = forward.cross(right);
    Quat::from_mat3(&Mat3::from_cols(right, down, forward))
}

/// The up direction of a set of cameras: the mean of their image-up axes (-y in OpenCV), the usual
/// estimate for captures where people hold the camera level.
pub fn up_from_cameras<'a>(cameras: impl Iterator<Item = &'a Camera>) -> Option<Vec3> {
    let sum: Vec3 = cameras
        .map(|c| c.world_from_camera.matrix3 * glam::Vec3A::NEG_Y)
        .map(Vec3::from)
        .sum();
    (sum.length() > 1e-6).then(|| sum.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: Vec3, b: Vec3) -> bool {
        (a - b).length() < 1e-4
    }

    #[test]
    fn look_at_points_the_camera_at_the_target() {
        let v = ViewController::look_at(Vec3::new(0.0, 0.0, -5.0), Vec3::ZERO, Vec3::Y, 1.0);
        assert!(approx(v.forward(), Vec3::Z));
        assert!(approx(v.down(), -Vec3::Y));
        assert!(approx(v.centre(), Vec3::ZERO));
        // The projection of the target lands in the image centre.
        let cam = v.camera(100, 50);
        let p = cam.camera_from_world().transform_point3(Vec3::ZERO);
        assert!((cam.fx * p.x / p.z + cam.cx - 50.0).abs() < 1e-3);
        assert!((cam.fy * p.y / p.z + cam.cy - 25.0).abs() < 1e-3);
    }

    #[test]
    fn orbit_keeps_distance_to_centre_and_level_horizon() {
        let mut v = ViewController::look_at(Vec3::new(0.0, 1.0, -5.0), Vec3::ZERO, Vec3::Y, 1.0);
        let d0 = (v.position - v.centre()).length();
        v.orbit(0.7, -0.3);
        assert!(((v.position - Vec3::ZERO).length() - d0).abs() < 1e-4);
        assert!(approx(v.centre(), Vec3::ZERO));
        assert!(v.right().dot(Vec3::Y).abs() < 1e-5, "horizon tilted");
        // Pitch saturates before the pole instead of flipping over.
        v.orbit(0.0, -10.0);
        assert!(v.forward().dot(Vec3::Y).abs() < 89f32.to_radians().sin());
    }

    #[test]
    fn zoom_and_pan_and_fly() {
        let mut v = ViewController::look_at(Vec3::new(0.0, 0.0, -4.0), Vec3::ZERO, Vec3::Y, 1.0);
        v.zoom(5.0);
        assert!(v.focus_distance < 4.0 && approx(v.centre(), Vec3::ZERO));
        let before = v.centre();
        v.pan(0.1, 0.0);
        assert!(
            (v.centre() - before).dot(v.right()) < 0.0,
            "dragging right moves the camera left"
        );
        let p = v.position;
        v.fly(Vec3::new(0.0, 1.0, 0.0));
        assert!(approx(v.position - p, Vec3::Y));
    }

    #[test]
    fn set_centre_faces_the_point() {
        let mut v = ViewController::look_at(Vec3::ZERO, Vec3::Z, Vec3::Y, 1.0);
        v.set_centre(Vec3::new(3.0, 0.0, 4.0));
        assert!(approx(v.centre(), Vec3::new(3.0, 0.0, 4.0)));
        assert!((v.focus_distance - 5.0).abs() < 1e-5);
    }

    #[test]
    fn up_from_level_cameras() {
        let a = Camera::look_at("a", Vec3::new(0.0, 0.0, -3.0), Vec3::ZERO, Vec3::Y, 1.0, 4, 4);
        let b = Camera::look_at("b", Vec3::new(3.0, 0.0, 0.0), Vec3::ZERO, Vec3::Y, 1.0, 4, 4);
        assert!(approx(up_from_cameras([a, b].iter()).unwrap(), Vec3::Y));
    }
}
