//! 3DGS training: one optimisation step (`step`, shared with the Difix3D refinement) through the
//! differentiable rasterizer ([`crate::render::diff_render`]) with the L1 + SSIM loss
//! ([`crate::metrics::ssim`]), the optimiser (`adam`), adaptive density control (`densify`),
//! checkpoints (`checkpoint`), the loop (`trainer`) and evaluation on held-out views (`eval`).

pub mod adam;
pub mod checkpoint;
pub mod densify;
pub mod eval;
pub mod step;
pub mod trainer;
