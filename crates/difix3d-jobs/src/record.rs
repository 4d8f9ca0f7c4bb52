//! Offline flythroughs: every frame of a camera path rendered (and, optionally, fixed by Difix) at full
//! quality with nothing dropped, written as a PNG sequence or encoded to MP4 by ffmpeg. The CLI's
//! `difix3d record` and the viewer's Record panel both call [`record`].
//!
//! Output layout, for `--out DIR`: `DIR/00000.png ...` (the fixed frames when fixing, else the raw
//! renders), plus `DIR/raw/` with the raw renders when fixing and `DIR/side_by_side/` (raw | fixed) when
//! asked. For `--out NAME.mp4` the same frames are staged in a hidden folder beside the video, encoded
//! (`NAME.mp4`, and `NAME_side_by_side.mp4`) and the staging folder is removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use image::RgbImage;

use crate::camera_path::{CameraPath, PathError};
use crate::data::Camera;
use crate::difix::images::SizePolicy;
use crate::difix::{Difix, DifixError};
use crate::image_io::{self, ImageError};
use crate::nn::backend::{run_on, BackendError, BackendKind, Precision, WithBackend};
use crate::reference_photo::{self, Reference, ReferenceCache, ReferenceError};
use crate::render::{GpuContext, GpuError, GpuSplats, Rasterizer, RenderOptions};
use crate::scene::Splats;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Difix(#[from] DifixError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Encoder(String),
    #[error("{0}")]
    Input(String),
    #[error("cancelled after {0} frame(s); frames already written are kept, no video was written")]
    Cancelled(usize),
}

#[derive(Clone, Debug)]
pub struct FixSettings {
    pub model: PathBuf,
    pub checkpoint: Option<PathBuf>,
    pub backend: BackendKind,
    pub precision: Precision,
    pub prompt: String,
    pub policy: SizePolicy,
    pub reference: Reference,
}

#[derive(Clone, Debug)]
pub struct RecordJob {
    pub splats: Arc<Splats>,
    pub path: CameraPath,
    pub fps: f32,
    pub width: u32,
    pub height: u32,
    pub render: RenderOptions,
    /// Draw with gsplat's antialiased mode (a scene trained with `train --antialiased`).
    pub antialiased: bool,
    pub fix: Option<FixSettings>,
    /// Also write raw | fixed side by side (needs `fix`).
    pub side_by_side: bool,
    /// A folder for PNG frames, or a `.mp4` file.
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub frames: usize,
    /// The folder or video files written.
    pub outputs: Vec<PathBuf>,
    pub seconds: f64,
}

/// True when `out` names a video file rather than a folder of frames.
pub fn is_video(out: &Path) -> bool {
    out.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"))
}

/// Checks that ffmpeg can be run, with the message a user needs when it cannot.
pub fn check_encoder() -> Result<(), RecordError> {
    match Command::new("ffmpeg").arg("-version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(RecordError::Encoder(format!(
            "ffmpeg -version failed ({}); MP4 output needs a working ffmpeg",
            out.status
        ))),
        Err(e) => Err(RecordError::Encoder(format!(
            "MP4 output needs ffmpeg, which cannot be run ({e}): install it (Debian/Ubuntu: \
             `apt-get install ffmpeg`), or write a PNG sequence with --out DIR"
        ))),
    }
}

/// Where the frames of one recording go.
struct Layout {
    main: PathBuf,
    raw: Option<PathBuf>,
    side_by_side: Option<PathBuf>,
    /// The staging folder of a video, removed when the recording ends (however it ends).
    staging: Option<PathBuf>,
}

