//! Reading and writing antimatter15 `.splat` files.
//!
//! The format is a bare array of 32-byte little-endian records with no header:
//!
//! | bytes  | content                                                   |
//! |--------|-----------------------------------------------------------|
//! | 0..12  | position, 3 x f32                                         |
//! | 12..24 | scale, 3 x f32, *linear* standard deviations (not logs)   |
//! | 24..28 | colour, RGBA u8; RGB is the DC colour, A the opacity      |
//! | 28..32 | rotation (w, x, y, z), each u8 encoding `(q + 1) * 128`   |
//!
//! It stores only the view-independent (DC) colour, quantised to 8 bits, so reading gives SH degree 0 and
//! writing drops any higher SH coefficients.

use std::fs;
use std::path::Path;

use super::ply::{check_layout, write_atomic};
use super::{SceneError, Splats, SH_C0};

/// Bytes per splat record.
const RECORD: usize = 32;

/// Smallest scale accepted, in world units. Real files contain scales of exactly zero: splats a trainer
/// flattened until `exp(log_scale)` underflowed. They are kept (as needle- or disc-like splats) by
/// clamping to this value instead of rejecting the file; `ln(1e-8) ≈ -18.4` is far below any visible size.
const MIN_SCALE: f32 = 1e-8;

/// Alpha is clamped to half a quantisation step inside (0, 1) before taking the logit, so alpha 0 and
/// 255 become large but finite logits (about ∓6.2) instead of infinities.
const MIN_ALPHA: f32 = 0.5 / 255.0;

/// Reads an antimatter15 `.splat` file into SH degree 0 [`Splats`].
///
/// Conversions: `log_scale = ln(max(scale, 1e-8))` (see [`MIN_SCALE`]; a negative scale is an error);
/// `f_dc = (rgb / 255 - 0.5) / SH_C0`; `opacity_logit = logit(clamp(a / 255))` (see [`MIN_ALPHA`]);
/// rotation `(byte - 128) / 128` in the order (w, x, y, z), normalised, with an all-128 rotation (zero
/// after decoding) read as the identity, since it can only come from a degenerate quaternion.
pub fn read_splat(path: &Path) -> Result<Splats, SceneError> {
    let bytes = fs::read(path).map_err(|e| SceneError::io(path, e))?;
    decode(&bytes).map_err(|message| SceneError::format(path, message))
}

/// Writes `splats` as a `.splat` file, atomically (temporary file + rename).
///
/// Lossy: only the DC colour is kept (higher SH degrees are dropped), colour, opacity and rotation are
/// quantised to 8 bits, and splats are written in their current order (antimatter15's converter sorts
/// them by size × opacity so that progressive loading shows the important ones first; we do not need to).
pub fn write_splat(splats: &Splats, path: &Path) -> Result<(), SceneError> {
    let bytes = encode(splats).map_err(|message| SceneError::format(path, message))?;
    write_atomic(path, &bytes)
}

fn decode(bytes: &[u8]) -> Result<Splats, String> {
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(format!(
            "the file size ({} bytes) is not a multiple of the {RECORD}-byte .splat record; the file is truncated or not a .splat",
            bytes.len()
        ));
    }
    let n = bytes.len() / RECORD;
    let mut splats = Splats::with_capacity(n, 0);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let f = |at: usize| f32::from_le_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]]);
        splats.means.push([f(0), f(4), f(8)]);

        let mut log_scale = [0.0; 3];
        for (axis, out) in log_scale.iter_mut().enumerate() {
            let scale = f(12 + 4 * axis);
            if scale < 0.0 {
                return Err(format!("splat {i} has a negative scale ({scale})"));
            }
            // NaN stays NaN (f32::max would hide it) so that loading drops the splat.
            *out = if scale.is_nan() {
                f32::NAN
            } else {
                scale.max(MIN_SCALE).ln()
            };
        }
        splats.log_scales.push(log_scale);

        let [r, g, b, a] = [record[24], record[25], record[26], record[27]].map(|c| f32::from(c) / 255.0);
        splats.sh.push([r, g, b].map(|c| (c - 0.5) / SH_C0));
        let alpha = a.clamp(MIN_ALPHA, 1.0 - MIN_ALPHA);
        splats.opacity_logits.push((alpha / (1.0 - alpha)).ln());

        let q = [record[28], record[29], record[30], record[31]].map(|c| (f32::from(c) - 128.0) / 128.0);
        let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt();
        splats.rotations.push(if norm > 0.0 {
            q.map(|c| c / norm)
        } else {
            [1.0, 0.0, 0.0, 0.0]
        });
    }
    Ok(splats)
}

