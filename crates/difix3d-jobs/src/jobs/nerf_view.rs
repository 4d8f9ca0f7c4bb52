//! Looking at a nerfacto field in the viewer: a worker thread renders the latest camera it was given,
//! progressively (1/8 of the size first, then 1/4, 1/2 and the full frame), and drops a frame as soon
//! as a newer camera arrives, so a moving view gets coarse frames quickly and a still one sharpens.
//!
//! The field renders on the backend the viewer picks (the CPU backend where the GPU is a CPU
//! implementation such as lavapipe, which runs burn's kernels several times slower than burn's own CPU
//! backend; wgpu on a real GPU), one ray chunk at a time; between chunks the worker checks for a
//! newer camera.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use burn::tensor::backend::Backend;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::camera_path::nerfstudio::{DataparserTransform, NerfstudioError};
use crate::data::Camera;
use crate::nerfacto::{Nerfacto, NerfactoError};
use crate::nn::backend::{run_on_fp32, BackendKind, CpuBackend, WithBackend};

/// The sizes a still view goes through, as divisors of the full frame, coarse first.
pub const LEVELS: [u32; 4] = [8, 4, 2, 1];

/// Rays rendered between checks for a newer camera.
const RAYS_PER_CHUNK: usize = 4096;

/// A nerfacto field opened for viewing.
pub struct NerfScene {
    /// The files it was opened from.
    pub files: NerfFiles,
    pub model: Nerfacto<CpuBackend>,
    /// The run's `dataparser_transforms.json`, when it has one beside the checkpoint: the viewer's
    /// cameras are then in the dataset's frame (so its cameras snap into place) and are moved into the
    /// model's before rendering.
    pub dataparser: Option<DataparserTransform>,
}

#[derive(Debug, thiserror::Error)]
pub enum NerfViewError {
    #[error(transparent)]
    Nerfacto(#[from] NerfactoError),
    #[error(transparent)]
    Transform(#[from] NerfstudioError),
}

/// The files a nerfacto scene was opened from, as a refinement of it reads them again.
#[derive(Clone, Debug, PartialEq)]
pub struct NerfFiles {
    pub checkpoint: PathBuf,
    /// Its `nerfacto.json`, when one was found.
    pub config: Option<PathBuf>,
    /// Its `dataparser_transforms.json`, when one was found.
    pub transforms: Option<PathBuf>,
}

/// Whether `path` names a nerfacto checkpoint: nerfstudio's `step-*.ckpt` (any `.ckpt`), or the
/// `nerfacto.safetensors` of `difix3d train --method nerfacto`.
pub fn is_nerf_checkpoint(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase());
    name.is_some_and(|n| n.ends_with(".ckpt") || (n.starts_with("nerfacto") && n.ends_with(".safetensors")))
}

impl NerfScene {
    /// Opens a nerfacto checkpoint with what sits beside it: `nerfacto.json` (the sizes the checkpoint
    /// does not store; `ns-train nerfacto`'s defaults without it) and `dataparser_transforms.json`.
    /// A nerfstudio run keeps the checkpoint in `nerfstudio_models/`, its transforms one folder up.
    pub fn open(path: &Path) -> Result<Self, NerfViewError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let beside = |name: &str| {
            [dir.join(name), dir.join("..").join(name)]
                .into_iter()
                .find(|p| p.is_file())
        };
        let config = beside("nerfacto.json");
        let model = Nerfacto::open(path, config.as_deref(), &Default::default())?;
        let transforms = beside("dataparser_transforms.json");
        let dataparser = match &transforms {
            Some(file) => Some(DataparserTransform::load(file)?),
            None => None,
        };
        Ok(Self {
            files: NerfFiles {
                checkpoint: path.to_path_buf(),
                config,
                transforms,
            },
            model,
            dataparser,
        })
    }

    /// `camera` (in the dataset's frame when the scene has a dataparser transform) in the model's frame.
    pub fn model_camera(&self, camera: &Camera) -> Camera {
        match &self.dataparser {
            Some(transform) => transform.camera_to_nerfstudio(camera),
            None => camera.clone(),
        }
    }

    /// A camera for opening the scene with: nerfstudio normalises its scenes so the cameras lie in
    /// [-1, 1]^3 around the origin, so this one stands 2 units out on -z of the model's frame looking at
    /// its origin (given back in the dataset's frame when there is a transform).
    pub fn home(&self) -> (glam::Vec3, glam::Vec3) {
        let (eye, target) = (glam::DVec3::new(0.0, 0.0, -2.0), glam::DVec3::ZERO);
        match &self.dataparser {
            Some(t) => (t.point_to_data(eye).as_vec3(), t.point_to_data(target).as_vec3()),
            None => (eye.as_vec3(), target.as_vec3()),
        }
    }
}

/// One rendered frame.
pub struct NerfFrame {
    /// The id the camera was requested with.
    pub id: u64,
    /// The divisor of the requested size it was rendered at (1: full size).
    pub level: u32,
    /// The camera as requested (full size, the viewer's frame).
    pub camera: Camera,
    pub image: image::RgbImage,
}

