//! Reference photos: which photo guides Difix for a frame ([`Reference`]) and a cache that reads each
//! photo from disk once ([`ReferenceCache`]). The live fix, recordings and refinement all choose
//! their references here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use crate::data::{Camera, Dataset};
use crate::image_io;

/// A reference the choice names but that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// [`Reference::NearestTrain`] over a dataset without training views.
    #[error("{}: the dataset has no training view to use as a reference", root.display())]
    NoTrainingView { root: PathBuf },
    #[error("{path}: the reference image: {message}")]
    Unreadable { path: PathBuf, message: String },
}

/// Which photo guides Difix for each frame.
#[derive(Clone, Debug)]
pub enum Reference {
    None,
    /// The same image for every frame.
    Image(PathBuf),
    /// The training photo whose camera is nearest to each frame's (Difix3D+'s choice).
    NearestTrain(Arc<Dataset>),
}

/// Reference photos, read from disk once each.
#[derive(Default)]
pub struct ReferenceCache {
    images: HashMap<PathBuf, RgbImage>,
}

impl ReferenceCache {
    /// The reference image for a frame seen from `camera`, if the choice gives one.
    pub fn for_camera(&mut self, choice: &Reference, camera: &Camera) -> Result<Option<&RgbImage>, ReferenceError> {
        let path = match choice {
            Reference::None => return Ok(None),
            Reference::Image(path) => path.clone(),
            Reference::NearestTrain(dataset) => match dataset.nearest_train_view(camera) {
                Some(view) => view.image_path.clone(),
                None => {
                    return Err(ReferenceError::NoTrainingView {
                        root: dataset.root.clone(),
                    })
                }
            },
        };
        if !self.images.contains_key(&path) {
            let image = load(&path)?;
            self.images.insert(path.clone(), image);
        }
        Ok(self.images.get(&path))
    }
}

/// Reads a reference photo.
pub fn load(path: &Path) -> Result<RgbImage, ReferenceError> {
    image_io::open_rgb(path).map_err(|message| ReferenceError::Unreadable {
        path: path.to_path_buf(),
        message,
    })
}
