//! PlayCanvas SOG (`.sog`, or a `meta.json` with its images beside it), read and written.
//!
//! The layout, as PlayCanvas splat-transform 2.7 writes and reads it (`writeSog`, `readSog`,
//! `readSogV1`): a zip archive (entries stored) of `meta.json` and lossless WebP images, or the same
//! files in a folder. Every image holds one RGBA texel per splat, row by row, `width =
//! ceil(sqrt(n) / 4) · 4` and `height = ceil(n / width / 4) · 4` (only the first `count` texels
//! count). The splats are in the PLY's own axes (no conversion).
//!
//! - `means_l.webp`, `means_u.webp`: low and high bytes of 16-bit x, y, z, each a fraction of
//!   `means.mins..maxs` of the log-transformed position `sign(v) · ln(|v| + 1)`.
//! - `quats.webp`: smallest three (w, x, y, z order): r, g, b = `255 · (c · √2 / 2 + 0.5)` for the three
//!   components other than the largest (made positive), alpha = 252 + the largest one's index.
//! - `scales.webp`: r, g, b index `scales.codebook` (log scales).
//! - `sh0.webp`: r, g, b index `sh0.codebook` (the DC coefficients `f_dc`), alpha = sigmoid(opacity) · 255.
//! - `shN_centroids.webp` + `shN_labels.webp` (SH degree ≥ 1): a palette of `shN.count` entries, 64
//!   per row, each `coeffs` texels wide (one per coefficient; r, g, b index `shN.codebook`); every
//!   splat's label is `r | g << 8` of its labels texel.
//!
//! `meta.json` version 2 has the codebooks above (256 entries each, what splat-transform writes). The
//! legacy layout (no `version`) has `mins`/`maxs` instead: scales and colours are 8-bit fractions of
//! per-channel ranges, the opacity a fraction of the logit range, SH bytes fractions of one range
//! for all coefficients, and the count is `means.shape[0]`. Decoding follows splat-transform
//! operation by operation (in f64, rounded to f32 at the end); where it quietly substitutes zeros or
//! an identity rotation for out-of-range data, this reader gives an error instead.
//!
//! Writing produces version 2 (zipped for `.sog`, a folder for `…meta.json`): splats in Morton
//! order, 16-bit positions, 8-bit rotations, 256-entry codebooks from a 1D k-means of all the values
//! of each kind, and for SH degree ≥ 1 a k-means palette of `min(64, 2^⌊log2(n / 1024)⌋) · 1024`
//! entries (splat-transform's size, at most `n`), deterministic.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ply::{check_layout, normalise_quaternion, write_atomic};
use super::{sh_coeffs, SceneError, Splats};

/// Largest entry or image file read (a guard against archives that inflate without end).
const MAX_ENTRY_BYTES: u64 = 1 << 31;
/// WebP's largest side.
const MAX_SIDE: usize = 16383;
/// Seed of the SH palette's k-means.
const PALETTE_SEED: u64 = 0x5059_4c45;

/// Reads a `.sog` archive, or a SOG `meta.json` with its images in the same folder.
pub fn read_sog(path: &Path) -> Result<Splats, SceneError> {
    let store = Store::open(path)?;
    decode(&store).map_err(|message| SceneError::format(path, message))
}

/// Writes `splats` as SOG (meta version 2), atomically: a zip archive for a `.sog` name; for a name
/// ending in `meta.json`, the images beside it (each written atomically, `meta.json` last). Lossy
/// (see the module docs); the values must be finite.
pub fn write_sog(splats: &Splats, path: &Path) -> Result<(), SceneError> {
    let files = encode(splats).map_err(|message| SceneError::format(path, message))?;
    if is_folder_layout(path) {
        let dir = path.parent().unwrap_or(Path::new("."));
        for (name, bytes) in &files {
            if name != "meta.json" {
                write_atomic(&dir.join(name), bytes)?;
            }
        }
        let meta = files
            .iter()
            .find(|(name, _)| name == "meta.json")
            .map(|(_, bytes)| bytes.as_slice())
            .unwrap_or_default();
        return write_atomic(path, meta);
    }
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    // A fixed date (1980-01-01) so the same scene gives the same bytes.
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    for (name, bytes) in &files {
        zip.start_file(name.as_str(), stored)
            .and_then(|()| zip.write_all(bytes).map_err(zip::result::ZipError::from))
            .map_err(|e| SceneError::format(path, format!("cannot build the archive: {e}")))?;
    }
    let archive = zip
        .finish()
        .map_err(|e| SceneError::format(path, format!("cannot build the archive: {e}")))?;
    write_atomic(path, &archive.into_inner())
}

