//! The wgpu device the renderer runs on: created headless for the CLI and tests, or borrowed from eframe.

use std::sync::{Arc, OnceLock};

/// Why the GPU could not be used. A missing adapter is bad input (no driver), not a bug.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found ({0}); install a GPU driver, or Mesa's lavapipe CPU driver \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)"
    )]
    NoAdapter(String),
    #[error("the GPU adapter refused to create a device: {0}")]
    Device(String),
    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
    #[error("reading back from the GPU failed: {0}")]
    Map(String),
}

/// A device and its queue. Cloning is cheap; the viewer's and the CLI's contexts are interchangeable.
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Human-readable adapter description for logs and benchmark records.
    pub adapter_name: Arc<str>,
    adapter: wgpu::Adapter,
    /// burn's wgpu backend on this same device, made on first use ([`GpuContext::burn_device`]).
    burn: Arc<OnceLock<burn::backend::wgpu::WgpuDevice>>,
}

impl GpuContext {
    /// Creates a device without a window: any adapter, preferring a real GPU over a CPU one.
    pub fn headless() -> Result<Self, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&Self::device_descriptor(&adapter)))
            .map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(Self::from_parts(adapter, device, queue, &info))
    }

    /// What the device must be created with: the splat kernels need more storage buffers per stage
    /// than WebGPU's defaults, and burn (sharing the device, see [`GpuContext::burn_device`]) expects
    /// the adapter's features.
    pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
        wgpu::DeviceDescriptor {
            label: Some("difix3d"),
            required_features: adapter.features() - wgpu::Features::all_experimental_mask(),
            required_limits: adapter.limits(),
            ..Default::default()
        }
    }

    /// A context on a device made elsewhere (eframe's), with [`GpuContext::device_descriptor`].
    pub fn from_parts(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
    ) -> Self {
        Self {
            device,
            queue,
            adapter_name: describe(info).into(),
            adapter,
            burn: Arc::default(),
        }
    }

    /// burn's wgpu backend on this very device and queue, so tensors and render buffers can be
    /// copied into each other on the GPU (the live fix's frame hand-off). Made once per device.
    pub fn burn_device(&self) -> burn::backend::wgpu::WgpuDevice {
        self.burn
            .get_or_init(|| {
                let setup = burn::backend::wgpu::WgpuSetup {
                    // burn keeps the instance but does not use it for an existing device.
                    instance: wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle()),
                    adapter: self.adapter.clone(),
                    device: self.device.clone(),
                    queue: self.queue.clone(),
                    backend: self.adapter.get_info().backend,
                };
                burn::backend::wgpu::init_device(setup, Default::default())
            })
            .clone()
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Poll(e.to_string()))
    }

    /// Copies `size` bytes of a GPU buffer to the CPU (blocking). Used for results, not per-frame display.
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>, GpuError> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let bytes = slice.get_mapped_range().to_vec();
        staging.unmap();
        Ok(bytes)
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}
