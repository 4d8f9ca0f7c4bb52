//! Background work. Each job runs on its own thread and reports through a crossbeam channel, so the
//! viewer never blocks on it and the CLI can use the same code.

pub mod load;
pub mod nerf_view;
pub mod record;
pub mod save;
pub mod train;
