//! difix3d-jobs: work that runs beside the viewer. Background threads for loading, saving, training,
//! refinement, Difix fine-tuning and recording (`jobs`: commands in, events out), offline
//! flythroughs (`record`), and the live post-render Difix fix (`fix`).
//!
//! Uses every engine crate below it; knows no GUI.

pub mod fix;
pub mod jobs;
pub mod record;

// The modules of the crates below, under the names every file uses (`crate::render::GpuContext`).
use difix3d_nn::{difix, nerfacto, nn};
use difix3d_render::render;
use difix3d_scene::{camera_path, data, disk, image_io, reference_photo, scene, validate};
use difix3d_train::{refine, train};

#[cfg(test)]
use difix3d_scene::repo_root;
