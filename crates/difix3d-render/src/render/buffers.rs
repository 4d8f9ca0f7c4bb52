//! Growable GPU buffers: the rasterizer's working memory is reused across frames and only reallocated
//! (with headroom) when a frame needs more, so steady-state rendering allocates nothing but uniforms.

use wgpu::util::DeviceExt;

use super::gpu::{check_binding, GpuError};

pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A storage buffer that grows on demand. Tracks its capacity for memory reporting.
#[derive(Default)]
pub struct Growable {
    buffer: Option<wgpu::Buffer>,
}

impl Growable {
    /// Returns a buffer of at least `bytes` bytes (at least 16), reallocating with 25% headroom (as far
    /// as one binding allows) if needed. A size beyond what the device can bind is an error naming
    /// `label` (callers check their own sizes first, with a better hint; this is the safety net).
    pub fn ensure(&mut self, device: &wgpu::Device, bytes: u64, label: &str) -> Result<&wgpu::Buffer, GpuError> {
        let bytes = bytes.max(16).next_multiple_of(16);
        check_binding(
            device,
            || format!("the {label} buffer"),
            bytes,
            "use fewer splats or a smaller image",
        )?;
        let too_small = self.buffer.as_ref().is_none_or(|b| b.size() < bytes);
        if too_small {
            let limit = super::gpu::binding_limit(device) / 16 * 16;
            let size = (bytes + bytes / 4).next_multiple_of(16).min(limit);
            // Drop the old buffer first, so the peak is not old + new.
            self.buffer = None;
            self.buffer = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: STORAGE,
                mapped_at_creation: false,
            }));
        }
        Ok(self.buffer.as_ref().expect("buffer was just ensured"))
    }

    pub fn get(&self) -> Option<&wgpu::Buffer> {
        self.buffer.as_ref()
    }

    pub fn capacity(&self) -> u64 {
        self.buffer.as_ref().map_or(0, |b| b.size())
    }
}

/// A small uniform buffer holding `value`.
pub fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, value: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("uniforms"),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// A storage buffer initialised from a slice (at least 16 bytes, so empty data still binds).
pub fn storage_from<T: bytemuck::Pod>(device: &wgpu::Device, data: &[T], label: &str) -> wgpu::Buffer {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len().max(16).next_multiple_of(4), 0);
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: &padded,
        usage: STORAGE,
    })
}
