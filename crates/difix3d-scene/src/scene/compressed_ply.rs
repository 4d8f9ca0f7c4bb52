//! SuperSplat / PlayCanvas compressed PLY (`NAME.compressed.ply`), read and written.
//!
//! The layout, as PlayCanvas splat-transform 2.7 writes and reads it (`writeCompressedPly`,
//! `decompressPly`): a binary little-endian PLY with three elements.
//!
//! - `chunk` (one per 256 splats): float `min_x min_y min_z max_x max_y max_z`, `min_scale_* max_scale_*`
//!   (log scales, clamped to ±20) and, optionally, `min_r min_g min_b max_r max_g max_b` (DC colours
//!   `0.5 + SH_C0 · f_dc`).
//! - `vertex`: uint `packed_position` and `packed_scale` (11/10/11 bits x/y/z, each a fraction of its
//!   chunk's range), `packed_rotation` (smallest three: the top 2 bits name the largest component,
//!   which is made positive and left out; the other three in order, 10 bits each, as
//!   `c · √2/2 + 0.5`), `packed_color` (8/8/8/8 bits: r, g, b as fractions of the chunk's colour range,
//!   or of [0, 1] without one, and alpha = sigmoid(opacity)).
//! - `sh` (optional): uchar `f_rest_0..` (9, 24 or 45, channel-major as in the float PLY), each
//!   `trunc((v / 8 + 0.5) · 256)` clamped to 0..255; decoded as `(n − 0.5) · 8` with `n` = 0 for byte 0,
//!   1 for 255 and `(b + 0.5) / 256` otherwise.
//!
//! Decoding follows `decompressPly` operation by operation (in f64, as JavaScript computes, rounded to
//! f32 at the end), except that alpha 0 and 255 become opacity logits ∓/±[`OPACITY_LOGIT_LIMIT`]
//! (the same alpha) where splat-transform writes ∓infinity. Writing follows `writeCompressedPly`:
//! splats are reordered along a Morton curve first (so each chunk covers a small box), which is why a
//! written-then-read scene has its splats in a different order.

use std::path::Path;

use super::ply::{check_layout, normalise_quaternion, write_atomic, Element, Format, Header, PropType, Scalar};
use super::{sh_coeffs, SceneError, Splats, OPACITY_LOGIT_LIMIT};

/// Splats per chunk.
const CHUNK: usize = 256;

/// splat-transform's SH_C0 (as a double).
const SH_C0: f64 = 0.282_094_791_773_878_14;

const POSITION_BOUNDS: [&str; 6] = ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z"];
const SCALE_BOUNDS: [&str; 6] = [
    "min_scale_x",
    "min_scale_y",
    "min_scale_z",
    "max_scale_x",
    "max_scale_y",
    "max_scale_z",
];
const COLOUR_BOUNDS: [&str; 6] = ["min_r", "min_g", "min_b", "max_r", "max_g", "max_b"];
const PACKED: [&str; 4] = ["packed_position", "packed_rotation", "packed_scale", "packed_color"];

