//! Neural-network plumbing shared by every burn model in the crate (Difix, the perceptual networks,
//! 3DGS training's losses): which burn backend runs them (`backend`) and the CPU kernels that make
//! burn-flex fast enough for Difix (`flex_kernels`).

pub mod backend;
pub mod flex_kernels;
