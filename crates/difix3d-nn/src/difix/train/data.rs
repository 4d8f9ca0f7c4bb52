//! Training pairs in Difix3D's JSON layout:
//! `{"train": {ID: {"image", "target_image", "ref_image"?, "prompt"?}}, "test": {...}}` — the degraded
//! input, its clean target, optionally a reference view, and the prompt (Difix's own prompt when
//! absent). Paths may be relative to the JSON's folder. Every entry is checked before training
//! starts and all problems are reported in one error. [`ImagePrep`] says how a pair's images are
//! brought to the training size: resized as the reference does, or random square crops.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde_json::Value;

use crate::difix::images::{resize, resize_bilinear_antialiased};
use crate::difix::pipeline::DEFAULT_PROMPT;

#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// Every malformed entry and missing file, one per line.
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// One training example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub id: String,
    pub image: PathBuf,
    pub target: PathBuf,
    pub reference: Option<PathBuf>,
    pub prompt: String,
}

#[derive(Clone, Debug, Default)]
pub struct Pairs {
    pub train: Vec<Pair>,
    pub test: Vec<Pair>,
}

/// Problems listed in full before "and N more".
const MAX_LISTED: usize = 50;

/// Reads and checks `json`: its shape, each entry's fields, and that every image exists, is
/// readable, and that input and target have the same size.
pub fn load(json: &Path) -> Result<Pairs, PairsError> {
    let file_error = |message: String| PairsError::File {
        path: json.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(json).map_err(|e| file_error(format!("cannot read: {e}")))?;
    let root: Value = serde_json::from_str(&text).map_err(|e| file_error(format!("not JSON: {e}")))?;
    let base = json.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let mut split = |name: &str, required: bool| -> Vec<Pair> {
        let entries = match root.get(name) {
            Some(Value::Object(entries)) => entries,
            Some(_) => {
                problems.push(format!("\"{name}\" is not an object of entries"));
                return Vec::new();
            }
            None => {
                if required {
                    problems.push(format!("no \"{name}\" split"));
                }
                return Vec::new();
            }
        };
        let mut pairs = Vec::new();
        for (id, entry) in entries {
            match check_entry(base, name, id, entry) {
                Ok(pair) => pairs.push(pair),
                Err(mut p) => problems.append(&mut p),
            }
        }
        pairs
    };
    let pairs = Pairs {
        train: split("train", true),
        test: split("test", false),
    };
    if problems.is_empty() && pairs.train.is_empty() {
        problems.push("the \"train\" split has no entries".into());
    }
    if problems.is_empty() {
        return Ok(pairs);
    }
    let extra = problems.len().saturating_sub(MAX_LISTED);
    problems.truncate(MAX_LISTED);
    if extra > 0 {
        problems.push(format!("... and {extra} more"));
    }
    Err(PairsError::Invalid {
        path: json.to_path_buf(),
        problems,
    })
}

/// One entry, or every problem it has.
fn check_entry(base: &Path, split: &str, id: &str, entry: &Value) -> Result<Pair, Vec<String>> {
    let at = format!("{split}/{id}");
    let Some(fields) = entry.as_object() else {
        return Err(vec![format!("{at}: not an object")]);
    };
    let mut problems = Vec::new();
    // Each image is decoded in full (not just its header), so a corrupt or cut-off file fails here,
    // before the run writes anything, rather than at the step that first samples it.
    let mut path_of = |key: &str, required: bool| -> Option<(PathBuf, (u32, u32))> {
        match fields.get(key) {
            Some(Value::String(p)) => {
                let path = base.join(p);
                match crate::image_io::open(&path) {
                    Ok(image) => Some((path, (image.width(), image.height()))),
                    Err(e) => {
                        problems.push(format!("{at}: {key} {}: {e}", path.display()));
                        None
                    }
                }
            }
            Some(_) => {
                problems.push(format!("{at}: \"{key}\" is not a path string"));
                None
            }
            None => {
                if required {
                    problems.push(format!("{at}: no \"{key}\""));
                }
                None
            }
        }
    };
    let image = path_of("image", true);
    let target = path_of("target_image", true);
    let reference = path_of("ref_image", false).map(|(path, _)| path);
    let prompt = match fields.get("prompt") {
        None => Some(DEFAULT_PROMPT.to_string()),
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => {
            problems.push(format!("{at}: \"prompt\" is not a string"));
            None
        }
    };
    if let (Some((_, a)), Some((_, b))) = (&image, &target) {
        if a != b {
            problems.push(format!(
                "{at}: image is {}x{} but target_image is {}x{}",
                a.0, a.1, b.0, b.1
            ));
        }
    }
    match (image.map(|(path, _)| path), target.map(|(path, _)| path), prompt) {
        (Some(image), Some(target), Some(prompt)) if problems.is_empty() => Ok(Pair {
            id: id.to_string(),
            image,
            target,
            reference,
            prompt,
        }),
        _ => Err(problems),
    }
}

/// Which way training images are prepared (`train-difix --image-prep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ImagePrepKind {
    /// Difix3D's: every image resized to one size, the aspect ratio not kept.
    #[default]
    Resize,
    /// Random square crops of images scaled so their shorter side fits.
    Crop,
}