/// Whether `path` names the folder layout (`meta.json`, `scene.meta.json`) rather than a `.sog` archive.
fn is_folder_layout(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with("meta.json"))
}

// ---------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------

/// Where the files of a SOG come from.
enum Store {
    Zip(std::cell::RefCell<zip::ZipArchive<Cursor<Vec<u8>>>>),
    Folder { meta: PathBuf, dir: PathBuf },
}

impl Store {
    fn open(path: &Path) -> Result<Self, SceneError> {
        if is_folder_layout(path) {
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            return Ok(Self::Folder {
                meta: path.to_path_buf(),
                dir,
            });
        }
        let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
        if !bytes.starts_with(b"PK") {
            return Err(SceneError::format(
                path,
                "not a .sog file (a .sog is a zip archive; this file does not start with one)",
            ));
        }
        let archive = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| SceneError::format(path, format!("not a readable .sog archive: {e} (truncated?)")))?;
        Ok(Self::Zip(std::cell::RefCell::new(archive)))
    }

    /// The bytes of the file `name` (as `meta.json` names it).
    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        match self {
            Self::Zip(archive) => {
                let mut archive = archive.borrow_mut();
                let mut entry = match archive.by_name(name) {
                    Ok(entry) => entry,
                    Err(zip::result::ZipError::FileNotFound) => {
                        return Err(format!("the archive has no '{name}'"));
                    }
                    Err(e) => return Err(format!("cannot read '{name}' in the archive: {e}")),
                };
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(MAX_ENTRY_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read '{name}' in the archive: {e} (truncated or corrupt?)"))?;
                Ok(bytes)
            }
            Self::Folder { meta, dir } => {
                let file = if name == "meta.json" {
                    meta.clone()
                } else {
                    dir.join(name)
                };
                let f = std::fs::File::open(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let mut bytes = Vec::new();
                f.take(MAX_ENTRY_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                Ok(bytes)
            }
        }
    }
}

#[derive(Deserialize)]
struct Meta {
    version: Option<serde_json::Value>,
    count: Option<u64>,
    means: Means,
    scales: Quantised,
    quats: Files,
    sh0: Quantised,
    #[serde(rename = "shN")]
    sh_n: Option<ShN>,
}

#[derive(Deserialize)]
struct Means {
    shape: Option<Vec<u64>>,
    mins: Vec<f64>,
    maxs: Vec<f64>,
    files: Vec<String>,
}

#[derive(Deserialize)]
struct Quantised {
    codebook: Option<Vec<f64>>,
    mins: Option<Vec<f64>>,
    maxs: Option<Vec<f64>>,
    files: Vec<String>,
}

#[derive(Deserialize)]
struct Files {
    files: Vec<String>,
}

#[derive(Deserialize)]
struct ShN {
    count: Option<u64>,
    bands: Option<u64>,
    codebook: Option<Vec<f64>>,
    mins: Option<f64>,
    maxs: Option<f64>,
    files: Vec<String>,
}

/// A decoded image: RGBA texels, row by row.
struct Texture {
    name: String,
    width: usize,
    height: usize,
    rgba: Vec<u8>,
}

impl Texture {
    fn texel(&self, i: usize) -> [u8; 4] {
        [0, 1, 2, 3].map(|c| self.rgba[i * 4 + c])
    }
}

/// The `index`-th file of `files` (named `what` in errors), which must be a plain name in the same folder.
fn file_name<'a>(files: &'a [String], index: usize, what: &str) -> Result<&'a str, String> {
    let name = files.get(index).ok_or_else(|| {
        format!(
            "meta.json: '{what}' lists {} files, expected at least {}",
            files.len(),
            index + 1
        )
    })?;
    let plain = !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != ".." && !name.contains(':');
    if !plain {
        return Err(format!(
            "meta.json: '{what}' names the file '{name}', which is not a plain file name beside meta.json"
        ));
    }
    Ok(name)
}

