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

/// The repository's root for tests, from the `CARGO_MANIFEST_DIR` cargo sets when it runs them (not
/// the one baked in at compile time, which is stale when a shared target folder was built from
/// another checkout).
#[cfg(test)]
pub(crate) fn repo_root() -> std::path::PathBuf {
    let crate_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run under cargo, which sets CARGO_MANIFEST_DIR");
    std::path::PathBuf::from(crate_dir).join("../..")
}
