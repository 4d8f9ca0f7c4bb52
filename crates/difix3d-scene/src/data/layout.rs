//! The Difix3D dataset layout (the one gsplat's COLMAP parser reads):
//!
//! ```text
//! SCENE/colmap/sparse/0/   COLMAP model (also accepted: SCENE/sparse/0/ and SCENE/sparse/)
//! SCENE/images/            full-resolution images, named as in the model
//! SCENE/images_2|4|8/      downscaled copies, picked by the data factor
//! ```
//!
//! Opening a dataset gives one pinhole [`Camera`] per registered image, with intrinsics that match the
//! image file actually on disk, split into train and eval views.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::colmap::{self, ColmapModel};
use super::{Camera, DataError};

/// Where the COLMAP model may live, relative to the scene root, in order of preference.
const SPARSE_DIRS: [&str; 3] = ["colmap/sparse/0", "sparse/0", "sparse"];

/// Extensions tried when a downscaled folder holds the images under another extension (gsplat's
/// downscaling scripts write PNGs next to JPEG originals, for instance).
const OTHER_EXTENSIONS: [&str; 6] = ["png", "jpg", "JPG", "jpeg", "JPEG", "PNG"];

/// Aspect ratios may differ this much (relative) between the COLMAP camera and the image file: rounding
/// of downscaled sizes (1919 / 4 = 479.75) changes it slightly, a different crop changes it a lot.
pub(super) const ASPECT_TOLERANCE: f64 = 0.01;

/// How many missing files an error lists by name.
const LISTED_MISSING: usize = 5;

/// One registered image: its camera (pose and intrinsics at the chosen data factor) and its file.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub camera: Camera,
    pub image_path: PathBuf,
}

/// A scene on disk, read at one data factor.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    pub factor: u32,
    /// Sorted by image name.
    pub train: Vec<View>,
    /// Sorted by image name.
    pub eval: Vec<View>,
    pub points: Vec<colmap::Point3D>,
    /// The turn nerfstudio's dataparsers give this data's world before orienting it (what
    /// `difix3d train --method nerfacto` composes into its frame, as nerfstudio does): for a COLMAP
    /// model, `ColmapDataParser`'s default `assume_colmap_world_coordinate_convention` (y and z
    /// swapped, the new z negated: [`COLMAP_TO_NERFSTUDIO_WORLD`]); for a transforms.json, its
    /// `applied_transform` (the same turn when `ns-process-data` made it; identity without one, or
    /// where it is not a rotation).
    pub nerfstudio_world: glam::Mat3,
}

/// nerfstudio's turn of a COLMAP world (`world' = M · world`): `x' = x`, `y' = z`, `z' = −y`.
pub const COLMAP_TO_NERFSTUDIO_WORLD: glam::Mat3 = glam::Mat3::from_cols(
    glam::Vec3::new(1.0, 0.0, 0.0),
    glam::Vec3::new(0.0, 0.0, -1.0),
    glam::Vec3::new(0.0, 1.0, 0.0),
);

impl Dataset {
    /// Every view: train first, then eval.
    pub fn views(&self) -> impl Iterator<Item = &View> {
        self.train.iter().chain(&self.eval)
    }

    /// The view of the image with this name (as written in the COLMAP model).
    pub fn find(&self, name: &str) -> Option<&View> {
        self.views().find(|view| view.camera.name == name)
    }

    /// The training view whose pose is nearest to `camera`'s by Difix3D's pose distance (centre
    /// distance + rotation angle, see [`super::camera::pose_distance`]): the reference photo Difix3D
    /// pairs with a novel view.
    pub fn nearest_train_view(&self, camera: &Camera) -> Option<&View> {
        let d = |v: &View| super::camera::pose_distance(&v.camera.world_from_camera, &camera.world_from_camera);
        self.train.iter().min_by(|a, b| d(a).total_cmp(&d(b)))
    }