fn load_texture(store: &Store, files: &[String], index: usize, what: &str, count: usize) -> Result<Texture, String> {
    let name = file_name(files, index, what)?;
    let bytes = store.read(name)?;
    let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP)
        .map_err(|e| format!("{name}: not a readable WebP image: {e}"))?;
    let rgba = image.into_rgba8();
    let (width, height) = (rgba.width() as usize, rgba.height() as usize);
    if width * height < count {
        return Err(format!(
            "{name}: {width}x{height} texels are too few for the {count} splats meta.json declares"
        ));
    }
    Ok(Texture {
        name: name.to_string(),
        width,
        height,
        rgba: rgba.into_raw(),
    })
}

/// `values` as f32s, all finite, `len` of them (or 1..=256 when `len` is `None`: a codebook).
fn floats(values: &[f64], len: Option<usize>, what: &str) -> Result<Vec<f32>, String> {
    match len {
        Some(len) if values.len() != len => {
            return Err(format!(
                "meta.json: '{what}' has {} values, expected {len}",
                values.len()
            ));
        }
        None if values.is_empty() || values.len() > 256 => {
            return Err(format!(
                "meta.json: the codebook '{what}' has {} entries, expected 1 to 256",
                values.len()
            ));
        }
        _ => {}
    }
    let out: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!("meta.json: '{what}' value {i} is not a finite number"));
    }
    Ok(out)
}

/// Entry `byte` of `book`, or an error naming the texture and the splat.
fn lookup(book: &[f32], byte: u8, texture: &Texture, splat: usize) -> Result<f32, String> {
    book.get(usize::from(byte)).copied().ok_or_else(|| {
        format!(
            "{}: splat {splat} uses codebook entry {byte}, but the codebook has {} entries",
            texture.name,
            book.len()
        )
    })
}

/// Inverse of `sign(x) · ln(|x| + 1)`.
fn inv_log_transform(v: f64) -> f64 {
    let e = v.abs().exp() - 1.0;
    if v < 0.0 {
        -e
    } else {
        e
    }
}

