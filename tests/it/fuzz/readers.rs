//! Property tests for every reader, in process: start from a small valid file, mutate it (truncated
//! at every offset class, bit flips, lying counts, NaN/Inf planted in numeric fields, structural
//! JSON edits), read it, and require within a time limit either a clear error naming the file or a
//! result that satisfies the reader's own promises (`Splats::validate`, valid cameras, finite
//! weights, consistent checkpoint shapes).

use std::path::{Path, PathBuf};

use burn::backend::flex::FlexDevice;
use burn::backend::Flex;
use difix3d::camera_path::CameraPath;
use difix3d::data::validate;
use difix3d::scene::{self, sh_coeffs, Splats};
use serde_json::json;

use super::gen::{
    case_count, heavy_case_count, long_slice, mutate_binary, mutate_json, mutate_text, seed, truncations, BinarySeed,
    Field, Rng, Verdicts,
};

/// Writes `bytes` to `path` for one case.
fn put(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write a fuzz case");
}

fn scene_ok(path: &Path) -> impl FnOnce(&Splats) -> Result<(), String> + '_ {
    move |splats: &Splats| splats.validate(path).map_err(|e| e.to_string())
}

/// Judges `scene::load` on `path` holding each truncation of `bytes` (at most `truncation_cases`),
/// then `cases` mutations of it made by `mutate`; `label` starts each case's description.
fn fuzz_scene_bytes(
    verdicts: &mut Verdicts,
    path: &Path,
    label: &str,
    bytes: &[u8],
    truncation_cases: usize,
    cases: usize,
    mut mutate: impl FnMut() -> (Vec<u8>, String),
) {
    let cut = truncations(bytes.len(), truncation_cases)
        .into_iter()
        .map(|at| (bytes[..at].to_vec(), format!("{label}truncated at {at}")));
    let mutated = (0..case_count(cases)).map(|i| {
        let (bytes, what) = mutate();
        (bytes, format!("{label}#{i}: {what}"))
    });
    for (case_bytes, case) in cut.chain(mutated) {
        put(path, &case_bytes);
        let p = path.to_path_buf();
        verdicts.run(
            &case,
            path,
            move || scene::load(&p).map_err(|e| e.to_string()),
            scene_ok(path),
        );
    }
}

// --- Scenes: PLY, .splat, checkpoint ------------------------------------------------------------

/// Three splats of SH degree 1 with every attribute different from its neighbours.
fn three_splats() -> Splats {
    let k = sh_coeffs(1);
    Splats {
        means: vec![[0.0, 0.1, 3.0], [0.5, -0.2, 2.5], [-0.4, 0.3, 4.0]],
        log_scales: vec![[-2.0, -2.1, -2.2], [-1.5, -1.6, -1.7], [-3.0, -3.0, -2.9]],
        rotations: vec![[1.0, 0.0, 0.0, 0.0], [0.9, 0.1, 0.2, 0.1], [0.5, 0.5, 0.5, 0.5]],
        opacity_logits: vec![0.0, 1.5, -1.0],
        sh_degree: 1,
        sh: (0..3 * k).map(|i| [0.1 * i as f32, -0.05 * i as f32, 0.02]).collect(),
    }
}

/// The PLY writer's output for [`three_splats`], as little-endian, big-endian and ASCII files.
fn ply_seeds(dir: &Path) -> Vec<(&'static str, BinarySeed)> {
    let le_path = dir.join("seed.ply");
    scene::ply::write_ply(&three_splats(), &le_path).unwrap();
    let le = std::fs::read(&le_path).unwrap();
    let header_len = le.windows(11).position(|w| w == b"end_header\n").unwrap() + 11;
    let header = std::str::from_utf8(&le[..header_len]).unwrap();
    let body: Vec<f32> = le[header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let floats = |header_len: usize, big: bool| {
        (0..body.len())
            .map(|i| Field::F32 {
                at: header_len + 4 * i,
                big,
            })
            .collect::<Vec<_>>()
    };
    let be_header = header.replace("binary_little_endian", "binary_big_endian");
    let mut be = be_header.clone().into_bytes();
    body.iter().for_each(|v| be.extend_from_slice(&v.to_be_bytes()));
    let per_vertex = body.len() / 3;
    let ascii_header = header.replace("binary_little_endian", "ascii");
    let mut ascii = ascii_header.clone();
    for vertex in body.chunks(per_vertex) {
        let line: Vec<String> = vertex.iter().map(|v| v.to_string()).collect();
        ascii.push_str(&line.join(" "));
        ascii.push('\n');
    }
    vec![
        (
            "binary_little_endian",
            BinarySeed {
                fields: floats(header_len, false),
                bytes: le,
                header_len,
            },
        ),
        (
            "binary_big_endian",
            BinarySeed {
                fields: floats(be_header.len(), true),
                bytes: be,
                header_len: be_header.len(),
            },
        ),
        (
            "ascii",
            BinarySeed {
                bytes: ascii.into_bytes(),
                header_len: ascii_header.len(),
                fields: Vec::new(),
            },
        ),
    ]
}

/// A PLY case: a binary mutation, or for the header (and the whole ASCII file) a text one: the
/// vertex count lies, property lines vanish or repeat, numbers turn into NaN.
fn mutate_ply(rng: &mut Rng, seed: &BinarySeed, ascii: bool) -> (Vec<u8>, String) {
    if ascii && rng.chance(0.6) {
        return mutate_text(rng, std::str::from_utf8(&seed.bytes).unwrap());
    }
    if !ascii && rng.chance(0.35) {
        let header = std::str::from_utf8(&seed.bytes[..seed.header_len]).unwrap();
        let (mut bytes, what) = mutate_text(rng, header);
        bytes.extend_from_slice(&seed.bytes[seed.header_len..]);
        return (bytes, format!("header: {what}"));
    }
    mutate_binary(rng, seed)
}

#[test]
fn fuzz_ply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.ply");
    let mut verdicts = Verdicts::new("PLY");
    let mut rng = Rng::new(seed("ply"));
    for (format, seed) in ply_seeds(dir.path()) {
        let ascii = format == "ascii";
        let label = format!("{format} ");
        fuzz_scene_bytes(&mut verdicts, &path, &label, &seed.bytes, 400, 600, || {
            mutate_ply(&mut rng, &seed, ascii)
        });
    }
    verdicts.finish();
}

