//! Niantic `.spz` (versions 2 and 3, the gzip layout, and version 4, zstd streams), read and written.
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
//! Version 4 (spz 2.x, splat-transform's default output; see [`decode_ngsp`]) has the same attribute
//! bytes, each attribute its own zstd frame behind an uncompressed header and table of contents;
//! its extension records are skipped except the one that says the data is stored in RDF axes. SH
//! degree 4 (allowed from version 3 on) is read as degree 3. Extensions in a gzip file are refused.

use std::io::{Read, Write};
use std::path::Path;

use super::ply::{check_layout, normalise_quaternion, write_atomic};
use super::{sh_coeffs, SceneError, Splats, OPACITY_LOGIT_LIMIT};

const MAGIC: u32 = 0x5053_474e;
const HEADER: usize = 16;
const COLOR_SCALE: f32 = 0.15;
/// zstd level of version 4 streams (the spz library's).
const ZSTD_LEVEL: i32 = 12;

/// The layouts the writer produces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpzVersion {
    /// Version 3: one gzip stream (read by every spz reader, the default).
    #[default]
    V3,
    /// Version 4: an uncompressed header and one zstd stream per attribute (spz 2.x, splat-transform's default).
    V4,
}
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

/// Reads a `.spz` file (versions 2 to 4).
pub fn read_spz(path: &Path) -> Result<Splats, SceneError> {
    let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    decode(&bytes).map_err(|message| SceneError::format(path, message))
}

/// Writes `splats` as a version 3 `.spz` (gzip), atomically. Lossy: 1/4096-unit positions (within
/// ±2048 units), 8-bit log scales, colours, alphas and SH (degree 1 in 5 bits, higher in 4, as the
/// spz library packs by default), 10-bit smallest-three rotations.
pub fn write_spz(splats: &Splats, path: &Path) -> Result<(), SceneError> {
    write_spz_version(splats, path, SpzVersion::V3)
}

/// [`write_spz`] in the layout `version` names; version 4 has the same quantisation.
pub fn write_spz_version(splats: &Splats, path: &Path, version: SpzVersion) -> Result<(), SceneError> {
    let bytes = encode(splats, version).map_err(|message| SceneError::format(path, message))?;
    write_atomic(path, &bytes)
}

