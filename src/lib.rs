//! difix3d: fly through Gaussian-splat scenes and clean every frame with Difix.
//!
//! The engine lives in the workspace's crates (docs/ARCHITECTURE.md); this library re-exports their
//! modules under one name (`difix3d::render`, `difix3d::train`, ...) for the `difix3d` binary (the
//! viewer and the CLI, thin shells over the engine) and the integration tests.

pub use difix3d_jobs::{fix, jobs, record};
pub use difix3d_nn::{difix, metrics, nerfacto, nn, perceptual, tensor_file};
pub use difix3d_render::render;
pub use difix3d_scene::{camera_path, data, disk, image_io, reference_photo, rng, scene, validate, view};
pub use difix3d_train::{refine, train};