#[test]
fn fuzz_splat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.splat");
    scene::splat::write_splat(&three_splats(), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Each 32-byte record: position and scale as f32, then colour and rotation as bytes.
    let fields = (0..bytes.len() / 32)
        .flat_map(|r| {
            (0..6).map(move |f| Field::F32 {
                at: 32 * r + 4 * f,
                big: false,
            })
        })
        .collect();
    let seed_file = BinarySeed {
        bytes,
        header_len: 0,
        fields,
    };
    let mut verdicts = Verdicts::new(".splat");
    let mut rng = Rng::new(seed("splat"));
    fuzz_scene_bytes(&mut verdicts, &path, "", &seed_file.bytes, 400, 1500, || {
        mutate_binary(&mut rng, &seed_file)
    });
    verdicts.finish();
}

/// Gzip of `bytes` (a `.spz` version 2-3 body).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn fuzz_spz() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.spz");
    let mut verdicts = Verdicts::new(".spz");
    let mut rng = Rng::new(seed("spz"));

    // Version 3: the gzip file as written, and its inflated body mutated then gzipped again (so the
    // mutations reach the parser instead of gzip's checksum).
    scene::spz::write_spz(&three_splats(), &path).unwrap();
    let v3 = std::fs::read(&path).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&v3[..]), &mut raw).unwrap();
    let raw_seed = BinarySeed {
        bytes: raw,
        header_len: 16,
        fields: vec![Field::Count { at: 8, width: 4 }],
    };
    let gz_seed = BinarySeed {
        bytes: v3.clone(),
        header_len: 10,
        fields: Vec::new(),
    };
    fuzz_scene_bytes(&mut verdicts, &path, "v3 ", &v3, 200, 1000, || {
        if rng.chance(0.7) {
            let (bytes, what) = mutate_binary(&mut rng, &raw_seed);
            (gzip(&bytes), format!("inflated body: {what}"))
        } else {
            mutate_binary(&mut rng, &gz_seed)
        }
    });

    // Version 4: header, table of contents (compressed and uncompressed sizes) and zstd frames.
    scene::spz::write_spz_version(&three_splats(), &path, scene::spz::SpzVersion::V4).unwrap();
    let v4 = std::fs::read(&path).unwrap();
    let streams = usize::from(v4[15]);
    let mut fields = vec![Field::Count { at: 8, width: 4 }, Field::Count { at: 16, width: 4 }];
    fields.extend((0..2 * streams).map(|i| Field::Count {
        at: 32 + 8 * i,
        width: 8,
    }));
    let v4_seed = BinarySeed {
        bytes: v4.clone(),
        header_len: 32 + 16 * streams,
        fields,
    };
    fuzz_scene_bytes(&mut verdicts, &path, "v4 ", &v4, 300, 1500, || {
        mutate_binary(&mut rng, &v4_seed)
    });
    verdicts.finish();
}

/// The entries of a SOG archive, in order.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).expect("an entry");
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("an entry's bytes");
            (entry.name().to_string(), bytes)
        })
        .collect()
}

/// A stored zip archive of `entries`.
fn zip_entries(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), options).expect("zip entry");
        std::io::Write::write_all(&mut zip, bytes).expect("zip entry");
    }
    zip.finish().expect("zip").into_inner()
}

