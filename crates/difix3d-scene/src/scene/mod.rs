//! Gaussian splats on the CPU and the file formats they come in.
//!
//! The in-memory form keeps the *activation-free* parameters a trainer optimises (log scales, opacity
//! logits, raw SH coefficients), so the same struct serves viewing, training and writing `.ply` files.

pub mod checkpoint;
pub mod compressed_ply;
pub mod gsplat;
pub mod init;
pub mod ply;
pub mod quantise;
pub mod sog;
pub mod splat;
pub mod spz;

use std::path::{Path, PathBuf};

/// The 0th-order SH basis constant: colour = SH_C0 * f_dc + 0.5.
pub const SH_C0: f32 = 0.282_094_8;

/// The opacity logit that stands for alpha exactly 1 (its negative for exactly 0): `1 / (1 + exp(-x))`
/// in f32 is exactly 1.0 at +100 and exactly 0.0 at -100 (`exp(100)` overflows f32), yet the value
/// stays finite, so every later step (sorting, training, writing) keeps working. Files store
/// ±infinity for such splats (splat-transform does when it decodes its own compressed files).
pub const OPACITY_LOGIT_LIMIT: f32 = 100.0;

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
    /// No splats yet, with room for `n` of SH degree `sh_degree` (what readers fill in).
    pub fn with_capacity(n: usize, sh_degree: u32) -> Self {
        Self {
            means: Vec::with_capacity(n),
            log_scales: Vec::with_capacity(n),
            rotations: Vec::with_capacity(n),
            opacity_logits: Vec::with_capacity(n),
            sh_degree,
            sh: Vec::with_capacity(n * sh_coeffs(sh_degree)),
        }
    }

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

/// The scene file formats, told apart by the file name's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SceneFormat {
    /// INRIA/gsplat/Brush `.ply` (float properties). Reading also accepts a compressed PLY under this name.
    Ply,
    /// SuperSplat / splat-transform compressed PLY, `NAME.compressed.ply`.
    CompressedPly,
    /// antimatter15 `.splat`.
    Splat,
    /// Niantic `.spz` (versions 2 to 4).
    Spz,
    /// PlayCanvas SOG: a `.sog` archive, or a `meta.json` (any name ending in it) with its images beside it.
    Sog,
    /// gsplat / Difix3D checkpoint `ckpt_STEP_rankR.pt` (torch zip pickle).
    GsplatCheckpoint,
    /// The `checkpoint.safetensors` of a `difix3d train` / `refine` run (read only).
    RunCheckpoint,
}

impl SceneFormat {
    /// What the extensions mean, for error messages.
    pub const READABLE: &'static str = ".ply, .compressed.ply, .splat, .spz, .sog (or a SOG meta.json), a gsplat \
                                        checkpoint .pt or a difix3d checkpoint .safetensors";
    pub const WRITABLE: &'static str =
        ".ply, .compressed.ply, .splat, .spz, .sog (or a SOG folder's meta.json) or .pt (a gsplat checkpoint)";

    /// The format a file name stands for, or `None` for an unknown extension.
    pub fn of(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let ext = name.rsplit_once('.')?.1;
        Some(match ext {
            "ply" if name.ends_with(".compressed.ply") => Self::CompressedPly,
            "ply" => Self::Ply,
            "splat" => Self::Splat,
            "spz" => Self::Spz,
            "sog" => Self::Sog,
            "json" if name.ends_with("meta.json") => Self::Sog,
            "pt" | "pth" => Self::GsplatCheckpoint,
            "safetensors" => Self::RunCheckpoint,
            _ => return None,
        })
    }
}

/// What loading changed so that a scene with a few broken values still opens (see
/// [`Splats::repair_non_finite`]). Shown once: logged by [`load`], toasted by the viewer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Splats in the file.
    pub total: usize,
    /// Opacity logits of ±infinity set to ±[`OPACITY_LOGIT_LIMIT`] (same alpha, finite).
    pub clamped_opacities: usize,
    /// Splats dropped for a NaN or infinite position, scale, rotation or SH coefficient, or a NaN opacity.
    pub dropped: usize,
}

impl Repairs {
    pub fn is_empty(&self) -> bool {
        self.clamped_opacities == 0 && self.dropped == 0
    }
}

