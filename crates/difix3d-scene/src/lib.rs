//! difix3d-scene: everything before the GPU. Gaussian splats and every scene format, datasets
//! (COLMAP, nerfstudio transforms, the Difix3D layout) and their cameras, camera paths, the viewer's
//! camera controller, image I/O, atomic writes, random numbers and the limits inputs are checked against.
//!
//! Depends on no other difix3d crate and on no GUI.

pub mod camera_path;
pub mod data;
pub mod disk;
pub mod image_io;
pub mod reference_photo;
pub mod rng;
pub mod scene;
pub mod validate;
pub mod view;

/// The repository's root for the workspace crates' tests: from the `CARGO_MANIFEST_DIR` cargo sets
/// when it runs them (every crate sits two folders below the root), not the one baked in at compile
/// time, which is stale when a shared target folder was built from another checkout (that one only
/// where the variable is unset). Not for use outside tests: a built binary has no repository.
#[doc(hidden)]
pub fn repo_root() -> std::path::PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::PathBuf::from(crate_dir).join("../..")
}
