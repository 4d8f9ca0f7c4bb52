//! gsplat / Difix3D checkpoints (`ckpt_STEP_rankR.pt`), read and written.
//!
//! gsplat's `simple_trainer.py` (and Difix3D's copy of it) saves `torch.save({"step": step, "splats":
//! splats.state_dict()}, f"ckpt_{step}_rank{rank}.pt")`: a torch zip archive whose pickle holds a dict
//! of tensors `means` [N, 3], `scales` [N, 3] (natural logs), `quats` [N, 4] (w, x, y, z, not
//! normalised), `opacities` [N] (logits), `sh0` [N, 1, 3] and `shN` [N, K, 3] with
//! K = (degree + 1)² − 1. These are exactly the parameters [`Splats`] keeps (quaternions are
//! normalised on reading). Other keys (`step`, appearance embeddings, …) are ignored. A multi-GPU run
//! writes one file per rank, each holding its share of the splats; as in the reference
//! (`--ckpt` with every rank's file), the ranks of one step are concatenated in rank order, so naming
//! any one of them reads the whole scene.
//!
//! The pickle is read by burn-store's torch reader, which interprets the pickle opcodes as data and
//! never imports or runs anything. The writer emits the same layout torch itself writes (protocol 2,
//! `torch._utils._rebuild_tensor_v2` over `FloatStorage` records in `archive/data/`), which
//! `torch.load(..., weights_only=True)` accepts.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::ply::{check_layout, normalise_quaternion, write_atomic};
use super::{sh_coeffs, SceneError, Splats};

/// The splats of the gsplat checkpoint `path`, with those of its sibling ranks when the name is
/// `ckpt_STEP_rankR.pt`.
pub fn read_gsplat_checkpoint(path: &Path) -> Result<Splats, SceneError> {
    let files = rank_files(path)?;
    let mut all: Option<Splats> = None;
    for file in &files {
        let part = read_one(file)?;
        match &mut all {
            None => all = Some(part),
            Some(all) => {
                if part.sh_degree != all.sh_degree {
                    return Err(SceneError::format(
                        file,
                        format!(
                            "SH degree {} differs from the other ranks' {} ({})",
                            part.sh_degree,
                            all.sh_degree,
                            files[0].display()
                        ),
                    ));
                }
                all.means.extend(part.means);
                all.log_scales.extend(part.log_scales);
                all.rotations.extend(part.rotations);
                all.opacity_logits.extend(part.opacity_logits);
                all.sh.extend(part.sh);
            }
        }
    }
    // `rank_files` returns at least `path` itself.
    all.ok_or_else(|| SceneError::format(path, "no checkpoint file to read"))
}

/// `path` and, when it is named `ckpt_STEP_rankR.pt`, every `ckpt_STEP_rank*.pt` beside it, in rank
/// order. The ranks must be 0..n without gaps: a missing rank would silently drop part of the scene.
fn rank_files(path: &Path) -> Result<Vec<PathBuf>, SceneError> {
    let pattern =
        regex::Regex::new(r"^ckpt_(\d+)_rank(\d+)\.pt$").map_err(|e| SceneError::format(path, e.to_string()))?;
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(vec![path.to_path_buf()]);
    };
    let Some(step) = pattern.captures(name).map(|c| c[1].to_string()) else {
        return Ok(vec![path.to_path_buf()]);
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let entries = std::fs::read_dir(dir).map_err(|e| SceneError::io(path, e))?;
    let mut ranks: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SceneError::io(dir, e))?;
        let file_name = entry.file_name();
        let Some(caps) = file_name.to_str().and_then(|n| pattern.captures(n)) else {
            continue;
        };
        if caps[1] == step {
            let rank = caps[2].parse().unwrap_or(u64::MAX);
            ranks.push((rank, entry.path()));
        }
    }
    if ranks.is_empty() {
        // Not listed (e.g. no such file): let the read report it.
        return Ok(vec![path.to_path_buf()]);
    }
    ranks.sort();
    for (expected, (rank, _)) in ranks.iter().enumerate() {
        if *rank != expected as u64 {
            let found: Vec<String> = ranks.iter().map(|(r, _)| r.to_string()).collect();
            return Err(SceneError::format(
                path,
                format!(
                    "rank {expected} of step {step} is missing (found ranks {}); every rank's file is needed \
                     for the whole scene",
                    found.join(", ")
                ),
            ));
        }
    }
    Ok(ranks.into_iter().map(|(_, p)| p).collect())
}

