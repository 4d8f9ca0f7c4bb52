//! One round of pseudo ground truth: render the novel cameras (splats, or any renderer through
//! [`fix_rendered_views`]: the nerfacto variant's NeRF), fix each render with Difix (reference:
//! the nearest training photo by pose distance, or none), and keep the fixed image with its mask.
//! Every round is saved for inspection, and so that a resumed run can reload its pseudo views:
//! `round_STEP/{pred,fixed,ref,alpha}/NAME.png` and `cameras.json`, as the reference script does.
//!
//! The mask follows the reference exactly: the render's alpha is stored as 8 bits by truncation
//! (`(alpha * 255).astype(uint8)`), read back as `/ 255`, and a pixel counts where that exceeds 0.5.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use image::{GrayImage, RgbImage};

use crate::data::Camera;
use crate::difix::images::SizePolicy;
use crate::difix::pipeline::DEFAULT_PROMPT;
use crate::difix::{Difix, DifixError};
use crate::image_io::{self, ImageError};
use crate::reference_photo::{Reference, ReferenceCache, ReferenceError};
use crate::render::diff_render::SplatRenderer;
use crate::render::{GpuError, RenderOptions};
use crate::scene::Splats;

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
    Reference(#[from] ReferenceError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// A fixed novel view used as pseudo ground truth.
#[derive(Clone, Debug)]
pub struct PseudoView {
    pub camera: Camera,
    /// The render Difix fixed (kept for the GUI's raw vs fixed thumbnails).
    pub pred: Arc<RgbImage>,
    pub fixed: Arc<RgbImage>,
    /// The render's alpha as the reference stores it (8 bits, truncated).
    pub alpha: GrayImage,
}

impl PseudoView {
    /// Pixels that count in the loss: stored alpha / 255 > 0.5.
    pub fn mask(&self) -> Vec<bool> {
        self.alpha.as_raw().iter().map(|a| mask_of(*a)).collect()
    }
}

/// The reference's mask rule on one stored alpha value.
pub fn mask_of(alpha: u8) -> bool {
    alpha as f32 / 255.0 > 0.5
}

/// The reference's 8-bit alpha: truncation, not rounding.
pub fn alpha_byte(alpha: f32) -> u8 {
    (alpha.clamp(0.0, 1.0) * 255.0) as u8
}

/// Progress of a refinement round, for the CLI and the GUI.
#[derive(Clone, Debug)]
pub enum RoundEvent {
    Started {
        round: usize,
        step: usize,
        views: usize,
    },
    /// Novel view `done` of `total` is fixed.
    Fixed {
        round: usize,
        done: usize,
        total: usize,
    },
    Done(RoundReport),
}

/// A finished round: where it went, what it cost, and a few raw vs fixed pairs to look at.
#[derive(Clone, Debug)]
pub struct RoundReport {
    pub round: usize,
    pub step: usize,
    pub dir: PathBuf,
    pub views: usize,
    pub render: Duration,
    pub fix: Duration,
    /// (render, fixed) of the first few views.
    pub thumbnails: Vec<(Arc<RgbImage>, Arc<RgbImage>)>,
}

/// How many raw vs fixed pairs a [`RoundReport`] carries.
const THUMBNAILS: usize = 4;

/// The folder of the round at `step` under `out`.
pub fn round_dir(out: &Path, step: usize) -> PathBuf {
    out.join(format!("round_{step:06}"))
}

/// A finished round's pseudo views and its report.
pub struct RoundOutput {
    pub views: Vec<PseudoView>,
    pub report: RoundReport,
}

/// Where a round's views come from and how it reports.
pub struct RoundJob<'a> {
    pub round: usize,
    pub step: usize,
    pub cameras: &'a [Camera],
    pub reference: &'a Reference,
    pub out: &'a Path,
}

/// A novel view as rendered: 8-bit colour and the 8-bit alpha ([`alpha_byte`]).
pub struct RenderedView {
    pub rgb: RgbImage,
    pub alpha: GrayImage,
}

/// Renders, fixes and saves the novel cameras of `job` with the splat rasterizer. `progress` hears
/// each fixed view; `stop` abandons the round between views (returning `Ok(None)`).
pub fn fix_novel_views<B: Backend>(
    renderer: &SplatRenderer,
    splats: &Splats,
    model: &mut Difix<B>,
    job: &RoundJob,
    progress: &mut dyn FnMut(RoundEvent),
    stop: &AtomicBool,
) -> Result<Option<RoundOutput>, RoundError> {
    let mut render = |camera: &Camera| -> Result<RenderedView, RoundError> {
        let image = renderer.render_image(splats, camera, &RenderOptions::default())?;
        let alpha = GrayImage::from_fn(camera.width, camera.height, |x, y| {
            image::Luma([alpha_byte(image.rgba[(y * camera.width + x) as usize][3])])
        });
        Ok(RenderedView {
            rgb: image_io::to_rgb8(&image),
            alpha,
        })
    };
    fix_rendered_views(&mut render, model, job, progress, stop)
}

