//! The wgpu device the renderer runs on: created headless for the CLI and tests, or borrowed from eframe.

use std::sync::{Arc, Mutex, OnceLock};

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
    /// One buffer the work needs is larger than the device can bind or allocate.
    #[error(
        "{what} needs {bytes} bytes in one GPU buffer, but this GPU allows at most {limit} bytes \
         ({limit_name}); {hint}"
    )]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        limit_name: &'static str,
        hint: String,
    },
    #[error("the GPU ran out of memory while {operation}: {message}")]
    OutOfMemory { operation: String, message: String },
    #[error("the GPU refused {operation}: {message}")]
    Refused { operation: String, message: String },
    #[error("the GPU device was lost ({0}); restart the program (a driver reset or a GPU removed)")]
    Lost(String),
}

/// The errors wgpu reports outside any error scope (its default handler panics), kept until the next
/// [`GpuContext::wait`] or [`GpuContext::scoped`] call turns them into a [`GpuError`]; and whether the
/// device is lost, which every later call reports (nothing may touch a lost device: wgpu panics on
/// some uses of its buffers).
#[derive(Clone, Default)]
struct ErrorSink {
    uncaptured: Arc<Mutex<Option<GpuError>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl ErrorSink {
    fn install(&self, device: &wgpu::Device) {
        let uncaptured = self.uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            log::error!("wgpu: {error}");
            let mut slot = uncaptured.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| from_wgpu("GPU work", error));
        }));
        let lost = self.lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            log::error!("wgpu device lost ({reason:?}): {message}");
            let message = if message.is_empty() {
                format!("{reason:?}")
            } else {
                message
            };
            *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        });
    }

    fn take(&self) -> Result<(), GpuError> {
        if let Some(message) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(GpuError::Lost(message));
        }
        match self.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn from_wgpu(operation: &str, error: wgpu::Error) -> GpuError {
    match error {
        wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory {
            operation: operation.to_string(),
            message: error.to_string(),
        },
        other => GpuError::Refused {
            operation: operation.to_string(),
            message: format!("{other}"),
        },
    }
}

/// The largest buffer the device can bind to one shader binding, and the largest it can allocate.
pub fn binding_limit(device: &wgpu::Device) -> u64 {
    let limits = device.limits();
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
}

/// An error unless a buffer of `bytes` fits in one binding of `device`.
pub fn check_binding(
    device: &wgpu::Device,
    what: impl FnOnce() -> String,
    bytes: u64,
    hint: &str,
) -> Result<(), GpuError> {
    check_items(device, what, bytes, 1, |_| hint.to_string())
}

/// An error unless `count` items of `bytes_each` bytes (splats, pixels) fit in one binding of `device`;
/// `hint` is told how many would fit. Nothing is formatted unless it fails (frames check this).
pub fn check_items(
    device: &wgpu::Device,
    what: impl FnOnce() -> String,
    count: u64,
    bytes_each: u64,
    hint: impl FnOnce(u64) -> String,
) -> Result<(), GpuError> {
    let limit = binding_limit(device);
    let bytes = count.saturating_mul(bytes_each);
    if bytes > limit {
        return Err(GpuError::TooLarge {
            what: what(),
            bytes,
            limit,
            limit_name: "max_storage_buffer_binding_size",
            hint: hint(limit / bytes_each),
        });
    }
    Ok(())
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
    errors: ErrorSink,
}

impl GpuContext {
    /// Creates a device without a window: any adapter, preferring a real GPU over a CPU one.
    pub fn headless() -> Result<Self, GpuError> {
        Self::headless_with_limits(|_| {})
    }

    /// [`GpuContext::headless`] with the adapter's limits changed by `adjust` first (lowered, to stand
    /// in for a smaller GPU: the tests of scenes that outgrow a binding run on lavapipe this way).
    pub fn headless_with_limits(adjust: impl FnOnce(&mut wgpu::Limits)) -> Result<Self, GpuError> {
        // Vulkan/Metal/DX12 first; OpenGL only when none of them has an adapter (probing EGL prints
        // noise on machines without a display, and GL lacks what the rasterizer needs on most drivers).
        // WGPU_BACKEND chooses explicitly.
        let request = |backends: Option<wgpu::Backends>| {
            let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
            if let (Some(backends), None) = (backends, std::env::var_os("WGPU_BACKEND")) {
                descriptor.backends = backends;
            }
            let instance = wgpu::Instance::new(descriptor);
            pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
            }))
        };
        let adapter = request(Some(wgpu::Backends::PRIMARY))
            .or_else(|_| request(None))
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let mut descriptor = Self::device_descriptor(&adapter);
        adjust(&mut descriptor.required_limits);
        let (device, queue) =
            pollster::block_on(adapter.request_device(&descriptor)).map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(Self::from_parts(adapter, device, queue, &info))
    }

    /// What the device must be created with: the splat kernels need more storage buffers per stage
    /// than WebGPU's defaults, and burn (sharing the device, see [`GpuContext::burn_device`]) expects
    /// the adapter's features.
    pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
        wgpu::DeviceDescriptor {
            label: Some("difix3d"),
            // Not MAPPABLE_PRIMARY_BUFFERS either (as cubecl leaves it out): on a discrete GPU wgpu
            // warns that it is a performance trap, and we map only MAP_READ | COPY_DST buffers.
            required_features: adapter.features()
                - wgpu::Features::all_experimental_mask()
                - wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
            required_limits: adapter.limits(),
            ..Default::default()
        }
    }

    /// Whether the adapter is a CPU implementation (lavapipe, llvmpipe, WARP): pixels are
    /// expensive there and triangle setup cheap, the other way round from a real GPU.
    pub fn is_cpu_adapter(&self) -> bool {
        self.adapter.get_info().device_type == wgpu::DeviceType::Cpu
    }

    /// A context on a device made elsewhere (eframe's), with [`GpuContext::device_descriptor`].
    pub fn from_parts(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
    ) -> Self {
        let errors = ErrorSink::default();
        errors.install(&device);
        Self {
            device,
            queue,
            adapter_name: describe(info).into(),
            adapter,
            burn: Arc::default(),
            errors,
        }
    }

    /// Runs `f` (allocations, bind groups, pipelines, submissions on this device) inside wgpu error
    /// scopes, so a validation error or an out-of-memory is returned as a [`GpuError`] naming
    /// `operation` instead of reaching wgpu's uncaptured-error handler; also reports any earlier error
    /// that escaped a scope (a lost device, say).
    pub fn scoped<T>(&self, operation: &str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        // A device destroyed or lost since the last call reports it on the next poll.
        let _ = self.device.poll(wgpu::PollType::Poll);
        self.errors.take()?;
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let validation = pollster::block_on(validation.pop());
        let memory = pollster::block_on(memory.pop());
        if let Some(error) = memory.or(validation) {
            return Err(from_wgpu(operation, error));
        }
        self.errors.take()?;
        Ok(value)
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
            .map_err(|e| GpuError::Poll(e.to_string()))?;
        self.errors.take()
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
