//! Camera paths for flythroughs: keyframes, smooth interpolation between them (a centripetal Catmull-Rom spline
//! through the positions, slerp between the rotations), an optional constant-speed timing, and the JSON
//! file the viewer and `difix3d record` share. Pure maths, no GPU, so it is unit-tested.
//!
//! JSON layout (`version` 1):
//! ```json
//! { "version": 1, "duration_s": 6.0, "constant_speed": false, "looped": false,
//!   "keyframes": [ { "position": [x, y, z], "rotation": [x, y, z, w], "fov_y_deg": 50.0 }, ... ] }
//! ```
//! `rotation` is the world_from_camera quaternion with OpenCV camera axes (+x right, +y down,
//! +z forward), the same convention as COLMAP-derived cameras everywhere else in difix3d.
//!
//! nerfstudio's camera paths are read and written too ([`nerfstudio`]).

pub mod nerfstudio;

use std::path::{Path, PathBuf};

use glam::{Affine3A, Quat, Vec3};
use serde::{Deserialize, Serialize};

use crate::data::Camera;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path}: cannot read the camera path: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a camera path: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: cannot write the camera path: {message}")]
    Write { path: PathBuf, message: String },
}

/// One pose the path passes through.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keyframe {
    pub position: Vec3,
    /// world_from_camera, OpenCV axes.
    pub rotation: Quat,
    pub fov_y_deg: f32,
}

impl Keyframe {
    pub fn from_camera(camera: &Camera) -> Self {
        Self {
            position: camera.position(),
            rotation: camera.rotation(),
            fov_y_deg: camera.fov_y().to_degrees(),
        }
    }

