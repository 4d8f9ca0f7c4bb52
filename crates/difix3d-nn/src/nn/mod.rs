//! Neural-network plumbing shared by every burn model in the crate (Difix, the perceptual networks,
//! 3DGS training's losses): which burn backend runs them (`backend`), weight files read by key with
//! their own error (`weights`), burn layers built from them (`loader`), and the CPU kernels that
//! make burn-flex fast enough for Difix (`flex_kernels`) and nerfacto's training (`flex_linear`), a
//! function compiled for the baseline CPU and for AVX2 both (`multiversion`),
//! convolutions on wgpu as matrix products (`tap_conv`), how kernels of our own reach burn's GPU
//! backends (`cube`), and three of them:
//! cumulative sums along rows (`scan`), narrow linear layers over many rows (`linear`; under
//! autodiff one op, `tracked_linear`, on this and the CPU backend) and Adam's update in one pass
//! (`adam`).

pub mod adam;
pub mod backend;
pub mod cube;
pub mod flex_kernels;
pub mod flex_linear;
pub mod linear;
pub mod loader;
pub mod multiversion;
pub mod scan;
pub mod tap_conv;
pub mod tracked_linear;
pub mod weights;