    /// The scene size used to scale learning rates and the navigation speed, as gsplat computes it: the
    /// largest distance of a camera centre from the mean centre, times 1.1. It is 0 with fewer than two
    /// distinct camera positions.
    pub fn scene_extent(&self) -> f32 {
        let count = self.views().count();
        if count == 0 {
            return 0.0;
        }
        let centre = self.views().map(|v| v.camera.position()).sum::<glam::Vec3>() / count as f32;
        let radius = self
            .views()
            .map(|v| v.camera.position().distance(centre))
            .fold(0.0, f32::max);
        radius * 1.1
    }
}

/// How a dataset's views are split into train and eval views.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// difix3d's default: by file name when any name starts with `image_train_` or `image_eval_`
    /// (Difix3D's convention; unmarked names then count as train), otherwise every 8th image in name
    /// order, starting with the first, is an eval view (gsplat's `test_every = 8`).
    #[default]
    Default,
    /// Difix3D's own `--test_every N` (`examples/gsplat/datasets/colmap.py`), which differs from
    /// gsplat's: 0 puts every image in both train and eval; 1 splits by file name (names containing
    /// `_train_` are train, `_eval_` eval, others neither); N > 1 makes every N-th image in name
    /// order, starting with the first, a *training* image and the rest eval.
    Difix3dTestEvery(u32),
}

/// Opens the scene at `root` with images downscaled by `factor` (1 means `images/`, `f > 1` means
/// `images_f/`; any positive factor works if its folder exists), split by [`Split::Default`].
///
/// `root` is a COLMAP scene folder (see the module documentation) or a nerfstudio dataset: a
/// `transforms.json` file, or a folder holding one and no COLMAP model (see [`super::transforms`]).
///
/// Every image of the model must have a file; all missing ones are reported at once. Each image's header
/// is read to size its camera, so an `images_4/` made with other rounding than expected still gets exact
/// intrinsics.
pub fn open_dataset(root: &Path, factor: u32) -> Result<Dataset, DataError> {
    open_dataset_split(root, factor, Split::Default)
}

/// [`open_dataset`] with another split rule.
pub fn open_dataset_split(root: &Path, factor: u32, rule: Split) -> Result<Dataset, DataError> {
    if factor == 0 {
        return Err(DataError::BadFactor(factor));
    }
    let colmap = find_sparse_dir(root);
    if let (Err(_), Some(file)) = (&colmap, super::transforms::transforms_file(root)) {
        let (views, points, applied) = super::transforms::read(&file, factor)?;
        let (train, eval) = split(views, rule);
        return Ok(Dataset {
            root: root.to_path_buf(),
            factor,
            train,
            eval,
            points,
            nerfstudio_world: applied,
        });
    }
    let sparse_dir = colmap?;
    let model = colmap::read_model(&sparse_dir)?;
    if model.images.is_empty() {
        return Err(DataError::Invalid {
            path: colmap::model_file(&sparse_dir, "images"),
            message: "the COLMAP model has no registered images".into(),
        });
    }

    let image_dir = image_dir(root, factor);
    if !image_dir.is_dir() {
        let message = if factor == 1 {
            "image folder not found".to_string()
        } else {
            format!("image folder for data factor {factor} not found (it should hold the images downscaled {factor}x)")
        };
        return Err(DataError::Invalid {
            path: image_dir,
            message,
        });
    }
    let paths = resolve_image_files(&model, &image_dir, colmap::model_file(&sparse_dir, "images"))?;

    let views = build_views(&model, &sparse_dir, paths)?;
    let (train, eval) = split(views, rule);
    Ok(Dataset {
        root: root.to_path_buf(),
        factor,
        train,
        eval,
        points: model.points,
        nerfstudio_world: COLMAP_TO_NERFSTUDIO_WORLD,
    })
}

/// The folder holding the images for a data factor.
pub fn image_dir(root: &Path, factor: u32) -> PathBuf {
    if factor == 1 {
        root.join("images")
    } else {
        root.join(format!("images_{factor}"))
    }
}

