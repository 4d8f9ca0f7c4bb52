//! difix3d: fly through Gaussian-splat scenes and clean every frame with Difix.
//!
//! The library holds every engine piece; the `difix3d` binary (CLI and GUI) is a thin shell over it.

pub mod camera_path;
pub mod data;
pub mod difix;
pub mod disk;
pub mod fix;
pub mod image_io;
pub mod jobs;
pub mod metrics;
pub mod nerfacto;
pub mod nn;
pub mod perceptual;
pub mod record;
pub mod reference_photo;
pub mod refine;
pub mod render;
pub mod rng;
pub mod scene;
pub mod tensor_file;
pub mod train;
pub mod validate;
pub mod view;