#[test]
fn fuzz_sog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.sog");
    let mut verdicts = Verdicts::new(".sog");
    let mut rng = Rng::new(seed("sog"));
    // SH degree 1: every image, the palette included.
    scene::save(&three_splats(), &path).unwrap();
    let archive = std::fs::read(&path).unwrap();
    let entries = unzip(&archive);
    let meta_at = entries.iter().position(|(n, _)| n == "meta.json").expect("meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&entries[meta_at].1).unwrap();
    let zip_seed = BinarySeed {
        bytes: archive.clone(),
        header_len: 30,
        fields: Vec::new(),
    };
    fuzz_scene_bytes(&mut verdicts, &path, "", &archive, 300, 1500, || {
        let mut files = entries.clone();
        match rng.below(4) {
            // The archive itself (mostly caught by zip's own checks).
            0 => mutate_binary(&mut rng, &zip_seed),
            // meta.json: counts, codebooks, file names, bands.
            1 => {
                let (bytes, what) = mutate_json(&mut rng, &meta);
                files[meta_at].1 = bytes;
                (zip_entries(&files), format!("meta.json: {what}"))
            }
            // One image's bytes.
            2 => {
                let at = rng.below(files.len());
                let image = BinarySeed {
                    bytes: files[at].1.clone(),
                    header_len: 20,
                    fields: Vec::new(),
                };
                let (bytes, what) = mutate_binary(&mut rng, &image);
                files[at].1 = bytes;
                let name = files[at].0.clone();
                (zip_entries(&files), format!("{name}: {what}"))
            }
            // One file missing.
            _ => {
                let at = rng.below(files.len());
                let (name, _) = files.remove(at);
                (zip_entries(&files), format!("{name} removed"))
            }
        }
    });
    verdicts.finish();
}