/// The splats of one checkpoint file.
fn read_one(path: &Path) -> Result<Splats, SceneError> {
    let bad = |message: String| SceneError::format(path, message);
    if !path.is_file() {
        return Err(SceneError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let reader = burn_store::pytorch::PytorchReader::with_top_level_key(path, "splats").map_err(|e| {
        bad(format!(
            "not a gsplat checkpoint (a torch file with a `splats` dict): {e}"
        ))
    })?;
    let mut tensors = reader.into_tensors();
    // The SH degree follows from `shN`'s middle dimension.
    let rest_coeffs = match tensors.get("shN").map(|t| t.shape.to_vec()).as_deref() {
        Some([_, k, 3]) => *k,
        Some(other) => return Err(bad(format!("`shN` has shape {other:?}, expected [N, K, 3]"))),
        None => {
            return Err(bad(
                "the `splats` dict has no `shN`; is this a gsplat checkpoint?".into()
            ))
        }
    };
    let mut take = |name: &str, trailing: &[usize]| -> Result<(usize, Vec<f32>), SceneError> {
        let snapshot = tensors.remove(name).ok_or_else(|| {
            bad(format!(
                "the `splats` dict has no `{name}`; is this a gsplat checkpoint?"
            ))
        })?;
        let shape = snapshot.shape.to_vec();
        let expected = || {
            let dims: Vec<String> = trailing.iter().map(|d| d.to_string()).collect();
            format!("[N{}]", dims.iter().map(|d| format!(", {d}")).collect::<String>())
        };
        // `opacities` is [N]; accept [N, 1] too.
        let rest = shape.get(1..).unwrap_or(&[]);
        let fits = !shape.is_empty() && (rest == trailing || (trailing.is_empty() && rest == [1]));
        if !fits {
            return Err(bad(format!("`{name}` has shape {shape:?}, expected {}", expected())));
        }
        let data = snapshot
            .to_data()
            .map_err(|e| bad(format!("`{name}`: cannot read its data: {e:?}")))?
            .convert::<f32>();
        let values = data
            .to_vec::<f32>()
            .map_err(|e| bad(format!("`{name}`: cannot read its data: {e:?}")))?;
        Ok((shape[0], values))
    };
    let (n, means) = take("means", &[3])?;
    let sh_degree = (0..=3u32).find(|&d| sh_coeffs(d) - 1 == rest_coeffs).ok_or_else(|| {
        bad(format!(
            "`shN` has {rest_coeffs} coefficients per channel; expected 0, 3, 8 or 15 (SH degree 0 to 3)"
        ))
    })?;
    let parts = [
        take("scales", &[3])?,
        take("quats", &[4])?,
        take("opacities", &[])?,
        take("sh0", &[1, 3])?,
        // Degree 0 stores an empty [N, 0, 3] `shN`, whose data burn-store cannot materialise.
        if rest_coeffs == 0 {
            (n, Vec::new())
        } else {
            take("shN", &[rest_coeffs, 3])?
        },
    ];
    if let Some(((m, _), name)) = parts
        .iter()
        .zip(["scales", "quats", "opacities", "sh0", "shN"])
        .find(|((m, _), _)| *m != n)
    {
        return Err(bad(format!("`{name}` has {m} splats but `means` has {n}")));
    }
    let [(_, scales), (_, quats), (_, opacities), (_, sh0), (_, sh_rest)] = parts;
    let rows3 = |v: &[f32]| -> Vec<[f32; 3]> { v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect() };
    let mut rotations = Vec::with_capacity(n);
    for (i, q) in quats.chunks_exact(4).enumerate() {
        rotations.push(normalise_quaternion([q[0], q[1], q[2], q[3]], i).map_err(bad)?);
    }
    let mut sh = Vec::with_capacity(n * sh_coeffs(sh_degree));
    let dc = rows3(&sh0);
    let rest = rows3(&sh_rest);
    for i in 0..n {
        sh.push(dc[i]);
        sh.extend_from_slice(&rest[i * rest_coeffs..(i + 1) * rest_coeffs]);
    }
    Ok(Splats {
        means: rows3(&means),
        log_scales: rows3(&scales),
        rotations,
        opacity_logits: opacities,
        sh_degree,
        sh,
    })
}

/// Writes the splats a run ends with beside its other outputs as gsplat would after `steps`
/// optimisation steps: `DIR/ckpt_{steps - 1}_rank0.pt` with that step (gsplat counts steps from 0 and
/// names each checkpoint by its last one), so a user can take the result back to gsplat or Difix3D.
/// Returns the file written.
pub fn write_run_result(splats: &Splats, steps: usize, dir: &Path) -> Result<PathBuf, SceneError> {
    let step = steps.saturating_sub(1) as u64;
    let path = dir.join(format!("ckpt_{step}_rank0.pt"));
    write_gsplat_checkpoint(splats, step, &path)?;
    Ok(path)
}

/// Writes `splats` as a gsplat checkpoint `{"step": step, "splats": {...}}` that gsplat's and
/// Difix3D's trainers load with `--ckpt` (`torch.load(..., weights_only=True)`), atomically.
pub fn write_gsplat_checkpoint(splats: &Splats, step: u64, path: &Path) -> Result<(), SceneError> {
    let bytes = encode(splats, step).map_err(|message| SceneError::format(path, message))?;
    write_atomic(path, &bytes)
}

/// One tensor to store: its name in the `splats` dict, shape and values (f32, C order).
struct Tensor<'a> {
    name: &'a str,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn encode(splats: &Splats, step: u64) -> Result<Vec<u8>, String> {
    let k = check_layout(splats)?;
    let n = splats.len();
    let flat3 = |v: &[[f32; 3]]| v.iter().flatten().copied().collect::<Vec<f32>>();
    let sh0: Vec<f32> = (0..n).flat_map(|i| splats.sh[i * k]).collect();
    let sh_rest: Vec<f32> = (0..n)
        .flat_map(|i| splats.sh[i * k + 1..(i + 1) * k].iter().flatten().copied())
        .collect();
    let tensors = [
        Tensor {
            name: "means",
            shape: vec![n, 3],
            values: flat3(&splats.means),
        },
        Tensor {
            name: "scales",
            shape: vec![n, 3],
            values: flat3(&splats.log_scales),
        },
        Tensor {
            name: "quats",
            shape: vec![n, 4],
            values: splats.rotations.iter().flatten().copied().collect(),
        },
        Tensor {
            name: "opacities",
            shape: vec![n],
            values: splats.opacity_logits.clone(),
        },
        Tensor {
            name: "sh0",
            shape: vec![n, 1, 3],
            values: sh0,
        },
        Tensor {
            name: "shN",
            shape: vec![n, k - 1, 3],
            values: sh_rest,
        },
    ];

    let mut pickle = Pickler::default();
    pickle.header();
    pickle.op(b'}'); // the top-level dict
    pickle.op(b'(');
    pickle.string("step");
    pickle.int(i64::try_from(step).map_err(|_| format!("step {step} is too large"))?);
    pickle.string("splats");
    pickle.op(b'}');
    pickle.op(b'(');
    for (key, tensor) in tensors.iter().enumerate() {
        pickle.string(tensor.name);
        pickle.tensor(&key.to_string(), &tensor.shape)?;
    }
    pickle.op(b'u'); // SETITEMS of `splats`
    pickle.op(b'u'); // SETITEMS of the top-level dict
    pickle.op(b'.');

    // torch's zip layout: every record under one folder, stored (not compressed), tensor data
    // aligned to 64 bytes as torch aligns it (so `torch.load(mmap=True)` works too).
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let mut add = |name: &str, bytes: &[u8], options: zip::write::SimpleFileOptions| -> Result<(), String> {
        zip.start_file(format!("archive/{name}"), options)
            .and_then(|()| zip.write_all(bytes).map_err(Into::into))
            .map_err(|e| format!("cannot build the archive: {e}"))
    };
    add("data.pkl", &pickle.out, stored)?;
    add("byteorder", b"little", stored)?;
    for (key, tensor) in tensors.iter().enumerate() {
        let bytes: Vec<u8> = tensor.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        add(&format!("data/{key}"), &bytes, stored.with_alignment(64))?;
    }
    add("version", b"3\n", stored)?;
    let cursor = zip.finish().map_err(|e| format!("cannot build the archive: {e}"))?;
    Ok(cursor.into_inner())
}

/// The few pickle (protocol 2) opcodes a torch state dict needs.
#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn header(&mut self) {
        self.out.extend_from_slice(&[0x80, 2]); // PROTO 2
    }

    fn op(&mut self, code: u8) {
        self.out.push(code);
    }

    /// GLOBAL `module.name`.
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    /// BINUNICODE.
    fn string(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// BININT1 / BININT / LONG1, whichever fits.
    fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if let Ok(v) = i32::try_from(v) {
            self.out.push(b'J');
            self.out.extend_from_slice(&v.to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn int_tuple(&mut self, values: &[usize]) -> Result<(), String> {
        self.op(b'(');
        for &v in values {
            self.int(i64::try_from(v).map_err(|_| format!("dimension {v} is too large"))?);
        }
        self.op(b't');
        Ok(())
    }

    /// `torch._utils._rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict())`
    /// over the f32 storage record `data/{key}`.
    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<(), String> {
        let numel: usize = shape.iter().product();
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(b'(');
        // The persistent id ('storage', torch.FloatStorage, key, 'cpu', numel).
        self.op(b'(');
        self.string("storage");
        self.global("torch", "FloatStorage");
        self.string(key);
        self.string("cpu");
        self.int(i64::try_from(numel).map_err(|_| "tensor too large".to_string())?);
        self.op(b't');
        self.op(b'Q'); // BINPERSID
        self.int(0); // storage offset
        self.int_tuple(shape)?;
        self.int_tuple(&strides)?;
        self.op(0x89); // NEWFALSE: requires_grad
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R'); // OrderedDict(): backward hooks
        self.op(b't');
        self.op(b'R');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic splats with unnormalised-looking but unit quaternions and every SH degree.
    fn splats(n: usize, sh_degree: u32, seed: f32) -> Splats {
        let k = sh_coeffs(sh_degree);
        let f = |i: usize, j: usize| ((i * 7 + j * 3) as f32 * 0.37 + seed).sin();
        Splats {
            means: (0..n).map(|i| [f(i, 0), f(i, 1), f(i, 2)]).collect(),
            log_scales: (0..n).map(|i| [f(i, 3) - 3.0, f(i, 4) - 3.0, f(i, 5) - 3.0]).collect(),
            rotations: (0..n)
                .map(|i| {
                    let q = [f(i, 6) + 1.5, f(i, 7), f(i, 8), f(i, 9)];
                    let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt();
                    q.map(|c| c / norm)
                })
                .collect(),
            opacity_logits: (0..n).map(|i| f(i, 10) * 4.0).collect(),
            sh_degree,
            sh: (0..n * k).map(|i| [f(i, 11), f(i, 12), f(i, 13)]).collect(),
        }
    }

    #[test]
    fn round_trip_every_degree() {
        let dir = tempfile::tempdir().expect("tempdir");
        for degree in 0..=3 {
            let original = splats(37, degree, degree as f32);
            let path = dir.path().join(format!("deg{degree}.pt"));
            write_gsplat_checkpoint(&original, 1234, &path).expect("write");
            let back = read_gsplat_checkpoint(&path).expect("read");
            assert_eq!(back, original, "degree {degree}");
        }
    }

    #[test]
    fn ranks_are_concatenated_in_order_and_gaps_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parts: Vec<Splats> = (0..3).map(|r| splats(5 + r, 1, r as f32 * 10.0)).collect();
        // Written out of order, and rank 10 sorts after rank 2 numerically.
        for r in [2usize, 0, 1] {
            let path = dir.path().join(format!("ckpt_99_rank{r}.pt"));
            write_gsplat_checkpoint(&parts[r], 99, &path).expect("write");
        }
        // Another step's file is not mixed in.
        write_gsplat_checkpoint(&splats(4, 1, 5.0), 7, &dir.path().join("ckpt_7_rank0.pt")).expect("write");
        let whole = read_gsplat_checkpoint(&dir.path().join("ckpt_99_rank1.pt")).expect("read");
        let mut expected = parts[0].clone();
        for part in &parts[1..] {
            expected.means.extend(&part.means);
            expected.log_scales.extend(&part.log_scales);
            expected.rotations.extend(&part.rotations);
            expected.opacity_logits.extend(&part.opacity_logits);
            expected.sh.extend(&part.sh);
        }
        assert_eq!(whole, expected);

        std::fs::remove_file(dir.path().join("ckpt_99_rank1.pt")).expect("remove");
        let err = read_gsplat_checkpoint(&dir.path().join("ckpt_99_rank0.pt"))
            .expect_err("a gap")
            .to_string();
        assert!(
            err.contains("ckpt_99_rank0.pt") && err.contains("rank 1 of step 99 is missing"),
            "{err}"
        );

        // Ranks with different SH degrees cannot be one scene.
        write_gsplat_checkpoint(&splats(3, 2, 1.0), 99, &dir.path().join("ckpt_99_rank1.pt")).expect("write");
        let err = read_gsplat_checkpoint(&dir.path().join("ckpt_99_rank0.pt"))
            .expect_err("degrees differ")
            .to_string();
        assert!(err.contains("ckpt_99_rank1.pt") && err.contains("SH degree 2"), "{err}");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.pt");
        write_gsplat_checkpoint(&splats(20, 1, 0.0), 5, &good).expect("write");
        let bytes = std::fs::read(&good).expect("read");
        let try_bytes = |name: &str, bytes: &[u8]| -> String {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            let err = crate::scene::load(&path).expect_err("must fail").to_string();
            assert!(err.contains(name), "the error must name the file: {err}");
            err
        };
        let err = try_bytes("empty.pt", b"");
        assert!(err.contains("not a gsplat checkpoint"), "{err}");
        let err = try_bytes("text.pt", b"hello, this is not a torch file at all");
        assert!(err.contains("not a gsplat checkpoint"), "{err}");
        for cut in [10, 100, bytes.len() / 2, bytes.len() - 30, bytes.len() - 1] {
            try_bytes(&format!("cut{cut}.pt"), &bytes[..cut]);
        }
    }

    #[test]
    fn missing_and_misshapen_tensors_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = splats(6, 0, 0.0);
        // A file whose `splats` lacks `quats`: build it with the writer's pieces.
        let encode_with = |tensors: &[(&str, Vec<usize>)]| -> Vec<u8> {
            let mut pickle = Pickler::default();
            pickle.header();
            pickle.op(b'}');
            pickle.op(b'(');
            pickle.string("splats");
            pickle.op(b'}');
            pickle.op(b'(');
            for (key, (name, shape)) in tensors.iter().enumerate() {
                pickle.string(name);
                pickle.tensor(&key.to_string(), shape).expect("tensor");
            }
            pickle.op(b'u');
            pickle.op(b'u');
            pickle.op(b'.');
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            zip.start_file("archive/data.pkl", options).expect("start");
            zip.write_all(&pickle.out).expect("write");
            for (key, (_, shape)) in tensors.iter().enumerate() {
                zip.start_file(format!("archive/data/{key}"), options).expect("start");
                let numel: usize = shape.iter().product();
                zip.write_all(&vec![0u8; numel * 4]).expect("write");
            }
            zip.finish().expect("finish").into_inner()
        };
        let n = s.len();
        type Tensors = Vec<(&'static str, Vec<usize>)>;
        let cases: [(&str, Tensors, &str); 4] = [
            (
                "no_quats.pt",
                vec![
                    ("means", vec![n, 3]),
                    ("scales", vec![n, 3]),
                    ("opacities", vec![n]),
                    ("sh0", vec![n, 1, 3]),
                    ("shN", vec![n, 0, 3]),
                ],
                "no `quats`",
            ),
            (
                "flat_means.pt",
                vec![
                    ("means", vec![n * 3]),
                    ("scales", vec![n, 3]),
                    ("quats", vec![n, 4]),
                    ("opacities", vec![n]),
                    ("sh0", vec![n, 1, 3]),
                    ("shN", vec![n, 0, 3]),
                ],
                "`means` has shape",
            ),
            (
                "short_scales.pt",
                vec![
                    ("means", vec![n, 3]),
                    ("scales", vec![n - 1, 3]),
                    ("quats", vec![n, 4]),
                    ("opacities", vec![n]),
                    ("sh0", vec![n, 1, 3]),
                    ("shN", vec![n, 0, 3]),
                ],
                "`scales` has 5 splats but `means` has 6",
            ),
            (
                "odd_sh.pt",
                vec![
                    ("means", vec![n, 3]),
                    ("scales", vec![n, 3]),
                    ("quats", vec![n, 4]),
                    ("opacities", vec![n]),
                    ("sh0", vec![n, 1, 3]),
                    ("shN", vec![n, 5, 3]),
                ],
                "`shN` has 5 coefficients",
            ),
        ];
        for (name, tensors, needle) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, encode_with(&tensors)).expect("write");
            let err = read_gsplat_checkpoint(&path).expect_err(name).to_string();
            assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
        }
        // All-zero quaternions (the data above is zeros) are an error, not NaN rotations.
        let full = [
            ("means", vec![n, 3]),
            ("scales", vec![n, 3]),
            ("quats", vec![n, 4]),
            ("opacities", vec![n, 1]),
            ("sh0", vec![n, 1, 3]),
            ("shN", vec![n, 0, 3]),
        ];
        let path = dir.path().join("zero_quats.pt");
        std::fs::write(&path, encode_with(&full)).expect("write");
        let err = read_gsplat_checkpoint(&path).expect_err("zero quaternion").to_string();
        assert!(err.contains("zero rotation quaternion"), "{err}");
    }
}
