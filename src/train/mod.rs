//! 3DGS training: the differentiable rasterizer as a burn autodiff operation (`diff_render`), the
//! loss pieces (`ssim`), the optimiser (`adam`), adaptive density control (`densify`), the loop (`trainer`) and
//! evaluation on held-out views (`eval`).

pub mod adam;
pub mod densify;
pub mod diff_render;
pub mod eval;
pub mod ssim;
pub mod trainer;
