//! Difix3D progressive 3D update. So far: the novel-camera schedule (`poses`) and one round of
//! pseudo ground truth (`round`: render, fix with the nearest photo as reference, save); the
//! refinement loop that trains on them is not built yet.

pub mod poses;
pub mod round;