/// Renders each novel camera of `job` with `render` (any 3D representation), fixes and saves it;
/// what [`fix_novel_views`] does for splats. A round that does not finish leaves no folder behind.
pub fn fix_rendered_views<B: Backend>(
    render: &mut dyn FnMut(&Camera) -> Result<RenderedView, RoundError>,
    model: &mut Difix<B>,
    job: &RoundJob,
    progress: &mut dyn FnMut(RoundEvent),
    stop: &AtomicBool,
) -> Result<Option<RoundOutput>, RoundError> {
    let dir = round_dir(job.out, job.step);
    let result = fix_into(render, model, job, &dir, progress, stop);
    if !matches!(result, Ok(Some(_))) {
        // A round that did not finish is not left behind half-written.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn fix_into<B: Backend>(
    render: &mut dyn FnMut(&Camera) -> Result<RenderedView, RoundError>,
    model: &mut Difix<B>,
    job: &RoundJob,
    dir: &Path,
    progress: &mut dyn FnMut(RoundEvent),
    stop: &AtomicBool,
) -> Result<Option<RoundOutput>, RoundError> {
    // A round saved by an earlier run into the same folder is replaced, not mixed with this one.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| RoundError::File {
            path: dir.to_path_buf(),
            message: format!("cannot replace the earlier round: {e}"),
        })?;
    }
    for sub in ["pred", "fixed", "ref", "alpha"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|e| RoundError::File {
            path: path.clone(),
            message: format!("cannot create the folder: {e}"),
        })?;
    }
    let total = job.cameras.len();
    progress(RoundEvent::Started {
        round: job.round,
        step: job.step,
        views: total,
    });
    let mut references = ReferenceCache::default();
    let mut views = Vec::with_capacity(total);
    let (mut render_time, mut fix_time) = (Duration::ZERO, Duration::ZERO);
    for (i, camera) in job.cameras.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let t = Instant::now();
        let RenderedView { rgb: pred, alpha } = render(camera)?;
        render_time += t.elapsed();
        let t = Instant::now();
        let reference = references.for_camera(job.reference, camera)?;
        let fixed = model.fix_image(&pred, reference, SizePolicy::Native, DEFAULT_PROMPT)?;
        fix_time += t.elapsed();
        let name = format!("{}.png", camera.name);
        image_io::save_png(&pred, &dir.join("pred").join(&name))?;
        image_io::save_png(&fixed, &dir.join("fixed").join(&name))?;
        if let Some(r) = reference {
            image_io::save_png(r, &dir.join("ref").join(&name))?;
        }
        save_gray(&alpha, &dir.join("alpha").join(&name))?;
        views.push(PseudoView {
            camera: camera.clone(),
            pred: Arc::new(pred),
            fixed: Arc::new(fixed),
            alpha,
        });
        progress(RoundEvent::Fixed {
            round: job.round,
            done: i + 1,
            total,
        });
    }
    let cameras_path = dir.join("cameras.json");
    let json = serde_json::to_string_pretty(job.cameras).map_err(|e| RoundError::File {
        path: cameras_path.clone(),
        message: e.to_string(),
    })?;
    image_io::write_atomic(&cameras_path, |tmp| {
        std::fs::write(tmp, json).map_err(|e| e.to_string())
    })?;
    let report = RoundReport {
        round: job.round,
        step: job.step,
        dir: dir.to_path_buf(),
        views: views.len(),
        render: render_time,
        fix: fix_time,
        thumbnails: views
            .iter()
            .take(THUMBNAILS)
            .map(|v| (v.pred.clone(), v.fixed.clone()))
            .collect(),
    };
    Ok(Some(RoundOutput { views, report }))
}

fn save_gray(image: &GrayImage, path: &Path) -> Result<(), ImageError> {
    image_io::write_atomic(path, |tmp| {
        image
            .save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| e.to_string())
    })
}

/// Reads a saved round back (cameras, renders, fixed images, alphas), e.g. to resume a run.
pub fn load_round(dir: &Path) -> Result<Vec<PseudoView>, RoundError> {
    let err = |path: &Path, message: String| RoundError::File {
        path: path.to_path_buf(),
        message,
    };
    let cameras_path = dir.join("cameras.json");
    let text = std::fs::read_to_string(&cameras_path).map_err(|e| err(&cameras_path, format!("cannot read: {e}")))?;
    let cameras: Vec<Camera> =
        serde_json::from_str(&text).map_err(|e| err(&cameras_path, format!("not a list of cameras: {e}")))?;
    for camera in &cameras {
        crate::data::validate::camera(camera)
            .map_err(|m| err(&cameras_path, format!("camera {}: {m}", camera.name)))?;
    }
    let open = |sub: &str, camera: &Camera| -> Result<image::DynamicImage, RoundError> {
        let path = dir.join(sub).join(format!("{}.png", camera.name));
        let image = image_io::open(&path).map_err(|e| err(&path, e))?;
        if image.width() != camera.width || image.height() != camera.height {
            return Err(err(
                &path,
                format!(
                    "{}x{}, but its camera is {}x{}",
                    image.width(),
                    image.height(),
                    camera.width,
                    camera.height
                ),
            ));
        }
        Ok(image)
    };
    cameras
        .into_iter()
        .map(|camera| {
            Ok(PseudoView {
                pred: Arc::new(open("pred", &camera)?.to_rgb8()),
                fixed: Arc::new(open("fixed", &camera)?.to_rgb8()),
                alpha: open("alpha", &camera)?.to_luma8(),
                camera,
            })
        })
        .collect()
}
