//! Niantic `.spz` (versions 2 and 3, the gzip layout), read and written.
//!
//! Layout (nianticlabs/spz `load-spz.cc`): a gzip stream of a 16-byte header — magic `NGSP`
//! (0x5053474e little-endian), version u32, point count u32, SH degree u8, fractional bits u8, flags u8
//! (1 = antialiased, 2 = extensions follow), a reserved byte — then the attributes one after the other:
//! positions (3 × 24-bit signed fixed point with `fractional bits` below the point), alphas
//! (u8, sigmoid · 255), colours (3 × u8 of the DC coefficient as `f_dc · 0.15 · 255 + 127.5`), scales
//! (3 × u8 of the log scale as `(s + 10) · 16`), rotations (version 2: x, y, z as `(c + 1) · 127.5`
//! with w ≥ 0 derived; version 3: smallest three, 2 bits naming the largest of x, y, z, w and
//! 3 × (sign bit + 9-bit magnitude / √½), little-endian u32), and SH coefficients (u8, `c · 128 + 128`,
//! coefficient by coefficient, r g b for each).
//!
//! The file's axes are RUB (x right, y up, z back); ours are OpenCV's RDF (y down, z forward), so
//! y and z flip on the way in and out, with the matching signs on quaternions and SH coefficients (as
//! the spz library's `convertCoordinates` does, and splat-transform reads with `to: RDF`).
//!
//! Version 4 (zstd streams, splat-transform's default output) and files with extensions are refused
//! with a clear message: no reference for their layout was available here.

use std::io::{Read, Write};
use std::path::Path;

use super::ply::{check_layout, normalise_quaternion, write_atomic};
use super::{sh_coeffs, SceneError, Splats, OPACITY_LOGIT_LIMIT};

const MAGIC: u32 = 0x5053_474e;
const HEADER: usize = 16;
const COLOR_SCALE: f32 = 0.15;
/// The version the writer produces.
const WRITE_VERSION: u32 = 3;
/// Fractional bits of the positions the writer produces (1/4096 units, as the spz library).
const FRACTIONAL_BITS: u8 = 12;

/// Sign of each SH coefficient (after the DC term, degrees 1 to 3 in the usual real-SH order) when y
/// and z flip, i.e. RUB ↔ RDF: the basis functions odd in y·z change sign.
const FLIP_SH: [f32; 15] = [
    -1.0, -1.0, 1.0, // y, z, x
    -1.0, 1.0, 1.0, -1.0, 1.0, // xy, yz, 3z²−1, xz, x²−y²
    -1.0, 1.0, -1.0, -1.0, 1.0, -1.0,
    1.0, // y(3x²−y²), xyz, y(5z²−1), z(5z²−3), x(5z²−1), z(x²−y²), x(x²−3y²)
];
/// Position and quaternion-vector signs for RUB ↔ RDF.
const FLIP: [f32; 3] = [1.0, -1.0, -1.0];

/// Reads a `.spz` file (versions 2 and 3).
pub fn read_spz(path: &Path) -> Result<Splats, SceneError> {
    let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    decode(&bytes).map_err(|message| SceneError::format(path, message))
}

/// Writes `splats` as a version 3 `.spz` (gzip), atomically. Lossy: 1/4096-unit positions (within
/// ±2048 units), 8-bit log scales, colours, alphas and SH (degree 1 in 5 bits, higher in 4, as the
/// spz library packs by default), 10-bit smallest-three rotations.
pub fn write_spz(splats: &Splats, path: &Path) -> Result<(), SceneError> {
    let bytes = encode(splats).map_err(|message| SceneError::format(path, message))?;
    write_atomic(path, &bytes)
}