/// Reads a compressed PLY whose header has been parsed (called by the `.ply` reader when the header
/// has a `chunk` element or `packed_*` properties).
pub(super) fn decode(header: &Header, bytes: &[u8]) -> Result<Splats, String> {
    if header.format != Format::BinaryLittleEndian {
        return Err("a compressed PLY must be binary_little_endian".into());
    }
    // Every element has fixed-size rows here; find where each one's data starts.
    let body = &bytes[header.body_start..];
    let mut starts = Vec::with_capacity(header.elements.len());
    let mut offset = 0usize;
    for element in &header.elements {
        let stride = element.fixed_stride().ok_or_else(|| {
            format!(
                "element '{}' has a list property, which a compressed PLY never has",
                element.name
            )
        })?;
        starts.push(offset);
        offset = element
            .count
            .checked_mul(stride)
            .and_then(|len| offset.checked_add(len))
            .ok_or_else(|| format!("element '{}' has an impossible row count", element.name))?;
    }
    if offset > body.len() {
        return Err(format!(
            "truncated: the header's elements need {offset} bytes of data but the file has {}",
            body.len()
        ));
    }
    let find = |name: &str| -> Result<(&Element, &[u8]), String> {
        let index = header
            .elements
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| format!("compressed PLY without a '{name}' element"))?;
        let element = &header.elements[index];
        let len = element.count * element.fixed_stride().unwrap_or(0);
        Ok((element, &body[starts[index]..starts[index] + len]))
    };
    let (chunk, chunk_rows) = find("chunk")?;
    let (vertex, vertex_rows) = find("vertex")?;
    let n = vertex.count;
    if chunk.count != n.div_ceil(CHUNK) {
        return Err(format!(
            "{n} splats need {} chunks of {CHUNK}, but the header declares {} chunks",
            n.div_ceil(CHUNK),
            chunk.count
        ));
    }

    let chunk_stride = chunk.fixed_stride().unwrap_or(0);
    let float_column = |name: &str| column(chunk, name, Scalar::F32);
    let position_bounds: Vec<usize> = POSITION_BOUNDS
        .iter()
        .map(|n| float_column(n))
        .collect::<Result<_, _>>()?;
    let scale_bounds: Vec<usize> = SCALE_BOUNDS.iter().map(|n| float_column(n)).collect::<Result<_, _>>()?;
    let has_colour = chunk.props.iter().any(|p| p.name == "min_r");
    let colour_bounds: Vec<usize> = if has_colour {
        COLOUR_BOUNDS
            .iter()
            .map(|n| float_column(n))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let vertex_stride = vertex.fixed_stride().unwrap_or(0);
    let packed: Vec<usize> = PACKED
        .iter()
        .map(|name| column(vertex, name, Scalar::U32))
        .collect::<Result<_, _>>()?;

    // Optional SH bytes.
    let sh = match header.elements.iter().any(|e| e.name == "sh") {
        false => None,
        true => {
            let (element, rows) = find("sh")?;
            let n_rest = element.props.len();
            let degree = match n_rest {
                9 => 1,
                24 => 2,
                45 => 3,
                _ => {
                    return Err(format!(
                        "the 'sh' element has {n_rest} properties; expected 9, 24 or 45 (SH degree 1 to 3)"
                    ))
                }
            };
            for (i, prop) in element.props.iter().enumerate() {
                let expected = format!("f_rest_{i}");
                if prop.name != expected || !matches!(prop.ty, PropType::Scalar(Scalar::U8)) {
                    return Err(format!(
                        "'sh' property {i} is '{}', expected 'uchar {expected}'",
                        prop.name
                    ));
                }
            }
            if element.count != n {
                return Err(format!(
                    "the 'sh' element has {} rows but there are {n} splats",
                    element.count
                ));
            }
            Some((degree, rows))
        }
    };
    let sh_degree = sh.map_or(0, |(degree, _)| degree);
    let k = sh_coeffs(sh_degree);

    let f32_at =
        |row: &[u8], at: usize| f64::from(f32::from_le_bytes([row[at], row[at + 1], row[at + 2], row[at + 3]]));
    let u32_at = |row: &[u8], at: usize| u32::from_le_bytes([row[at], row[at + 1], row[at + 2], row[at + 3]]);
    let unorm = |value: u32, bits: u32| f64::from(value & ((1 << bits) - 1)) / f64::from((1u32 << bits) - 1);
    let lerp = |a: f64, b: f64, t: f64| a * (1.0 - t) + b * t;
    let unpack_111011 = |v: u32| [unorm(v >> 21, 11), unorm(v >> 11, 10), unorm(v, 11)];

    let mut splats = Splats::with_capacity(n, sh_degree);
    for (i, row) in vertex_rows.chunks_exact(vertex_stride).enumerate() {
        let bounds = &chunk_rows[(i / CHUNK) * chunk_stride..(i / CHUNK + 1) * chunk_stride];
        let [position, rotation, scale, colour] = [0, 1, 2, 3].map(|p| u32_at(row, packed[p]));

        let t = unpack_111011(position);
        let b = |j: usize| f32_at(bounds, position_bounds[j]);
        splats.means.push([0, 1, 2].map(|a| lerp(b(a), b(a + 3), t[a]) as f32));
        let t = unpack_111011(scale);
        let b = |j: usize| f32_at(bounds, scale_bounds[j]);
        splats
            .log_scales
            .push([0, 1, 2].map(|a| lerp(b(a), b(a + 3), t[a]) as f32));

        let norm = 1.0 / (std::f64::consts::SQRT_2 * 0.5);
        let [a, b, c] = [20, 10, 0].map(|shift| (unorm(rotation >> shift, 10) - 0.5) * norm);
        let m = (1.0 - (a * a + b * b + c * c)).max(0.0).sqrt();
        let q = match rotation >> 30 {
            0 => [m, a, b, c],
            1 => [a, m, b, c],
            2 => [a, b, m, c],
            _ => [a, b, c, m],
        };
        splats.rotations.push(normalise_quaternion(q.map(|v| v as f32), i)?);

        let rgba = [24, 16, 8, 0].map(|shift| unorm(colour >> shift, 8));
        let dc = [0, 1, 2].map(|ch| {
            let c = if has_colour {
                lerp(
                    f32_at(bounds, colour_bounds[ch]),
                    f32_at(bounds, colour_bounds[ch + 3]),
                    rgba[ch],
                )
            } else {
                rgba[ch]
            };
            ((c - 0.5) / SH_C0) as f32
        });
        splats.sh.push(dc);
        let alpha = rgba[3];
        splats.opacity_logits.push(if alpha <= 0.0 {
            -OPACITY_LOGIT_LIMIT
        } else if alpha >= 1.0 {
            OPACITY_LOGIT_LIMIT
        } else {
            (-(1.0 / alpha - 1.0).ln()) as f32
        });

        if let Some((_, rows)) = sh {
            let per_channel = k - 1;
            let bytes = &rows[i * 3 * per_channel..(i + 1) * 3 * per_channel];
            let value = |b: u8| {
                let n = match b {
                    0 => 0.0,
                    255 => 1.0,
                    _ => (f64::from(b) + 0.5) / 256.0,
                };
                ((n - 0.5) * 8.0) as f32
            };
            for coeff in 0..per_channel {
                splats
                    .sh
                    .push([0, 1, 2].map(|ch| value(bytes[ch * per_channel + coeff])));
            }
        }
    }
    Ok(splats)
}

