//! Reading (and writing) COLMAP sparse models: `cameras`, `images` and `points3D`, binary or text.
//!
//! The formats are the ones COLMAP documents under "Output format". Only what the viewer needs is kept:
//! camera intrinsics, image poses and names, and the coloured 3D points. The per-image 2D keypoints and
//! the per-point tracks are parsed past (the binary layout requires it) but not stored.
//!
//! Every count in a binary file is checked against the bytes that are actually left before anything is
//! allocated, so a truncated or foreign file gives an error naming the file and byte, never a panic or a
//! huge allocation.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use super::DataError;

mod binary;
mod text;

pub use binary::write_binary;
use binary::{read_cameras_binary, read_images_binary, read_points_binary};
pub use text::write_text;
use text::{read_cameras_text, read_images_text, read_points_text};

/// The camera models COLMAP defines, with COLMAP's numeric ids (as stored in `cameras.bin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CameraModel {
    /// f, cx, cy
    SimplePinhole,
    /// fx, fy, cx, cy
    Pinhole,
    /// f, cx, cy, k
    SimpleRadial,
    /// f, cx, cy, k1, k2
    Radial,
    /// fx, fy, cx, cy, k1, k2, p1, p2
    OpenCv,
    /// fx, fy, cx, cy, k1, k2, k3, k4
    OpenCvFisheye,
    /// fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6
    FullOpenCv,
    /// fx, fy, cx, cy, omega
    Fov,
    /// f, cx, cy, k
    SimpleRadialFisheye,
    /// f, cx, cy, k1, k2
    RadialFisheye,
    /// fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, sx1, sy1
    ThinPrismFisheye,
    /// fx, fy, cx, cy, k0, k1, k2, k3, k4, k5, p0, p1, s0, s1, s2, s3
    RadTanThinPrismFisheye,
}

impl CameraModel {
    /// Every model, in id order (`ALL[i].id() == i`).
    pub const ALL: [CameraModel; 12] = [
        Self::SimplePinhole,
        Self::Pinhole,
        Self::SimpleRadial,
        Self::Radial,
        Self::OpenCv,
        Self::OpenCvFisheye,
        Self::FullOpenCv,
        Self::Fov,
        Self::SimpleRadialFisheye,
        Self::RadialFisheye,
        Self::ThinPrismFisheye,
        Self::RadTanThinPrismFisheye,
    ];

    /// COLMAP's model id.
    pub fn id(self) -> i32 {
        self as i32
    }

    pub fn from_id(id: i32) -> Option<Self> {
        usize::try_from(id).ok().and_then(|i| Self::ALL.get(i).copied())
    }

    /// COLMAP's model name, as written in `cameras.txt`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SimplePinhole => "SIMPLE_PINHOLE",
            Self::Pinhole => "PINHOLE",
            Self::SimpleRadial => "SIMPLE_RADIAL",
            Self::Radial => "RADIAL",
            Self::OpenCv => "OPENCV",
            Self::OpenCvFisheye => "OPENCV_FISHEYE",
            Self::FullOpenCv => "FULL_OPENCV",
            Self::Fov => "FOV",
            Self::SimpleRadialFisheye => "SIMPLE_RADIAL_FISHEYE",
            Self::RadialFisheye => "RADIAL_FISHEYE",
            Self::ThinPrismFisheye => "THIN_PRISM_FISHEYE",
            Self::RadTanThinPrismFisheye => "RAD_TAN_THIN_PRISM_FISHEYE",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// How many parameters the model stores (focal length(s), principal point, then distortion).
    pub fn param_count(self) -> usize {
        match self {
            Self::SimplePinhole => 3,
            Self::Pinhole | Self::SimpleRadial | Self::SimpleRadialFisheye => 4,
            Self::Radial | Self::Fov | Self::RadialFisheye => 5,
            Self::OpenCv | Self::OpenCvFisheye => 8,
            Self::FullOpenCv | Self::ThinPrismFisheye => 12,
            Self::RadTanThinPrismFisheye => 16,
        }
    }

    /// Whether the model has a single focal length (`f, cx, cy, ...`) rather than `fx, fy, cx, cy, ...`.
    fn single_focal(self) -> bool {
        matches!(
            self,
            Self::SimplePinhole | Self::SimpleRadial | Self::Radial | Self::SimpleRadialFisheye | Self::RadialFisheye
        )
    }

