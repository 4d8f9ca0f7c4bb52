//! Fine-tuning Difix on degraded/clean pairs (Difix3D's `src/train_difix.py`): the pair data
//! (`data`: the reference JSON, checked up front, and shared random crops), one training step
//! (`step`: what trains, the losses, clipping, AdamW; checked against torch), the loop with
//! checkpoints, resume and evaluation (`trainer`), data-parallel training over several devices
//! (`parallel`), and writing the result as a diffusers-layout model folder (`export`).

pub mod checkpoint;
pub mod data;
pub mod export;
pub mod parallel;
pub mod step;
pub mod trainer;