    /// A pinhole camera with this pose, square pixels and the principal point in the centre.
    pub fn camera(&self, name: &str, width: u32, height: u32) -> Camera {
        let pose = Affine3A::from_rotation_translation(self.rotation.normalize(), self.position);
        Camera::pinhole(name, width, height, self.fov_y_deg.to_radians(), pose)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraPath {
    #[serde(default = "version_one")]
    pub version: u32,
    pub keyframes: Vec<Keyframe>,
    /// How long the whole path takes to play, in seconds.
    pub duration_s: f32,
    /// Move along the path at a constant speed instead of spending equal time between keyframes.
    #[serde(default)]
    pub constant_speed: bool,
    /// Return from the last keyframe to the first (orbits).
    #[serde(default)]
    pub looped: bool,
}

fn version_one() -> u32 {
    1
}

impl Default for CameraPath {
    fn default() -> Self {
        Self {
            version: 1,
            keyframes: Vec::new(),
            duration_s: 6.0,
            constant_speed: false,
            looped: false,
        }
    }
}

/// The largest keyframe coordinate accepted: scenes are metres to kilometres across, and squared
/// distances between points this far apart still fit in f32.
pub const MAX_COORDINATE: f32 = 1e9;

/// Samples per segment for the arc-length table of constant-speed playback.
const ARC_SAMPLES: usize = 64;

impl CameraPath {
    /// Keyframes at `cameras`' poses, in the order given (dataset views are sorted by image name, which
    /// for captures is the order they were taken in).
    pub fn through_cameras<'a>(cameras: impl IntoIterator<Item = &'a Camera>, duration_s: f32) -> Self {
        Self {
            keyframes: cameras.into_iter().map(Keyframe::from_camera).collect(),
            duration_s,
            ..Self::default()
        }
    }

    /// A closed orbit around `centre` about the `up` axis, starting at `start` (a camera pose whose
    /// distance and height above the centre the orbit keeps), looking at the centre the whole way.
    pub fn orbit(centre: Vec3, up: Vec3, start: Vec3, fov_y_deg: f32, duration_s: f32) -> Self {
        const KEYS: usize = 16;
        let up = up.normalize();
        let offset = start - centre;
        let keyframes = (0..KEYS)
            .map(|i| {
                let angle = std::f32::consts::TAU * i as f32 / KEYS as f32;
                let position = centre + Quat::from_axis_angle(up, angle) * offset;
                let camera = Camera::look_at("", position, centre, up, fov_y_deg.to_radians(), 2, 2);
                Keyframe {
                    position,
                    rotation: camera.rotation(),
                    fov_y_deg,
                }
            })
            .collect();
        Self {
            keyframes,
            duration_s,
            looped: true,
            ..Self::default()
        }
    }

    /// The number of frames a recording at `fps` has: one per 1/fps seconds, at least one.
    pub fn frame_count(&self, fps: f32) -> usize {
        ((self.duration_s * fps).round() as usize).max(1)
    }

    /// [`Self::frame_count`], refused when `fps` is not a positive number or the path would take
    /// more than [`crate::validate::MAX_FRAMES`] frames (the error gives the duration, fps and count).
    pub fn checked_frame_count(&self, fps: f32) -> Result<usize, String> {
        crate::validate::frame_count(f64::from(self.duration_s), f64::from(fps))?;
        Ok(self.frame_count(fps))
    }

    /// Where frame `index` of `count` sits on the path, in [0, 1]. Open paths end on their last
    /// keyframe; looped paths stop one step short of returning to the first.
    pub fn frame_time(&self, index: usize, count: usize) -> f32 {
        if count <= 1 {
            return 0.0;
        }
        let steps = if self.looped { count } else { count - 1 };
        index as f32 / steps as f32
    }

    fn segments(&self) -> usize {
        let n = self.keyframes.len();
        if self.looped {
            n
        } else {
            n.saturating_sub(1)
        }
    }

    /// The position of keyframe `i`; open paths get mirrored phantom points one step past each end,
    /// so the spline leaves its first and arrives at its last keyframe heading straight on.
    fn point(&self, i: isize) -> Vec3 {
        let keys = &self.keyframes;
        let n = keys.len() as isize;
        if self.looped {
            return keys[i.rem_euclid(n) as usize].position;
        }
        let at = |j: isize| keys[j.clamp(0, n - 1) as usize].position;
        if i < 0 {
            2.0 * at(0) - at(1)
        } else if i >= n {
            2.0 * at(n - 1) - at(n - 2)
        } else {
            at(i)
        }
    }

    fn key(&self, i: isize) -> &Keyframe {
        let n = self.keyframes.len() as isize;
        let i = if self.looped {
            i.rem_euclid(n)
        } else {
            i.clamp(0, n - 1)
        };
        &self.keyframes[i as usize]
    }

    /// The pose at `t` in [0, 1] (clamped); `None` for a path without keyframes.
    pub fn sample(&self, t: f32) -> Option<Keyframe> {
        if self.keyframes.is_empty() {
            return None;
        }
        let segments = self.segments();
        if segments == 0 {
            return Some(self.keyframes[0]);
        }
        let t = t.clamp(0.0, 1.0);
        let t = if self.constant_speed {
            self.constant_speed_param(t)
        } else {
            t
        };
        Some(self.sample_param(t * segments as f32))
    }

    /// The pose at spline parameter `s` in [0, segments]: segment `floor(s)`, local time `fract(s)`.
    fn sample_param(&self, s: f32) -> Keyframe {
        let segments = self.segments();
        let i = (s.floor() as usize).min(segments - 1);
        let u = s - i as f32;
        let i = i as isize;
        let (p1, p2) = (self.key(i), self.key(i + 1));
        let points = [self.point(i - 1), self.point(i), self.point(i + 1), self.point(i + 2)];
        let position = centripetal_catmull_rom(points, u);
        // Slerp takes the short way round (glam flips the sign of q2 when needed).
        let rotation = p1.rotation.normalize().slerp(p2.rotation.normalize(), u);
        Keyframe {
            position,
            rotation,
            fov_y_deg: p1.fov_y_deg + (p2.fov_y_deg - p1.fov_y_deg) * u,
        }
    }

    /// Maps playback time to the spline parameter (over [0, 1]) that covers equal distances in equal
    /// times. A path that does not move (only turns) keeps equal time per keyframe.
    fn constant_speed_param(&self, t: f32) -> f32 {
        let segments = self.segments();
        let samples = segments * ARC_SAMPLES;
        let mut lengths = Vec::with_capacity(samples + 1);
        lengths.push(0.0f32);
        let mut previous = self.sample_param(0.0).position;
        for k in 1..=samples {
            let p = self.sample_param(k as f32 / ARC_SAMPLES as f32).position;
            lengths.push(lengths[k - 1] + (p - previous).length());
            previous = p;
        }
        let total = lengths[samples];
        if total <= 1e-9 {
            return t;
        }
        let target = t * total;
        let k = lengths.partition_point(|&l| l < target).clamp(1, samples);
        let (l0, l1) = (lengths[k - 1], lengths[k]);
        let frac = if l1 > l0 { (target - l0) / (l1 - l0) } else { 0.0 };
        ((k - 1) as f32 + frac) / samples as f32
    }

    /// Checks what serde cannot: at least one keyframe, finite numbers, a usable duration and fov.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "version {} is not supported (this build reads version 1)",
                self.version
            ));
        }
        if self.keyframes.is_empty() {
            return Err("the path has no keyframes".into());
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return Err(format!("duration_s must be positive, not {}", self.duration_s));
        }
        for (i, k) in self.keyframes.iter().enumerate() {
            let finite = k.position.is_finite() && k.rotation.is_finite();
            if !finite || !(1e-6..=1e6).contains(&k.rotation.length()) {
                return Err(format!(
                    "keyframe {i}: position and rotation must be finite, the rotation's length between 1e-6 \
                     and 1e6 (it is normalised)"
                ));
            }
            // The spline and the arc-length table square distances: beyond this they overflow f32.
            if k.position.abs().max_element() > MAX_COORDINATE {
                return Err(format!(
                    "keyframe {i}: position {} is beyond {MAX_COORDINATE:e} (no scene is that large)",
                    k.position
                ));
            }
            if !(k.fov_y_deg > 0.0 && k.fov_y_deg < 180.0) {
                return Err(format!(
                    "keyframe {i}: fov_y_deg must be in (0, 180), not {}",
                    k.fov_y_deg
                ));
            }
        }
        Ok(())
    }

    /// The camera of frame `index` of `total` (named by its index, `00000`...).
    pub fn frame_camera(&self, index: usize, total: usize, width: u32, height: u32) -> Camera {
        let key = self
            .sample(self.frame_time(index, total))
            .expect("a validated path has keyframes");
        key.camera(&format!("{index:05}"), width, height)
    }

    /// Reads a camera path: ours, or a nerfstudio camera_path.json (recognised by its `camera_path`
    /// list; see [`nerfstudio`]), whose render size and fps are dropped here.
    pub fn load(path: &Path) -> Result<Self, PathError> {
        Ok(Self::load_with(path, None)?.0)
    }

    /// [`Self::load`], with the render size and fps a nerfstudio path carries, and its poses mapped
    /// through nerfstudio's `dataparser_transforms.json` when one is given (refused for our own
    /// paths, which are in the scene's world already).
    pub fn load_with(
        path: &Path,
        dataparser: Option<&nerfstudio::DataparserTransform>,
    ) -> Result<(Self, Option<nerfstudio::RenderSettings>), PathError> {
        let text = std::fs::read_to_string(path).map_err(|source| PathError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let format = |message: String| PathError::Format {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        if nerfstudio::is_camera_path(&value) {
            let (parsed, settings) = nerfstudio::path_from_json(&value, dataparser)
                .map_err(|m| format(format!("nerfstudio camera path: {m}")))?;
            return Ok((parsed, Some(settings)));
        }
        if dataparser.is_some() {
            return Err(format(
                "a dataparser transform applies to nerfstudio camera paths only (this is a difix3d path, in the \
                 scene's world already)"
                    .into(),
            ));
        }
        // Parsed again from the text so that errors keep their line and column.
        let parsed: Self = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        parsed.validate().map_err(format)?;
        Ok((parsed, None))
    }

    /// Writes the path in nerfstudio's camera path format (every frame of a recording at `settings`,
    /// and the keyframes for its viewer), atomically; poses go through `dataparser` when given.
    pub fn save_nerfstudio(
        &self,
        path: &Path,
        settings: nerfstudio::RenderSettings,
        dataparser: Option<&nerfstudio::DataparserTransform>,
    ) -> Result<(), PathError> {
        let write = |message: String| PathError::Write {
            path: path.to_path_buf(),
            message,
        };
        self.validate().map_err(write)?;
        self.checked_frame_count(settings.fps).map_err(write)?;
        let json = serde_json::to_string_pretty(&nerfstudio::path_to_json(self, settings, dataparser))
            .map_err(|e| write(e.to_string()))?;
        crate::image_io::write_atomic(path, |tmp| std::fs::write(tmp, json).map_err(|e| e.to_string()))
            .map_err(|e| write(e.to_string()))
    }

    /// Writes the path as pretty JSON, atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), PathError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| PathError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::image_io::write_atomic(path, |tmp| std::fs::write(tmp, json).map_err(|e| e.to_string())).map_err(|e| {
            PathError::Write {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })
    }
}