fn decode(file: &[u8]) -> Result<Splats, String> {
    if file.starts_with(b"NGSP") {
        let version = file.get(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        return Err(format!(
            "SPZ version {} (uncompressed header with zstd streams) is not supported yet; write version 3 \
             with `splat-transform --spz-version 3`",
            version.map_or("?".to_string(), |v| v.to_string())
        ));
    }
    if !file.starts_with(&[0x1f, 0x8b]) {
        return Err("not an .spz file (neither gzip nor an NGSP header)".into());
    }
    // Inflate at most what the header allows, so a forged count cannot exhaust memory.
    let mut decoder = flate2::read::GzDecoder::new(file);
    let mut header = [0u8; HEADER];
    decoder
        .read_exact(&mut header)
        .map_err(|e| format!("cannot read the header: {e} (truncated or not gzip)"))?;
    let u32_at = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if u32_at(0) != MAGIC {
        return Err("not an .spz file (the gzip stream does not start with NGSP)".into());
    }
    let version = u32_at(4);
    if !(2..=3).contains(&version) {
        return Err(format!("SPZ version {version} is not supported (2 and 3 are)"));
    }
    let n = u32_at(8) as usize;
    let sh_degree = u32::from(header[12]);
    if sh_degree > 3 {
        return Err(format!("SH degree {sh_degree} is not supported (0..=3)"));
    }
    let fractional_bits = header[13];
    if fractional_bits > 24 {
        return Err(format!(
            "{fractional_bits} fractional bits is not a valid position format"
        ));
    }
    if header[14] & 2 != 0 {
        return Err("SPZ extensions are not supported".into());
    }
    let k = sh_coeffs(sh_degree);
    let rotation_bytes = if version >= 3 { 4 } else { 3 };
    let per_point = 9 + 1 + 3 + 3 + rotation_bytes + (k - 1) * 3;
    let needed = n
        .checked_mul(per_point)
        .ok_or_else(|| format!("{n} points is not a plausible count"))?;
    let mut body = Vec::new();
    decoder
        .take(needed as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot inflate the data: {e} (truncated?)"))?;
    if body.len() < needed {
        return Err(format!(
            "truncated: {n} points need {needed} bytes of data but the file holds {}",
            body.len()
        ));
    }
    if body.len() > needed {
        return Err(format!(
            "the data is longer than {n} points need (a wrong point count?)"
        ));
    }

    let (positions, rest) = body.split_at(n * 9);
    let (alphas, rest) = rest.split_at(n);
    let (colours, rest) = rest.split_at(n * 3);
    let (scales, rest) = rest.split_at(n * 3);
    let (rotations, sh) = rest.split_at(n * rotation_bytes);

    let position_scale = 1.0 / (1u32 << fractional_bits) as f32;
    let mut splats = Splats::with_capacity(n, sh_degree);
    for i in 0..n {
        splats.means.push([0, 1, 2].map(|a| {
            let b = &positions[i * 9 + a * 3..i * 9 + a * 3 + 3];
            let fixed = i32::from_le_bytes([b[0], b[1], b[2], if b[2] & 0x80 != 0 { 0xff } else { 0 }]);
            FLIP[a] * fixed as f32 * position_scale
        }));
        splats
            .log_scales
            .push([0, 1, 2].map(|a| f32::from(scales[i * 3 + a]) / 16.0 - 10.0));
        let xyzw = if version >= 3 {
            let b = &rotations[i * 4..i * 4 + 4];
            unpack_smallest_three(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            let b = &rotations[i * 3..i * 3 + 3];
            let v = [0, 1, 2].map(|a| f32::from(b[a]) / 127.5 - 1.0);
            let w = (1.0 - v.iter().map(|c| c * c).sum::<f32>()).max(0.0).sqrt();
            [v[0], v[1], v[2], w]
        };
        let q = [xyzw[3], FLIP[0] * xyzw[0], FLIP[1] * xyzw[1], FLIP[2] * xyzw[2]];
        splats.rotations.push(normalise_quaternion(q, i)?);
        let alpha = f32::from(alphas[i]) / 255.0;
        splats.opacity_logits.push(match alphas[i] {
            0 => -OPACITY_LOGIT_LIMIT,
            255 => OPACITY_LOGIT_LIMIT,
            _ => (alpha / (1.0 - alpha)).ln(),
        });
        splats
            .sh
            .push([0, 1, 2].map(|c| (f32::from(colours[i * 3 + c]) / 255.0 - 0.5) / COLOR_SCALE));
        for (j, flip) in FLIP_SH.iter().enumerate().take(k - 1) {
            let at = (i * (k - 1) + j) * 3;
            splats
                .sh
                .push([0, 1, 2].map(|c| flip * (f32::from(sh[at + c]) - 128.0) / 128.0));
        }
    }
    Ok(splats)
}

/// A version 3 rotation word to (x, y, z, w), as the spz library's `unpackQuaternionSmallestThree`.
fn unpack_smallest_three(mut word: u32) -> [f32; 4] {
    const MASK: u32 = (1 << 9) - 1;
    let largest = (word >> 30) as usize;
    let mut q = [0.0f32; 4];
    let mut sum = 0.0f32;
    for i in (0..4).rev() {
        if i != largest {
            let magnitude = word & MASK;
            let negative = (word >> 9) & 1 == 1;
            word >>= 10;
            let v = std::f32::consts::FRAC_1_SQRT_2 * magnitude as f32 / MASK as f32;
            q[i] = if negative { -v } else { v };
            sum += q[i] * q[i];
        }
    }
    q[largest] = (1.0 - sum).max(0.0).sqrt();
    q
}

/// (x, y, z, w) to a version 3 rotation word, as the spz library's `packQuaternionSmallestThree`.
fn pack_smallest_three(q: [f32; 4]) -> u32 {
    let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt();
    let q = if norm > 0.0 {
        q.map(|c| c / norm)
    } else {
        [0.0, 0.0, 0.0, 1.0]
    };
    let largest = (1..4).fold(0, |best, i| if q[i].abs() > q[best].abs() { i } else { best });
    let negate = q[largest] < 0.0;
    (0..4).filter(|&i| i != largest).fold(largest as u32, |word, i| {
        let sign = u32::from((q[i] < 0.0) ^ negate);
        let magnitude = (((1u32 << 9) - 1) as f32 * (q[i].abs() / std::f32::consts::FRAC_1_SQRT_2) + 0.5) as u32;
        (word << 10) | (sign << 9) | magnitude.min((1 << 9) - 1)
    })
}

fn to_u8(x: f32) -> u8 {
    x.round().clamp(0.0, 255.0) as u8
}

fn encode(splats: &Splats) -> Result<Vec<u8>, String> {
    let k = check_layout(splats)?;
    let n = splats.len();
    let count = u32::try_from(n).map_err(|_| format!("{n} splats do not fit in an .spz file"))?;
    let limit = (1 << 23) as f32 / (1 << FRACTIONAL_BITS) as f32;
    let scale = (1 << FRACTIONAL_BITS) as f32;
    let mut positions = Vec::with_capacity(n * 9);
    for (i, mean) in splats.means.iter().enumerate() {
        for a in 0..3 {
            let v = FLIP[a] * mean[a];
            // NaN fails this too.
            if v.abs().partial_cmp(&limit) != Some(std::cmp::Ordering::Less) {
                return Err(format!(
                    "splat {i}'s position {mean:?} is outside the .spz range (±{limit} units at 1/4096)"
                ));
            }
            let fixed = (v * scale).round() as i32;
            positions.extend_from_slice(&fixed.to_le_bytes()[..3]);
        }
    }
    let alphas: Vec<u8> = splats
        .opacity_logits
        .iter()
        .map(|&o| to_u8(1.0 / (1.0 + (-o).exp()) * 255.0))
        .collect();
    let colours: Vec<u8> = (0..n)
        .flat_map(|i| splats.sh[i * k].map(|c| to_u8(c * (COLOR_SCALE * 255.0) + 0.5 * 255.0)))
        .collect();
    let scales: Vec<u8> = splats
        .log_scales
        .iter()
        .flat_map(|s| s.map(|v| to_u8((v + 10.0) * 16.0)))
        .collect();
    let rotations: Vec<u8> = splats
        .rotations
        .iter()
        .flat_map(|&[w, x, y, z]| pack_smallest_three([FLIP[0] * x, FLIP[1] * y, FLIP[2] * z, w]).to_le_bytes())
        .collect();
    let mut sh = Vec::with_capacity(n * (k - 1) * 3);
    for i in 0..n {
        for (j, coeff) in splats.sh[i * k + 1..(i + 1) * k].iter().enumerate() {
            // 5 bits for degree 1, 4 above (the spz library's defaults), as bucket centres.
            let bucket: i32 = if j < 3 { 1 << 3 } else { 1 << 4 };
            for c in coeff {
                let q = (FLIP_SH[j] * c * 128.0).round() as i32 + 128;
                let q = (q + bucket / 2) / bucket * bucket;
                sh.push(q.clamp(0, 255) as u8);
            }
        }
    }
    let mut raw = Vec::with_capacity(HEADER + positions.len() + 8 * n + sh.len());
    raw.extend_from_slice(&MAGIC.to_le_bytes());
    raw.extend_from_slice(&WRITE_VERSION.to_le_bytes());
    raw.extend_from_slice(&count.to_le_bytes());
    raw.extend_from_slice(&[splats.sh_degree as u8, FRACTIONAL_BITS, 0, 0]);
    for part in [&positions, &alphas, &colours, &scales, &rotations, &sh] {
        raw.extend_from_slice(part);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)
        .and_then(|()| gz.finish())
        .map_err(|e| format!("cannot compress: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_three_round_trips() {
        for q in [
            [0.0, 0.0, 0.0, 1.0],
            [0.5, -0.5, 0.5, -0.5],
            [0.1, 0.9, -0.3, 0.2],
            [-0.7, 0.1, 0.1, 0.7],
        ] {
            let norm = q.iter().map(|c: &f32| c * c).sum::<f32>().sqrt();
            let q = q.map(|c| c / norm);
            let back = unpack_smallest_three(pack_smallest_three(q));
            let dot: f32 = q.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!(dot.abs() > 1.0 - 1e-5, "{q:?} -> {back:?}");
        }
    }
}