/// The first of [`SPARSE_DIRS`] that holds a model (`cameras.bin` or `cameras.txt`).
pub fn find_sparse_dir(root: &Path) -> Result<PathBuf, DataError> {
    if !root.is_dir() {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            message: "scene folder not found".into(),
        });
    }
    SPARSE_DIRS
        .iter()
        .map(|dir| root.join(dir))
        .find(|dir| dir.join("cameras.bin").is_file() || dir.join("cameras.txt").is_file())
        .ok_or_else(|| DataError::Invalid {
            path: root.to_path_buf(),
            message: format!("no COLMAP model found (looked in {})", SPARSE_DIRS.join(", ")),
        })
}

/// The file of every image (in model order), or one error listing the missing ones.
fn resolve_image_files(model: &ColmapModel, image_dir: &Path, images_file: PathBuf) -> Result<Vec<PathBuf>, DataError> {
    let mut paths = Vec::with_capacity(model.images.len());
    let mut missing = Vec::new();
    for image in &model.images {
        match find_image_file(image_dir, &image.name) {
            Some(path) => paths.push(path),
            None => missing.push(image.name.as_str()),
        }
    }
    if missing.is_empty() {
        return Ok(paths);
    }
    let mut listed = missing
        .iter()
        .take(LISTED_MISSING)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > LISTED_MISSING {
        listed.push_str(&format!(" and {} more", missing.len() - LISTED_MISSING));
    }
    Err(DataError::MissingImages {
        dir: image_dir.to_path_buf(),
        count: missing.len(),
        listed,
        images_file,
    })
}

/// `image_dir/name`, or the same stem with another common image extension.
pub(super) fn find_image_file(image_dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = image_dir.join(name);
    if exact.is_file() {
        return Some(exact);
    }
    OTHER_EXTENSIONS
        .iter()
        .map(|ext| exact.with_extension(ext))
        .find(|path| path.is_file())
}

fn build_views(model: &ColmapModel, sparse_dir: &Path, paths: Vec<PathBuf>) -> Result<Vec<View>, DataError> {
    let cameras_file = colmap::model_file(sparse_dir, "cameras");
    let images_file = colmap::model_file(sparse_dir, "images");
    let bad_camera = |message: String| DataError::Invalid {
        path: cameras_file.clone(),
        message,
    };
    // Intrinsics per camera, checked once: one bad camera gives one error, not one per image.
    let mut intrinsics = BTreeMap::new();
    let mut views = Vec::with_capacity(paths.len());
    for (image, image_path) in model.images.iter().zip(paths) {
        // `read_model` has checked this already; kept as an error rather than a panic.
        let camera = model
            .cameras
            .get(&image.camera_id)
            .ok_or_else(|| DataError::UnknownCamera {
                images_file: images_file.clone(),
                image_id: image.id,
                image_name: image.name.clone(),
                camera_id: image.camera_id,
                cameras_file: cameras_file.clone(),
            })?;
        let pinhole = match intrinsics.get(&camera.id) {
            Some(&pinhole) => pinhole,
            None => {
                let pinhole = camera.pinhole().map_err(|e| bad_camera(e.to_string()))?;
                intrinsics.insert(camera.id, pinhole);
                pinhole
            }
        };
        let colmap_camera = Camera::from_colmap(
            &image.name,
            image.qvec,
            image.tvec,
            (camera.width, camera.height),
            pinhole,
        );
        let camera_id = camera.id;
        let camera = fit_to_image(colmap_camera, &image_path, |c| {
            format!(
                "its COLMAP camera {camera_id} in {} is {}x{}; the aspect ratios differ, so it is not a \
                 downscaled copy of the registered image",
                cameras_file.display(),
                c.width,
                c.height
            )
        })?;
        // Values that are finite in COLMAP's f64 but not in our f32 (a focal length of 1e39, a
        // translation of 1e300), or a principal point and size that only go wrong after scaling,
        // end here rather than in a render: the pose is the images file's, the rest the cameras'.
        super::validate::pose(&camera.world_from_camera).map_err(|message| DataError::Invalid {
            path: images_file.clone(),
            message: format!("image {} ({}): {message}", image.id, image.name),
        })?;
        super::validate::camera(&camera)
            .map_err(|m| bad_camera(format!("camera {camera_id} as used by image {}: {m}", image.name)))?;
        views.push(View { camera, image_path });
    }
    Ok(views)
}