fn decode(store: &Store) -> Result<Splats, String> {
    let meta_bytes = store.read("meta.json")?;
    let meta: Meta =
        serde_json::from_slice(&meta_bytes).map_err(|e| format!("meta.json is not a SOG description: {e}"))?;
    let legacy = match &meta.version {
        None => true,
        Some(v) if v.as_f64() == Some(2.0) => false,
        Some(v) => {
            return Err(format!(
                "meta.json: SOG version {v} is not supported (2 and the legacy layout are)"
            ))
        }
    };
    let count = if legacy {
        meta.means
            .shape
            .as_ref()
            .and_then(|s| s.first().copied())
            .ok_or("meta.json: a legacy SOG (no 'version') needs 'means.shape'")?
    } else {
        meta.count.ok_or("meta.json: 'count' is missing")?
    };
    if count == 0 {
        return Err("meta.json: 'count' is 0 (no splats)".into());
    }
    let n = usize::try_from(count)
        .ok()
        .filter(|&n| n <= MAX_SIDE * MAX_SIDE)
        .ok_or_else(|| format!("meta.json: a count of {count} splats does not fit in SOG textures"))?;

    // Degree and its palette first, so the SH texture checks come before any work.
    let sh_degree = match &meta.sh_n {
        None => 0,
        Some(_) if legacy => 0, // From the centroids' width, below.
        Some(sh) => match sh.bands {
            Some(b @ 0..=3) => b as u32,
            Some(b) => return Err(format!("meta.json: shN.bands {b} is not supported (0 to 3)")),
            None => return Err("meta.json: 'shN.bands' is missing".into()),
        },
    };

    let means_lo = load_texture(store, &meta.means.files, 0, "means", n)?;
    let means_hi = load_texture(store, &meta.means.files, 1, "means", n)?;
    let (mins, maxs) = (&meta.means.mins, &meta.means.maxs);
    for (values, what) in [(mins, "means.mins"), (maxs, "means.maxs")] {
        if values.len() != 3 || values.iter().any(|v| !v.is_finite()) {
            return Err(format!("meta.json: '{what}' must be 3 finite numbers"));
        }
    }
    let quats = load_texture(store, &meta.quats.files, 0, "quats", n)?;
    let scales = load_texture(store, &meta.scales.files, 0, "scales", n)?;
    let sh0 = load_texture(store, &meta.sh0.files, 0, "sh0", n)?;

    let mut means = Vec::with_capacity(n);
    let mut rotations = Vec::with_capacity(n);
    for i in 0..n {
        let (lo, hi) = (means_lo.texel(i), means_hi.texel(i));
        means.push([0, 1, 2].map(|a| {
            let v = f64::from(u16::from(lo[a]) | u16::from(hi[a]) << 8);
            let range = maxs[a] - mins[a];
            let range = if range == 0.0 { 1.0 } else { range };
            inv_log_transform(mins[a] + range * (v / 65535.0)) as f32
        }));

        let [r, g, b, tag] = quats.texel(i);
        if !(252..=255).contains(&tag) {
            return Err(format!(
                "{}: splat {i} has rotation tag {tag}, expected 252 to 255 (which component is largest)",
                quats.name
            ));
        }
        let largest = usize::from(tag - 252);
        let small = [r, g, b].map(|c| (f64::from(c) / 255.0 * 2.0 - 1.0) / std::f64::consts::SQRT_2);
        let mut q = [0.0f64; 4];
        let mut s = 0;
        for (j, slot) in q.iter_mut().enumerate() {
            if j != largest {
                *slot = small[s];
                s += 1;
            }
        }
        q[largest] = (1.0 - small.iter().map(|c| c * c).sum::<f64>()).max(0.0).sqrt();
        rotations.push(normalise_quaternion(q.map(|c| c as f32), i)?);
    }

    let mut log_scales = Vec::with_capacity(n);
    let mut dc = Vec::with_capacity(n);
    let mut opacity_logits = Vec::with_capacity(n);
    if legacy {
        let s_min = floats(meta.scales.mins.as_deref().unwrap_or_default(), Some(3), "scales.mins")?;
        let s_max = floats(meta.scales.maxs.as_deref().unwrap_or_default(), Some(3), "scales.maxs")?;
        let c_min = floats(meta.sh0.mins.as_deref().unwrap_or_default(), Some(4), "sh0.mins")?;
        let c_max = floats(meta.sh0.maxs.as_deref().unwrap_or_default(), Some(4), "sh0.maxs")?;
        let lerp =
            |lo: f32, hi: f32, b: u8| (f64::from(lo) + (f64::from(hi) - f64::from(lo)) * (f64::from(b) / 255.0)) as f32;
        for i in 0..n {
            let t = scales.texel(i);
            log_scales.push([0, 1, 2].map(|a| lerp(s_min[a], s_max[a], t[a])));
            let c = sh0.texel(i);
            dc.push([0, 1, 2].map(|a| lerp(c_min[a], c_max[a], c[a])));
            opacity_logits.push(lerp(c_min[3], c_max[3], c[3]));
        }
    } else {
        let s_book = floats(
            meta.scales.codebook.as_deref().unwrap_or_default(),
            None,
            "scales.codebook",
        )?;
        let c_book = floats(meta.sh0.codebook.as_deref().unwrap_or_default(), None, "sh0.codebook")?;
        for i in 0..n {
            let t = scales.texel(i);
            log_scales.push([
                lookup(&s_book, t[0], &scales, i)?,
                lookup(&s_book, t[1], &scales, i)?,
                lookup(&s_book, t[2], &scales, i)?,
            ]);
            let c = sh0.texel(i);
            dc.push([
                lookup(&c_book, c[0], &sh0, i)?,
                lookup(&c_book, c[1], &sh0, i)?,
                lookup(&c_book, c[2], &sh0, i)?,
            ]);
            // splat-transform's sigmoidInv: the byte's alpha, kept off 0 and 1.
            let alpha = (f64::from(c[3]) / 255.0).clamp(1e-6, 1.0 - 1e-6);
            opacity_logits.push((alpha / (1.0 - alpha)).ln() as f32);
        }
    }

    let mut splats = Splats {
        means,
        log_scales,
        rotations,
        opacity_logits,
        sh_degree: 0,
        sh: Vec::new(),
    };
    let Some(sh_n) = meta.sh_n.as_ref().filter(|_| legacy || sh_degree > 0) else {
        splats.sh = dc;
        return Ok(splats);
    };
    let centroids = load_texture(store, &sh_n.files, 0, "shN", 0)?;
    let labels = load_texture(store, &sh_n.files, 1, "shN", n)?;
    type Dequantise = Box<dyn Fn(u8, usize) -> Result<f32, String>>;
    let (sh_degree, palette, dequantise): (u32, usize, Dequantise) = if legacy {
        let degree = match centroids.width {
            192 => 1,
            512 => 2,
            960 => 3,
            w => {
                return Err(format!(
                    "{}: {w} texels wide, expected 192, 512 or 960 (SH degree 1 to 3)",
                    centroids.name
                ))
            }
        };
        let lo = sh_n
            .mins
            .filter(|v| v.is_finite())
            .ok_or("meta.json: 'shN.mins' is missing or not finite")?;
        let hi = sh_n
            .maxs
            .filter(|v| v.is_finite())
            .ok_or("meta.json: 'shN.maxs' is missing or not finite")?;
        let palette = centroids.width / (sh_coeffs(degree) - 1) * centroids.height;
        (
            degree,
            palette,
            Box::new(move |b: u8, _| Ok((lo + (hi - lo) * (f64::from(b) / 255.0)) as f32)),
        )
    } else {
        let coeffs = sh_coeffs(sh_degree) - 1;
        if centroids.width != 64 * coeffs {
            return Err(format!(
                "{}: {} texels wide, expected {} for SH degree {sh_degree}",
                centroids.name,
                centroids.width,
                64 * coeffs
            ));
        }
        let palette = sh_n.count.ok_or("meta.json: 'shN.count' is missing")?;
        let palette = usize::try_from(palette).unwrap_or(usize::MAX);
        let book = floats(sh_n.codebook.as_deref().unwrap_or_default(), None, "shN.codebook")?;
        let name = centroids.name.clone();
        (
            sh_degree,
            palette,
            Box::new(move |b: u8, splat: usize| {
                book.get(usize::from(b)).copied().ok_or_else(|| {
                    format!(
                        "{name}: the palette entry of splat {splat} uses codebook entry {b}, but the codebook has {} \
                         entries",
                        book.len()
                    )
                })
            }),
        )
    };
    let coeffs = sh_coeffs(sh_degree) - 1;
    splats.sh_degree = sh_degree;
    splats.sh = Vec::with_capacity(n * (coeffs + 1));
    for (i, &dc) in dc.iter().enumerate() {
        splats.sh.push(dc);
        let [l0, l1, _, _] = labels.texel(i);
        let label = usize::from(l0) | usize::from(l1) << 8;
        if label >= palette {
            return Err(format!(
                "{}: splat {i} has palette entry {label}, but the palette has {palette} entries",
                labels.name
            ));
        }
        let (x, y) = ((label % 64) * coeffs, label / 64);
        if y >= centroids.height {
            return Err(format!(
                "{}: palette entry {label} is beyond its {}x{} texels",
                centroids.name, centroids.width, centroids.height
            ));
        }
        for j in 0..coeffs {
            let t = centroids.texel(y * centroids.width + x + j);
            splats
                .sh
                .push([dequantise(t[0], i)?, dequantise(t[1], i)?, dequantise(t[2], i)?]);
        }
    }
    Ok(splats)
}

