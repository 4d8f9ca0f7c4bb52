//! `difix3d convert IN OUT`: any scene file we read to any format we write, chosen by OUT's extension.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use difix3d::scene::{self, SceneFormat};

#[derive(Args)]
pub struct ConvertArgs {
    /// The scene to read: .ply, .compressed.ply, .splat, .spz (versions 2-3), a gsplat checkpoint ckpt_STEP_rankR.pt (all
    /// ranks of that step are read) or a difix3d run's checkpoint.safetensors.
    pub input: PathBuf,
    /// Where to write it; the extension picks the format: .ply, .compressed.ply, .splat, .spz or .pt (a gsplat
    /// checkpoint at step 0 that gsplat's and Difix3D's `--ckpt` load).
    pub output: PathBuf,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    // Refuse an unwritable output before the (possibly long) read.
    match SceneFormat::of(&args.output) {
        None | Some(SceneFormat::RunCheckpoint) => bail!(
            "{}: cannot write this format (expected {})",
            args.output.display(),
            SceneFormat::WRITABLE
        ),
        Some(_) => {}
    }
    let (splats, repairs) = scene::load_reporting(&args.input)?;
    if !repairs.is_empty() {
        eprintln!("{}: {repairs}", args.input.display());
    }
    scene::save(&splats, &args.output)?;
    println!(
        "{} -> {}: {} splats, SH degree {}",
        args.input.display(),
        args.output.display(),
        splats.len(),
        splats.sh_degree
    );
    Ok(())
}
