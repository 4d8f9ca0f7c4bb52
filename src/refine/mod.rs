//! Difix3D progressive 3D update. So far: the novel-camera schedule (`poses`); the refinement loop
//! itself is not built yet.

pub mod poses;
