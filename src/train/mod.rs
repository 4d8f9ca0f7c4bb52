//! 3DGS training: the differentiable rasterizer as a burn autodiff operation (`diff_render`), the
//! loss pieces (`ssim`), the optimiser (`adam`), one optimisation step (`step`, shared with the
//! Difix3D refinement), adaptive density control (`densify`), checkpoints (`checkpoint`), the loop
//! (`trainer`) and evaluation on held-out views (`eval`).

pub mod adam;
pub mod checkpoint;
pub mod densify;
pub mod diff_render;
pub mod eval;
pub mod step;
pub mod trainer;