/// The worker: give it cameras, take frames.
pub struct NerfViewer {
    requests: Sender<(u64, Camera)>,
    frames: Receiver<NerfFrame>,
    /// Set when the viewer drops the worker: it stops at the next chunk.
    closed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NerfViewer {
    /// Starts rendering `scene` on `backend`: the scene's own CPU model, or the same checkpoint loaded
    /// again on the GPU backend (a failure to load there is logged, and the worker stops).
    pub fn spawn(scene: Arc<NerfScene>, backend: BackendKind) -> Self {
        let (requests, inbox) = crossbeam_channel::unbounded::<(u64, Camera)>();
        let (outbox, frames) = crossbeam_channel::unbounded();
        let closed = Arc::new(AtomicBool::new(false));
        let stop = closed.clone();
        let thread = std::thread::Builder::new()
            .name("nerf-view".into())
            .spawn(move || {
                let channels = WorkerChannels {
                    inbox,
                    outbox,
                    closed: stop,
                };
                if backend == BackendKind::Cpu {
                    return worker(&scene.model, &scene, &channels);
                }
                let job = OnBackend {
                    scene: &scene,
                    channels: &channels,
                };
                match run_on_fp32(backend, job) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => log::error!("cannot render the NeRF on {backend}: {e}"),
                    Err(e) => log::error!("cannot render the NeRF on {backend}: {e}"),
                }
            })
            .map_err(|e| log::error!("cannot start the NeRF view thread: {e}"))
            .ok();
        Self {
            requests,
            frames,
            closed,
            thread,
        }
    }

    /// Asks for `camera`; any camera asked for before it is dropped.
    pub fn request(&self, id: u64, camera: Camera) {
        let _ = self.requests.send((id, camera));
    }

    /// The newest frame finished since the last call, if any.
    pub fn latest(&self) -> Option<NerfFrame> {
        self.frames.try_iter().last()
    }

    /// Whether the worker has stopped (it only stops when the viewer drops it, or on a panic).
    pub fn stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// What the worker talks through.
struct WorkerChannels {
    inbox: Receiver<(u64, Camera)>,
    outbox: Sender<NerfFrame>,
    /// Set when the viewer drops the worker.
    closed: Arc<AtomicBool>,
}

/// The worker on a GPU backend, with the scene's checkpoint loaded there.
struct OnBackend<'a> {
    scene: &'a NerfScene,
    channels: &'a WorkerChannels,
}

impl WithBackend for OnBackend<'_> {
    type Output = Result<(), NerfactoError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let files = &self.scene.files;
        let model = Nerfacto::<B>::open(&files.checkpoint, files.config.as_deref(), &device)?;
        worker(&model, self.scene, self.channels);
        Ok(())
    }
}

fn worker<B: Backend>(model: &Nerfacto<B>, scene: &NerfScene, channels: &WorkerChannels) {
    let WorkerChannels { inbox, outbox, closed } = channels;
    let mut next = None;
    loop {
        let (id, camera) = match next.take() {
            Some(request) => request,
            None => match inbox.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        // The newest request wins.
        let (id, camera) = inbox.try_iter().last().unwrap_or((id, camera));
        let model_camera = scene.model_camera(&camera);
        for level in LEVELS {
            let (w, h) = ((camera.width / level).max(1), (camera.height / level).max(1));
            let sized = model_camera.resized(w, h);
            let image = model.render_camera_unless(&sized, RAYS_PER_CHUNK, &|| {
                closed.load(Ordering::Relaxed) || !inbox.is_empty()
            });
            let Some(image) = image else { break };
            let pixels = image.rgb.iter().map(|&v| crate::image_io::quantize(v)).collect();
            let Some(rgb) = image::RgbImage::from_raw(w, h, pixels) else {
                log::error!("nerfacto rendered {} values for a {w}x{h} frame", image.rgb.len());
                break;
            };
            let frame = NerfFrame {
                id,
                level,
                camera: camera.clone(),
                image: rgb,
            };
            if outbox.send(frame).is_err() {
                return;
            }
        }
        match inbox.try_recv() {
            Ok(request) => next = Some(request),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

impl Drop for NerfViewer {
    fn drop(&mut self) {
        // The worker ends at its next chunk (or when it next waits: the request channel closes with
        // this struct); it is not waited for, so the UI never blocks on a render.
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nerf_checkpoints_are_told_by_name() {
        assert!(is_nerf_checkpoint(Path::new(
            "run/nerfstudio_models/step-000029999.ckpt"
        )));
        assert!(is_nerf_checkpoint(Path::new("runs/x/nerfacto.safetensors")));
        assert!(!is_nerf_checkpoint(Path::new("runs/x/checkpoint.safetensors")));
        assert!(!is_nerf_checkpoint(Path::new("scene.ply")));
    }
}
