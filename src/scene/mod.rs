//! Gaussian splats on the CPU and the file formats they come in.
//!
//! The in-memory form keeps the *activation-free* parameters a trainer optimises (log scales, opacity
//! logits, raw SH coefficients), so the same struct serves viewing, training and writing `.ply` files.

pub mod checkpoint;
pub mod init;
pub mod ply;
pub mod splat;

use std::path::{Path, PathBuf};

/// The 0th-order SH basis constant: colour = SH_C0 * f_dc + 0.5.
pub const SH_C0: f32 = 0.282_094_8;

/// Number of SH coefficients per colour channel for a degree.
pub const fn sh_coeffs(degree: u32) -> usize {
    ((degree + 1) * (degree + 1)) as usize
}

/// A set of 3D Gaussians in structure-of-arrays layout, in world space (COLMAP/OpenCV frame).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Splats {
    pub means: Vec<[f32; 3]>,
    /// Natural log of the per-axis standard deviations.
    pub log_scales: Vec<[f32; 3]>,
    /// Unit quaternions stored as (w, x, y, z).
    pub rotations: Vec<[f32; 4]>,
    /// Opacity before the sigmoid.
    pub opacity_logits: Vec<f32>,
    /// Degree of the SH coefficients stored in `sh` (0..=3).
    pub sh_degree: u32,
    /// `sh[i * sh_coeffs(sh_degree) + k]` is the RGB coefficient `k` of splat `i`; `k = 0` is the DC term.
    pub sh: Vec<[f32; 3]>,
}

/// Why a scene file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

impl SceneError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

impl Splats {
    pub fn len(&self) -> usize {
        self.means.len()
    }

    pub fn is_empty(&self) -> bool {
        self.means.is_empty()
    }

    /// Checks the invariants every consumer relies on: consistent lengths, a supported SH degree, at least
    /// one splat and only finite numbers. Loaders call this so bad files fail at load, not in a shader.
    pub fn validate(&self, path: &Path) -> Result<(), SceneError> {
        let n = self.len();
        if n == 0 {
            return Err(SceneError::format(path, "the scene has no splats"));
        }
        if self.sh_degree > 3 {
            return Err(SceneError::format(
                path,
                format!("SH degree {} is not supported (0..=3)", self.sh_degree),
            ));
        }
        let k = sh_coeffs(self.sh_degree);
        if self.log_scales.len() != n
            || self.rotations.len() != n
            || self.opacity_logits.len() != n
            || self.sh.len() != n * k
        {
            return Err(SceneError::format(path, "inconsistent attribute counts"));
        }
        let finite3 = |v: &[[f32; 3]]| v.iter().position(|a| a.iter().any(|x| !x.is_finite()));
        let bad = finite3(&self.means)
            .map(|i| ("position", i))
            .or_else(|| finite3(&self.log_scales).map(|i| ("scale", i)))
            .or_else(|| {
                self.rotations
                    .iter()
                    .position(|a| a.iter().any(|x| !x.is_finite()))
                    .map(|i| ("rotation", i))
            })
            .or_else(|| {
                self.opacity_logits
                    .iter()
                    .position(|x| !x.is_finite())
                    .map(|i| ("opacity", i))
            })
            .or_else(|| finite3(&self.sh).map(|i| ("colour (SH)", i / k)));
        if let Some((what, i)) = bad {
            return Err(SceneError::format(
                path,
                format!("splat {i} has a non-finite {what} (NaN or infinity)"),
            ));
        }
        Ok(())
    }

    /// Axis-aligned bounds of the splat centres, ignoring the 1% most extreme on each side so a few
    /// floaters far away do not decide where the default camera looks.
    pub fn robust_bounds(&self) -> (glam::Vec3, glam::Vec3) {
        let (lo, _, hi) = self.quantiles(0.01);
        (lo, hi)
    }

    /// Per-axis `q` and `1 - q` quantiles of the splat centres, with the median between them: a
    /// bounding box and centre that a few far-away floaters cannot drag around.
    pub fn quantiles(&self, q: f32) -> (glam::Vec3, glam::Vec3, glam::Vec3) {
        let mut out = [[0.0f32; 3]; 3];
        for axis in 0..3 {
            let mut v: Vec<f32> = self.means.iter().map(|m| m[axis]).collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(f32::total_cmp);
            let k = ((v.len() - 1) as f32 * q.clamp(0.0, 0.5)) as usize;
            out[0][axis] = v[k];
            out[1][axis] = v[v.len() / 2];
            out[2][axis] = v[v.len() - 1 - k];
        }
        (out[0].into(), out[1].into(), out[2].into())
    }
}

/// Loads any supported scene file, choosing the reader by extension.
pub fn load(path: &Path) -> Result<Splats, SceneError> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let splats = match ext.as_deref() {
        Some("ply") => ply::read_ply(path)?,
        Some("splat") => splat::read_splat(path)?,
        Some("safetensors") => checkpoint::read_checkpoint(path)?,
        _ => {
            return Err(SceneError::format(
                path,
                "unknown scene format (expected .ply, .splat or a difix3d checkpoint .safetensors)",
            ))
        }
    };
    splats.validate(path)?;
    Ok(splats)
}