impl Drop for Layout {
    fn drop(&mut self) {
        if let Some(dir) = &self.staging {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), RecordError> {
    std::fs::create_dir_all(dir).map_err(|e| RecordError::File {
        path: dir.to_path_buf(),
        message: format!("cannot create the output folder: {e}"),
    })
}

impl Layout {
    fn new(job: &RecordJob) -> Result<Self, RecordError> {
        let fixing = job.fix.is_some();
        let root = if is_video(&job.out) {
            let parent = match job.out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(RecordError::File {
                    path: job.out.clone(),
                    message: "the folder to write the video into does not exist".into(),
                });
            }
            let stem = job.out.file_stem().unwrap_or_default().to_string_lossy();
            parent.join(format!(".{stem}.frames.{}", std::process::id()))
        } else {
            job.out.clone()
        };
        Ok(Self {
            main: root.clone(),
            raw: fixing.then(|| root.join("raw")),
            side_by_side: job.side_by_side.then(|| root.join("side_by_side")),
            staging: is_video(&job.out).then_some(root),
        })
    }

    /// Creates the folders; called once everything the frames need (the model too) has loaded, so
    /// a recording that cannot start leaves `--out` as it was.
    fn create(&self) -> Result<(), RecordError> {
        for dir in std::iter::once(&self.main).chain(&self.raw).chain(&self.side_by_side) {
            create_dir(dir)?;
        }
        Ok(())
    }
}

/// Renders (and fixes) every frame of `job`, then encodes the videos. `progress` is called after each
/// frame; setting `cancel` stops at the next frame boundary.
pub fn record(
    job: &RecordJob,
    gpu: &GpuContext,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Summary, RecordError> {
    let start = Instant::now();
    job.path
        .validate()
        .map_err(|m| RecordError::Input(format!("the camera path: {m}")))?;
    let frames = job
        .path
        .checked_frame_count(job.fps)
        .map_err(|m| RecordError::Input(format!("the camera path: {m}")))?;
    for (what, side) in [("width", job.width), ("height", job.height)] {
        crate::validate::image_side(side).map_err(|m| RecordError::Input(format!("the frame {what} {m}")))?;
    }
    crate::render::check_frame_size(&gpu.device, job.width, job.height, false)?;
    let (needed, what) = output_lower_bound(job.width, job.height, job.fix.is_some(), job.side_by_side, frames);
    crate::disk::check_fits(&job.out, needed, &what).map_err(RecordError::Input)?;
    if job.side_by_side && job.fix.is_none() {
        return Err(RecordError::Input(
            "a side-by-side output compares raw and fixed frames: it needs the fix turned on".into(),
        ));
    }
    if let Some(FixSettings {
        reference: Reference::Image(path),
        ..
    }) = &job.fix
    {
        reference_photo::load(path)?;
    }
    if is_video(&job.out) {
        check_encoder()?;
    }
    // Only planned here: the folders appear when the first frame can be rendered.
    let layout = Layout::new(job)?;
    let frames = match &job.fix {
        None => render_frames(job, gpu, &layout, &mut |_, _| Ok(None), progress, cancel)?,
        Some(fix) => run_on(
            fix.backend,
            fix.precision,
            FixedRecording {
                job,
                fix,
                gpu,
                layout: &layout,
                progress,
                cancel,
            },
        )??,
    };
    let mut outputs = Vec::new();
    if is_video(&job.out) {
        encode(&layout.main, job.fps, &job.out)?;
        outputs.push(job.out.clone());
        if let Some(dir) = &layout.side_by_side {
            let stem = job.out.file_stem().unwrap_or_default().to_string_lossy();
            let video = job.out.with_file_name(format!("{stem}_side_by_side.mp4"));
            encode(dir, job.fps, &video)?;
            outputs.push(video);
        }
    } else {
        outputs.push(job.out.clone());
    }
    Ok(Summary {
        frames,
        outputs,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Turns a raw frame (with its camera) into a fixed one, or `None` when not fixing.
type FixFn<'a> = dyn FnMut(&Camera, &RgbImage) -> Result<Option<RgbImage>, RecordError> + 'a;

fn render_frames(
    job: &RecordJob,
    gpu: &GpuContext,
    layout: &Layout,
    fix: &mut FixFn,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<usize, RecordError> {
    let splats = GpuSplats::upload(gpu, &job.splats)?;
    let mut rasterizer = Rasterizer::new(&gpu.device);
    rasterizer.set_antialiased(job.antialiased);
    let total = job.path.frame_count(job.fps);
    layout.create()?;
    progress(Progress { done: 0, total });
    for index in 0..total {
        if cancel.load(Ordering::Relaxed) {
            return Err(RecordError::Cancelled(index));
        }
        let name = format!("{index:05}.png");
        let camera = job.path.frame_camera(index, total, job.width, job.height);
        rasterizer.render(gpu, &splats, &camera, &job.render)?;
        let raw = image_io::to_rgb8(&rasterizer.read_image(gpu)?);
        match fix(&camera, &raw)? {
            None => image_io::save_png(&raw, &layout.main.join(&name))?,
            Some(fixed) => {
                if let Some(dir) = &layout.raw {
                    image_io::save_png(&raw, &dir.join(&name))?;
                }
                if let Some(dir) = &layout.side_by_side {
                    image_io::save_png(&crate::difix::images::side_by_side(&raw, &fixed), &dir.join(&name))?;
                }
                image_io::save_png(&fixed, &layout.main.join(&name))?;
            }
        }
        progress(Progress { done: index + 1, total });
    }
    Ok(total)
}

/// The least bytes `frames` frames of `width` x `height` take on disk (the PNGs of every output:
/// fixed, raw and side by side; a video is staged as PNGs first), and how that figure is made up.
/// The viewer's Record panel shows the same estimate.
pub fn output_lower_bound(width: u32, height: u32, fixing: bool, side_by_side: bool, frames: usize) -> (u64, String) {
    let frame = crate::disk::png_lower_bound(width, height);
    let mut per_frame = frame;
    let mut outputs = 1;
    if fixing {
        per_frame += frame; // raw frames beside the fixed ones
        outputs += 1;
    }
    if side_by_side {
        per_frame += 2 * frame;
        outputs += 1;
    }
    let needed = per_frame.saturating_mul(frames as u64);
    let what = format!(
        "{frames} frame(s) of {width}x{height} in {outputs} output(s) ({} per frame at least)",
        crate::disk::human(per_frame)
    );
    (needed, what)
}

struct FixedRecording<'a> {
    job: &'a RecordJob,
    fix: &'a FixSettings,
    gpu: &'a GpuContext,
    layout: &'a Layout,
    progress: &'a mut dyn FnMut(Progress),
    cancel: &'a AtomicBool,
}

impl WithBackend for FixedRecording<'_> {
    type Output = Result<usize, RecordError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let fix = self.fix;
        let mut model = Difix::<B>::load(&fix.model, fix.checkpoint.as_deref(), &device)?;
        let mut references = ReferenceCache::default();
        let mut fix_frame = |camera: &Camera, raw: &RgbImage| {
            let reference = references.for_camera(&fix.reference, camera)?;
            Ok(Some(model.fix_image(raw, reference, fix.policy, &fix.prompt)?))
        };
        render_frames(
            self.job,
            self.gpu,
            self.layout,
            &mut fix_frame,
            self.progress,
            self.cancel,
        )
    }
}

/// Encodes `dir/%05d.png` to an H.264 MP4 at `fps`, through a temporary file renamed into place.
fn encode(dir: &Path, fps: f32, video: &Path) -> Result<(), RecordError> {
    image_io::write_atomic(video, |tmp| {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-framerate"])
            .arg(format!("{fps}"))
            .arg("-i")
            .arg(dir.join("%05d.png"))
            // H.264 in yuv420p needs even sizes; pad by one pixel where needed.
            .args([
                "-vf",
                "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-crf",
                "18",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
            ])
            .arg(tmp)
            .output()
            .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ffmpeg failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .map_err(RecordError::Image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_outputs_are_recognised_by_extension() {
        assert!(is_video(Path::new("a/fly.mp4")));
        assert!(is_video(Path::new("FLY.MP4")));
        assert!(!is_video(Path::new("frames")));
        assert!(!is_video(Path::new("frames.d/")));
    }
}