/// Scales the camera to the size of the image file, which is what gets rendered and compared against
/// (a data factor's downscaled copy), refusing a different aspect ratio. `mismatch` says where the
/// camera's size came from, completing "the image is WxH but ...".
pub(super) fn fit_to_image(
    camera: Camera,
    path: &Path,
    mismatch: impl FnOnce(&Camera) -> String,
) -> Result<Camera, DataError> {
    let (width, height) = image_size(path)?;
    if (width, height) == (camera.width, camera.height) {
        return Ok(camera);
    }
    let expected = f64::from(camera.width) / f64::from(camera.height);
    let actual = f64::from(width) / f64::from(height.max(1));
    if width == 0 || height == 0 || ((actual - expected) / expected).abs() > ASPECT_TOLERANCE {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: format!("the image is {width}x{height} but {}", mismatch(&camera)),
        });
    }
    Ok(camera.resized(width, height))
}

/// The image size from its header only (decoding hundreds of photos just to size them would take seconds).
pub(super) fn image_size(path: &Path) -> Result<(u32, u32), DataError> {
    let header = |source| DataError::ImageHeader {
        path: path.to_path_buf(),
        source,
    };
    image::ImageReader::open(path)
        .and_then(|reader| reader.with_guessed_format())
        .map_err(|e| header(image::ImageError::IoError(e)))?
        .into_dimensions()
        .map_err(header)
}

/// Which split a file name asks for, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Train,
    Eval,
}

fn split_marker(name: &str) -> Option<Marker> {
    // The marker is on the file name; the directories in a COLMAP name are not part of it.
    let file_name = Path::new(name).file_name()?.to_str()?;
    if file_name.starts_with("image_train_") {
        Some(Marker::Train)
    } else if file_name.starts_with("image_eval_") {
        Some(Marker::Eval)
    } else {
        None
    }
}

