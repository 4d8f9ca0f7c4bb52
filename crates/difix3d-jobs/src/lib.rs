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

/// The repository's root for tests, from the `CARGO_MANIFEST_DIR` cargo sets when it runs them (not
/// the one baked in at compile time, which is stale when a shared target folder was built from
/// another checkout).
#[cfg(test)]
pub(crate) fn repo_root() -> std::path::PathBuf {
    let crate_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run under cargo, which sets CARGO_MANIFEST_DIR");
    std::path::PathBuf::from(crate_dir).join("../..")
}