fn decode(file: &[u8]) -> Result<Splats, String> {
    if file.starts_with(b"NGSP") {
        return decode_ngsp(file);
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
        return Err(format!(
            "SPZ version {version} in a gzip stream is not supported (2 and 3 are; version 4 has an uncompressed header)"
        ));
    }
    let layout = Layout::new(version, u32_at(8), header[12], header[13])?;
    if header[14] & 2 != 0 {
        return Err("SPZ extensions in a version 2-3 file are not supported".into());
    }
    let sizes = layout.stream_sizes();
    let needed = sizes
        .iter()
        .try_fold(0usize, |a, &b| a.checked_add(b))
        .ok_or("impossible sizes")?;
    let mut body = Vec::new();
    decoder
        .take(needed as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot inflate the data: {e} (truncated?)"))?;
    let n = layout.n;
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
    let mut streams: [&[u8]; 6] = [&[]; 6];
    let mut rest = body.as_slice();
    for (stream, size) in streams.iter_mut().zip(sizes) {
        let (head, tail) = rest.split_at(size);
        *stream = head;
        rest = tail;
    }
    layout.unpack(streams, true)
}

/// What the header says about the data.
struct Layout {
    version: u32,
    n: usize,
    /// The file's SH degree (0 to 4).
    sh_degree: u32,
    fractional_bits: u8,
}

impl Layout {
    fn new(version: u32, count: u32, sh_degree: u8, fractional_bits: u8) -> Result<Self, String> {
        if sh_degree > 4 {
            return Err(format!("SH degree {sh_degree} is not supported (0..=4)"));
        }
        if fractional_bits > 24 {
            return Err(format!(
                "{fractional_bits} fractional bits is not a valid position format"
            ));
        }
        if count == 0 {
            return Err("the header declares 0 points".into());
        }
        Ok(Self {
            version,
            n: count as usize,
            sh_degree: u32::from(sh_degree),
            fractional_bits,
        })
    }

    fn rotation_bytes(&self) -> usize {
        if self.version >= 3 {
            4
        } else {
            3
        }
    }

    /// Bytes of positions, alphas, colours, scales, rotations and SH, in file order.
    fn stream_sizes(&self) -> [usize; 6] {
        let n = self.n;
        let sh = (sh_coeffs(self.sh_degree) - 1) * 3;
        [n * 9, n, n * 3, n * 3, n * self.rotation_bytes(), n * sh]
    }

    /// Decodes the six attribute streams (of [`Layout::stream_sizes`]); `flip` converts RUB to our
    /// RDF axes (off for data stored in RDF). SH degree 4 is cut to 3 (the renderer's limit), with a warning.
    fn unpack(&self, streams: [&[u8]; 6], flip: bool) -> Result<Splats, String> {
        let [positions, alphas, colours, scales, rotations, sh] = streams;
        let n = self.n;
        let flip_axis = if flip { FLIP } else { [1.0; 3] };
        let file_rest = sh_coeffs(self.sh_degree) - 1;
        let degree = self.sh_degree.min(3);
        if self.sh_degree > 3 {
            log::warn!(
                "this .spz has SH degree {}; its degree-4 coefficients are dropped (difix3d renders up to 3)",
                self.sh_degree
            );
        }
        let kept_rest = sh_coeffs(degree) - 1;
        let rotation_bytes = self.rotation_bytes();
        let position_scale = 1.0 / (1u32 << self.fractional_bits) as f32;
        let mut splats = Splats::with_capacity(n, degree);
        for i in 0..n {
            splats.means.push([0, 1, 2].map(|a| {
                let b = &positions[i * 9 + a * 3..i * 9 + a * 3 + 3];
                let fixed = i32::from_le_bytes([b[0], b[1], b[2], if b[2] & 0x80 != 0 { 0xff } else { 0 }]);
                flip_axis[a] * fixed as f32 * position_scale
            }));
            splats
                .log_scales
                .push([0, 1, 2].map(|a| f32::from(scales[i * 3 + a]) / 16.0 - 10.0));
            let xyzw = if rotation_bytes == 4 {
                let b = &rotations[i * 4..i * 4 + 4];
                unpack_smallest_three(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            } else {
                let b = &rotations[i * 3..i * 3 + 3];
                let v = [0, 1, 2].map(|a| f32::from(b[a]) / 127.5 - 1.0);
                let w = (1.0 - v.iter().map(|c| c * c).sum::<f32>()).max(0.0).sqrt();
                [v[0], v[1], v[2], w]
            };
            let q = [
                xyzw[3],
                flip_axis[0] * xyzw[0],
                flip_axis[1] * xyzw[1],
                flip_axis[2] * xyzw[2],
            ];
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
            for (j, &flip_sign) in FLIP_SH.iter().enumerate().take(kept_rest) {
                let at = (i * file_rest + j) * 3;
                let sign = if flip { flip_sign } else { 1.0 };
                splats
                    .sh
                    .push([0, 1, 2].map(|c| sign * (f32::from(sh[at + c]) - 128.0) / 128.0));
            }
        }
        Ok(splats)
    }
}

/// Size of the version 4 header.
const NGSP_HEADER: usize = 32;
/// The Adobe extension that says which axes the data is stored in (nianticlabs/spz
/// `SPZ_ADOBE_coordinate_system`, a u32 `CoordinateSystem`: 0 unspecified = RUB, 4 RUB, 6 RDF).
const EXTENSION_COORDINATE_SYSTEM: u32 = 0xADBE_0003;

/// Version 4: a plain 32-byte header (magic, version, count u32, SH degree, fractional bits, flags,
/// stream count u8, table-of-contents offset u32, 12 reserved bytes), extension records up to the
/// table of contents, then per stream (compressed size u64, uncompressed size u64), then the
/// streams, each one zstd frame: positions, alphas, colours, scales, rotations, SH (empty ones left
/// out). As nianticlabs/spz `loadSpzPacked`.
fn decode_ngsp(file: &[u8]) -> Result<Splats, String> {
    if file.len() < NGSP_HEADER {
        return Err(format!(
            "truncated: the version 4 header needs {NGSP_HEADER} bytes but the file has {}",
            file.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]);
    let u64_at = |at: usize| u64::from_le_bytes(std::array::from_fn(|i| file[at + i]));
    let version = u32_at(4);
    if version != 4 {
        return Err(format!(
            "SPZ version {version} with an uncompressed NGSP header is not supported (version 4 is; 2 and 3 are gzip)"
        ));
    }
    let count = u32_at(8);
    // As the spz library: no stream compresses better than 1024:1, and positions take 9 bytes a point.
    if u64::from(count) > file.len() as u64 * 1024 / 9 || count > i32::MAX as u32 {
        return Err(format!(
            "the header declares {count} points, more than a {}-byte file can hold",
            file.len()
        ));
    }
    let layout = Layout::new(version, count, file[12], file[13])?;
    let flags = file[14];
    let stream_count = usize::from(file[15]);
    let toc = u32_at(16) as usize;
    if toc < NGSP_HEADER {
        return Err(format!(
            "the table of contents offset {toc} points into the {NGSP_HEADER}-byte header"
        ));
    }
    let toc_end = toc + 16 * stream_count;
    if toc_end > file.len() {
        return Err(format!(
            "truncated: the table of contents ends at byte {toc_end} but the file has {}",
            file.len()
        ));
    }
    let flip = if flags & 2 != 0 {
        extension_axes(&file[NGSP_HEADER..toc])?
    } else {
        true
    };
    let sizes: Vec<usize> = layout.stream_sizes().into_iter().filter(|&s| s > 0).collect();
    if stream_count != sizes.len() {
        return Err(format!(
            "the header declares {stream_count} streams; SH degree {} needs {}",
            layout.sh_degree,
            sizes.len()
        ));
    }
    const NAMES: [&str; 6] = ["positions", "alphas", "colours", "scales", "rotations", "SH"];
    let mut data: Vec<Vec<u8>> = Vec::with_capacity(6);
    let mut offset = toc_end;
    let names = NAMES
        .iter()
        .zip(layout.stream_sizes())
        .filter(|(_, s)| *s > 0)
        .map(|(n, _)| *n);
    for (i, (name, &expected)) in names.zip(&sizes).enumerate() {
        let compressed = u64_at(toc + 16 * i);
        let uncompressed = u64_at(toc + 16 * i + 8);
        if uncompressed != expected as u64 {
            return Err(format!(
                "the {name} stream holds {uncompressed} bytes; {} points need {expected} (a wrong point count?)",
                layout.n
            ));
        }
        let available = (file.len() - offset) as u64;
        if compressed > available {
            return Err(format!(
                "truncated: the {name} stream needs {compressed} bytes at byte {offset} but only {available} are left"
            ));
        }
        let frame = &file[offset..offset + compressed as usize];
        offset += compressed as usize;
        let bytes = zstd::bulk::decompress(frame, expected)
            .map_err(|e| format!("cannot decompress the {name} stream: {e} (corrupt or truncated?)"))?;
        if bytes.len() != expected {
            return Err(format!(
                "the {name} stream decompresses to {} bytes, but {} points need {expected}",
                bytes.len(),
                layout.n
            ));
        }
        data.push(bytes);
    }
    if offset != file.len() {
        return Err(format!(
            "{} bytes follow the last stream (a wrong stream size?)",
            file.len() - offset
        ));
    }
    let mut streams: [&[u8]; 6] = [&[]; 6];
    let mut next = data.iter();
    for (stream, size) in streams.iter_mut().zip(layout.stream_sizes()) {
        if size > 0 {
            *stream = next.next().map(Vec::as_slice).unwrap_or_default();
        }
    }
    layout.unpack(streams, flip)
}

/// Walks the extension records (u32 type, u32 length, payload) and returns whether the data is
/// stored in RUB axes (to be flipped to ours), from the coordinate-system extension if there is one.
fn extension_axes(mut records: &[u8]) -> Result<bool, String> {
    let mut rub = true;
    while !records.is_empty() {
        if records.len() < 8 {
            return Err("truncated extension record before the table of contents".into());
        }
        let kind = u32::from_le_bytes([records[0], records[1], records[2], records[3]]);
        let len = u32::from_le_bytes([records[4], records[5], records[6], records[7]]) as usize;
        let payload = records
            .get(8..8usize.saturating_add(len))
            .ok_or_else(|| format!("extension {kind:#010x} claims {len} bytes past the table of contents"))?;
        if kind == EXTENSION_COORDINATE_SYSTEM {
            let value = payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or("the coordinate-system extension is shorter than 4 bytes")?;
            rub = match value {
                0 | 4 => true,
                6 => false,
                other => {
                    return Err(format!(
                        "the data is stored in coordinate system {other} (spz's CoordinateSystem); only RUB (4) and \
                         RDF (6) are supported"
                    ))
                }
            };
        }
        records = &records[8 + len..];
    }
    Ok(rub)
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

fn encode(splats: &Splats, version: SpzVersion) -> Result<Vec<u8>, String> {
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
    if version == SpzVersion::V4 {
        let streams: Vec<&Vec<u8>> = [&positions, &alphas, &colours, &scales, &rotations, &sh]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let mut out = Vec::with_capacity(NGSP_HEADER + 16 * streams.len() + positions.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&[splats.sh_degree as u8, FRACTIONAL_BITS, 0, streams.len() as u8]);
        out.extend_from_slice(&(NGSP_HEADER as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 12]);
        let frames = streams
            .iter()
            .map(|s| zstd::bulk::compress(s, ZSTD_LEVEL).map_err(|e| format!("cannot compress: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        for (frame, stream) in frames.iter().zip(&streams) {
            out.extend_from_slice(&(frame.len() as u64).to_le_bytes());
            out.extend_from_slice(&(stream.len() as u64).to_le_bytes());
        }
        for frame in &frames {
            out.extend_from_slice(frame);
        }
        return Ok(out);
    }
    let mut raw = Vec::with_capacity(HEADER + positions.len() + 8 * n + sh.len());
    raw.extend_from_slice(&MAGIC.to_le_bytes());
    raw.extend_from_slice(&3u32.to_le_bytes());
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