impl std::fmt::Display for Repairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.dropped > 0 {
            parts.push(format!(
                "dropped {} of {} splats with NaN or infinite values (position, scale, rotation, opacity or colour)",
                self.dropped, self.total
            ));
        }
        if self.clamped_opacities > 0 {
            parts.push(format!(
                "clamped {} infinite opacity logits to ±{OPACITY_LOGIT_LIMIT} (alpha exactly 1 or 0, as before)",
                self.clamped_opacities
            ));
        }
        if parts.is_empty() {
            f.write_str("no values changed")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

impl Splats {
    /// Whether splat `i` has only finite values, except that its opacity logit may be ±infinity
    /// (alpha exactly 1 or 0): what [`Splats::repair_non_finite`] keeps, and what the quantising
    /// writers can store. The arrays must be consistent ([`ply::check_layout`]).
    pub(crate) fn has_finite_values(&self, i: usize) -> bool {
        let k = sh_coeffs(self.sh_degree);
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        finite(&self.means[i])
            && finite(&self.log_scales[i])
            && finite(&self.rotations[i])
            && !self.opacity_logits[i].is_nan()
            && self.sh[i * k..(i + 1) * k].iter().all(|c| finite(c))
    }

    /// Makes a scene with a few broken values usable instead of refusing it: an opacity logit of
    /// ±infinity (alpha exactly 1 or 0) becomes ±[`OPACITY_LOGIT_LIMIT`], which has the same alpha in
    /// f32, and a splat with any other non-finite value (NaN or infinite position, log scale, rotation
    /// or SH coefficient, NaN opacity) is dropped, since nothing sensible can be drawn for it. The
    /// arrays must be consistent ([`ply::check_layout`]); the order of the kept splats is unchanged.
    pub fn repair_non_finite(&mut self) -> Repairs {
        let n = self.len();
        let k = sh_coeffs(self.sh_degree);
        let mut repairs = Repairs {
            total: n,
            ..Repairs::default()
        };
        let mut kept = 0;
        for i in 0..n {
            let opacity = self.opacity_logits[i];
            if !self.has_finite_values(i) {
                repairs.dropped += 1;
                continue;
            }
            if opacity.is_infinite() {
                repairs.clamped_opacities += 1;
                self.opacity_logits[i] = OPACITY_LOGIT_LIMIT.copysign(opacity);
            }
            if kept != i {
                self.means[kept] = self.means[i];
                self.log_scales[kept] = self.log_scales[i];
                self.rotations[kept] = self.rotations[i];
                self.opacity_logits[kept] = self.opacity_logits[i];
                self.sh.copy_within(i * k..(i + 1) * k, kept * k);
            }
            kept += 1;
        }
        self.means.truncate(kept);
        self.log_scales.truncate(kept);
        self.rotations.truncate(kept);
        self.opacity_logits.truncate(kept);
        self.sh.truncate(kept * k);
        repairs
    }
}

/// Loads any supported scene file, choosing the reader by extension (see [`SceneFormat`]), and
/// logs what [`Splats::repair_non_finite`] changed, if anything, as one warning.
pub fn load(path: &Path) -> Result<Splats, SceneError> {
    let (splats, repairs) = load_reporting(path)?;
    if !repairs.is_empty() {
        log::warn!("{}: {repairs}", path.display());
    }
    Ok(splats)
}

/// [`load`] without the log line: the caller shows the [`Repairs`] (the viewer toasts them).
pub fn load_reporting(path: &Path) -> Result<(Splats, Repairs), SceneError> {
    let mut splats = match SceneFormat::of(path) {
        // A compressed PLY is recognised by its header, whatever its name.
        Some(SceneFormat::Ply | SceneFormat::CompressedPly) => ply::read_ply(path)?,
        Some(SceneFormat::Splat) => splat::read_splat(path)?,
        Some(SceneFormat::Spz) => spz::read_spz(path)?,
        Some(SceneFormat::Sog) => sog::read_sog(path)?,
        Some(SceneFormat::GsplatCheckpoint) => gsplat::read_gsplat_checkpoint(path)?,
        Some(SceneFormat::RunCheckpoint) => checkpoint::read_checkpoint(path)?,
        None => {
            return Err(SceneError::format(
                path,
                format!("unknown scene format (expected {})", SceneFormat::READABLE),
            ))
        }
    };
    ply::check_layout(&splats).map_err(|message| SceneError::format(path, message))?;
    let repairs = splats.repair_non_finite();
    if splats.is_empty() && repairs.dropped > 0 {
        return Err(SceneError::format(
            path,
            format!(
                "no splats left: all {} splats have NaN or infinite values",
                repairs.total
            ),
        ));
    }
    splats.validate(path)?;
    Ok((splats, repairs))
}

/// Writes `splats` in the format `path`'s extension names (see [`SceneFormat::WRITABLE`]),
/// atomically (temporary file + rename). A `.pt` gets step 0.
pub fn save(splats: &Splats, path: &Path) -> Result<(), SceneError> {
    match SceneFormat::of(path) {
        Some(SceneFormat::Ply) => ply::write_ply(splats, path),
        Some(SceneFormat::CompressedPly) => compressed_ply::write_compressed_ply(splats, path),
        Some(SceneFormat::Splat) => splat::write_splat(splats, path),
        Some(SceneFormat::Spz) => spz::write_spz(splats, path),
        Some(SceneFormat::Sog) => sog::write_sog(splats, path),
        Some(SceneFormat::GsplatCheckpoint) => gsplat::write_gsplat_checkpoint(splats, 0, path),
        Some(SceneFormat::RunCheckpoint) => Err(SceneError::format(
            path,
            format!(
                "cannot write a difix3d run checkpoint here: it also holds the optimiser state and is written \
                 by `train`/`refine` only; write {} instead",
                SceneFormat::WRITABLE
            ),
        )),
        None => Err(SceneError::format(
            path,
            format!("cannot write this format (expected {})", SceneFormat::WRITABLE),
        )),
    }
}
