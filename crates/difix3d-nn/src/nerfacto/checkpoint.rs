//! Nerfstudio checkpoints (`step-NNNNNNNNN.ckpt`), read.
//!
//! `Trainer.save_checkpoint` (nerfstudio/engine/trainer.py) writes
//! `torch.save({"step", "pipeline": pipeline.state_dict(), "optimizers", "schedulers", "scalers"})`:
//! a torch zip archive whose `pipeline` dict holds the model's tensors as `_model.<name>`
//! (`VanillaPipeline` keeps the model in `self._model`). As in `VanillaPipeline.load_pipeline` and
//! `Pipeline.load_state_dict`, a leading `module.` (a checkpoint of a wrapped pipeline) and a
//! `_model.module.` prefix on every key (a DDP-wrapped model) are dropped; keys outside `_model.`
//! belong to the data manager and are ignored.
//!
//! Which method wrote the file shows in the keys: nerfacto has `field.mlp_base...`,
//! `field.mlp_head...` and `proposal_networks.N...`; its tiny-cuda-nn implementation stores each
//! network as one flat `...params` vector instead of per-layer tensors (kept as they are here;
//! `super::tcnn` splits them when the model is built); splatfacto has
//! `gauss_params.*`. The pickle is read by [`super::torch_pickle`], which interprets its opcodes as
//! data and never runs anything (burn-store's reader stops at the optimiser state's numpy scalars).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::encoding::GridLayout;
use super::NerfactoError;

/// One tensor of the checkpoint, as f32 (integer buffers such as `field.num_levels` included).
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The model tensors of a nerfacto checkpoint, by key without the `_model.` prefix.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    /// The last training step the model took, as nerfstudio's checkpoint records it (`step`; the
    /// `step` metadata of our safetensors runs); `None` when the file does not say.
    pub step: Option<usize>,
    /// How its hash grids lay out their tables: [`GridLayout::Tcnn`] once its tiny-cuda-nn vectors
    /// are split into torch's keys ([`Self::unflatten`]).
    pub layout: GridLayout,
    tensors: BTreeMap<String, StoredTensor>,
}

