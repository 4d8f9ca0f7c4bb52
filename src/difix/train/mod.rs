//! Fine-tuning Difix on degraded/clean pairs (Difix3D's `src/train_difix.py`). Built so far: the
//! pair data (`data`: the reference JSON, checked up front, and shared random crops), one training
//! step (`step`: what trains, the losses, clipping, AdamW), checked against torch, and writing the
//! result as a diffusers-layout model folder (`export`). The training loop, resuming and the CLI are
//! not built yet (`difix3d train-difix` does not exist).

pub mod checkpoint;
pub mod data;
pub mod export;
pub mod step;
pub mod trainer;
