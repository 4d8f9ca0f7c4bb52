//! Difix3D progressive 3D update: the novel-camera schedule (`poses`), one round of pseudo ground
//! truth (`round`: render, fix with the nearest photo as reference, save), and the loop that trains
//! on photos and pseudo views together (`refiner`).

pub mod poses;
pub mod refiner;
pub mod round;
