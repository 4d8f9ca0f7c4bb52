//! Nerfstudio's nerfacto NeRF in burn: read a nerfstudio checkpoint (`step-*.ckpt`) and render it as
//! nerfstudio does (Difix3D's nerfstudio variant, issue 18).
//!
//! The pieces, each a port of the nerfstudio 1.1.5 code named in its docs:
//!
//! - [`config`]: what the checkpoint does not store (base resolution, sample counts, density scale,
//!   background...), with `ns-train nerfacto`'s defaults, from a JSON file;
//! - [`checkpoint`]: the torch archive `Trainer.save_checkpoint` writes, its `pipeline` state dict
//!   with `_model.` keys; other methods (splatfacto, vanilla NeRF, ...) are refused by name;
//! - [`encoding`]: the multiresolution hash grid (nerfstudio's torch `HashEncoding`) and the
//!   spherical-harmonics direction encoding; [`hash_kernel`]: the hash grid as one kernel with its
//!   backward pass, on the CPU and (in CubeCL) on wgpu and CUDA, run instead of burn ops;
//! - [`field`]: scene contraction, the density and colour MLPs of `NerfactoField` and the proposal
//!   networks (`HashMLPDensityField`); [`points_kernel`]: a batch of samples' positions, contracted
//!   into the grids' cube, as one kernel with its backward pass on wgpu and CUDA;
//! - [`sampler`]: the proposal sampler (piecewise uniform/linear-in-disparity start, then PDF
//!   sampling from each proposal network's weights) and the volume-rendering weights;
//!   [`count_kernel`]: its `searchsorted` as one kernel on the CPU and on wgpu and CUDA;
//! - [`model`]: all of it together: rays in, colour / accumulation / depth out, and the rays of a
//!   pinhole camera; in nerfstudio's evaluation mode or its training mode ([`model::Pass`]);
//! - [`losses`], [`training`]: nerfacto's losses and one training step (two Adam optimisers, their
//!   schedules, proposal annealing and update schedule) with autodiff over any burn backend;
//!   [`camera_optimizer`]: the per-image pose corrections learned with them (`SO3xR3`, `SE3`);
//! - [`state`]: the tensors by nerfstudio's state-dict keys: fresh initialisation, saving a run as
//!   safetensors, the named parameters;
//! - [`batches`]: training rays from views, single pixels or nerfstudio's square patches;
//! - [`trainer`]: training on a dataset folder (`difix3d train --method nerfacto`);
//! - [`export`]: the field as a point cloud and as splats, as `ns-export pointcloud` makes it.
//!
//! Checkpoints of both of nerfstudio's implementations are read: the torch one's per-layer tensors,
//! and the tiny-cuda-nn one's flat `params` vectors ([`tcnn`] splits them into the same keys; its
//! hash grids keep tiny-cuda-nn's layout, [`encoding::GridLayout::Tcnn`]). Everything here is
//! generic over the burn backend and runs on the CPU.

pub mod batches;
pub mod camera_optimizer;
pub mod checkpoint;
pub mod config;
pub mod count_kernel;
pub mod encoding;
pub mod export;
pub mod field;
pub mod hash_kernel;
pub mod losses;
pub mod model;
pub mod points_kernel;
pub mod sampler;
pub mod state;
pub mod tcnn;
pub mod torch_pickle;
pub mod trainer;
pub mod training;

use std::path::PathBuf;

pub use checkpoint::Checkpoint;
pub use config::NerfactoConfig;
pub use model::{Nerfacto, Pass, RayOutputs, TrainingPass};

/// Why a nerfstudio checkpoint or its config could not be used; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum NerfactoError {
    #[error("{}: cannot read it: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error(
        "{}: this is a splatfacto checkpoint (Gaussian splats, `_model.gauss_params.*`), not a NeRF: open \
         it as a splat scene; reading splatfacto checkpoints directly is not built yet, so export it \
         first with `ns-export gaussian-splat` and open the .ply",
        path.display()
    )]
    Splatfacto { path: PathBuf },
    #[error(
        "{}: not a nerfacto checkpoint (its model has {found}); only nerfstudio's nerfacto is supported",
        path.display()
    )]
    OtherMethod { path: PathBuf, found: String },
}

impl NerfactoError {
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
