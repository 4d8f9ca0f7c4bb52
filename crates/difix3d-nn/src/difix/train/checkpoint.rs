//! What a resumed fine-tuning run needs besides the exported model folder: AdamW's moments, saved
//! by the parameters' stored names (parameter ids change when the model is loaded again), and the
//! step count.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamWState, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::step::{DifixOptimizer, Nets};
use crate::difix::DifixError;
use crate::nn::weights::ParamKey;
use crate::tensor_file::F32Tensors;

/// File names inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";

type Record<B> = <DifixOptimizer<B> as Optimizer<Nets<B>, B>>::Record;

/// Writes the optimiser's moments of every named parameter of `nets` to `path`.
pub fn save_optimizer<B: AutodiffBackend>(
    optimizer: &DifixOptimizer<B>,
    nets: &Nets<B>,
    keys: &[&[ParamKey]],
    path: &Path,
) -> Result<(), DifixError> {
    let mut record = optimizer.to_record();
    let mut save = Save {
        names: names(keys),
        record: &mut record,
        tensors: F32Tensors::default(),
        time: 0,
    };
    nets.visit(&mut save);
    let meta = HashMap::from([("time".to_string(), save.time.to_string())]);
    save.tensors
        .write(path, Some(meta))
        .map_err(|e| DifixError::format(path, e.to_string()))
}

/// Reads moments written by [`save_optimizer`] into a fresh optimiser for `nets`.
pub fn load_optimizer<B: AutodiffBackend>(
    optimizer: DifixOptimizer<B>,
    nets: &Nets<B>,
    keys: &[&[ParamKey]],
    path: &Path,
) -> Result<DifixOptimizer<B>, DifixError> {
    let bytes = std::fs::read(path).map_err(|e| DifixError::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| DifixError::format(path, format!("not an optimizer state: {e}")))?;
    let time: usize = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("time"))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| DifixError::format(path, "no `time` in the optimizer state"))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| DifixError::format(path, e.to_string()))?;
    let mut load = Load::<B> {
        names: names(keys),
        tensors: &tensors,
        time,
        record: Record::<B>::default(),
        missing: Vec::new(),
    };
    nets.visit(&mut load);
    if let Some(name) = load.missing.first() {
        return Err(DifixError::format(
            path,
            format!("no moments for `{name}` ({} parameters missing)", load.missing.len()),
        ));
    }
    Ok(optimizer.load_record(load.record))
}

fn names<'a>(keys: &[&'a [ParamKey]]) -> HashMap<ParamId, &'a str> {
    keys.iter()
        .flat_map(|k| k.iter())
        .map(|k| (k.id, k.key.as_str()))
        .collect()
}

struct Save<'a, B: AutodiffBackend> {
    names: HashMap<ParamId, &'a str>,
    record: &'a mut Record<B>,
    tensors: F32Tensors,
    time: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Save<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (Some(name), Some(record)) = (self.names.get(&param.id), self.record.remove(&param.id)) else {
            return;
        };
        let state: AdamWState<B::InnerBackend, D> = record.into_state();
        self.time = self.time.max(state.momentum.time);
        self.tensors.push(format!("{name}.m"), state.momentum.moment_1);
        self.tensors.push(format!("{name}.v"), state.momentum.moment_2);
    }
}

struct Load<'a, B: AutodiffBackend> {
    names: HashMap<ParamId, &'a str>,
    tensors: &'a safetensors::SafeTensors<'a>,
    time: usize,
    record: Record<B>,
    missing: Vec<String>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Load<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(name) = self.names.get(&param.id) else { return };
        if !param.val().is_require_grad() {
            return;
        }
        let device = param.val().device();
        let moment = |suffix: &str| -> Option<Tensor<B::InnerBackend, D>> {
            let view = self.tensors.tensor(&format!("{name}.{suffix}")).ok()?;
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
            let shape: [usize; D] = view.shape().try_into().ok()?;
            Some(Tensor::from_data(TensorData::new(values, shape), &device))
        };
        match (moment("m"), moment("v")) {
            (Some(m), Some(v)) => {
                let state = AdamWState {
                    momentum: burn::optim::AdaptiveMomentumState::new(self.time, m, v),
                };
                self.record.insert(param.id, AdaptorRecord::from_state(state));
            }
            _ => self.missing.push(name.to_string()),
        }
    }
}
