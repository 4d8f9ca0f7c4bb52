//! Fine-tuning Difix on degraded/clean pairs (Difix3D's `src/train_difix.py`). Built so far: the
//! pair data (`data`: the reference JSON, checked up front, and shared random crops). The training
//! loop, its losses' wiring and the CLI are not built yet (`difix3d train-difix` does not exist).

pub mod data;
