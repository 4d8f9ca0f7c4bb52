//! difix3d-render: the wgpu Gaussian-splat rasterizer (kernels in `shaders/`), its backward pass,
//! and the two as one burn autodiff operation (`render::diff_render`).
//!
//! Uses difix3d-scene; knows no GUI (the viewer hands it eframe's wgpu device).

pub mod render;

// The modules of the crates below, under the names every file uses (`crate::scene::Splats`).
use difix3d_scene::{data, image_io, scene};

/// The repository's root for tests, from the `CARGO_MANIFEST_DIR` cargo sets when it runs them (not
/// the one baked in at compile time, which is stale when a shared target folder was built from
/// another checkout).
#[cfg(test)]
pub(crate) fn repo_root() -> std::path::PathBuf {
    let crate_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run under cargo, which sets CARGO_MANIFEST_DIR");
    std::path::PathBuf::from(crate_dir).join("../..")
}