/// A `difix3d train` checkpoint of [`three_splats`] written with the safetensors crate (parameters,
/// Adam moments, `step` and `sh_degree` metadata), the header JSON's length and its f32 values.
fn checkpoint_seed() -> BinarySeed {
    let splats = three_splats();
    let n = splats.len();
    let k = sh_coeffs(splats.sh_degree);
    let groups: Vec<(&str, Vec<f32>, usize)> = vec![
        ("means", splats.means.concat(), 3),
        ("log_scales", splats.log_scales.concat(), 3),
        ("rotations", splats.rotations.concat(), 4),
        ("opacity_logits", splats.opacity_logits.clone(), 1),
        ("sh", splats.sh.concat(), 3 * k),
    ];
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for (name, values, cols) in &groups {
        let bytes: Vec<u8> = bytemuck::cast_slice(values).to_vec();
        tensors.push((name.to_string(), bytes.clone(), vec![n, *cols]));
        let moment: Vec<f32> = values.iter().map(|v| v * 1e-3).collect();
        tensors.push((
            format!("adam_m.{name}"),
            bytemuck::cast_slice(&moment).to_vec(),
            vec![n, *cols],
        ));
        tensors.push((
            format!("adam_v.{name}"),
            bytemuck::cast_slice(&moment).to_vec(),
            vec![n, *cols],
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, bytes, shape)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let metadata = std::collections::HashMap::from([
        ("step".to_string(), "7".to_string()),
        ("sh_degree".to_string(), "1".to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata)).unwrap();
    let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut fields = vec![Field::Count { at: 0, width: 8 }];
    fields.extend(
        (header_len..bytes.len())
            .step_by(4)
            .map(|at| Field::F32 { at, big: false }),
    );
    BinarySeed {
        bytes,
        header_len,
        fields,
    }
}

/// A safetensors case: a binary mutation, or a text mutation of the header JSON (shapes, offsets,
/// dtypes, metadata), written back with its length updated (or, one time in four, the old length).
fn mutate_safetensors(rng: &mut Rng, seed: &BinarySeed) -> (Vec<u8>, String) {
    if rng.chance(0.5) {
        return mutate_binary(rng, seed);
    }
    let header = std::str::from_utf8(&seed.bytes[8..seed.header_len]).unwrap();
    let (new_header, what) = mutate_text(rng, header);
    let keep_length = rng.chance(0.25);
    let length = if keep_length {
        (seed.header_len - 8) as u64
    } else {
        new_header.len() as u64
    };
    let mut bytes = length.to_le_bytes().to_vec();
    bytes.extend_from_slice(&new_header);
    bytes.extend_from_slice(&seed.bytes[seed.header_len..]);
    let length_note = if keep_length { ", old length kept" } else { "" };
    (bytes, format!("header: {what}{length_note}"))
}

#[test]
fn fuzz_scene_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let seed_file = checkpoint_seed();
    let mut verdicts = Verdicts::new("3DGS checkpoint (scene)");
    let mut rng = Rng::new(seed("scene checkpoint"));
    fuzz_scene_bytes(&mut verdicts, &path, "", &seed_file.bytes, 300, 1500, || {
        mutate_safetensors(&mut rng, &seed_file)
    });
    verdicts.finish();
}

/// The shapes a resumable training state must have: N splats in every group and moment, a
/// supported SH degree, finite values.
fn train_state_ok(loaded: &difix3d::train::checkpoint::Loaded<Flex>) -> Result<(), String> {
    let params = &loaded.state.params;
    if params.sh_degree > 3 {
        return Err(format!("SH degree {} accepted", params.sh_degree));
    }
    let n = params.means.dims()[0];
    let k = sh_coeffs(params.sh_degree);
    let expected = [[n, 3], [n, 3], [n, 4], [n, 1], [n, 3 * k]];
    let groups = [
        &params.means,
        &params.log_scales,
        &params.rotations,
        &params.opacity_logits,
        &params.sh,
    ];
    if n == 0 {
        return Err("a checkpoint without splats accepted".into());
    }
    for (i, (tensor, want)) in groups.iter().zip(expected).enumerate() {
        let moments = &loaded.state.moments[i];
        for (what, dims) in [
            ("parameter", tensor.dims()),
            ("first moment", moments.m.dims()),
            ("second moment", moments.v.dims()),
        ] {
            if dims != want {
                return Err(format!("group {i} {what} has shape {dims:?}, expected {want:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_train_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let seed_file = checkpoint_seed();
    let mut verdicts = Verdicts::new("3DGS checkpoint (--resume)");
    let mut rng = Rng::new(seed("train checkpoint"));
    let read =
        |p: PathBuf| move || difix3d::train::checkpoint::load::<Flex>(&p, &FlexDevice).map_err(|e| e.to_string());
    for at in truncations(seed_file.bytes.len(), 200) {
        put(&path, &seed_file.bytes[..at]);
        verdicts.run(&format!("truncated at {at}"), &path, read(path.clone()), train_state_ok);
    }
    for i in 0..case_count(1200) {
        let (bytes, what) = mutate_safetensors(&mut rng, &seed_file);
        put(&path, &bytes);
        verdicts.run(&format!("#{i}: {what}"), &path, read(path.clone()), train_state_ok);
    }
    verdicts.finish();
}

// --- COLMAP datasets ----------------------------------------------------------------------------

const IMAGE_W: u32 = 16;
const IMAGE_H: u32 = 12;
const IMAGE_NAMES: [&str; 3] = ["a.png", "b.png", "c.png"];

/// A dataset folder with three tiny photos (16x12: SSIM needs 11x11) and an empty `colmap/sparse/0/` for the model.
pub(super) fn dataset_dir(root: &Path) -> PathBuf {
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (i, name) in IMAGE_NAMES.iter().enumerate() {
        let image = image::RgbImage::from_fn(IMAGE_W, IMAGE_H, |x, y| {
            image::Rgb([x as u8 * 15, y as u8 * 20, i as u8 * 80])
        });
        image.save(images.join(name)).unwrap();
    }
    let sparse = root.join("colmap/sparse/0");
    std::fs::create_dir_all(&sparse).unwrap();
    sparse
}

/// Unit quaternions (w, x, y, z) and translations of the three images.
const POSES: [([f64; 4], [f64; 3]); 3] = [
    ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0]),
    ([0.9801, 0.0, 0.1987, 0.0], [0.1, 0.0, 3.0]),
    ([0.9801, 0.1987, 0.0, 0.0], [0.0, -0.1, 3.1]),
];

/// `cameras.bin`, `images.bin` and `points3D.bin`, written by hand (with 2D points and tracks,
/// which our writer leaves out) while noting where every count and float sits.
fn colmap_binary() -> Vec<(&'static str, BinarySeed)> {
    struct Out {
        bytes: Vec<u8>,
        fields: Vec<Field>,
    }
    impl Out {
        fn count(&mut self, v: u64) {
            self.fields.push(Field::Count {
                at: self.bytes.len(),
                width: 8,
            });
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        fn id(&mut self, v: u32) {
            self.fields.push(Field::Count {
                at: self.bytes.len(),
                width: 4,
            });
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        fn f64(&mut self, v: f64) {
            self.fields.push(Field::F64 { at: self.bytes.len() });
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        fn raw(&mut self, b: &[u8]) {
            self.bytes.extend_from_slice(b);
        }
        fn done(self) -> BinarySeed {
            BinarySeed {
                header_len: 8,
                bytes: self.bytes,
                fields: self.fields,
            }
        }
    }
    let new = || Out {
        bytes: Vec::new(),
        fields: Vec::new(),
    };
    // Camera 1: PINHOLE (model 1), camera 2: SIMPLE_PINHOLE (model 0).
    let mut cameras = new();
    cameras.count(2);
    cameras.id(1);
    cameras.raw(&1i32.to_le_bytes());
    cameras.count(u64::from(IMAGE_W));
    cameras.count(u64::from(IMAGE_H));
    [18.0, 19.0, 8.0, 6.0].into_iter().for_each(|p| cameras.f64(p));
    cameras.id(2);
    cameras.raw(&0i32.to_le_bytes());
    cameras.count(u64::from(IMAGE_W));
    cameras.count(u64::from(IMAGE_H));
    [18.0, 8.0, 6.0].into_iter().for_each(|p| cameras.f64(p));

    let mut images = new();
    images.count(3);
    for (i, (q, t)) in POSES.iter().enumerate() {
        images.id(i as u32 + 1);
        q.iter().chain(t).for_each(|&v| images.f64(v));
        images.id(if i == 2 { 2 } else { 1 });
        images.raw(IMAGE_NAMES[i].as_bytes());
        images.raw(&[0]);
        images.count(2);
        for p in 0..2u64 {
            images.f64(1.0 + p as f64);
            images.f64(2.0);
            images.raw(&(p as i64 - 1).to_le_bytes());
        }
    }

    let mut points = new();
    points.count(4);
    for p in 0..4u64 {
        points.count(p + 1);
        [0.1 * p as f64, -0.2, 0.5 + 0.1 * p as f64]
            .into_iter()
            .for_each(|v| points.f64(v));
        points.raw(&[10, 20, 30]);
        points.f64(0.5);
        points.count(1);
        points.raw(&1u32.to_le_bytes());
        points.raw(&0u32.to_le_bytes());
    }
    vec![
        ("cameras.bin", cameras.done()),
        ("images.bin", images.done()),
        ("points3D.bin", points.done()),
    ]
}

/// The same model as text.
pub(super) fn colmap_text() -> Vec<(&'static str, String)> {
    let cameras = format!(
        "# Camera list with one line of data per camera:\n1 PINHOLE {IMAGE_W} {IMAGE_H} 18 19 8 6\n2 SIMPLE_PINHOLE {IMAGE_W} {IMAGE_H} 18 8 6\n"
    );
    let mut images = String::from("# Image list with two lines of data per image:\n");
    for (i, (q, t)) in POSES.iter().enumerate() {
        images.push_str(&format!(
            "{} {} {} {} {} {} {} {} {} {}\n1 2 -1 2 2 0\n",
            i + 1,
            q[0],
            q[1],
            q[2],
            q[3],
            t[0],
            t[1],
            t[2],
            if i == 2 { 2 } else { 1 },
            IMAGE_NAMES[i]
        ));
    }
    let mut points = String::from("# 3D point list\n");
    for p in 0..4 {
        points.push_str(&format!(
            "{} {} -0.2 {} 10 20 30 0.5 1 0\n",
            p + 1,
            0.1 * p as f64,
            0.5 + 0.1 * p as f64
        ));
    }
    vec![
        ("cameras.txt", cameras),
        ("images.txt", images),
        ("points3D.txt", points),
    ]
}

/// What `open_dataset` promises when it succeeds: views whose cameras pass the camera rules and
/// finite sparse points.
fn dataset_ok(dataset: &difix3d::data::Dataset) -> Result<(), String> {
    if dataset.train.is_empty() && dataset.eval.is_empty() {
        return Err("a dataset without views".into());
    }
    for view in dataset.train.iter().chain(&dataset.eval) {
        validate::camera(&view.camera).map_err(|e| format!("view {}: {e}", view.camera.name))?;
    }
    validate::points(&dataset.points)
}

fn fuzz_colmap(format: &'static str, seeds: Vec<(&'static str, BinarySeed)>, text: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("scene");
    let sparse = dataset_dir(&root);
    for (name, seed) in &seeds {
        put(&sparse.join(name), &seed.bytes);
    }
    let read = |root: PathBuf| move || difix3d::data::open_dataset(&root, 1).map_err(|e| e.to_string());
    // The valid model must open, or every case below tests nothing.
    let dataset = difix3d::data::open_dataset(&root, 1).expect("the seed dataset opens");
    assert_eq!(dataset.train.len() + dataset.eval.len(), 3);
    let mut verdicts = Verdicts::new(format);
    let mut rng = Rng::new(seed(format));
    for (name, seed) in &seeds {
        let path = sparse.join(name);
        for at in truncations(seed.bytes.len(), 150) {
            put(&path, &seed.bytes[..at]);
            verdicts.run(
                &format!("{name} truncated at {at}"),
                &path,
                read(root.clone()),
                dataset_ok,
            );
        }
        for i in 0..case_count(500) {
            let (bytes, what) = if text {
                mutate_text(&mut rng, std::str::from_utf8(&seed.bytes).unwrap())
            } else {
                mutate_binary(&mut rng, seed)
            };
            put(&path, &bytes);
            verdicts.run(&format!("{name} #{i}: {what}"), &path, read(root.clone()), dataset_ok);
        }
        put(&path, &seed.bytes);
    }
    verdicts.finish();
}

#[test]
fn fuzz_colmap_binary() {
    fuzz_colmap("COLMAP binary", colmap_binary(), false);
}

#[test]
fn fuzz_colmap_text() {
    let seeds = colmap_text()
        .into_iter()
        .map(|(name, text)| {
            (
                name,
                BinarySeed {
                    bytes: text.into_bytes(),
                    header_len: 0,
                    fields: Vec::new(),
                },
            )
        })
        .collect();
    fuzz_colmap("COLMAP text", seeds, true);
}

// --- JSON inputs: cameras, camera paths, Difix pairs ----------------------------------------------

/// Runs `mutate_json` cases of `doc` written to `path` through `read`, judged by `accept`.
fn fuzz_json<T: Send + 'static>(
    name: &'static str,
    path: &Path,
    doc: serde_json::Value,
    cases: usize,
    read: impl Fn(PathBuf) -> Result<T, String> + Send + Sync + Clone + 'static,
    accept: impl Fn(&T) -> Result<(), String>,
) {
    put(path, doc.to_string().as_bytes());
    read(path.to_path_buf()).unwrap_or_else(|e| panic!("the seed {name} must read: {e}"));
    let mut verdicts = Verdicts::new(name);
    let mut rng = Rng::new(seed(name));
    for i in 0..cases {
        let (bytes, what) = mutate_json(&mut rng, &doc);
        put(path, &bytes);
        let (read, p) = (read.clone(), path.to_path_buf());
        verdicts.run(&format!("#{i}: {what}"), path, move || read(p), &accept);
    }
    verdicts.finish();
}

#[test]
fn fuzz_camera_json() {
    let dir = tempfile::tempdir().unwrap();
    let camera = |name: &str, z: f32| {
        json!({
            "name": name, "width": 64, "height": 48, "fx": 50.0, "fy": 51.0, "cx": 32.0, "cy": 24.0,
            "world_from_camera": [[1.0, 0.0, 0.0, 0.1], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, z], [0.0, 0.0, 0.0, 1.0]],
        })
    };
    fuzz_json(
        "camera JSON",
        &dir.path().join("cameras.json"),
        json!([camera("a", -3.0), camera("b", -2.5)]),
        case_count(2500),
        |p| difix3d::data::camera::read_json(&p).map_err(|e| e.to_string()),
        |cameras| validate::cameras(cameras),
    );
}

/// A valid path must also sample to finite, unit-rotation keyframes everywhere and give a frame
/// count for any sane fps without overflowing.
fn path_ok(path: &CameraPath) -> Result<(), String> {
    path.validate()?;
    // A path may be too long for some frame rate (record refuses that with the numbers); it
    // must only never panic or overflow to get there.
    let _ = path.checked_frame_count(30.0);
    for i in 0..=16 {
        let t = i as f32 / 16.0;
        let Some(k) = path.sample(t) else {
            return Err(format!("no sample at t = {t}"));
        };
        if !(k.position.is_finite() && k.rotation.is_finite() && k.fov_y_deg.is_finite()) {
            return Err(format!("the sample at t = {t} is not finite: {k:?}"));
        }
        // Cameras normalise the rotation; a zero one cannot be.
        if k.rotation.length() < 1e-6 {
            return Err(format!("the sample at t = {t} has a zero rotation"));
        }
    }
    Ok(())
}

#[test]
fn fuzz_camera_path() {
    let dir = tempfile::tempdir().unwrap();
    let keyframe = |x: f32, w: f32| json!({"position": [x, 0.0, -3.0], "rotation": [0.0, 0.0, (1.0 - w * w).sqrt(), w], "fov_y_deg": 50.0});
    let doc = json!({
        "version": 1, "duration_s": 6.0, "constant_speed": true, "looped": false,
        "keyframes": [keyframe(0.0, 1.0), keyframe(1.0, 0.9), keyframe(1.5, 0.8)],
    });
    let path = dir.path().join("path.json");
    fuzz_json(
        "camera path JSON",
        &path,
        doc.clone(),
        case_count(1500),
        |p| CameraPath::load(&p).map_err(|e| e.to_string()),
        path_ok,
    );
    let mut looped = doc;
    looped["looped"] = json!(true);
    looped["constant_speed"] = json!(false);
    fuzz_json(
        "camera path JSON (looped)",
        &path,
        looped,
        case_count(1000),
        |p| CameraPath::load(&p).map_err(|e| e.to_string()),
        path_ok,
    );
}

/// Tiny PNG and JPEG files of one picture.
fn image_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let image = image::RgbImage::from_fn(12, 8, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, ((x + y) * 9) as u8])
    });
    let encode = |format: image::ImageFormat| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    };
    vec![
        ("png", encode(image::ImageFormat::Png)),
        ("jpg", encode(image::ImageFormat::Jpeg)),
    ]
}

