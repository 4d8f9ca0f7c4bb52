//! The live post-render fix: a worker thread that owns a Difix model and fixes the newest frame it is
//! given. The renderer never waits for it: frames go over a one-slot channel where a new frame replaces
//! one that was not picked up yet (latest wins), and fixed frames come back as events. On the wgpu
//! backend the worker can share the renderer's device, and frames then stay on the GPU
//! ([`gpu_frame`]). The worker also looks up and decodes each frame's reference photo, so the
//! renderer never waits on a file. [`session::LiveFixSession`] drives a worker for the viewer and
//! `bench live` alike.

pub mod gpu_frame;
pub mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use image::RgbImage;

use crate::data::Camera;
use crate::difix::images::SizePolicy;
use crate::difix::Difix;
use crate::nn::backend::{run_on, BackendKind, Precision, WithBackend};
use crate::reference_photo::{Reference, ReferenceCache};
use crate::render::burn_bridge::{from_shared, SharedBackend};
use gpu_frame::GpuFrame;

/// A rendered view to fix; `id` lets the caller match results to what it showed.
pub struct Frame {
    pub id: u64,
    pub image: FrameImage,
    /// The photo that guides the fix, if any.
    pub reference: Option<FrameReference>,
    /// The working resolution (the fixed frame comes back at the frame's own size).
    pub policy: SizePolicy,
}

/// The photo that guides a frame's fix.
pub enum FrameReference {
    /// Already decoded (shared: the same photo usually guides many frames).
    Image(Arc<RgbImage>),
    /// The photo `choice` picks for `camera`, looked up and decoded on the worker (which reads each
    /// photo once). A photo that cannot be read is reported as a [`FixEvent::Error`] and the frame is
    /// fixed without one.
    Pick { choice: Reference, camera: Camera },
}

/// A frame's pixels: read back to the CPU, or still on the GPU (for a worker on the renderer's
/// device).
pub enum FrameImage {
    Cpu(RgbImage),
    Gpu(GpuFrame),
}

impl FrameImage {
    /// (width, height)
    pub fn size(&self) -> (u32, u32) {
        match self {
            FrameImage::Cpu(image) => image.dimensions(),
            FrameImage::Gpu(frame) => (frame.width, frame.height),
        }
    }
}

pub enum FixEvent {
    /// The model is loaded and the worker waits for frames.
    Ready,
    Fixed {
        id: u64,
        image: RgbImage,
        millis: f64,
    },
    /// Loading or fixing failed; after a load error the worker has stopped.
    Error(String),
}

pub struct LiveFixerOptions {
    pub model: PathBuf,
    pub backend: BackendKind,
    pub precision: Precision,
    pub prompt: String,
    /// burn's handle to the renderer's device ([`crate::render::GpuContext::burn_device`]): with the
    /// wgpu backend at fp32, the worker runs there and takes [`FrameImage::Gpu`] frames.
    pub shared: Option<burn::backend::wgpu::WgpuDevice>,
}

impl LiveFixerOptions {
    /// Whether the worker will run on the renderer's device.
    pub fn shares_device(&self) -> bool {
        self.shared.is_some() && self.backend == BackendKind::Wgpu && self.precision == Precision::Fp32
    }
}

pub struct LiveFixer {
    slot: LatestSlot<Frame>,
    events: Receiver<FixEvent>,
    /// The worker runs on the renderer's device and takes [`FrameImage::Gpu`] frames.
    shares_device: bool,
}

/// A one-item channel whose sender replaces an item that was not taken yet.
struct LatestSlot<T> {
    tx: Sender<T>,
    /// A second receiving end, used only to throw a stale item away.
    stale: Receiver<T>,
}

impl<T> LatestSlot<T> {
    fn new() -> (Self, Receiver<T>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (Self { tx, stale: rx.clone() }, rx)
    }

    fn submit(&self, item: T) {
        let mut item = item;
        loop {
            match self.tx.try_send(item) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    let _ = self.stale.try_recv();
                    item = back;
                }
            }
        }
    }
}