/// Splits views (sorted by name) into (train, eval) by `rule`.
fn split(views: Vec<View>, rule: Split) -> (Vec<View>, Vec<View>) {
    let n = match rule {
        Split::Default => return default_split(views),
        Split::Difix3dTestEvery(n) => n as usize,
    };
    let file_name = |v: &View| {
        Path::new(&v.camera.name)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match n {
        0 => (views.clone(), views),
        1 => {
            let train = views
                .iter()
                .filter(|v| file_name(v).contains("_train_"))
                .cloned()
                .collect();
            let eval = views.into_iter().filter(|v| file_name(v).contains("_eval_")).collect();
            (train, eval)
        }
        n => {
            let (train, eval): (Vec<_>, Vec<_>) = views.into_iter().enumerate().partition(|(i, _)| i % n == 0);
            (
                train.into_iter().map(|(_, v)| v).collect(),
                eval.into_iter().map(|(_, v)| v).collect(),
            )
        }
    }
}

/// [`Split::Default`].
fn default_split(views: Vec<View>) -> (Vec<View>, Vec<View>) {
    let markers: Vec<Option<Marker>> = views.iter().map(|v| split_marker(&v.camera.name)).collect();
    let by_name = markers.iter().any(Option::is_some);
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for (index, (view, marker)) in views.into_iter().zip(markers).enumerate() {
        let is_eval = if by_name {
            marker == Some(Marker::Eval)
        } else {
            index.is_multiple_of(8)
        };
        if is_eval {
            eval.push(view);
        } else {
            train.push(view);
        }
    }
    (train, eval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::colmap::{write_binary, write_text, CameraModel, ColmapCamera, ColmapImage, Point3D};
    use std::fs;

    /// A model with one PINHOLE camera (`width`x`height`) and one identity-rotation image per name, the
    /// camera of image i at world position (i, 0, 0).
    fn model(names: &[&str], width: u32, height: u32) -> ColmapModel {
        let mut cameras = BTreeMap::new();
        let params = vec![100.0, 110.0, f64::from(width) / 2.0, f64::from(height) / 2.0];
        cameras.insert(
            1,
            ColmapCamera {
                id: 1,
                model: CameraModel::Pinhole,
                width,
                height,
                params,
            },
        );
        let images = names
            .iter()
            .enumerate()
            .map(|(i, name)| ColmapImage {
                id: i as u32 + 1,
                qvec: [1.0, 0.0, 0.0, 0.0],
                tvec: [-(i as f64), 0.0, 0.0],
                camera_id: 1,
                name: name.to_string(),
            })
            .collect();
        ColmapModel {
            cameras,
            images,
            points: vec![Point3D {
                position: [1.0, 2.0, 3.0],
                color: [4, 5, 6],
            }],
        }
    }

    fn write_image(path: &Path, width: u32, height: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::new(width, height).save(path).unwrap();
    }

    /// A scene in the Difix3D layout with a binary model and full-size PNG images.
    fn scene(names: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        write_binary(&model(names, 16, 12), &root.path().join("colmap/sparse/0")).unwrap();
        for name in names {
            write_image(&root.path().join("images").join(name), 16, 12);
        }
        root
    }

    fn names(views: &[View]) -> Vec<&str> {
        views.iter().map(|v| v.camera.name.as_str()).collect()
    }

    #[test]
    fn opens_the_difix3d_layout() {
        let root = scene(&["b.png", "a.png", "c.png"]);
        let dataset = open_dataset(root.path(), 1).unwrap();
        assert_eq!(dataset.factor, 1);
        assert_eq!(dataset.root, root.path());
        // Every 8th image from the first (sorted by name) is eval.
        assert_eq!(names(&dataset.eval), ["a.png"]);
        assert_eq!(names(&dataset.train), ["b.png", "c.png"]);
        assert_eq!(dataset.views().count(), 3);
        let view = dataset.find("b.png").unwrap();
        assert_eq!(view.image_path, root.path().join("images/b.png"));
        assert_eq!((view.camera.width, view.camera.height), (16, 12));
        assert_eq!(
            (view.camera.fx, view.camera.fy, view.camera.cx, view.camera.cy),
            (100.0, 110.0, 8.0, 6.0)
        );
        assert!(dataset.find("nope.png").is_none());
        assert_eq!(dataset.points.len(), 1);
        // Centres at x = 0, 1, 2 (by id order a, b, c was b=0, a=1, c=2): mean 1, max distance 1.
        assert!(
            (dataset.scene_extent() - 1.1).abs() < 1e-6,
            "{}",
            dataset.scene_extent()
        );
    }

    #[test]
    fn accepts_sparse_0_and_sparse_with_a_text_model() {
        for sparse in ["sparse/0", "sparse"] {
            let root = tempfile::tempdir().unwrap();
            write_text(&model(&["x.png"], 16, 12), &root.path().join(sparse)).unwrap();
            write_image(&root.path().join("images/x.png"), 16, 12);
            let dataset = open_dataset(root.path(), 1).unwrap();
            assert_eq!(dataset.views().count(), 1);
        }
        let root = tempfile::tempdir().unwrap();
        let message = open_dataset(root.path(), 1).unwrap_err().to_string();
        assert!(
            message.contains("no COLMAP model found (looked in colmap/sparse/0, sparse/0, sparse)"),
            "{message}"
        );
    }

    #[test]
    fn every_eighth_image_is_eval_without_name_markers() {
        let names_owned: Vec<String> = (0..17).map(|i| format!("img_{i:02}.png")).collect();
        let refs: Vec<&str> = names_owned.iter().map(String::as_str).collect();
        let root = scene(&refs);
        let dataset = open_dataset(root.path(), 1).unwrap();
        assert_eq!(names(&dataset.eval), ["img_00.png", "img_08.png", "img_16.png"]);
        assert_eq!(dataset.train.len(), 14);
        // `views` is train then eval.
        assert_eq!(dataset.views().last().unwrap().camera.name, "img_16.png");
    }

    #[test]
    fn difix3d_test_every_makes_every_nth_image_a_training_image() {
        let files: Vec<String> = (0..10).map(|i| format!("{i:02}.png")).collect();
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let root = scene(&refs);
        let ds = open_dataset_split(root.path(), 1, Split::Difix3dTestEvery(4)).unwrap();
        // examples/gsplat/datasets/colmap.py: train = indices % 4 == 0, eval = the rest.
        assert_eq!(names(&ds.train), ["00.png", "04.png", "08.png"]);
        assert_eq!(ds.eval.len(), 7);
        let all = open_dataset_split(root.path(), 1, Split::Difix3dTestEvery(0)).unwrap();
        assert_eq!((all.train.len(), all.eval.len()), (10, 10));
        // gsplat's rule (our default) is the other way round.
        let ours = open_dataset(root.path(), 1).unwrap();
        assert_eq!(names(&ours.eval), ["00.png", "08.png"]);

        let root = scene(&[
            "image_eval_000.png",
            "image_train_001.png",
            "other.png",
            "x_train_2.png",
        ]);
        let ds = open_dataset_split(root.path(), 1, Split::Difix3dTestEvery(1)).unwrap();
        assert_eq!(names(&ds.train), ["image_train_001.png", "x_train_2.png"]);
        assert_eq!(names(&ds.eval), ["image_eval_000.png"]);
    }

    #[test]
    fn name_markers_decide_the_split() {
        let root = scene(&[
            "image_train_000.png",
            "image_eval_000.png",
            "image_train_001.png",
            "other.png",
            "sub/image_eval_001.png",
            "image_eval_dir/x.png",
        ]);
        let dataset = open_dataset(root.path(), 1).unwrap();
        assert_eq!(names(&dataset.eval), ["image_eval_000.png", "sub/image_eval_001.png"]);
        assert_eq!(
            names(&dataset.train),
            [
                "image_eval_dir/x.png",
                "image_train_000.png",
                "image_train_001.png",
                "other.png"
            ]
        );
    }

    #[test]
    fn data_factor_folders_scale_the_intrinsics() {
        let root = scene(&["a.jpg", "b.png"]);
        // images_2 holds exact halves; images_4 has rounded sizes and another extension for a.jpg.
        write_image(&root.path().join("images_2/a.jpg"), 8, 6);
        write_image(&root.path().join("images_2/b.png"), 8, 6);
        write_image(&root.path().join("images_4/a.png"), 4, 3);
        write_image(&root.path().join("images_4/b.png"), 4, 3);
        // The model says a.jpg, the full-size file is a PNG saved as a.jpg: the header decides, not the name.
        write_image(&root.path().join("images/tmp.png"), 16, 12);
        fs::rename(root.path().join("images/tmp.png"), root.path().join("images/a.jpg")).unwrap();

        let full = open_dataset(root.path(), 1).unwrap();
        let half = open_dataset(root.path(), 2).unwrap();
        let quarter = open_dataset(root.path(), 4).unwrap();
        assert_eq!(
            half.find("a.jpg").unwrap().image_path,
            root.path().join("images_2/a.jpg")
        );
        assert_eq!(
            quarter.find("a.jpg").unwrap().image_path,
            root.path().join("images_4/a.png")
        );
        for (dataset, scale) in [(&half, 0.5), (&quarter, 0.25)] {
            for name in ["a.jpg", "b.png"] {
                let camera = &dataset.find(name).unwrap().camera;
                let original = &full.find(name).unwrap().camera;
                assert_eq!(camera.width as f32, original.width as f32 * scale);
                assert_eq!(camera.fx, original.fx * scale);
                assert_eq!(camera.fy, original.fy * scale);
                assert_eq!(camera.cx, original.cx * scale);
                assert_eq!(camera.cy, original.cy * scale);
                assert_eq!(camera.world_from_camera, original.world_from_camera);
            }
        }

        let message = open_dataset(root.path(), 8).unwrap_err().to_string();
        assert!(
            message.starts_with(&root.path().join("images_8").display().to_string()),
            "{message}"
        );
        assert!(message.contains("data factor 8"), "{message}");
        assert_eq!(
            open_dataset(root.path(), 0).unwrap_err().to_string(),
            "the data factor must be a positive integer, got 0"
        );
    }

    #[test]
    fn a_different_aspect_ratio_is_an_error_naming_the_file() {
        let root = scene(&["a.png"]);
        write_image(&root.path().join("images_2/a.png"), 8, 8);
        let message = open_dataset(root.path(), 2).unwrap_err().to_string();
        let path = root.path().join("images_2/a.png");
        assert!(
            message.starts_with(&format!(
                "{}: the image is 8x8 but its COLMAP camera 1 in {} is 16x12",
                path.display(),
                root.path().join("colmap/sparse/0/cameras.bin").display()
            )),
            "{message}"
        );
    }

    #[test]
    fn missing_images_are_listed_in_one_error() {
        let names_owned: Vec<String> = (0..8).map(|i| format!("{i}.png")).collect();
        let refs: Vec<&str> = names_owned.iter().map(String::as_str).collect();
        let root = scene(&refs);
        for name in ["1.png", "2.png", "3.png", "4.png", "5.png", "6.png", "7.png"] {
            fs::remove_file(root.path().join("images").join(name)).unwrap();
        }
        let message = open_dataset(root.path(), 1).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: 7 image file(s) missing: 1.png, 2.png, 3.png, 4.png, 5.png and 2 more (listed in {})",
                root.path().join("images").display(),
                colmap::model_file(&root.path().join("colmap/sparse/0"), "images").display()
            )
        );
        fs::remove_dir_all(root.path().join("images")).unwrap();
        let message = open_dataset(root.path(), 1).unwrap_err().to_string();
        assert!(message.ends_with("images: image folder not found"), "{message}");
    }

    #[test]
    fn an_unreadable_image_is_an_error_naming_it() {
        let root = scene(&["a.png"]);
        fs::write(root.path().join("images/a.png"), b"not an image").unwrap();
        let message = open_dataset(root.path(), 1).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "{}: cannot read the image size",
                root.path().join("images/a.png").display()
            )),
            "{message}"
        );
    }

    #[test]
    fn distorted_cameras_are_rejected_and_zero_distortion_accepted() {
        let root = scene(&["a.png"]);
        let sparse = root.path().join("colmap/sparse/0");
        let mut m = model(&["a.png"], 16, 12);
        let camera = m.cameras.get_mut(&1).unwrap();
        camera.model = CameraModel::OpenCv;
        camera.params = vec![100.0, 110.0, 8.0, 6.0, 0.0, 0.0, 0.0, 0.0];
        write_binary(&m, &sparse).unwrap();
        assert_eq!(
            open_dataset(root.path(), 1).unwrap().find("a.png").unwrap().camera.fy,
            110.0
        );

        m.cameras.get_mut(&1).unwrap().params[4] = 0.05;
        write_binary(&m, &sparse).unwrap();
        let message = open_dataset(root.path(), 1).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "{}: camera 1 uses the OPENCV model with lens distortion",
                sparse.join("cameras.bin").display()
            )),
            "{message}"
        );
    }

    #[test]
    fn poses_follow_the_colmap_convention() {
        let root = scene(&["a.png", "b.png"]);
        let dataset = open_dataset(root.path(), 1).unwrap();
        // tvec = -R p with R = identity: image i sits at (i, 0, 0).
        assert_eq!(dataset.find("a.png").unwrap().camera.position(), glam::Vec3::ZERO);
        assert_eq!(dataset.find("b.png").unwrap().camera.position(), glam::Vec3::X);
    }

    /// The sample scene, once fetched into `assets/maupertuis` (Difix3D layout, text model, 4 JPEGs).
    #[test]
    fn opens_the_maupertuis_sample_when_present() {
        let root = crate::repo_root().join("assets/maupertuis");
        if !root.join("colmap/sparse/0").is_dir() || !root.join("images").is_dir() {
            eprintln!("skipping: {} is not there", root.display());
            return;
        }
        let dataset = open_dataset(&root, 1).unwrap();
        let all: Vec<&str> = dataset.views().map(|v| v.camera.name.as_str()).collect();
        assert_eq!(all, ["01.jpg", "02.jpg", "03.jpg", "00.jpg"]);
        assert_eq!(dataset.points.len(), 1039);
        let camera = &dataset.find("00.jpg").unwrap().camera;
        assert!(camera.fx > 0.0 && camera.cx > 0.0 && camera.width > 0);
        assert!(dataset.scene_extent() > 0.0);
    }
}