/// Byte offset in a row of `element` of the property `name`, which must have type `ty`.
fn column(element: &Element, name: &str, ty: Scalar) -> Result<usize, String> {
    let mut offset = 0;
    for prop in &element.props {
        let PropType::Scalar(scalar) = prop.ty else {
            return Err(format!("element '{}' has a list property", element.name));
        };
        if prop.name == name {
            if scalar != ty {
                return Err(format!(
                    "property '{name}' of element '{}' must be {}",
                    element.name,
                    if ty == Scalar::F32 { "float" } else { "uint" }
                ));
            }
            return Ok(offset);
        }
        offset += scalar.size();
    }
    Err(format!("element '{}' has no property '{name}'", element.name))
}

/// Writes `splats` as a compressed PLY (splat-transform's layout, with per-chunk colour bounds and the
/// SH bytes of degrees 1 to 3), atomically. Lossy (see the module docs); the values must be finite.
pub fn write_compressed_ply(splats: &Splats, path: &Path) -> Result<(), SceneError> {
    let bytes = encode(splats).map_err(|message| SceneError::format(path, message))?;
    write_atomic(path, &bytes)
}

fn encode(splats: &Splats) -> Result<Vec<u8>, String> {
    let k = check_layout(splats)?;
    let n = splats.len();
    if let Some(i) = (0..n).find(|&i| !splats.has_finite_values(i)) {
        return Err(format!(
            "splat {i} has a NaN or infinite value, which a compressed PLY cannot store"
        ));
    }
    let per_channel = k - 1;
    let chunks = n.div_ceil(CHUNK);

    let mut header = String::from("ply\nformat binary_little_endian 1.0\ncomment Generated by difix3d\n");
    header.push_str(&format!("element chunk {chunks}\n"));
    for name in POSITION_BOUNDS.iter().chain(&SCALE_BOUNDS).chain(&COLOUR_BOUNDS) {
        header.push_str(&format!("property float {name}\n"));
    }
    header.push_str(&format!("element vertex {n}\n"));
    for name in PACKED {
        header.push_str(&format!("property uint {name}\n"));
    }
    if per_channel > 0 {
        header.push_str(&format!("element sh {n}\n"));
        for i in 0..3 * per_channel {
            header.push_str(&format!("property uchar f_rest_{i}\n"));
        }
    }
    header.push_str("end_header\n");

    let order = morton_order(&splats.means);
    let mut chunk_data: Vec<u8> = Vec::with_capacity(chunks * 18 * 4);
    let mut vertex_data: Vec<u8> = Vec::with_capacity(n * 16);
    let mut sh_data: Vec<u8> = Vec::with_capacity(n * 3 * per_channel);
    for members in order.chunks(CHUNK) {
        let f = |v: f32| f64::from(v);
        // splat-transform stores the colours back into an f32 array before taking bounds.
        let colour = |i: usize, ch: usize| f((f(splats.sh[i * k][ch]) * SH_C0 + 0.5) as f32);
        // Per-axis (min, max) over the chunk of `value(i, axis)`.
        let bounds = |value: &dyn Fn(usize, usize) -> f64| -> [(f64, f64); 3] {
            [0, 1, 2].map(|axis| {
                members.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
                    let v = value(i, axis);
                    (lo.min(v), hi.max(v))
                })
            })
        };
        let position = bounds(&|i, a| f(splats.means[i][a]));
        // "clamp scale because sometimes values are at infinity"
        let scale =
            bounds(&|i, a| f(splats.log_scales[i][a])).map(|(lo, hi)| (lo.clamp(-20.0, 20.0), hi.clamp(-20.0, 20.0)));
        let rgb = bounds(&|i, ch| colour(i, ch));
        for group in [&position, &scale, &rgb] {
            for v in group.iter().map(|b| b.0).chain(group.iter().map(|b| b.1)) {
                chunk_data.extend_from_slice(&(v as f32).to_le_bytes());
            }
        }
        for &i in members {
            let p = [0, 1, 2].map(|a| normalize(f(splats.means[i][a]), position[a]));
            let s = [0, 1, 2].map(|a| normalize(f(splats.log_scales[i][a]), scale[a]));
            let c = [0, 1, 2].map(|ch| normalize(colour(i, ch), rgb[ch]));
            let alpha = 1.0 / (1.0 + (-f(splats.opacity_logits[i])).exp());
            let words = [
                pack_111011(p),
                pack_rotation(splats.rotations[i].map(f)),
                pack_111011(s),
                pack_unorm(c[0], 8) << 24 | pack_unorm(c[1], 8) << 16 | pack_unorm(c[2], 8) << 8 | pack_unorm(alpha, 8),
            ];
            for word in words {
                vertex_data.extend_from_slice(&word.to_le_bytes());
            }
            let rest = &splats.sh[i * k + 1..(i + 1) * k];
            for ch in 0..3 {
                for coeff in rest {
                    let v = (f(coeff[ch]) / 8.0 + 0.5) * 256.0;
                    sh_data.push(v.trunc().clamp(0.0, 255.0) as u8);
                }
            }
        }
    }
    let mut out = header.into_bytes();
    out.extend_from_slice(&chunk_data);
    out.extend_from_slice(&vertex_data);
    out.extend_from_slice(&sh_data);
    Ok(out)
}