impl LiveFixer {
    /// Starts the worker; the model loads in the background (watch for [`FixEvent::Ready`]).
    pub fn spawn(options: LiveFixerOptions) -> Self {
        let (slot, frame_rx) = LatestSlot::new();
        let (event_tx, events) = crossbeam_channel::unbounded();
        let shares_device = options.shares_device();
        std::thread::Builder::new()
            .name("difix-live".into())
            .spawn(move || {
                let job = Worker {
                    options,
                    frames: frame_rx,
                    events: event_tx.clone(),
                };
                match job.options.shared.clone() {
                    Some(device) if shares_device => job.run::<SharedBackend>(device),
                    _ => {
                        if let Err(e) = run_on(job.options.backend, job.options.precision, job) {
                            let _ = event_tx.send(FixEvent::Error(e.to_string()));
                        }
                    }
                }
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        Self {
            slot,
            events,
            shares_device,
        }
    }

    /// Whether frames can be handed over on the GPU ([`FrameImage::Gpu`]).
    pub fn takes_gpu_frames(&self) -> bool {
        self.shares_device
    }

    /// Queues `frame`, replacing a frame that is still waiting.
    pub fn submit(&self, frame: Frame) {
        self.slot.submit(frame);
    }

    pub fn events(&self) -> &Receiver<FixEvent> {
        &self.events
    }
}

struct Worker {
    options: LiveFixerOptions,
    frames: Receiver<Frame>,
    events: Sender<FixEvent>,
}

impl WithBackend for Worker {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) {
        let mut model = match Difix::<B>::load(&self.options.model, None, &device) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.events.send(FixEvent::Error(e.to_string()));
                return;
            }
        };
        let _ = self.events.send(FixEvent::Ready);
        let mut references = ReferenceCache::default();
        // Ends when the LiveFixer (the only sender) is dropped.
        while let Ok(frame) = self.frames.recv() {
            let start = Instant::now();
            let reference = match &frame.reference {
                None => None,
                Some(FrameReference::Image(image)) => Some(&**image),
                Some(FrameReference::Pick { choice, camera }) => match references.for_camera(choice, camera) {
                    Ok(image) => image,
                    Err(e) => {
                        if self.events.send(FixEvent::Error(e.to_string())).is_err() {
                            return;
                        }
                        None
                    }
                },
            };
            let fixed = match &frame.image {
                FrameImage::Cpu(image) => model.fix_image(image, reference, frame.policy, &self.options.prompt),
                FrameImage::Gpu(gpu) => {
                    let (w, h) = frame.policy.working_size(gpu.width, gpu.height);
                    match gpu.to_input(w, h).map(from_shared::<B, 4>) {
                        Err(e) => Err(crate::difix::DifixError::Backend(e.to_string())),
                        Ok(Some(input)) => model
                            .fix_tensor_image(input, reference, &self.options.prompt)
                            .map(|fixed| crate::difix::images::resize(&fixed, gpu.width, gpu.height)),
                        Ok(None) => Err(crate::difix::DifixError::Backend(
                            "a GPU frame reached a worker that does not share the renderer's device".into(),
                        )),
                    }
                }
            };
            let event = match fixed {
                Ok(image) => FixEvent::Fixed {
                    id: frame.id,
                    image,
                    millis: start.elapsed().as_secs_f64() * 1e3,
                },
                Err(e) => FixEvent::Error(format!("frame {}: {e}", frame.id)),
            };
            if self.events.send(event).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LatestSlot;

    #[test]
    fn the_newest_item_replaces_a_waiting_one() {
        let (slot, rx) = LatestSlot::new();
        for i in 1..=3 {
            slot.submit(i);
        }
        assert_eq!(rx.try_recv(), Ok(3));
        assert!(rx.try_recv().is_err());
        slot.submit(4);
        assert_eq!(rx.try_recv(), Ok(4));
        drop(rx);
        slot.submit(5); // a stopped worker is not an error for the renderer
    }
}
