//! `difix3d fix`: run Difix over image files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::{Difix, DEFAULT_PROMPT, DEFAULT_TIMESTEP};
use difix3d::image_io;
use difix3d::nn::backend::{run_on, BackendKind, Precision, WithBackend};

#[derive(Args)]
pub struct FixArgs {
    /// Model directory in the diffusers layout (nvidia/difix or nvidia/difix_ref).
    #[arg(long, default_value = "checkpoints/difix_ref")]
    model: PathBuf,
    /// A trainer checkpoint (`model_*.pkl`) applied over --model (then an SD-Turbo directory).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Images to fix, or folders of images.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Reference views: one for all inputs, or one per input.
    #[arg(long = "ref", num_args = 1..)]
    refs: Vec<PathBuf>,
    /// Output folder; each output is named after its input, as PNG.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    #[arg(long, default_value_t = DEFAULT_TIMESTEP)]
    timestep: usize,
    /// Working size HEIGHTxWIDTH; the output is resized back to the input's size.
    #[arg(long, default_value = "576x1024", value_parser = super::parse_hw, conflicts_with = "native")]
    size: (u32, u32),
    /// Work at the input's own size floored to multiples of 8.
    #[arg(long)]
    native: bool,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// Default: cuda when built with it and a driver is present, else wgpu.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
}

/// Expands folders into their image files (sorted), keeps files as given.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list folder", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let ext = p
                        .extension()
                        .and_then(|e| e.to_str())
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
                })
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{}: no .png/.jpg images in this folder", path.display());
            }
            out.extend(files);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn load_rgb(path: &Path) -> anyhow::Result<image::RgbImage> {
    difix3d::image_io::open_rgb(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

struct FixJob {
    args: FixArgs,
    inputs: Vec<(PathBuf, image::RgbImage)>,
    refs: Vec<image::RgbImage>,
}

impl WithBackend for FixJob {
    /// (images fixed, milliseconds per image excluding model loading)
    type Output = anyhow::Result<(usize, f64)>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        let mut model = Difix::<B>::load(&args.model, args.checkpoint.as_deref(), &device)?;
        model.set_timestep(args.timestep)?;
        let policy = if args.native {
            SizePolicy::Native
        } else {
            SizePolicy::Fixed {
                height: args.size.0,
                width: args.size.1,
            }
        };
        let start = std::time::Instant::now();
        let bar = ProgressBar::new(self.inputs.len() as u64).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]").expect("valid template"),
        );
        for (i, (path, image)) in self.inputs.iter().enumerate() {
            bar.set_message(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let reference = match self.refs.len() {
                0 => None,
                1 => Some(&self.refs[0]),
                _ => Some(&self.refs[i]),
            };
            let fixed = model.fix_image(image, reference, policy, &args.prompt)?;
            // The folder appears with the first fixed image: a model, timestep or size that
            // cannot work fails before it, leaving `--out` as it was.
            if i == 0 {
                std::fs::create_dir_all(&args.out)
                    .with_context(|| format!("{}: cannot create output folder", args.out.display()))?;
            }
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{i:05}"));
            image_io::save_png(&fixed, &args.out.join(format!("{stem}.png")))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let n = self.inputs.len();
        Ok((n, start.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64))
    }
}

pub fn run(args: FixArgs) -> anyhow::Result<()> {
    // Check every file before loading gigabytes of weights.
    let input_paths = expand(&args.input)?;
    let ref_paths = expand(&args.refs)?;
    if !ref_paths.is_empty() && ref_paths.len() != 1 && ref_paths.len() != input_paths.len() {
        bail!(
            "{} reference images for {} inputs: give one reference for all inputs, or one per input",
            ref_paths.len(),
            input_paths.len()
        );
    }
    let inputs = input_paths
        .iter()
        .map(|p| Ok((p.clone(), load_rgb(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let refs = ref_paths
        .iter()
        .map(|p| load_rgb(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let backend = args.backend.unwrap_or_else(default_backend);
    let precision = args.precision;
    let out = args.out.clone();
    let (count, ms) = run_on(backend, precision, FixJob { args, inputs, refs })??;
    println!(
        "fixed {count} image(s) on {backend} ({precision:?}) in {ms:.0} ms per image -> {}",
        out.display()
    );
    Ok(())
}

pub(super) fn default_backend() -> BackendKind {
    if cfg!(feature = "cuda") && difix3d::nn::backend::probe_cuda().is_ok() {
        BackendKind::Cuda
    } else {
        BackendKind::Wgpu
    }
}