#[test]
fn fuzz_pairs_json() {
    let dir = tempfile::tempdir().unwrap();
    let (_, png) = image_seeds().remove(0);
    for name in ["in.png", "target.png", "ref.png", "in2.png", "target2.png"] {
        put(&dir.path().join(name), &png);
    }
    let doc = json!({
        "train": {
            "a": {"image": "in.png", "target_image": "target.png", "ref_image": "ref.png", "prompt": "remove degradation"},
            "b": {"image": "in2.png", "target_image": "target2.png"},
        },
        "test": {"c": {"image": "in.png", "target_image": "target.png"}},
    });
    // Every pair accepted must point at readable images of equal size.
    let pairs_ok = |pairs: &difix3d::difix::train::data::Pairs| -> Result<(), String> {
        for pair in pairs.train.iter().chain(&pairs.test) {
            let open = |p: &Path| difix3d::image_io::open(p).map_err(|e| format!("{}: {e}", p.display()));
            let (a, b) = (open(&pair.image)?, open(&pair.target)?);
            if (a.width(), a.height()) != (b.width(), b.height()) {
                return Err(format!("pair {} has images of different sizes", pair.id));
            }
            if let Some(r) = &pair.reference {
                open(r)?;
            }
        }
        if pairs.train.is_empty() {
            return Err("no training pairs".into());
        }
        Ok(())
    };
    fuzz_json(
        "Difix pair JSON",
        &dir.path().join("pairs.json"),
        doc,
        case_count(1200),
        |p| difix3d::difix::train::data::load(&p).map_err(|e| e.to_string()),
        pairs_ok,
    );
    // And the images a pair file points at, cut off or corrupted.
    let json = dir.path().join("pairs.json");
    put(
        &json,
        br#"{"train": {"a": {"image": "in.png", "target_image": "target.png"}}}"#,
    );
    let target = dir.path().join("target.png");
    let mut verdicts = Verdicts::new("Difix pair images");
    let mut rng = Rng::new(seed("pair images"));
    let seed_file = BinarySeed {
        bytes: png.clone(),
        header_len: 33,
        fields: Vec::new(),
    };
    for i in 0..case_count(300) {
        let (bytes, what) = mutate_binary(&mut rng, &seed_file);
        put(&target, &bytes);
        let j = json.clone();
        verdicts.run(
            &format!("target.png #{i}: {what}"),
            &target,
            move || difix3d::difix::train::data::load(&j).map_err(|e| e.to_string()),
            pairs_ok,
        );
    }
    verdicts.finish();
}