/// How a pair's images become the network's input and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePrep {
    /// What the reference's `src/dataset.py` (`PairedDataset`) does: input, target and reference are
    /// each resized to exactly `width` x `height` (576x1024 there; its `--resolution` flag is never
    /// read) by [`resize_bilinear_antialiased`], whatever their aspect ratio. No randomness; the
    /// evaluation sees the same whole image.
    Resize { height: u32, width: u32 },
    /// Ours: input and target scaled (Lanczos) so the shorter side is at least `side`, then a random
    /// `side` x `side` crop, the same square in input, target and reference (the reference first
    /// resized to the input's size). The evaluation takes the centre square.
    Crop { side: u32 },
}

impl ImagePrep {
    /// The reference's: resized to 576x1024 (height x width).
    pub const REFERENCE: ImagePrep = ImagePrep::Resize {
        height: 576,
        width: 1024,
    };

    pub fn kind(&self) -> ImagePrepKind {
        match self {
            ImagePrep::Resize { .. } => ImagePrepKind::Resize,
            ImagePrep::Crop { .. } => ImagePrepKind::Crop,
        }
    }

    /// The (width, height) of every prepared image.
    pub fn size(&self) -> (u32, u32) {
        match *self {
            ImagePrep::Resize { height, width } => (width, height),
            ImagePrep::Crop { side } => (side, side),
        }
    }
}

impl std::fmt::Display for ImagePrep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImagePrep::Resize { height, width } => write!(f, "resized to {height}x{width}"),
            ImagePrep::Crop { side } => write!(f, "{side}x{side} crops"),
        }
    }
}

/// A training example's pixels, prepared.
pub struct Sample {
    pub image: RgbImage,
    pub target: RgbImage,
    pub reference: Option<RgbImage>,
    pub prompt: String,
}

/// Where a square crop of `size` sits in an image of `width` x `height` (after [`fit`]): `u`, `v` in
/// [0, 1) pick the offset.
pub fn crop_origin(width: u32, height: u32, size: u32, u: f32, v: f32) -> (u32, u32) {
    let x = ((width - size.min(width)) as f32 * u).floor() as u32;
    let y = ((height - size.min(height)) as f32 * v).floor() as u32;
    (x, y)
}

/// `image` scaled (Lanczos) so its shorter side is at least `size`.
fn fit(image: RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let short = w.min(h);
    if short >= size {
        return image;
    }
    let scale = size as f32 / short as f32;
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).max(size),
        ((h as f32 * scale).round() as u32).max(size),
    );
    resize(&image, nw, nh)
}

/// [`resize_bilinear_antialiased`] rounded to 8 bits (at most half a level, 0.5/255, from the
/// reference's float values).
fn resize_like_the_reference(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let values = resize_bilinear_antialiased(image, width, height);
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb(
            values
                .get_pixel(x, y)
                .0
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8),
        )
    })
}