impl Checkpoint {
    /// Reads the model tensors of a nerfacto checkpoint (either implementation); other methods are
    /// refused with an error saying what the file is.
    pub fn read(path: &Path) -> Result<Self, NerfactoError> {
        if !path.is_file() {
            return Err(NerfactoError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let (state, step) = if is_safetensors(path) {
            // A run saved by `difix3d train --method nerfacto` (`super::state::save`): plain model keys
            // are accepted too.
            let (tensors, step) = read_safetensors(path)
                .map_err(|e| NerfactoError::format(path, format!("not a nerfacto state dict: {e}")))?;
            let mut state: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> = tensors.into_iter().collect();
            if !state.keys().any(|k| k.starts_with("_model.")) {
                state = state.into_iter().map(|(k, v)| (format!("_model.{k}"), v)).collect();
            }
            (state, step)
        } else {
            let not_nerfstudio = |e: String| {
                NerfactoError::format(
                    path,
                    format!("not a nerfstudio checkpoint (a torch archive with a `pipeline` state dict): {e}"),
                )
            };
            let state = super::torch_pickle::read_state_dict(path, "pipeline").map_err(not_nerfstudio)?;
            // `Trainer.save_checkpoint` stores the step beside the pipeline.
            let step = super::torch_pickle::read_integer(path, "step")
                .map_err(not_nerfstudio)?
                .and_then(|s| usize::try_from(s).ok());
            (state, step)
        };
        let snapshots = model_keys(state);
        if snapshots.is_empty() {
            return Err(NerfactoError::format(
                path,
                "its `pipeline` state dict holds no model tensors (`_model.*`); is this a nerfstudio checkpoint?",
            ));
        }
        classify(path, snapshots.keys().map(String::as_str))?;

        let mut tensors = BTreeMap::new();
        for (key, (shape, values)) in snapshots {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(NerfactoError::format(
                    path,
                    format!("`_model.{key}`: value {i} is {}; the checkpoint is damaged", values[i]),
                ));
            }
            tensors.insert(key, StoredTensor { shape, values });
        }
        Ok(Self {
            path: path.to_path_buf(),
            step,
            layout: GridLayout::Torch,
            tensors,
        })
    }

    /// This checkpoint with its tiny-cuda-nn vectors split into the torch implementation's keys as
    /// `plan` says (the vectors' duplicates under other module names dropped), and its layout
    /// [`GridLayout::Tcnn`].
    pub fn unflatten(&self, plan: &super::tcnn::Plan) -> Self {
        let mut tensors = BTreeMap::new();
        for (key, tensor) in &self.tensors {
            match plan.split(key, &tensor.values) {
                Some(pieces) => tensors.extend(pieces),
                // The duplicates, and the parameterless encodings' empty vectors.
                None if key.ends_with(".params") => {}
                None => {
                    tensors.insert(key.clone(), tensor.clone());
                }
            }
        }
        Self {
            path: self.path.clone(),
            step: self.step,
            layout: GridLayout::Tcnn,
            tensors,
        }
    }

    /// A checkpoint made in memory (a fresh model's tensors, see `super::state::initial`); `path`
    /// names it in errors.
    pub fn from_tensors(path: PathBuf, tensors: BTreeMap<String, StoredTensor>) -> Self {
        Self {
            path,
            step: None,
            layout: GridLayout::Torch,
            tensors,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Every model key (without `_model.`) with its shape, in name order.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.tensors.iter().map(|(k, t)| (k.as_str(), t.shape.as_slice()))
    }

    /// The tensor `key` (without `_model.`), or an error naming it.
    pub fn tensor(&self, key: &str) -> Result<&StoredTensor, NerfactoError> {
        self.tensors
            .get(key)
            .ok_or_else(|| self.error(format!("`_model.{key}` is missing")))
    }

    /// The values of `key`, which must have exactly `shape`.
    pub fn values(&self, key: &str, shape: &[usize]) -> Result<&[f32], NerfactoError> {
        let t = self.tensor(key)?;
        if t.shape != shape {
            return Err(self.error(format!("`_model.{key}` has shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok(&t.values)
    }

    /// A scalar integer buffer such as `field.num_levels`.
    pub fn integer(&self, key: &str) -> Result<usize, NerfactoError> {
        let t = self.tensor(key)?;
        match super::torch_pickle::count(&t.values) {
            Some(v) => Ok(v),
            None => Err(self.error(format!(
                "`_model.{key}` should be one non-negative integer, found {:?} with shape {:?}",
                &t.values[..t.values.len().min(4)],
                t.shape
            ))),
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> NerfactoError {
        NerfactoError::format(&self.path, message)
    }
}

/// nerfstudio's saved Adam state of one parameter (torch's layout).
#[derive(Clone, Debug)]
pub struct AdamMoment {
    /// The steps the parameter has taken.
    pub step: usize,
    pub exp_avg: StoredTensor,
    pub exp_avg_sq: StoredTensor,
}

/// nerfstudio's optimiser groups of nerfacto and the model key prefix of each group's parameters
/// (`NerfactoModel.get_param_groups`; `camera_opt` only with the camera optimiser on).
pub(crate) const OPTIMISER_GROUPS: [(&str, &str); 3] = [
    ("fields", "field."),
    ("proposal_networks", "proposal_networks."),
    ("camera_opt", "camera_optimizer."),
];

/// The group a checkpoint may lack (a model trained with the camera optimiser off), or hold for
/// a model that does not use it: its parameters then start fresh, or its state is not read.
const OPTIONAL_GROUP: &str = "camera_opt";

/// The Adam moments a nerfstudio checkpoint holds beside the model (`optimizers`; what
/// `Trainer._load_checkpoint` restores with `load_optimizers`), by the model key (without `_model.`)
/// of each parameter in `parameter_keys` (the model's trainable tensors, `super::state::parameters`).
/// `Ok(None)` for a file without them (a safetensors run of ours). The camera optimiser's
/// `camera_opt` is read when `parameter_keys` has its `camera_optimizer.pose_adjustment` and the file
/// has the group.
///
/// A torch optimiser's state names parameters by their position in its group's parameter list,
/// `list(module.parameters())`: the module's parameters in registration order, a tensor registered
/// twice (a proposal network's hash table, also in its `mlp_base`) counted once. The pipeline's state
/// dict lists its keys in the same order, so each group's positions map to that group's parameter
/// keys in the order the file stores them.
///
/// Our safetensors runs hold them as `super::state::save` writes them ([`optimiser_key`]); `Ok(None)`
/// for one without them.
pub fn read_adam_moments(
    path: &Path,
    parameter_keys: &[&str],
) -> Result<Option<BTreeMap<String, AdamMoment>>, NerfactoError> {
    let error = |e: String| NerfactoError::format(path, format!("the saved optimiser state: {e}"));
    let tensor = |(shape, values): (Vec<usize>, Vec<f32>)| StoredTensor { shape, values };
    if is_safetensors(path) {
        let (mut tensors, _) = read_safetensors(path).map_err(error)?;
        let mut moments = BTreeMap::new();
        for key in parameter_keys {
            let name = optimiser_key(key);
            let mut take = |suffix: &str| tensors.remove(&format!("{name}.{suffix}"));
            match (take("exp_avg"), take("exp_avg_sq"), take("step")) {
                (Some(m), Some(v), Some((_, step))) => {
                    let Some(step) = super::torch_pickle::count(&step) else {
                        return Err(error(format!("`{name}.step` is {step:?}, not a step count")));
                    };
                    moments.insert(
                        key.to_string(),
                        AdamMoment {
                            step,
                            exp_avg: tensor(m),
                            exp_avg_sq: tensor(v),
                        },
                    );
                }
                (None, None, None) => {}
                _ => return Err(error(format!("`{name}` is incomplete (exp_avg, exp_avg_sq and step)"))),
            }
        }
        return Ok((!moments.is_empty()).then_some(moments));
    }
    let mut groups = super::torch_pickle::read_adam_states(path, "optimizers").map_err(error)?;
    if groups.is_empty() {
        return Ok(None);
    }
    let stored = super::torch_pickle::read_state_dict_keys(path, "pipeline").map_err(error)?;
    let positions: std::collections::HashMap<String, usize> =
        stored.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut ordered: Vec<(String, usize)> = model_keys(positions).into_iter().collect();
    ordered.sort_by_key(|(_, position)| *position);
    let mut moments = BTreeMap::new();
    for (group, prefix) in OPTIMISER_GROUPS {
        let keys: Vec<&String> = ordered
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(prefix) && parameter_keys.contains(&k.as_str()))
            .collect();
        let states = groups.remove(group);
        if group == OPTIONAL_GROUP && (keys.is_empty() || states.is_none()) {
            continue;
        }
        let Some(states) = states else {
            return Err(error(format!("no `{group}` optimiser")));
        };
        if states.len() != keys.len() {
            return Err(error(format!(
                "the `{group}` optimiser has {} parameters; the model has {}",
                states.len(),
                keys.len()
            )));
        }
        for (key, state) in keys.into_iter().zip(states) {
            let Some(state) = state else { continue };
            moments.insert(
                key.clone(),
                AdamMoment {
                    step: state.step,
                    exp_avg: tensor(state.exp_avg),
                    exp_avg_sq: tensor(state.exp_avg_sq),
                },
            );
        }
    }
    Ok(Some(moments))
}

/// Whether `path` is one of our safetensors runs (by its extension) rather than a torch archive.
pub fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// The name prefix under which our safetensors runs store the Adam state of the parameter `key`:
/// `optimizers.{group}.{key}`, the group as nerfstudio names it.
pub fn optimiser_key(key: &str) -> String {
    let group = optimiser_group(key).map_or("other", |g| OPTIMISER_GROUPS[g].0);
    format!("optimizers.{group}.{key}")
}

/// The position in [`OPTIMISER_GROUPS`] of the group the parameter `key` belongs to, by its prefix.
pub(crate) fn optimiser_group(key: &str) -> Option<usize> {
    OPTIMISER_GROUPS.iter().position(|(_, prefix)| key.starts_with(prefix))
}

/// The `_model.` tensors with that prefix (and any wrapper prefix) removed.
fn model_keys<T>(all: std::collections::HashMap<String, T>) -> BTreeMap<String, T> {
    let unwrapped = all
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("module.").map(str::to_string).unwrap_or(k), v));
    let mut model: BTreeMap<String, T> = unwrapped
        .filter_map(|(k, v)| k.strip_prefix("_model.").map(|rest| (rest.to_string(), v)))
        .collect();
    if !model.is_empty() && model.keys().all(|k| k.starts_with("module.")) {
        model = model
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
    }
    model
}

/// Refuses anything but a nerfacto checkpoint (of either of nerfstudio's implementations).
fn classify<'a>(path: &Path, keys: impl Iterator<Item = &'a str> + Clone) -> Result<(), NerfactoError> {
    if keys.clone().any(|k| k.starts_with("gauss_params.")) {
        return Err(NerfactoError::Splatfacto {
            path: path.to_path_buf(),
        });
    }
    let has = |prefix: &str| keys.clone().any(|k| k.starts_with(prefix));
    if has("field.mlp_base.") && has("field.mlp_head.") && has("proposal_networks.0.") {
        return Ok(());
    }
    // Name the modules the model does have, so the user sees what the file is.
    let mut modules: Vec<&str> = keys.map(|k| k.split('.').next().unwrap_or(k)).collect();
    modules.dedup();
    modules.truncate(8);
    Err(NerfactoError::OtherMethod {
        path: path.to_path_buf(),
        found: format!("`{}`", modules.join("`, `")),
    })
}

/// The safetensors metadata key of the last step a saved model took (nerfstudio's checkpoint `step`).
pub const STEP_METADATA: &str = "step";

/// A safetensors state dict's tensors by key, and the step its metadata records.
pub(crate) type SavedState = (BTreeMap<String, (Vec<usize>, Vec<f32>)>, Option<usize>);

/// Reads a safetensors state dict (ours, or one exported from nerfstudio with `_model.` keys or
/// plain model keys): every tensor as f32, by key, and the [`STEP_METADATA`] step when present.
pub(crate) fn read_safetensors(path: &Path) -> Result<SavedState, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let step = match header.metadata().as_ref().and_then(|m| m.get(STEP_METADATA)) {
        Some(text) => Some(
            text.parse::<usize>()
                .map_err(|_| format!("its metadata `{STEP_METADATA}` is {text:?}, not a step number"))?,
        ),
        None => None,
    };
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in tensors.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            safetensors::Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect(),
            other => return Err(format!("`{name}` is {other:?}; only f32 and int64 tensors are read")),
        };
        let shape = view.shape().to_vec();
        if values.len() != shape.iter().product::<usize>() {
            return Err(format!("`{name}` has {} values for shape {shape:?}", values.len()));
        }
        out.insert(name, (shape, values));
    }
    Ok((out, step))
}
