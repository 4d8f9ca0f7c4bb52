//! difix3d-render: the wgpu Gaussian-splat rasterizer (kernels in `shaders/`), its backward pass,
//! and the two as one burn autodiff operation (`render::diff_render`).
//!
//! Uses difix3d-scene; knows no GUI (the viewer hands it eframe's wgpu device).

pub mod render;

// The modules of the crates below, under the names every file uses (`crate::scene::Splats`).
use difix3d_scene::{data, image_io, scene};

#[cfg(test)]
use difix3d_scene::repo_root;
