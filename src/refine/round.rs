//! One round of pseudo ground truth: render the novel cameras, fix each render with Difix (reference:
//! the nearest training photo by pose distance), and keep the fixed image with its mask
//! (`alpha > 0.5`, applied to both render and target in the loss). Every round is saved for
//! inspection as the reference does: `round_STEP/{pred,fixed,ref,alpha}/NAME.png` and `cameras.json`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use image::{GrayImage, RgbImage};

use crate::data::{Camera, Dataset};
use crate::difix::images::SizePolicy;
use crate::difix::pipeline::DEFAULT_PROMPT;
use crate::difix::{Difix, DifixError};
use crate::image_io::{self, ImageError};
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
    dataset: &Dataset,
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
    let mut views = Vec::with_capacity(cameras.len());
    for camera in cameras {
        let rgba = renderer.render_image(splats, camera, &RenderOptions::default())?;
        let (w, h) = (camera.width, camera.height);
        let pred = RgbImage::from_fn(w, h, |x, y| {
            let i = 4 * (y * w + x) as usize;
            image::Rgb([0, 1, 2].map(|c| image_io::quantize(rgba[i + c])))
        });
        let alpha = GrayImage::from_fn(w, h, |x, y| {
            image::Luma([image_io::quantize(rgba[4 * (y * w + x) as usize + 3])])
        });
        let reference = match dataset.nearest_train_view(camera) {
            Some(view) => Some(
                image::open(&view.image_path)
                    .map_err(|e| RoundError::File {
                        path: view.image_path.clone(),
                        message: format!("cannot read the reference photo: {e}"),
                    })?
                    .to_rgb8(),
            ),
            None => None,
        };
        let fixed = model.fix_image(&pred, reference.as_ref(), SizePolicy::Native, DEFAULT_PROMPT)?;
        let name = format!("{}.png", camera.name);
        image_io::save_png(&pred, &dir.join("pred").join(&name))?;
        image_io::save_png(&fixed, &dir.join("fixed").join(&name))?;
        if let Some(r) = &reference {
            image_io::save_png(r, &dir.join("ref").join(&name))?;
        }
        let alpha_path = dir.join("alpha").join(&name);
        image_io::write_atomic(&alpha_path, |tmp| {
            alpha
                .save_with_format(tmp, image::ImageFormat::Png)
                .map_err(|e| e.to_string())
        })?;
        let mask = rgba.chunks_exact(4).map(|p| p[3] > 0.5).collect();
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
