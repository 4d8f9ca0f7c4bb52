//! difix3d-nn: the neural networks, in burn. Backend choice and weight files (`nn`), the Difix
//! network and its fine-tuning (`difix`), torchvision features, LPIPS and the Gram loss
//! (`perceptual`), PSNR/SSIM (`metrics`), and f32 tensors to safetensors (`tensor_file`).
//!
//! Uses difix3d-scene and difix3d-render (burn on the renderer's wgpu device).

pub mod difix;
pub mod metrics;
pub mod nerfacto;
pub mod nn;
pub mod perceptual;
pub mod tensor_file;

// The modules of the crates below, under the names every file uses (`crate::render::GpuContext`).
use difix3d_render::render;
use difix3d_scene::{data, disk, image_io, rng, scene, validate};

#[cfg(test)]
use difix3d_scene::repo_root;
