//! One round of pseudo ground truth: render the novel cameras, fix each render with Difix (reference:
//! the nearest training photo by pose distance), and keep the fixed image with its mask
//! (`alpha > 0.5`, applied to both render and target in the loss). Every round is saved for
//! inspection as the reference does: `round_STEP/{pred,fixed,ref,alpha}/NAME.png` and `cameras.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use image::{GrayImage, RgbImage};

use crate::data::{Camera, Dataset};
use crate::difix::images::SizePolicy;
use crate::difix::pipeline::DEFAULT_PROMPT;
use crate::difix::{Difix, DifixError};
use crate::image_io::{self, ImageError};
use crate::record::{RecordError, Reference, ReferenceCache};
use crate::render::{GpuError, RenderOptions};
use crate::scene::Splats;
use crate::train::diff_render::SplatRenderer;

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Difix(#[from] DifixError),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A reference photo that cannot be read.
    #[error(transparent)]
    Reference(#[from] RecordError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// A fixed novel view used as pseudo ground truth.
#[derive(Clone, Debug)]
pub struct PseudoView {
    pub camera: Camera,
    pub fixed: RgbImage,
    /// Pixels where the render's alpha exceeded 0.5.
    pub mask: Vec<bool>,
}

/// Renders, fixes and saves the novel `cameras` of the round at `step` under `out`.
pub fn fix_novel_views<B: Backend>(
    renderer: &SplatRenderer,
    splats: &Splats,
    cameras: &[Camera],
    dataset: &Arc<Dataset>,
    model: &mut Difix<B>,
    step: usize,
    out: &Path,
) -> Result<Vec<PseudoView>, RoundError> {
    let dir = out.join(format!("round_{step:06}"));
    for sub in ["pred", "fixed", "ref", "alpha"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|e| RoundError::File {
            path: path.clone(),
            message: format!("cannot create the folder: {e}"),
        })?;
    }
    let nearest = Reference::NearestTrain(dataset.clone());
    let mut references = ReferenceCache::default();
    let mut views = Vec::with_capacity(cameras.len());
    for camera in cameras {
        let image = renderer.render_image(splats, camera, &RenderOptions::default())?;
        let pred = image_io::to_rgb8(&image);
        let alpha = GrayImage::from_fn(camera.width, camera.height, |x, y| {
            image::Luma([image_io::quantize(image.rgba[(y * camera.width + x) as usize][3])])
        });
        let reference = references.for_camera(&nearest, camera)?;
        let fixed = model.fix_image(&pred, reference, SizePolicy::Native, DEFAULT_PROMPT)?;
        let name = format!("{}.png", camera.name);
        image_io::save_png(&pred, &dir.join("pred").join(&name))?;
        image_io::save_png(&fixed, &dir.join("fixed").join(&name))?;
        if let Some(r) = reference {
            image_io::save_png(r, &dir.join("ref").join(&name))?;
        }
        let alpha_path = dir.join("alpha").join(&name);
        image_io::write_atomic(&alpha_path, |tmp| {
            alpha
                .save_with_format(tmp, image::ImageFormat::Png)
                .map_err(|e| e.to_string())
        })?;
        let mask = image.rgba.iter().map(|p| p[3] > 0.5).collect();
        views.push(PseudoView {
            camera: camera.clone(),
            fixed,
            mask,
        });
    }
    let json = serde_json::to_string_pretty(cameras).map_err(|e| RoundError::File {
        path: dir.join("cameras.json"),
        message: e.to_string(),
    })?;
    let cameras_path = dir.join("cameras.json");
    image_io::write_atomic(&cameras_path, |tmp| {
        std::fs::write(tmp, json).map_err(|e| e.to_string())
    })?;
    Ok(views)
}