/// `x` as a fraction of `(min, max)`, as splat-transform's `normalize`.
fn normalize(x: f64, (min, max): (f64, f64)) -> f64 {
    if x <= min {
        0.0
    } else if x >= max {
        1.0
    } else if max - min < 0.00001 {
        0.0
    } else {
        (x - min) / (max - min)
    }
}

fn pack_unorm(value: f64, bits: u32) -> u32 {
    let top = f64::from((1u32 << bits) - 1);
    (value * top + 0.5).floor().clamp(0.0, top) as u32
}

fn pack_111011([x, y, z]: [f64; 3]) -> u32 {
    pack_unorm(x, 11) << 21 | pack_unorm(y, 10) << 11 | pack_unorm(z, 11)
}

/// Smallest-three 2/10/10/10 packing of a quaternion (components in storage order).
fn pack_rotation(q: [f64; 4]) -> u32 {
    let (a, largest) = super::quantise::smallest_three(q);
    let norm = std::f64::consts::SQRT_2 * 0.5;
    (0..4)
        .filter(|&i| i != largest)
        .fold(largest as u32, |word, i| word << 10 | pack_unorm(a[i] * norm + 0.5, 10))
}

/// The splat indices sorted along a Morton (Z-order) curve of their centres, 10 bits per axis, with
/// buckets of more than 256 identical codes sorted again within their own box (splat-transform's
/// `sortMortonOrder`).
pub(super) fn morton_order(means: &[[f32; 3]]) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..means.len()).collect();
    sort_morton(means, &mut indices);
    indices
}