/// Loads `pair` and prepares it per `prep`; for [`ImagePrep::Crop`], `(u, v)` in [0, 1) pick the
/// crop's offset (see [`crop_origin`]).
pub fn sample(pair: &Pair, prep: ImagePrep, u: f32, v: f32) -> Result<Sample, PairsError> {
    let open = |path: &Path| -> Result<RgbImage, PairsError> {
        crate::image_io::open_rgb(path).map_err(|message| PairsError::File {
            path: path.to_path_buf(),
            message,
        })
    };
    let reference = pair.reference.as_deref().map(open).transpose()?;
    let (image, target, reference) = match prep {
        ImagePrep::Resize { height, width } => {
            let prepare = |i: &RgbImage| resize_like_the_reference(i, width, height);
            (
                prepare(&open(&pair.image)?),
                prepare(&open(&pair.target)?),
                reference.as_ref().map(prepare),
            )
        }
        ImagePrep::Crop { side } => {
            let image = fit(open(&pair.image)?, side);
            let (w, h) = image.dimensions();
            let target = resize(&fit(open(&pair.target)?, side), w, h);
            let reference = reference.map(|r| resize(&r, w, h));
            let (x, y) = crop_origin(w, h, side, u, v);
            let crop = |i: &RgbImage| image::imageops::crop_imm(i, x, y, side, side).to_image();
            (crop(&image), crop(&target), reference.as_ref().map(crop))
        }
    };
    Ok(Sample {
        image,
        target,
        reference,
        prompt: pair.prompt.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose pixel (x, y) is (x, y, tag), to see where crops come from.
    fn coded(w: u32, h: u32, tag: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, tag]))
    }

    fn write_json(dir: &Path, value: serde_json::Value) -> PathBuf {
        let path = dir.join("data.json");
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }

    #[test]
    fn reads_relative_paths_and_crops_all_three_alike() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("imgs")).unwrap();
        coded(100, 60, 1).save(dir.path().join("imgs/in.png")).unwrap();
        coded(100, 60, 2).save(dir.path().join("imgs/out.png")).unwrap();
        coded(100, 60, 3).save(dir.path().join("imgs/ref.png")).unwrap();
        let json = write_json(
            dir.path(),
            serde_json::json!({
                "train": {"a": {"image": "imgs/in.png", "target_image": "imgs/out.png", "ref_image": "imgs/ref.png", "prompt": "p"}},
                "test": {"b": {"image": "imgs/in.png", "target_image": "imgs/out.png"}}
            }),
        );
        let pairs = load(&json).unwrap();
        assert_eq!(pairs.train.len(), 1);
        assert_eq!(pairs.train[0].image, dir.path().join("imgs/in.png"));
        assert_eq!(pairs.test[0].prompt, DEFAULT_PROMPT);
        assert_eq!(pairs.test[0].reference, None);

        let s = sample(&pairs.train[0], ImagePrep::Crop { side: 40 }, 0.5, 0.99).unwrap();
        let (x, y) = crop_origin(100, 60, 40, 0.5, 0.99);
        assert_eq!((x, y), (30, 19));
        for (img, tag) in [(&s.image, 1), (&s.target, 2), (s.reference.as_ref().unwrap(), 3)] {
            assert_eq!(img.dimensions(), (40, 40));
            assert_eq!(img.get_pixel(0, 0).0, [30, 19, tag]);
            assert_eq!(img.get_pixel(39, 39).0, [69, 58, tag]);
        }
        // Smaller than the resolution: scaled up so the short side fits, then cropped.
        let s = sample(&pairs.train[0], ImagePrep::Crop { side: 120 }, 0.0, 0.0).unwrap();
        assert_eq!(s.image.dimensions(), (120, 120));
    }

    /// The test image of `tests/golden/difix/make_image_prep.py`.
    fn golden_input() -> RgbImage {
        RgbImage::from_fn(23, 13, |x, y| {
            image::Rgb([0, 1, 2].map(|c| ((x * 37 + y * 91 + c * 53 + (x * y % 17) * 13) % 256) as u8))
        })
    }

    /// `--image-prep resize` gives the reference's tensors: `tests/fixtures/difix/image_prep.json`
    /// holds what torchvision's `F.resize` (bilinear, antialiased) gives in PyTorch for four sizes
    /// (both axes shrunk, one grown and one shrunk, both grown, unchanged). Our float resize matches
    /// it to 1e-6 (f64 here, f32 there); the 8-bit sample is within half a level, and after the
    /// normalisation `2 v - 1` (`F.normalize(mean=0.5, std=0.5)`) within 1/255, for the input, the
    /// target and the reference alike. A reference of another size is resized on its own to the
    /// same size, as the reference does.
    #[test]
    fn resize_gives_the_reference_pixels() {
        let golden: Value = serde_json::from_str(
            &std::fs::read_to_string(crate::repo_root().join("tests/fixtures/difix/image_prep.json")).unwrap(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = golden_input();
        input.save(dir.path().join("in.png")).unwrap();
        let pair = Pair {
            id: "a".into(),
            image: dir.path().join("in.png"),
            target: dir.path().join("in.png"),
            reference: Some(dir.path().join("in.png")),
            prompt: DEFAULT_PROMPT.into(),
        };
        let cases = golden["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let (h, w) = (
                case["height"].as_u64().unwrap() as u32,
                case["width"].as_u64().unwrap() as u32,
            );
            let expected: Vec<f32> = case["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(expected.len(), (3 * w * h) as usize);
            let ours = resize_bilinear_antialiased(&input, w, h);
            let worst = ours
                .as_raw()
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-6,
                "{h}x{w}: the float resize differs from torch by {worst:e}"
            );

            let s = sample(&pair, ImagePrep::Resize { height: h, width: w }, 0.3, 0.7).unwrap();
            for (name, img) in [
                ("input", &s.image),
                ("target", &s.target),
                ("reference", s.reference.as_ref().unwrap()),
            ] {
                assert_eq!(img.dimensions(), (w, h), "{name}");
                let worst = img
                    .as_raw()
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| ((*a as f32 / 255.0) * 2.0 - 1.0 - (b * 2.0 - 1.0)).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst <= 1.0 / 255.0 + 1e-6,
                    "{h}x{w} {name}: {worst} from the reference's normalised tensor"
                );
            }
        }
        // A reference of another size (and aspect ratio) comes out at the same size, resized on its own.
        coded(7, 30, 9).save(dir.path().join("tall.png")).unwrap();
        let tall = Pair {
            reference: Some(dir.path().join("tall.png")),
            ..pair
        };
        let s = sample(&tall, ImagePrep::Resize { height: 8, width: 16 }, 0.0, 0.0).unwrap();
        assert_eq!(s.reference.unwrap().dimensions(), (16, 8));
        assert_eq!(ImagePrep::REFERENCE.size(), (1024, 576));
    }

    #[test]
    fn lists_every_problem_in_one_error() {
        let dir = tempfile::tempdir().unwrap();
        coded(32, 32, 0).save(dir.path().join("a.png")).unwrap();
        coded(16, 32, 0).save(dir.path().join("small.png")).unwrap();
        std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
        let json = write_json(
            dir.path(),
            serde_json::json!({
                "train": {
                    "ok": {"image": "a.png", "target_image": "a.png"},
                    "no_target": {"image": "a.png"},
                    "missing": {"image": "gone.png", "target_image": "a.png"},
                    "broken": {"image": "broken.png", "target_image": "a.png"},
                    "sizes": {"image": "a.png", "target_image": "small.png"},
                    "types": {"image": 3, "target_image": "a.png", "prompt": 1},
                    "scalar": 5
                },
                "test": []
            }),
        );
        let message = load(&json).unwrap_err().to_string();
        for expected in [
            "data.json: 8 problem(s)",
            "train/no_target: no \"target_image\"",
            "train/missing: image",
            "gone.png",
            "train/broken: image",
            "train/sizes: image is 32x32 but target_image is 16x32",
            "train/types: \"image\" is not a path string",
            "train/types: \"prompt\" is not a string",
            "train/scalar: not an object",
            "\"test\" is not an object of entries",
        ] {
            assert!(message.contains(expected), "{expected:?} missing from:\n{message}");
        }
        assert!(!message.contains("train/ok"), "{message}");

        let empty = write_json(dir.path(), serde_json::json!({"train": {}}));
        assert!(load(&empty).unwrap_err().to_string().contains("no entries"));
        std::fs::write(&empty, "{").unwrap();
        assert!(load(&empty).unwrap_err().to_string().contains("not JSON"));
    }
}