    /// Fisheye models project by angle (r = f * theta), so even with zero distortion they are not pinholes.
    fn is_fisheye(self) -> bool {
        matches!(
            self,
            Self::OpenCvFisheye
                | Self::SimpleRadialFisheye
                | Self::RadialFisheye
                | Self::ThinPrismFisheye
                | Self::RadTanThinPrismFisheye
        )
    }
}

impl fmt::Display for CameraModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One COLMAP camera (a set of intrinsics that several images may share).
#[derive(Clone, Debug, PartialEq)]
pub struct ColmapCamera {
    pub id: u32,
    pub model: CameraModel,
    pub width: u32,
    pub height: u32,
    /// Exactly `model.param_count()` values, in COLMAP's order for the model.
    pub params: Vec<f64>,
}

impl ColmapCamera {
    /// The pinhole intrinsics `(fx, fy, cx, cy)` in pixels.
    ///
    /// SIMPLE_PINHOLE and PINHOLE are used directly. A model with lens distortion is an error, because the
    /// renderer draws an ideal pinhole image and distorted photos would not line up with it. The one
    /// exception: SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV whose distortion parameters are all exactly
    /// zero (and FOV with omega exactly zero) *are* pinholes, and exporters often write them that way, so
    /// they are accepted. Fisheye models are always rejected: with zero distortion they are still an
    /// equidistant projection, not a pinhole.
    pub fn pinhole(&self) -> Result<(f64, f64, f64, f64), DataError> {
        let expected = self.model.param_count();
        if self.params.len() != expected {
            return Err(self.bad(format!("expected {expected} parameters, found {}", self.params.len())));
        }
        let (intrinsics, distortion) = if self.model.single_focal() {
            let (head, rest) = self.params.split_at(3);
            ((head[0], head[0], head[1], head[2]), rest)
        } else {
            let (head, rest) = self.params.split_at(4);
            ((head[0], head[1], head[2], head[3]), rest)
        };
        if self.model.is_fisheye() {
            return Err(DataError::Distorted {
                camera_id: self.id,
                model: self.model,
                what: "a fisheye projection",
            });
        }
        if distortion.iter().any(|&d| d != 0.0) {
            return Err(DataError::Distorted {
                camera_id: self.id,
                model: self.model,
                what: "lens distortion",
            });
        }
        let (fx, fy, cx, cy) = intrinsics;
        if !(fx.is_finite() && fy.is_finite() && fx > 0.0 && fy > 0.0) {
            return Err(self.bad(format!("focal length ({fx}, {fy}) is not a positive number")));
        }
        if !(cx.is_finite() && cy.is_finite()) {
            return Err(self.bad(format!("principal point ({cx}, {cy}) is not finite")));
        }
        Ok(intrinsics)
    }

    fn bad(&self, message: String) -> DataError {
        DataError::BadCamera {
            camera_id: self.id,
            model: self.model,
            message,
        }
    }
}

/// One registered image: its world-to-camera pose and the camera it was taken with.
#[derive(Clone, Debug, PartialEq)]
pub struct ColmapImage {
    pub id: u32,
    /// World-to-camera rotation as a quaternion (w, x, y, z), COLMAP's order.
    pub qvec: [f64; 4],
    /// World-to-camera translation: the camera centre is `-R^T t`.
    pub tvec: [f64; 3],
    pub camera_id: u32,
    /// The file name relative to the image folder (it may contain `/`).
    pub name: String,
}

/// One point of the sparse reconstruction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point3D {
    pub position: [f32; 3],
    pub color: [u8; 3],
}

/// A whole sparse model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColmapModel {
    pub cameras: BTreeMap<u32, ColmapCamera>,
    /// Sorted by name, so that splits and listings do not depend on COLMAP's id order.
    pub images: Vec<ColmapImage>,
    pub points: Vec<Point3D>,
}

/// Which of the two file formats a model folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Binary,
    Text,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Binary => "bin",
            Format::Text => "txt",
        }
    }
}

