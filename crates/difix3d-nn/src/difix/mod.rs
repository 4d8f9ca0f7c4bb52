//! Difix: the single-step diffusion model that removes artefacts from rendered views
//! (SD-Turbo fine-tuned by NVIDIA), re-implemented in burn so it runs on CUDA, wgpu or the CPU.
//!
//! `load` reads the published diffusers layout, `pipeline::Difix` runs it; the network parts are
//! `text_encoder`, `unet` and `vae`, built from the shared `layers`.

pub mod error;
pub mod images;
pub mod layers;
pub mod load;
pub mod pipeline;
pub mod scheduler;
pub mod sd_turbo;
pub mod text_encoder;
pub mod tokenizer;
pub mod train;
pub mod unet;
pub mod vae;

pub use error::{ConfigProblem, DifixError};
pub use pipeline::Difix;
