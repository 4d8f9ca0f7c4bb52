//! difix3d-train: 3D Gaussian-splat training (`train`: step, Adam, densification, checkpoints,
//! evaluation) and Difix3D's progressive 3D update (`refine`), of splats and of nerfacto NeRFs.
//!
//! Uses difix3d-scene, difix3d-render and difix3d-nn.

pub mod refine;
pub mod train;

// The modules of the crates below, under the names every file uses (`crate::render::GpuContext`).
use difix3d_nn::{difix, metrics, nerfacto, nn, perceptual, tensor_file};
use difix3d_render::render;
use difix3d_scene::{camera_path, data, disk, image_io, reference_photo, rng, scene, validate};
