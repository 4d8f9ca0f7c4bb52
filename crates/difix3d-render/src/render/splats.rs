//! Splat parameters on the GPU: one flat f32 storage buffer per attribute, the layout the training
//! work will optimise in place (gradients and Adam state mirror these buffers).

use std::num::NonZeroU64;

use super::buffers::storage_from;
use super::gpu::{binding_limit, check_items, GpuContext, GpuError};
use crate::scene::{sh_coeffs, Splats};

/// Bytes per splat of the widest array the renderer binds whole (a rotation, a plane of the
/// projection's output: 16). How many splats fit on a device is its binding limit over this.
pub const WHOLE_BYTES_PER_SPLAT: u64 = 16;

pub struct GpuSplats {
    pub means: wgpu::Buffer,
    pub log_scales: wgpu::Buffer,
    pub rotations: wgpu::Buffer,
    pub opacity_logits: wgpu::Buffer,
    pub sh: wgpu::Buffer,
    pub count: u32,
    pub sh_degree: u32,
}

impl GpuSplats {
    /// Uploads `splats`, or says how many splats this device can hold when they do not fit: every
    /// per-splat array but the SH coefficients must fit in one storage binding, the SH coefficients
    /// in one buffer (they are bound a chunk at a time, see [`GpuSplats::sh_chunk_len`]).
    pub fn upload(ctx: &GpuContext, splats: &Splats) -> Result<Self, GpuError> {
        let device = &ctx.device;
        let n = splats.len() as u64;
        check_items(
            device,
            || format!("a scene of {n} splats"),
            n,
            WHOLE_BYTES_PER_SPLAT,
            |fit| format!("the renderer holds at most {fit} splats on this GPU; open a smaller scene"),
        )?;
        let sh_bytes = std::mem::size_of_val(splats.sh.as_slice()) as u64;
        let max_buffer = device.limits().max_buffer_size;
        if sh_bytes > max_buffer {
            return Err(GpuError::TooLarge {
                what: format!("the SH coefficients of {n} splats at degree {}", splats.sh_degree),
                bytes: sh_bytes,
                limit: max_buffer,
                limit_name: "max_buffer_size",
                hint: format!(
                    "at this SH degree at most {} splats fit; open a smaller scene or one saved at a lower SH degree",
                    max_buffer / (sh_coeffs(splats.sh_degree) as u64 * 12)
                ),
            });
        }
        ctx.scoped(&format!("uploading {n} splats"), || Self {
            means: storage_from(device, &splats.means, "means"),
            log_scales: storage_from(device, &splats.log_scales, "log_scales"),
            rotations: storage_from(device, &splats.rotations, "rotations"),
            opacity_logits: storage_from(device, &splats.opacity_logits, "opacity_logits"),
            sh: storage_from(device, &splats.sh, "sh"),
            count: splats.len() as u32,
            sh_degree: splats.sh_degree,
        })
    }

    pub fn sh_coeffs(&self) -> u32 {
        sh_coeffs(self.sh_degree) as u32
    }

    /// Bytes of SH coefficients per splat.
    fn sh_bytes_per_splat(&self) -> u64 {
        self.sh_coeffs() as u64 * 12
    }

    /// Splats per dispatch of the projection: the SH coefficients are bound a chunk at a time, since at
    /// degree 3 (192 bytes a splat) they are the array that outgrows a storage binding first (lavapipe
    /// binds 128 MiB: 699,050 splats). A multiple of 256, so every chunk's offset is aligned.
    pub fn sh_chunk_len(&self, device: &wgpu::Device) -> u32 {
        let fit = binding_limit(device) / self.sh_bytes_per_splat();
        (fit / 256 * 256).clamp(256, u32::MAX as u64 / 256 * 256) as u32
    }

    /// The SH coefficients of splats `first .. first + count` as a binding.
    pub fn sh_binding(&self, first: u32, count: u32) -> wgpu::BindingResource<'_> {
        let per = self.sh_bytes_per_splat();
        let offset = first as u64 * per;
        let size = (count as u64 * per).min(self.sh.size() - offset);
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.sh,
            offset,
            size: NonZeroU64::new(size),
        })
    }

    pub fn bytes(&self) -> u64 {
        [
            &self.means,
            &self.log_scales,
            &self.rotations,
            &self.opacity_logits,
            &self.sh,
        ]
        .iter()
        .map(|b| b.size())
        .sum()
    }
}