// --- Images -------------------------------------------------------------------------------------

#[test]
fn fuzz_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut verdicts = Verdicts::new("images (PNG, JPEG)");
    let mut rng = Rng::new(seed("images"));
    for (ext, bytes) in image_seeds() {
        let path = dir.path().join(format!("photo.{ext}"));
        // `image_io::open` leaves naming the file to its callers; they all prefix the path.
        let read = |p: PathBuf| {
            move || {
                difix3d::image_io::open(&p)
                    .map(|image| (image.width(), image.height()))
                    .map_err(|e| format!("{}: {e}", p.display()))
            }
        };
        let sized = |&(w, h): &(u32, u32)| {
            if w > 0 && h > 0 {
                Ok(())
            } else {
                Err(format!("a {w}x{h} image"))
            }
        };
        // A cut-off image is never whole, so every truncation must be refused.
        for at in truncations(bytes.len(), 1000) {
            put(&path, &bytes[..at]);
            verdicts.run(&format!("{ext} truncated at {at}"), &path, read(path.clone()), |_| {
                Err("a truncated image decoded".into())
            });
        }
        let seed_file = BinarySeed {
            header_len: if ext == "png" { 33 } else { 20 },
            bytes,
            fields: Vec::new(),
        };
        for i in 0..case_count(1000) {
            let (bytes, what) = mutate_binary(&mut rng, &seed_file);
            put(&path, &bytes);
            verdicts.run(&format!("{ext} #{i}: {what}"), &path, read(path.clone()), sized);
        }
    }
    verdicts.finish();
}