/// Reads the model in `dir`: `cameras`, `images` and `points3D`, each `.bin` or `.txt`.
///
/// The binary files are preferred when both sets exist (they are what COLMAP writes by default and the
/// text export may be stale). `points3D` may be missing, which gives an empty point list: a viewer that
/// only needs the poses should not fail for it. Images are returned sorted by name, and every image's
/// camera must exist.
pub fn read_model(dir: &Path) -> Result<ColmapModel, DataError> {
    let format = detect_format(dir)?;
    let file = |stem: &str| dir.join(format!("{stem}.{}", format.ext()));
    let cameras_path = file("cameras");
    let images_path = file("images");
    let points_path = file("points3D");

    let (cameras, mut images) = match format {
        Format::Binary => (read_cameras_binary(&cameras_path)?, read_images_binary(&images_path)?),
        Format::Text => (read_cameras_text(&cameras_path)?, read_images_text(&images_path)?),
    };
    let points = if points_path.is_file() {
        match format {
            Format::Binary => read_points_binary(&points_path)?,
            Format::Text => read_points_text(&points_path)?,
        }
    } else {
        Vec::new()
    };

    // A NaN here would pass through the pinhole maths and the splat initialisation silently (a NaN
    // point once made `train` spin forever), so every number is checked before use.
    for camera in cameras.values() {
        if let Some(value) = camera.params.iter().find(|p| !p.is_finite()) {
            return Err(invalid(
                &cameras_path,
                format!(
                    "camera {} ({}) has a non-finite parameter {value}; every parameter must be a finite number",
                    camera.id, camera.model
                ),
            ));
        }
    }
    super::validate::points(&points).map_err(|message| invalid(&points_path, message))?;
    for image in &images {
        if !cameras.contains_key(&image.camera_id) {
            return Err(DataError::UnknownCamera {
                images_file: images_path,
                image_id: image.id,
                image_name: image.name.clone(),
                camera_id: image.camera_id,
                cameras_file: cameras_path,
            });
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    // Names identify views (splits, file paths, `Dataset::find`), so they must be unique.
    if let Some(pair) = images.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(invalid(
            &images_path,
            format!(
                "images {} and {} have the same name {}",
                pair[0].id, pair[1].id, pair[0].name
            ),
        ));
    }
    Ok(ColmapModel {
        cameras,
        images,
        points,
    })
}

/// The `stem` file (`cameras`, `images` or `points3D`) of the model in `dir`, `.bin` or `.txt` as
/// [`read_model`] reads it, for errors about what it holds found after reading.
pub fn model_file(dir: &Path, stem: &str) -> std::path::PathBuf {
    let ext = detect_format(dir).map_or("bin", Format::ext);
    dir.join(format!("{stem}.{ext}"))
}

fn detect_format(dir: &Path) -> Result<Format, DataError> {
    let has = |name: &str| dir.join(name).is_file();
    if has("cameras.bin") && has("images.bin") {
        return Ok(Format::Binary);
    }
    if has("cameras.txt") && has("images.txt") {
        return Ok(Format::Text);
    }
    let found: Vec<&str> = ["cameras.bin", "images.bin", "cameras.txt", "images.txt"]
        .into_iter()
        .filter(|name| has(name))
        .collect();
    let message = if !dir.is_dir() {
        "folder not found".to_string()
    } else if found.is_empty() {
        "no COLMAP model here (expected cameras.bin and images.bin, or cameras.txt and images.txt)".to_string()
    } else {
        format!(
            "incomplete COLMAP model: found only {} (a model needs both cameras and images, as .bin or .txt)",
            found.join(", ")
        )
    };
    Err(invalid(dir, message))
}

fn invalid(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks an image pose before it reaches `Camera::from_colmap`, which would turn a zero or non-finite
/// quaternion into NaNs that only show up later as a black render.
fn check_pose(path: &Path, image: &ColmapImage) -> Result<(), DataError> {
    let q = image.qvec;
    let norm2 = q.iter().map(|x| x * x).sum::<f64>();
    if !(norm2.is_finite() && norm2 > 1e-12) || image.tvec.iter().any(|t| !t.is_finite()) {
        return Err(invalid(
            path,
            format!(
                "image {} ({}) has an invalid pose: qvec {:?}, tvec {:?}",
                image.id, image.name, image.qvec, image.tvec
            ),
        ));
    }
    Ok(())
}

fn camera_size(path: &Path, id: u32, width: u64, height: u64) -> Result<(u32, u32), DataError> {
    match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(invalid(
            path,
            format!("camera {id} has an invalid size {width}x{height}"),
        )),
    }
}

fn create_dir(dir: &Path) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    crate::disk::write_bytes_atomic(path, bytes).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Camera;

    fn pinhole_model() -> ColmapModel {
        let mut cameras = BTreeMap::new();
        cameras.insert(
            1,
            ColmapCamera {
                id: 1,
                model: CameraModel::Pinhole,
                width: 640,
                height: 480,
                params: vec![500.0, 510.0, 320.0, 240.0],
            },
        );
        cameras.insert(
            3,
            ColmapCamera {
                id: 3,
                model: CameraModel::OpenCv,
                width: 100,
                height: 50,
                params: vec![80.0, 81.0, 50.5, 25.25, 0.1, -0.02, 0.001, 0.0],
            },
        );
        let images = vec![
            ColmapImage {
                id: 2,
                qvec: [1.0, 0.0, 0.0, 0.0],
                tvec: [0.0, 0.0, 0.0],
                camera_id: 1,
                name: "a.jpg".into(),
            },
            ColmapImage {
                id: 1,
                qvec: [0.9, 0.1, -0.3, 0.2],
                tvec: [1.5, -2.25, 0.1],
                camera_id: 3,
                name: "sub dir/b c.png".into(),
            },
        ];
        let points = vec![
            Point3D {
                position: [0.1, 0.2, 0.3],
                color: [1, 2, 3],
            },
            Point3D {
                position: [-1e6, 3.5e-7, 42.0],
                color: [255, 0, 128],
            },
        ];
        ColmapModel {
            cameras,
            images,
            points,
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn every_model_has_its_colmap_id_name_and_param_count() {
        let expected = [
            (0, "SIMPLE_PINHOLE", 3),
            (1, "PINHOLE", 4),
            (2, "SIMPLE_RADIAL", 4),
            (3, "RADIAL", 5),
            (4, "OPENCV", 8),
            (5, "OPENCV_FISHEYE", 8),
            (6, "FULL_OPENCV", 12),
            (7, "FOV", 5),
            (8, "SIMPLE_RADIAL_FISHEYE", 4),
            (9, "RADIAL_FISHEYE", 5),
            (10, "THIN_PRISM_FISHEYE", 12),
            (11, "RAD_TAN_THIN_PRISM_FISHEYE", 16),
        ];
        assert_eq!(CameraModel::ALL.len(), expected.len());
        for (id, name, count) in expected {
            let model = CameraModel::from_id(id).unwrap();
            assert_eq!(model.id(), id);
            assert_eq!(model.name(), name);
            assert_eq!(CameraModel::from_name(name), Some(model));
            assert_eq!(model.param_count(), count, "{name}");
        }
        assert_eq!(CameraModel::from_id(12), None);
        assert_eq!(CameraModel::from_id(-1), None);
        assert_eq!(CameraModel::from_name("pinhole"), None);
    }

    #[test]
    fn every_model_reads_from_text_with_its_param_count_and_rejects_others() {
        for model in CameraModel::ALL {
            let dir = tempfile::tempdir().unwrap();
            let params = vec!["1"; model.param_count()].join(" ");
            write(dir.path(), "cameras.txt", &format!("7 {model} 10 20 {params}\n"));
            write(dir.path(), "images.txt", "");
            let read = read_model(dir.path()).unwrap();
            assert_eq!(read.cameras[&7].model, model);
            assert_eq!(read.cameras[&7].params.len(), model.param_count());

            write(dir.path(), "cameras.txt", &format!("7 {model} 10 20 {params} 1\n"));
            let message = read_model(dir.path()).unwrap_err().to_string();
            assert!(
                message.contains("cameras.txt line 1:") && message.contains("parameters"),
                "{message}"
            );
        }
    }

    #[test]
    fn text_model_with_comments_and_empty_points2d_lines() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "cameras.txt",
            "# Camera list with one line of data per camera:\n\
             #   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n\
             \n\
             1 SIMPLE_PINHOLE 1919 1079 1847.53 959.5 539.5\r\n\
             2 PINHOLE 100 80 90 91 50 40\n",
        );
        write(
            dir.path(),
            "images.txt",
            "\u{feff}# Image list with two lines of data per image:\n\
             #   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n\
             #   POINTS2D[] as (X, Y, POINT3D_ID)\n\
             4 0.860298 0.0113506 0.344769 0.375358 -7.96417 -4.99505 4.3645 1 03.jpg\n\
             355.968 4.50115 -1 863.644 4.99844 12\n\
             1 1 0 0 0 0 0 0 2 00.jpg\n\
             \n\
             \n\
             # a comment between images\n\
             2 1 0 0 0 1 2 3 2 my photo.jpg\n\
             \n\
             3 1 0 0 0 1 2 3 1 last.jpg",
        );
        write(
            dir.path(),
            "points3D.txt",
            "# 3D point list with one line of data per point:\n\
             708 -2.39675 4.62278 13.2759 57 57 49 0.326014 2 4561 3 3389\n\
             707 1 2 3 255 0 7 0.5\n",
        );
        let model = read_model(dir.path()).unwrap();
        assert_eq!(model.cameras.len(), 2);
        assert_eq!(model.cameras[&1].model, CameraModel::SimplePinhole);
        assert_eq!(model.cameras[&1].pinhole().unwrap(), (1847.53, 1847.53, 959.5, 539.5));
        assert_eq!(model.cameras[&2].pinhole().unwrap(), (90.0, 91.0, 50.0, 40.0));
        let names: Vec<&str> = model.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["00.jpg", "03.jpg", "last.jpg", "my photo.jpg"]);
        let image = &model.images[1];
        assert_eq!(image.id, 4);
        assert_eq!(image.qvec, [0.860298, 0.0113506, 0.344769, 0.375358]);
        assert_eq!(image.tvec, [-7.96417, -4.99505, 4.3645]);
        assert_eq!(image.camera_id, 1);
        assert_eq!(
            model.points,
            [
                Point3D {
                    position: [-2.39675, 4.62278, 13.2759],
                    color: [57, 57, 49]
                },
                Point3D {
                    position: [1.0, 2.0, 3.0],
                    color: [255, 0, 7]
                },
            ]
        );
    }

    #[test]
    fn images_txt_without_points2d_lines_is_an_error_not_a_lost_image() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cameras.txt", "1 PINHOLE 10 10 5 5 5 5\n");
        write(
            dir.path(),
            "images.txt",
            "1 1 0 0 0 0 0 0 1 a.jpg\n2 1 0 0 0 0 0 0 1 b.jpg\n",
        );
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("images.txt line 2: expected the POINTS2D line of image 1"),
            "{message}"
        );
    }

    #[test]
    fn text_errors_name_file_line_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "images.txt", "");
        write(dir.path(), "cameras.txt", "# header\n\n\n1 FOO 10 10 1 2 3\n");
        let message = read_model(dir.path()).unwrap_err().to_string();
        let expected = format!(
            "{} line 4: camera model FOO is unknown",
            dir.path().join("cameras.txt").display()
        );
        assert_eq!(message, expected);

        write(dir.path(), "cameras.txt", "1 PINHOLE 10 ten 1 2 3 4\n");
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(
            message.ends_with("cameras.txt line 1: cannot read HEIGHT from `ten`"),
            "{message}"
        );

        write(dir.path(), "cameras.txt", "1 PINHOLE 10 10 1 2 3 4\n");
        write(dir.path(), "images.txt", "1 1 0 0 0 0 0 0 1\n\n");
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(message.ends_with("images.txt line 1: image 1 has no NAME"), "{message}");

        write(dir.path(), "images.txt", "1 0 0 0 0 0 0 0 1 a.jpg\n\n");
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(message.contains("image 1 (a.jpg) has an invalid pose"), "{message}");

        write(dir.path(), "images.txt", "");
        write(dir.path(), "points3D.txt", "1 0 0 0 256 0 0 0\n");
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(
            message.ends_with("points3D.txt line 1: cannot read R from `256`"),
            "{message}"
        );
    }

    #[test]
    fn binary_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = pinhole_model();
        write_binary(&model, dir.path()).unwrap();
        let read = read_model(dir.path()).unwrap();
        model.images.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(read, model);
        // No temporary files are left behind.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["cameras.bin", "images.bin", "points3D.bin"]);
    }

    #[test]
    fn text_round_trip_and_binary_is_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = pinhole_model();
        model.images.sort_by(|a, b| a.name.cmp(&b.name));
        write_text(&model, dir.path()).unwrap();
        assert_eq!(read_model(dir.path()).unwrap(), model);

        let mut other = model.clone();
        other.points.truncate(1);
        write_binary(&other, dir.path()).unwrap();
        assert_eq!(read_model(dir.path()).unwrap(), other);
    }

    #[test]
    fn non_finite_points_and_camera_parameters_are_errors_in_both_formats() {
        for nan_in in ["points", "cameras"] {
            let mut model = pinhole_model();
            if nan_in == "points" {
                model.points[1].position[0] = f32::NAN;
            } else {
                model.cameras.get_mut(&1).unwrap().params[1] = f64::INFINITY;
            }
            for binary in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                if binary {
                    write_binary(&model, dir.path()).unwrap();
                } else {
                    write_text(&model, dir.path()).unwrap();
                }
                let error = read_model(dir.path()).unwrap_err().to_string();
                let file = if nan_in == "points" { "points3D" } else { "cameras" };
                assert!(error.contains(file) && error.contains("non-finite"), "{error}");
            }
        }
    }

    #[test]
    fn binary_reader_skips_2d_points_and_tracks() {
        let mut images = Vec::new();
        images.extend_from_slice(&2u64.to_le_bytes());
        for (id, name, n) in [(5u32, "x.jpg", 3u64), (6, "y.jpg", 0)] {
            images.extend_from_slice(&id.to_le_bytes());
            for x in [1.0f64, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0] {
                images.extend_from_slice(&x.to_le_bytes());
            }
            images.extend_from_slice(&1u32.to_le_bytes());
            images.extend_from_slice(name.as_bytes());
            images.push(0);
            images.extend_from_slice(&n.to_le_bytes());
            for k in 0..n {
                images.extend_from_slice(&(k as f64).to_le_bytes());
                images.extend_from_slice(&2.5f64.to_le_bytes());
                images.extend_from_slice(&(-1i64).to_le_bytes());
            }
        }
        let mut points = Vec::new();
        points.extend_from_slice(&2u64.to_le_bytes());
        for (id, track) in [(10u64, 4u64), (11, 1)] {
            points.extend_from_slice(&id.to_le_bytes());
            for x in [1.0f64, 2.0, 3.0] {
                points.extend_from_slice(&(x * id as f64).to_le_bytes());
            }
            points.extend_from_slice(&[9, 8, 7]);
            points.extend_from_slice(&0.25f64.to_le_bytes());
            points.extend_from_slice(&track.to_le_bytes());
            for k in 0..track {
                points.extend_from_slice(&(k as u32).to_le_bytes());
                points.extend_from_slice(&(k as u32 * 2).to_le_bytes());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut model = pinhole_model();
        model.cameras.remove(&3);
        model.images.clear();
        model.points.clear();
        write_binary(&model, dir.path()).unwrap();
        fs::write(dir.path().join("images.bin"), &images).unwrap();
        fs::write(dir.path().join("points3D.bin"), &points).unwrap();
        let read = read_model(dir.path()).unwrap();
        assert_eq!(
            read.images.iter().map(|i| (i.id, i.name.as_str())).collect::<Vec<_>>(),
            [(5, "x.jpg"), (6, "y.jpg")]
        );
        assert_eq!(read.images[0].tvec, [1.0, 2.0, 3.0]);
        assert_eq!(read.points[1].position, [11.0, 22.0, 33.0]);
        assert_eq!(read.points[1].color, [9, 8, 7]);
    }

    #[test]
    fn truncated_binary_files_give_errors_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let model = pinhole_model();
        write_binary(&model, dir.path()).unwrap();
        for file in ["cameras.bin", "images.bin", "points3D.bin"] {
            let path = dir.path().join(file);
            let full = fs::read(&path).unwrap();
            for len in 0..full.len() {
                fs::write(&path, &full[..len]).unwrap();
                let message = read_model(dir.path()).unwrap_err().to_string();
                assert!(message.starts_with(&path.display().to_string()), "{message}");
            }
            fs::write(&path, &full).unwrap();
        }
        // A specific message, for the record.
        let path = dir.path().join("images.bin");
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        let message = read_model(dir.path()).unwrap_err().to_string();
        let at = full.len() - 8;
        assert_eq!(
            message,
            format!(
                "{}: truncated at byte {at} (expected 8 more bytes for image 1 (sub dir/b c.png))",
                path.display()
            )
        );
    }

    #[test]
    fn absurd_counts_are_rejected_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        write_binary(&pinhole_model(), dir.path()).unwrap();
        let path = dir.path().join("points3D.bin");
        let mut bytes = fs::read(&path).unwrap();
        bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(message.contains(&format!("claims {} points", u64::MAX)), "{message}");

        // A huge 2D point count inside an image record.
        let path = dir.path().join("images.bin");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 56]);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(b"a\0");
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(message.contains("2D points of image 1 (a)"), "{message}");
    }

    #[test]
    fn unknown_camera_is_reported_with_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = pinhole_model();
        model.images.push(ColmapImage {
            id: 12,
            qvec: [1.0, 0.0, 0.0, 0.0],
            tvec: [0.0; 3],
            camera_id: 7,
            name: "IMG_0012.JPG".into(),
        });
        write_binary(&model, dir.path()).unwrap();
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: image 12 (IMG_0012.JPG) refers to camera 7 which is not in {}",
                dir.path().join("images.bin").display(),
                dir.path().join("cameras.bin").display()
            )
        );
    }

    #[test]
    fn unknown_binary_model_id_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let message = read_model(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(message.ends_with("nope: folder not found"), "{message}");
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(message.contains("no COLMAP model here"), "{message}");
        write_binary(&pinhole_model(), dir.path()).unwrap();
        fs::remove_file(dir.path().join("images.bin")).unwrap();
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(message.contains("found only cameras.bin"), "{message}");

        write_binary(&pinhole_model(), dir.path()).unwrap();
        let path = dir.path().join("cameras.bin");
        let mut bytes = fs::read(&path).unwrap();
        bytes[12..16].copy_from_slice(&42i32.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let message = read_model(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("camera 1 (at byte 8) has unknown camera model id 42"),
            "{message}"
        );

        // points3D is optional.
        write_binary(&pinhole_model(), dir.path()).unwrap();
        fs::remove_file(dir.path().join("points3D.bin")).unwrap();
        assert!(read_model(dir.path()).unwrap().points.is_empty());
    }

    #[test]
    fn distortion_is_an_error_unless_it_is_exactly_zero() {
        let camera = |model: CameraModel, params: Vec<f64>| ColmapCamera {
            id: 3,
            model,
            width: 10,
            height: 10,
            params,
        };
        let err = camera(CameraModel::OpenCv, vec![80.0, 81.0, 5.0, 6.0, 0.1, 0.0, 0.0, 0.0])
            .pinhole()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "camera 3 uses the OPENCV model with lens distortion; undistort the images first (e.g. `colmap image_undistorter`)"
        );
        assert!(camera(CameraModel::SimpleRadial, vec![80.0, 5.0, 6.0, 1e-9])
            .pinhole()
            .is_err());

        assert_eq!(
            camera(CameraModel::OpenCv, vec![80.0, 81.0, 5.0, 6.0, 0.0, 0.0, 0.0, -0.0])
                .pinhole()
                .unwrap(),
            (80.0, 81.0, 5.0, 6.0)
        );
        assert_eq!(
            camera(CameraModel::SimpleRadial, vec![80.0, 5.0, 6.0, 0.0])
                .pinhole()
                .unwrap(),
            (80.0, 80.0, 5.0, 6.0)
        );
        assert_eq!(
            camera(CameraModel::Radial, vec![80.0, 5.0, 6.0, 0.0, 0.0])
                .pinhole()
                .unwrap(),
            (80.0, 80.0, 5.0, 6.0)
        );
        assert_eq!(
            camera(
                CameraModel::FullOpenCv,
                [vec![1.0, 2.0, 3.0, 4.0], vec![0.0; 8]].concat()
            )
            .pinhole()
            .unwrap(),
            (1.0, 2.0, 3.0, 4.0)
        );
        assert_eq!(
            camera(CameraModel::Fov, vec![1.0, 2.0, 3.0, 4.0, 0.0])
                .pinhole()
                .unwrap(),
            (1.0, 2.0, 3.0, 4.0)
        );

        let err = camera(
            CameraModel::OpenCvFisheye,
            vec![80.0, 81.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0],
        )
        .pinhole()
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("camera 3 uses the OPENCV_FISHEYE model with a fisheye projection;"),
            "{err}"
        );

        for model in CameraModel::ALL {
            // Wrong parameter counts (possible for hand-built cameras) are errors, not index panics.
            assert!(camera(model, vec![1.0; 2]).pinhole().is_err());
        }
        assert!(camera(CameraModel::Pinhole, vec![0.0, 1.0, 2.0, 3.0])
            .pinhole()
            .is_err());
        assert!(camera(CameraModel::Pinhole, vec![1.0, 1.0, f64::NAN, 3.0])
            .pinhole()
            .is_err());
    }

    #[test]
    fn colmap_pose_convention_puts_the_camera_at_minus_rt_t() {
        // Rotation world->camera R from a unit quaternion, camera at world position p: t = -R p.
        let q = glam::DQuat::from_euler(glam::EulerRot::YXZ, 0.7, -0.3, 0.2);
        let p = glam::DVec3::new(1.0, -2.0, 3.5);
        let t = -(q * p);
        let image = ColmapImage {
            id: 1,
            qvec: [q.w, q.x, q.y, q.z],
            tvec: t.to_array(),
            camera_id: 1,
            name: "a.jpg".into(),
        };
        let camera = Camera::from_colmap(
            &image.name,
            image.qvec,
            image.tvec,
            (640, 480),
            (500.0, 500.0, 320.0, 240.0),
        );
        assert!(
            (camera.position().as_dvec3() - p).length() < 1e-5,
            "{:?}",
            camera.position()
        );
        // The camera looks along its +z axis: a world point straight ahead maps to positive camera z.
        let ahead = p + q.inverse() * glam::DVec3::Z * 2.0;
        let in_camera = camera.camera_from_world().transform_point3(ahead.as_vec3());
        assert!(
            (in_camera - glam::Vec3::new(0.0, 0.0, 2.0)).length() < 1e-4,
            "{in_camera:?}"
        );
    }

    /// The sample scene, once it has been fetched into `assets/maupertuis` (Difix3D layout).
    #[test]
    fn reads_the_maupertuis_sample_when_present() {
        let dir = crate::repo_root().join("assets/maupertuis/colmap/sparse/0");
        if !dir.is_dir() {
            eprintln!("skipping: {} is not there", dir.display());
            return;
        }
        let model = read_model(&dir).unwrap();
        assert_eq!(model.cameras.len(), 1);
        let camera = model.cameras.values().next().unwrap();
        assert_eq!(
            (camera.model, camera.width, camera.height),
            (CameraModel::SimplePinhole, 1919, 1079)
        );
        let names: Vec<&str> = model.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["00.jpg", "01.jpg", "02.jpg", "03.jpg"]);
        assert_eq!(model.points.len(), 1039);

        let copy = tempfile::tempdir().unwrap();
        write_binary(&model, copy.path()).unwrap();
        assert_eq!(read_model(copy.path()).unwrap(), model);
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        write_binary(&pinhole_model(), dir.path()).unwrap();
        for file in ["cameras.bin", "images.bin", "points3D.bin"] {
            let path = dir.path().join(file);
            let full = fs::read(&path).unwrap();
            for i in 0..full.len() {
                for value in [0x00, 0x7f, 0xff] {
                    let mut bytes = full.clone();
                    bytes[i] = value;
                    fs::write(&path, &bytes).unwrap();
                    let _ = read_model(dir.path());
                }
            }
            fs::write(&path, &full).unwrap();
        }

        let dir = tempfile::tempdir().unwrap();
        write_text(&pinhole_model(), dir.path()).unwrap();
        for file in ["cameras.txt", "images.txt", "points3D.txt"] {
            let path = dir.path().join(file);
            let full = fs::read_to_string(&path).unwrap();
            for (i, _) in full.char_indices() {
                fs::write(&path, &full[..i]).unwrap();
                let _ = read_model(dir.path());
            }
            fs::write(&path, &full).unwrap();
        }
    }
}