fn sort_morton(means: &[[f32; 3]], indices: &mut [usize]) {
    if indices.is_empty() {
        return;
    }
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for &i in indices.iter() {
        for a in 0..3 {
            lo[a] = lo[a].min(f64::from(means[i][a]));
            hi[a] = hi[a].max(f64::from(means[i][a]));
        }
    }
    let len = [0, 1, 2].map(|a| hi[a] - lo[a]);
    if len.iter().any(|l| !l.is_finite()) || len.iter().all(|&l| l == 0.0) {
        return;
    }
    let mul = len.map(|l| if l == 0.0 { 0.0 } else { 1024.0 / l });
    let part1by2 = |x: u32| {
        let mut x = x & 0x0000_03ff;
        x = (x ^ (x << 16)) & 0xff00_00ff;
        x = (x ^ (x << 8)) & 0x0300_f00f;
        x = (x ^ (x << 4)) & 0x030c_30c3;
        (x ^ (x << 2)) & 0x0924_9249
    };
    let code = |i: usize| {
        let cell = |a: usize| ((f64::from(means[i][a]) - lo[a]) * mul[a]).min(1023.0) as u32;
        (part1by2(cell(2)) << 2) + (part1by2(cell(1)) << 1) + part1by2(cell(0))
    };
    let mut keyed: Vec<(u32, usize)> = indices.iter().map(|&i| (code(i), i)).collect();
    keyed.sort_by_key(|&(c, _)| c); // stable, as JavaScript's sort
    for (slot, &(_, i)) in indices.iter_mut().zip(&keyed) {
        *slot = i;
    }
    let mut start = 0;
    while start < keyed.len() {
        let end = start + keyed[start..].iter().take_while(|(c, _)| *c == keyed[start].0).count();
        if end - start > CHUNK {
            sort_morton(means, &mut indices[start..end]);
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_matches_splat_transform_by_hand() {
        // Values worked out from splat-transform's packUnorm/pack111011/packRot.
        assert_eq!(pack_unorm(0.5, 8), 128);
        assert_eq!(pack_unorm(1.0, 11), 2047);
        assert_eq!(pack_unorm(-0.1, 10), 0);
        assert_eq!(pack_111011([1.0, 0.0, 1.0]), 2047 << 21 | 2047);
        // The identity: largest is w (index 0), the others pack to 0.5 -> 512.
        assert_eq!(pack_rotation([1.0, 0.0, 0.0, 0.0]), (512 << 20) | (512 << 10) | 512);
        // -q is the same rotation: it packs the same.
        let q = [0.1, -0.7, 0.2, 0.3];
        assert_eq!(pack_rotation(q), pack_rotation(q.map(|c| -c)));
        assert_eq!(pack_rotation(q) >> 30, 1);
    }

    #[test]
    fn morton_order_is_a_permutation_that_groups_neighbours() {
        let means: Vec<[f32; 3]> = (0..1000)
            .map(|i| {
                let t = i as f32;
                [(t * 0.37).sin() * 10.0, (t * 0.11).cos() * 10.0, (t * 0.07).sin()]
            })
            .collect();
        let order = morton_order(&means);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        // Chunks of consecutive sorted splats cover much less than the whole scene.
        let extent = |ids: &[usize]| {
            let xs: Vec<f32> = ids.iter().map(|&i| means[i][0]).collect();
            xs.iter().cloned().fold(f32::MIN, f32::max) - xs.iter().cloned().fold(f32::MAX, f32::min)
        };
        let whole = extent(&order);
        let first = extent(&order[..64]);
        assert!(first < whole / 2.0, "{first} vs {whole}");
        // Identical points keep their order.
        assert_eq!(morton_order(&[[1.0; 3]; 5]), vec![0, 1, 2, 3, 4]);
    }
}
