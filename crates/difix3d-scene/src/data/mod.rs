//! Datasets: COLMAP models, the Difix3D folder layout, cameras and train/eval splits.

pub mod camera;
pub mod colmap;
pub mod layout;
pub mod transforms;
pub mod validate;

pub use camera::Camera;
pub use colmap::{read_model, CameraModel, ColmapCamera, ColmapImage, ColmapModel, Point3D};
pub use layout::{open_dataset, open_dataset_split, Dataset, Split, View, COLMAP_TO_NERFSTUDIO_WORLD};

use std::path::PathBuf;

/// Everything that can go wrong while reading a dataset.
///
/// Each message is one line that names the file or folder and the problem, because these errors end up
/// in a terminal or a GUI dialog where the user has to act on them without a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A binary file ended in the middle of a record.
    #[error("{}: truncated at byte {at} (expected {needed} more bytes for {what})", path.display())]
    Truncated {
        path: PathBuf,
        at: usize,
        needed: usize,
        what: String,
    },

    /// A text file has a line that cannot be read.
    #[error("{} line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A file or folder whose content is readable but wrong (bad counts, unknown ids, duplicates, ...).
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },

    #[error("{}: image {image_id} ({image_name}) refers to camera {camera_id} which is not in {}", images_file.display(), cameras_file.display())]
    UnknownCamera {
        images_file: PathBuf,
        image_id: u32,
        image_name: String,
        camera_id: u32,
        cameras_file: PathBuf,
    },

    /// The renderer only knows pinhole cameras, so distorted images would silently misalign with the splats.
    #[error(
        "camera {camera_id} uses the {model} model with {what}; undistort the images first (e.g. `colmap image_undistorter`)"
    )]
    Distorted {
        camera_id: u32,
        model: CameraModel,
        what: &'static str,
    },

    #[error("camera {camera_id} ({model}): {message}")]
    BadCamera {
        camera_id: u32,
        model: CameraModel,
        message: String,
    },

    #[error("{}: {count} image file(s) missing: {listed} (listed in {})", dir.display(), images_file.display())]
    MissingImages {
        dir: PathBuf,
        count: usize,
        listed: String,
        images_file: PathBuf,
    },

    #[error("{}: cannot read the image size: {source}", path.display())]
    ImageHeader {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    #[error("the data factor must be a positive integer, got {0}")]
    BadFactor(u32),
}