// ---------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------

/// Texture size for `n` splats, as splat-transform picks it.
fn texture_size(n: usize) -> (usize, usize) {
    let width = ((n as f64).sqrt() / 4.0).ceil() as usize * 4;
    let height = (n as f64 / width as f64 / 4.0).ceil() as usize * 4;
    (width.max(4), height.max(4))
}

fn webp(rgba: &[u8], width: usize, height: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .encode(rgba, width as u32, height as u32, image::ExtendedColorType::Rgba8)
        .map_err(|e| format!("cannot encode a {width}x{height} WebP image: {e}"))?;
    Ok(out)
}

fn log_transform(v: f64) -> f64 {
    v.signum() * (v.abs() + 1.0).ln()
}

/// The files of a version 2 SOG (`meta.json` last), in memory.
fn encode(splats: &Splats) -> Result<Vec<(String, Vec<u8>)>, String> {
    let k = check_layout(splats)?;
    let n = splats.len();
    if n == 0 {
        return Err("the scene has no splats".into());
    }
    if let Some(i) = (0..n).find(|&i| !splats.has_finite_values(i)) {
        return Err(format!("splat {i} has a NaN or infinite value, which SOG cannot store"));
    }
    let (width, height) = texture_size(n);
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "{n} splats need {width}x{height} textures, more than WebP's {MAX_SIDE} a side"
        ));
    }
    let order = super::compressed_ply::morton_order(&splats.means);
    let texels = width * height * 4;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();

    // Positions.
    let mut mins = [f64::INFINITY; 3];
    let mut maxs = [f64::NEG_INFINITY; 3];
    for m in &splats.means {
        for a in 0..3 {
            let v = log_transform(f64::from(m[a]));
            mins[a] = mins[a].min(v);
            maxs[a] = maxs[a].max(v);
        }
    }
    let mut lo = vec![0u8; texels];
    let mut hi = vec![0u8; texels];
    for (t, &i) in order.iter().enumerate() {
        for a in 0..3 {
            let range = maxs[a] - mins[a];
            let v = if range > 0.0 {
                (65535.0 * (log_transform(f64::from(splats.means[i][a])) - mins[a]) / range)
                    .round()
                    .clamp(0.0, 65535.0) as u16
            } else {
                0
            };
            lo[t * 4 + a] = (v & 0xff) as u8;
            hi[t * 4 + a] = (v >> 8) as u8;
        }
        lo[t * 4 + 3] = 255;
        hi[t * 4 + 3] = 255;
    }
    files.push(("means_l.webp".into(), webp(&lo, width, height)?));
    files.push(("means_u.webp".into(), webp(&hi, width, height)?));

    // Rotations, (w, x, y, z).
    let mut quats = vec![0u8; texels];
    for (t, &i) in order.iter().enumerate() {
        let (q, largest) = super::quantise::smallest_three(splats.rotations[i].map(f64::from));
        let mut s = 0;
        for (j, &c) in q.iter().enumerate() {
            if j != largest {
                let v = 255.0 * (c * std::f64::consts::SQRT_2 * 0.5 + 0.5);
                quats[t * 4 + s] = v.round().clamp(0.0, 255.0) as u8;
                s += 1;
            }
        }
        quats[t * 4 + 3] = 252 + largest as u8;
    }
    files.push(("quats.webp".into(), webp(&quats, width, height)?));

    // Scales and colours: one codebook each over all three channels.
    let table = |values: Vec<f32>, alpha: &dyn Fn(usize) -> u8| -> (Vec<f32>, Vec<u8>) {
        let (book, labels) = super::quantise::codebook_1d(&values, 256);
        let mut rgba = vec![0u8; texels];
        for (t, &i) in order.iter().enumerate() {
            for c in 0..3 {
                rgba[t * 4 + c] = labels[i * 3 + c];
            }
            rgba[t * 4 + 3] = alpha(i);
        }
        (book, rgba)
    };
    let (scale_book, rgba) = table(splats.log_scales.concat(), &|_| 255);
    files.push(("scales.webp".into(), webp(&rgba, width, height)?));
    let dc: Vec<f32> = (0..n).flat_map(|i| splats.sh[i * k]).collect();
    let (colour_book, rgba) = table(dc, &|i| {
        let alpha = 1.0 / (1.0 + (-f64::from(splats.opacity_logits[i])).exp());
        (alpha * 255.0).round().clamp(0.0, 255.0) as u8
    });
    files.push(("sh0.webp".into(), webp(&rgba, width, height)?));

    let mut meta = serde_json::json!({
        "version": 2,
        "asset": { "generator": format!("difix3d {}", env!("CARGO_PKG_VERSION")) },
        "count": n,
        "means": { "mins": mins, "maxs": maxs, "files": ["means_l.webp", "means_u.webp"] },
        "scales": { "codebook": scale_book, "files": ["scales.webp"] },
        "quats": { "files": ["quats.webp"] },
        "sh0": { "codebook": colour_book, "files": ["sh0.webp"] },
    });

    // Higher SH: a palette of coefficient vectors, each value an index into one codebook.
    let coeffs = k - 1;
    if coeffs > 0 {
        // Rows in the PLY's channel-major order (f_rest_0.. = all red coefficients, then green, blue).
        let dim = 3 * coeffs;
        let mut rows = Vec::with_capacity(n * dim);
        for i in 0..n {
            let rest = &splats.sh[i * k + 1..(i + 1) * k];
            for c in 0..3 {
                rows.extend(rest.iter().map(|v| v[c]));
            }
        }
        let wanted = (n as f64 / 1024.0).log2().floor().exp2().min(64.0) * 1024.0;
        let wanted = (wanted as usize).clamp(1, n);
        let (centroids, labels) = super::quantise::palette(&rows, dim, wanted, PALETTE_SEED);
        let entries = centroids.len() / dim;
        let (book, indices) = super::quantise::codebook_1d(&centroids, 256);
        let (c_width, c_height) = (64 * coeffs, entries.div_ceil(64));
        let mut palette_rgba = vec![0u8; c_width * c_height * 4];
        for e in 0..entries {
            for j in 0..coeffs {
                let at = (e * coeffs + j) * 4;
                for c in 0..3 {
                    palette_rgba[at + c] = indices[e * dim + c * coeffs + j];
                }
                palette_rgba[at + 3] = 255;
            }
        }
        let mut label_rgba = vec![0u8; texels];
        for (t, &i) in order.iter().enumerate() {
            label_rgba[t * 4] = (labels[i] & 0xff) as u8;
            label_rgba[t * 4 + 1] = (labels[i] >> 8) as u8;
            label_rgba[t * 4 + 3] = 255;
        }
        files.push(("shN_centroids.webp".into(), webp(&palette_rgba, c_width, c_height)?));
        files.push(("shN_labels.webp".into(), webp(&label_rgba, width, height)?));
        meta["shN"] = serde_json::json!({
            "count": entries,
            "bands": splats.sh_degree,
            "codebook": book,
            "files": ["shN_centroids.webp", "shN_labels.webp"],
        });
    }
    let meta = serde_json::to_vec(&meta).map_err(|e| format!("cannot write meta.json: {e}"))?;
    files.push(("meta.json".into(), meta));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webp_round_trips_every_byte_including_under_zero_alpha() {
        let (w, h) = (12, 8);
        let rgba: Vec<u8> = (0..w * h * 4).map(|i| ((i * 37 + i / 5) % 256) as u8).collect();
        let bytes = webp(&rgba, w, h).unwrap();
        let back = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP)
            .unwrap()
            .into_rgba8()
            .into_raw();
        assert_eq!(back, rgba);
    }

    #[test]
    fn texture_sizes_match_splat_transform() {
        assert_eq!(texture_size(500), (24, 24));
        assert_eq!(texture_size(1), (4, 4));
        assert_eq!(texture_size(1_000_000), (1000, 1000));
    }
}