fn encode(splats: &Splats) -> Result<Vec<u8>, String> {
    let k = check_layout(splats)?;
    let to_byte = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    let mut out = Vec::with_capacity(splats.len() * RECORD);
    for i in 0..splats.len() {
        for v in splats.means[i] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in splats.log_scales[i] {
            out.extend_from_slice(&v.exp().to_le_bytes());
        }
        let dc = splats.sh[i * k];
        let alpha = 1.0 / (1.0 + (-splats.opacity_logits[i]).exp());
        let rgba = [dc[0], dc[1], dc[2]].map(|c| (0.5 + SH_C0 * c) * 255.0);
        out.extend(rgba.map(to_byte));
        out.push(to_byte(alpha * 255.0));
        let q = splats.rotations[i];
        let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt();
        let q = if norm > 0.0 {
            q.map(|c| c / norm)
        } else {
            [1.0, 0.0, 0.0, 0.0]
        };
        out.extend(q.map(|c| to_byte(c * 128.0 + 128.0)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::sh_coeffs;

    fn sample(n: usize, sh_degree: u32) -> Splats {
        let k = sh_coeffs(sh_degree);
        let t = |i: usize, s: f32| ((i as f32 * 0.731 + s).sin()) * 2.0;
        let rotations = (0..n)
            .map(|i| {
                let q = [t(i, 0.1), t(i, 0.2), t(i, 0.3), t(i, 0.4)];
                let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt();
                q.map(|c| c / norm)
            })
            .collect();
        Splats {
            means: (0..n).map(|i| [t(i, 1.0), t(i, 2.0) * 10.0, -(i as f32)]).collect(),
            log_scales: (0..n).map(|i| [t(i, 3.0), t(i, 4.0) - 3.0, -1.0]).collect(),
            rotations,
            opacity_logits: (0..n).map(|i| t(i, 5.0)).collect(),
            sh_degree,
            sh: (0..n * k)
                .map(|j| [t(j, 6.0), t(j, 7.0), t(j, 8.0)].map(|c| c * 0.8))
                .collect(),
        }
    }

    #[test]
    fn round_trip_within_quantisation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.splat");
        let splats = sample(100, 2);
        write_splat(&splats, &path).expect("write");
        assert_eq!(fs::metadata(&path).expect("stat").len(), 100 * 32);
        let back = crate::scene::load(&path).expect("load");
        assert_eq!(back.len(), 100);
        assert_eq!(back.sh_degree, 0);
        assert_eq!(back.means, splats.means);
        let k = sh_coeffs(splats.sh_degree);
        for i in 0..100 {
            for axis in 0..3 {
                assert!((back.log_scales[i][axis] - splats.log_scales[i][axis]).abs() < 1e-5);
                // Colour quantised to 1/255 (rounded), in SH units.
                let step = 0.5 / 255.0 / SH_C0 + 1e-5;
                assert!((back.sh[i][axis] - splats.sh[i * k][axis]).abs() <= step, "splat {i}");
            }
            let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
            let (a, b) = (sigmoid(back.opacity_logits[i]), sigmoid(splats.opacity_logits[i]));
            assert!((a - b).abs() <= 0.5 / 255.0 + 1e-6, "opacity of splat {i}: {a} vs {b}");
            // Rotations agree up to sign, within the 1/128 quantisation.
            let dot: f32 = back.rotations[i]
                .iter()
                .zip(&splats.rotations[i])
                .map(|(x, y)| x * y)
                .sum();
            assert!(dot.abs() > 0.999, "rotation of splat {i}: dot {dot}");
        }
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn special_values() {
        let mut record = [0u8; 32];
        record[0..4].copy_from_slice(&1.0f32.to_le_bytes());
        record[12..16].copy_from_slice(&0.0f32.to_le_bytes()); // zero scale: clamped
        record[16..20].copy_from_slice(&1.0f32.to_le_bytes());
        record[20..24].copy_from_slice(&2.0f32.to_le_bytes());
        record[24..28].copy_from_slice(&[255, 0, 128, 255]);
        record[28..32].copy_from_slice(&[128; 4]); // zero quaternion: identity
        let splats = decode(&record).expect("decode");
        assert_eq!(splats.log_scales[0], [MIN_SCALE.ln(), 0.0, 2.0f32.ln()]);
        assert_eq!(splats.rotations[0], [1.0, 0.0, 0.0, 0.0]);
        assert!(splats.opacity_logits[0].is_finite() && splats.opacity_logits[0] > 5.0);
        assert!((splats.sh[0][0] * SH_C0 + 0.5 - 1.0).abs() < 1e-6);
        assert!((splats.sh[0][1] * SH_C0 + 0.5).abs() < 1e-6);

        record[27] = 0; // alpha 0: a finite logit
        record[28..32].copy_from_slice(&[255, 128, 128, 128]);
        let splats = decode(&record).expect("decode");
        assert!(splats.opacity_logits[0].is_finite() && splats.opacity_logits[0] < -5.0);
        assert_eq!(splats.rotations[0], [1.0, 0.0, 0.0, 0.0]);

        record[16..20].copy_from_slice(&(-1.0f32).to_le_bytes());
        let err = decode(&[[0u8; 32].as_slice(), &record].concat()).expect_err("negative scale");
        assert!(err.contains("splat 1 has a negative scale"), "{err}");
    }

    #[test]
    fn bad_length_and_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.splat");
        fs::write(&path, [0u8; 33]).expect("write");
        let err = read_splat(&path).expect_err("33 bytes").to_string();
        assert!(
            err.contains("33 bytes") && err.contains("multiple of the 32-byte"),
            "{err}"
        );

        fs::write(&path, []).expect("write");
        assert_eq!(read_splat(&path).expect("empty parses").len(), 0);
        let err = crate::scene::load(&path).expect_err("no splats").to_string();
        assert!(err.contains("no splats"), "{err}");

        let err = read_splat(&dir.path().join("missing.splat"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing.splat"), "{err}");
    }

    #[test]
    fn bonsai_asset() {
        let path = crate::repo_root().join("assets/bonsai-7k-mini.splat");
        if !path.exists() {
            eprintln!("SKIPPED: {} is absent; run scripts/fetch_assets.sh", path.display());
            return;
        }
        let start = std::time::Instant::now();
        let splats = crate::scene::load(&path).expect("load bonsai-7k-mini.splat");
        eprintln!("bonsai-7k-mini.splat: {} splats in {:?}", splats.len(), start.elapsed());
        assert_eq!(splats.len(), 272_956);
        assert_eq!(splats.sh_degree, 0);
        // load() validated finiteness; check the rotations came out unit length too.
        assert!(splats
            .rotations
            .iter()
            .all(|q| (q.iter().map(|c| c * c).sum::<f32>() - 1.0).abs() < 1e-5));
    }
}