// --- Difix model folders, safetensors weights, torch pickles ---------------------------------------

fn tiny_model() -> PathBuf {
    crate::repo().join("tests/fixtures/difix/tiny")
}

/// Opens the model folder and loads `part` (or every part) on the CPU, as `fix` would before
/// running anything.
fn load_model(root: &Path, checkpoint: Option<&Path>, part: &str) -> Result<(), String> {
    use difix3d::difix::load::ModelFiles;
    let files = ModelFiles::open(root, checkpoint).map_err(|e| e.to_string())?;
    let device = FlexDevice;
    let load = |part: &str| -> Result<(), difix3d::difix::DifixError> {
        match part {
            "unet" => files.load_unet::<Flex>(&device).map(drop),
            "vae" => files.load_vae::<Flex>(&device).map(drop),
            "text_encoder" => files.load_text_encoder::<Flex>(&device).map(drop),
            _ => Ok(()),
        }
    };
    load(part).map_err(|e| e.to_string())
}

/// The config files of the tiny model, mutated one at a time (group counts of zero, head sizes
/// that do not divide widths, layer counts that disagree with the weights, NaN strings, missing
/// keys); each case loads the part the config describes.
#[test]
fn fuzz_model_configs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiny");
    crate::copy_dir(&tiny_model(), &root);
    let mut verdicts = Verdicts::new("Difix model configs");
    let mut rng = Rng::new(seed("model configs"));
    let configs = [
        ("unet", "unet/config.json"),
        ("vae", "vae/config.json"),
        ("text_encoder", "text_encoder/config.json"),
        ("scheduler", "scheduler/scheduler_config.json"),
        ("tokenizer", "tokenizer/tokenizer_config.json"),
        ("tokenizer", "tokenizer/special_tokens_map.json"),
        ("model_index", "model_index.json"),
    ];
    let cases = heavy_case_count(60);
    for (part, file) in configs {
        let path = root.join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&original).unwrap();
        for i in 0..cases {
            let (bytes, what) = mutate_json(&mut rng, &doc);
            put(&path, &bytes);
            let r = root.clone();
            verdicts.run(
                &format!("{file} #{i}: {what}"),
                &path,
                move || load_model(&r, None, part),
                |_| Ok(()),
            );
        }
        put(&path, original.as_bytes());
    }
    verdicts.finish();
}

