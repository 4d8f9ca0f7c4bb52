//! Difix3D progressive 3D update: the novel-camera schedule (`poses`), one round of pseudo ground
//! truth (`round`: render, fix with the nearest photo as reference, save), and the loop that trains
//! on photos and pseudo views together: `refiner` for splats, `nerfacto` for Difix3D's nerfstudio
//! variant (a nerfacto NeRF).

pub mod nerfacto;
pub mod poses;
pub mod refiner;
pub mod round;
