//! Integration tests, in one binary so the wgpu stack is linked once and one GPU device is shared.
//! Tests that need the sample data skip loudly when `scripts/fetch_assets.sh` has not been run.

mod bad_input;
mod bad_values;
mod cli;
mod difix;
mod fuzz;
mod gpu_kit;
mod gpu_limits;
mod grad_parity;
mod gui;
mod module_graph;
mod nerfacto;
mod nerfacto_refine;
mod nerfacto_train;
mod perceptual;
mod record;
mod refine;
mod render_parity;
mod scene_formats;
mod train;
mod train_difix;
mod train_parity;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use difix3d::render::{GpuContext, Rasterizer};

/// The repository, from the `CARGO_MANIFEST_DIR` cargo sets when it runs the tests (the compile-time
/// value is stale when a shared target folder was built from another checkout).
pub fn repo() -> &'static Path {
    static REPO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    REPO.get_or_init(|| {
        PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run under cargo, which sets CARGO_MANIFEST_DIR"),
        )
    })
}

/// A path under `assets/`, or `None` after printing a loud skip message.
pub fn asset(relative: &str) -> Option<PathBuf> {
    let path = repo().join("assets").join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} is missing; run scripts/fetch_assets.sh", path.display());
        None
    }
}

/// One device and one rasterizer (its shaders compile once) shared by every test in this binary.
pub fn gpu() -> &'static (GpuContext, Mutex<Rasterizer>) {
    static GPU: OnceLock<(GpuContext, Mutex<Rasterizer>)> = OnceLock::new();
    GPU.get_or_init(|| {
        let ctx = GpuContext::headless().expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        let rasterizer = Rasterizer::new(&ctx.device);
        (ctx, Mutex::new(rasterizer))
    })
}

/// Runs the `difix3d` binary; returns (exit code, stdout, stderr).
pub fn difix3d(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difix3d"))
        .args(args)
        .output()
        .expect("run difix3d");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Copies a folder tree (to make broken variants of fixtures).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
