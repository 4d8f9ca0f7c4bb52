//! 3DGS training. So far: the differentiable rasterizer as a burn autodiff operation
//! (`diff_render`); the trainer, densification and evaluation are not built yet.

pub mod diff_render;