/// A safetensors file of the tiny model as a mutation seed: its header JSON, its length field
/// and a sample of its f32 values.
fn weights_seed(path: &Path) -> BinarySeed {
    let bytes = std::fs::read(path).unwrap();
    let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut fields = vec![Field::Count { at: 0, width: 8 }];
    let stride = ((bytes.len() - header_len) / 4 / 512).max(1) * 4;
    fields.extend(
        (header_len..bytes.len() - 3)
            .step_by(stride)
            .map(|at| Field::F32 { at, big: false }),
    );
    BinarySeed {
        bytes,
        header_len,
        fields,
    }
}

/// The weight files of the tiny model, mutated (lying shapes and offsets in the header, NaN
/// weights, truncation), each loaded as its part.
#[test]
fn fuzz_model_weights() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiny");
    crate::copy_dir(&tiny_model(), &root);
    let mut verdicts = Verdicts::new("Difix safetensors weights");
    let mut rng = Rng::new(seed("model weights"));
    let cases = heavy_case_count(120);
    for (part, file, share) in [
        ("text_encoder", "text_encoder/model.safetensors", 4),
        ("vae", "vae/diffusion_pytorch_model.safetensors", 1),
        ("unet", "unet/diffusion_pytorch_model.safetensors", 1),
    ] {
        let path = root.join(file);
        let seed_file = weights_seed(&path);
        for i in 0..cases * share / 2 {
            let (bytes, what) = mutate_safetensors(&mut rng, &seed_file);
            put(&path, &bytes);
            let r = root.clone();
            verdicts.run(
                &format!("{file} #{i}: {what}"),
                &path,
                move || load_model(&r, None, part),
                |_| Ok(()),
            );
        }
        put(&path, &seed_file.bytes);
    }
    verdicts.finish();
}

/// Torch pickles: the trainer's `model_*.pkl` over the tiny model, and LPIPS's linear layers
/// (`.pth`, a zip around a pickle) with their VGG backbone.
#[test]
fn fuzz_torch_pickles() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = crate::repo().join("tests/fixtures");
    let mut verdicts = Verdicts::new("torch pickles (.pkl, .pth)");
    let mut rng = Rng::new(seed("pickles"));
    let cases = heavy_case_count(150);

    let pkl = dir.path().join("model_tiny.pkl");
    let seed_pkl = BinarySeed {
        bytes: std::fs::read(fixtures.join("difix/model_tiny.pkl")).unwrap(),
        header_len: 64,
        fields: Vec::new(),
    };
    for i in 0..cases / 3 {
        let (bytes, what) = mutate_binary(&mut rng, &seed_pkl);
        put(&pkl, &bytes);
        let p = pkl.clone();
        verdicts.run(
            &format!("model_tiny.pkl #{i}: {what}"),
            &pkl,
            move || load_model(&tiny_model(), Some(&p), "vae"),
            |_| Ok(()),
        );
    }

    let lin = dir.path().join("vgg_lin.pth");
    let seed_lin = BinarySeed {
        bytes: std::fs::read(fixtures.join("lpips/vgg_tiny_lin.pth")).unwrap(),
        header_len: 64,
        fields: Vec::new(),
    };
    let backbone = fixtures.join("lpips/vgg_tiny_backbone.pth");
    let read_lin = |lin: PathBuf, backbone: PathBuf| {
        move || {
            let files = difix3d::perceptual::lpips::LpipsFiles {
                backbone,
                lin: Some(lin),
            };
            difix3d::perceptual::lpips::Lpips::<Flex>::load(&files, &FlexDevice)
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    for at in truncations(seed_lin.bytes.len(), if long_slice() { usize::MAX } else { 200 }) {
        put(&lin, &seed_lin.bytes[..at]);
        verdicts.run(
            &format!("vgg_lin.pth truncated at {at}"),
            &lin,
            read_lin(lin.clone(), backbone.clone()),
            |_| Err("a truncated file loaded".into()),
        );
    }
    for i in 0..cases * 2 {
        let (bytes, what) = mutate_binary(&mut rng, &seed_lin);
        put(&lin, &bytes);
        verdicts.run(
            &format!("vgg_lin.pth #{i}: {what}"),
            &lin,
            read_lin(lin.clone(), backbone.clone()),
            |_| Ok(()),
        );
    }
    verdicts.finish();
}
