//! The wgpu Gaussian-splat renderer: a tile-based compute rasterizer (kernels in `shaders/`, their
//! uniforms in `uniforms`), its backward pass (`backward`), and the two as one burn autodiff
//! operation for training (`diff_render`).

pub mod backward;
mod buffers;
pub mod burn_bridge;
pub mod diff_render;
mod display;
pub mod gpu;
mod kernels;
pub mod rasterize;
mod sort;
pub mod splats;
mod uniforms;

pub use backward::SplatGradients;
pub use buffers::storage_from;
pub use gpu::{GpuContext, GpuError};
pub use rasterize::{
    check_frame_size, fit_frame_size, FrameStats, RasterConstants, RasterMode, Rasterizer, RenderOptions, RenderedImage,
};
pub use splats::GpuSplats;
