//! Checkpoints: splat parameters and Adam moments per group in one safetensors file, with the step
//! and any caller metadata (the refinement stores its latest round there) in the header. Written
//! atomically, so a run stopped mid-save keeps its previous checkpoint.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::adam::Moments;
use super::step::{groups, State, GROUP_NAMES};
use super::trainer::TrainError;
use crate::render::diff_render::SplatTensors;
use crate::tensor_file::F32Tensors;

/// What a checkpoint holds besides the tensors.
pub struct Loaded<B: Backend> {
    pub state: State<B>,
    pub step: usize,
    pub metadata: HashMap<String, String>,
}

/// Writes parameters, Adam moments, `step` and `extra` metadata to `path` atomically.
pub fn save<B: Backend>(
    state: &State<B>,
    step: usize,
    extra: &[(&str, String)],
    path: &Path,
) -> Result<(), TrainError> {
    let mut tensors = F32Tensors::default();
    for ((name, p), m) in GROUP_NAMES.iter().zip(groups(&state.params)).zip(&state.moments) {
        tensors.push(name.to_string(), p.clone());
        tensors.push(format!("adam_m.{name}"), m.m.clone());
        tensors.push(format!("adam_v.{name}"), m.v.clone());
    }
    let mut metadata = HashMap::from([
        ("step".to_string(), step.to_string()),
        ("sh_degree".to_string(), state.params.sh_degree.to_string()),
    ]);
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    tensors.write(path, Some(metadata))?;
    Ok(())
}

/// Reads a checkpoint written by [`save`].
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<Loaded<B>, TrainError> {
    let err = |message: String| TrainError::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read the checkpoint: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let number = |key: &str| -> Result<usize, TrainError> {
        metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(format!("no `{key}` in the checkpoint's metadata")))
    };
    let step = number("step")?;
    let sh_degree = number("sh_degree")?;
    if sh_degree > 3 {
        return Err(err(format!(
            "`sh_degree` is {sh_degree} in the checkpoint's metadata; it must be 0 to 3"
        )));
    }
    let sh_degree = sh_degree as u32;
    // Every group and both its moments hold one row per splat, with the group's width.
    let splats = tensors
        .tensor(GROUP_NAMES[0])
        .map(|view| view.shape().first().copied().unwrap_or(0))
        .map_err(|e| err(format!("`{}`: {e}", GROUP_NAMES[0])))?;
    if splats == 0 {
        return Err(err("the checkpoint holds no splats".into()));
    }
    let width = |name: &str| -> usize {
        let group = name.rsplit('.').next().unwrap_or(name);
        match group {
            "means" | "log_scales" => 3,
            "rotations" => 4,
            "opacity_logits" => 1,
            _ => 3 * crate::scene::sh_coeffs(sh_degree),
        }
    };
    let tensor = |name: &str| -> Result<Tensor<B, 2>, TrainError> {
        let view = tensors.tensor(name).map_err(|e| err(format!("`{name}`: {e}")))?;
        let shape = view.shape();
        if view.dtype() != safetensors::Dtype::F32 || shape.len() != 2 {
            return Err(err(format!("`{name}` is not a 2D f32 tensor")));
        }
        let expected = [splats, width(name)];
        if shape != expected {
            return Err(err(format!(
                "`{name}` has shape {shape:?}, expected {expected:?} ({splats} splats of SH degree {sh_degree})"
            )));
        }
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        // A NaN here (a run that diverged, a corrupt copy) would train on silently.
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(err(format!(
                "`{name}` row {} holds {}: every value of a checkpoint must be finite (the file is corrupt \
                 or the run that wrote it diverged)",
                i / shape[1].max(1),
                values[i]
            )));
        }
        Ok(Tensor::from_data(TensorData::new(values, [shape[0], shape[1]]), device))
    };
    let p = |i: usize| tensor(GROUP_NAMES[i]);
    let params = SplatTensors {
        means: p(0)?,
        log_scales: p(1)?,
        rotations: p(2)?,
        opacity_logits: p(3)?,
        sh: p(4)?,
        sh_degree,
    };
    let mut moments = Vec::new();
    for name in GROUP_NAMES {
        moments.push(Moments {
            m: tensor(&format!("adam_m.{name}"))?,
            v: tensor(&format!("adam_v.{name}"))?,
        });
    }
    let moments: [Moments<B>; 5] = moments
        .try_into()
        .map_err(|_| err("optimiser state is incomplete".into()))?;
    Ok(Loaded {
        state: State { params, moments },
        step,
        metadata,
    })
}
