//! Neural-network plumbing shared by every burn model in the crate (Difix, the perceptual networks,
//! 3DGS training's losses): the CPU kernels that make burn-flex fast enough for Difix
//! (`flex_kernels`).

pub mod flex_kernels;