/// Centripetal Catmull-Rom (Barry-Goldman form, knot spacing |Δp|^0.5) through `p[1]` (u = 0) and
/// `p[2]` (u = 1). Unlike the uniform variant it neither overshoots nor loops when keyframes are
/// unevenly spaced.
fn centripetal_catmull_rom(p: [Vec3; 4], u: f32) -> Vec3 {
    let knot = |a: Vec3, b: Vec3| a.distance(b).sqrt().max(1e-4);
    let t0 = 0.0;
    let t1 = t0 + knot(p[0], p[1]);
    let t2 = t1 + knot(p[1], p[2]);
    let t3 = t2 + knot(p[2], p[3]);
    let t = t1 + u * (t2 - t1);
    let lerp = |a: Vec3, b: Vec3, ta: f32, tb: f32| a * ((tb - t) / (tb - ta)) + b * ((t - ta) / (tb - ta));
    let a1 = lerp(p[0], p[1], t0, t1);
    let a2 = lerp(p[1], p[2], t1, t2);
    let a3 = lerp(p[2], p[3], t2, t3);
    let b1 = lerp(a1, a2, t0, t2);
    let b2 = lerp(a2, a3, t1, t3);
    lerp(b1, b2, t1, t2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(x: f32, yaw_deg: f32) -> Keyframe {
        Keyframe {
            position: Vec3::new(x, 0.0, 0.0),
            rotation: Quat::from_rotation_y(yaw_deg.to_radians()),
            fov_y_deg: 50.0,
        }
    }

    #[test]
    fn passes_through_every_keyframe() {
        let path = CameraPath {
            keyframes: vec![key(0.0, 0.0), key(1.0, 30.0), key(3.0, 90.0)],
            ..CameraPath::default()
        };
        for (i, k) in path.keyframes.iter().enumerate() {
            let s = path.sample(i as f32 / 2.0).unwrap();
            assert!((s.position - k.position).length() < 1e-5, "key {i}");
            assert!(s.rotation.angle_between(k.rotation) < 1e-3, "key {i}");
        }
        // Half way between two keys the rotation is the slerp half way.
        let mid = path.sample(0.25).unwrap();
        assert!(mid.rotation.angle_between(Quat::from_rotation_y(15f32.to_radians())) < 1e-3);
    }

    #[test]
    fn constant_speed_covers_equal_distances_in_equal_times() {
        let path = CameraPath {
            keyframes: vec![key(0.0, 0.0), key(0.1, 0.0), key(4.0, 0.0)],
            constant_speed: true,
            ..CameraPath::default()
        };
        let n = 41;
        let xs: Vec<f32> = (0..n)
            .map(|i| path.sample(path.frame_time(i, n)).unwrap().position.x)
            .collect();
        let steps: Vec<f32> = xs.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = 4.0 / (n - 1) as f32;
        for s in &steps {
            assert!((s - mean).abs() < 0.05 * mean, "step {s} vs {mean}");
        }
        // Without it, the short first segment takes as long as the long second one.
        let uneven = CameraPath {
            constant_speed: false,
            ..path
        };
        assert!(uneven.sample(0.5).unwrap().position.x < 0.2);
    }

    #[test]
    fn looped_orbits_keep_their_radius_and_look_at_the_centre() {
        let centre = Vec3::new(1.0, 2.0, 3.0);
        let path = CameraPath::orbit(centre, Vec3::Y, centre + Vec3::new(0.0, 1.0, -4.0), 40.0, 8.0);
        assert!(path.looped);
        let count = path.frame_count(30.0);
        assert_eq!(count, 240);
        // Looped: the last frame is one step before the start, never a duplicate of it.
        let last = path.sample(path.frame_time(count - 1, count)).unwrap();
        assert!((last.position - path.keyframes[0].position).length() > 1e-3);
        for i in 0..count {
            let k = path.sample(path.frame_time(i, count)).unwrap();
            let radius = (k.position - centre).reject_from(Vec3::Y).length();
            assert!((radius - 4.0).abs() < 0.02, "radius {radius}");
            let forward = k.rotation * Vec3::Z;
            let to_centre = (centre - k.position).normalize();
            assert!(forward.dot(to_centre) > 0.999, "frame {i} looks away");
        }
    }

    #[test]
    fn json_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("path.json");
        let path = CameraPath {
            keyframes: vec![key(0.0, 0.0), key(1.0, 10.0)],
            duration_s: 3.0,
            ..CameraPath::default()
        };
        path.save(&file).unwrap();
        assert_eq!(CameraPath::load(&file).unwrap(), path);

        std::fs::write(&file, r#"{"keyframes": [], "duration_s": 2}"#).unwrap();
        let e = CameraPath::load(&file).unwrap_err().to_string();
        assert!(e.contains("path.json") && e.contains("no keyframes"), "{e}");
        std::fs::write(&file, "{not json").unwrap();
        assert!(CameraPath::load(&file)
            .unwrap_err()
            .to_string()
            .contains("not a camera path"));
        let missing = dir.path().join("missing.json");
        assert!(CameraPath::load(&missing)
            .unwrap_err()
            .to_string()
            .contains("missing.json"));
    }

    #[test]
    fn keyframe_camera_round_trips_a_pose() {
        let cam = Camera::look_at("a", Vec3::new(1.0, 2.0, 3.0), Vec3::ZERO, Vec3::NEG_Y, 0.9, 64, 48);
        let back = Keyframe::from_camera(&cam).camera("a", 64, 48);
        assert!((back.position() - cam.position()).length() < 1e-5);
        assert!(back.rotation().angle_between(cam.rotation()) < 1e-4);
        assert!((back.fy - cam.fy).abs() < 1e-3);
    }
}
