//! Splat parameters on the GPU: one flat f32 storage buffer per attribute, the layout the training
//! work will optimise in place (gradients and Adam state mirror these buffers).

use super::buffers::storage_from;
use crate::scene::{sh_coeffs, Splats};

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
    pub fn upload(device: &wgpu::Device, splats: &Splats) -> Self {
        Self {
            means: storage_from(device, &splats.means, "means"),
            log_scales: storage_from(device, &splats.log_scales, "log_scales"),
            rotations: storage_from(device, &splats.rotations, "rotations"),
            opacity_logits: storage_from(device, &splats.opacity_logits, "opacity_logits"),
            sh: storage_from(device, &splats.sh, "sh"),
            count: splats.len() as u32,
            sh_degree: splats.sh_degree,
        }
    }

    pub fn sh_coeffs(&self) -> u32 {
        sh_coeffs(self.sh_degree) as u32
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
