//! A nerfacto model's tensors by nerfstudio's state-dict keys: fresh ones as nerfstudio initialises
//! them (for training from scratch), the current ones of a model (to save a run), and the trainable
//! parameters by name (for the optimiser groups and the gradient parity test).
//!
//! Keys are those of `NerfactoModel.state_dict()` in nerfstudio 1.1.5's torch implementation
//! (`field.mlp_base.model.0.hash_table`, `field.mlp_head.layers.2.weight`,
//! `proposal_networks.0.encoding.hash_table`, ...); linear weights are stored `[out, in]` as torch
//! stores them. A saved run is a safetensors file of these tensors with the `_model.` prefix of
//! nerfstudio's pipeline state dict, so [`super::Checkpoint::read`] reads it like a `step-*.ckpt`.
//!
//! Initialisation (nerfstudio/field_components/encodings.py, mlp.py, embedding.py; torch's
//! `nn.Linear` defaults): hash tables uniform in [-0.001, 0.001] (`(rand * 2 - 1) * hash_init_scale`),
//! linear weights and biases uniform in ±1/√fan_in (torch's `kaiming_uniform_(a=√5)`), the
//! appearance codes standard normal (`nn.Embedding`). The draws come from our own seeded generator,
//! so a fresh model has nerfstudio's distributions, not its exact numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::camera_optimizer::POSE_ADJUSTMENT_KEY;
use super::checkpoint::{AdamMoment, Checkpoint, StoredTensor, STEP_METADATA};
use super::config::{NerfactoConfig, ProposalNetArgs};
use super::field::{Mlp, SpaceMapping};
use super::model::Nerfacto;
use super::NerfactoError;
use crate::rng::Rng;

/// nerfstudio's `HashEncoding.hash_init_scale`.
const HASH_INIT_SCALE: f32 = 0.001;
/// `NerfactoField.geo_feat_dim`.
pub(crate) const GEO_FEAT_DIM: usize = 15;
/// The width of the SH direction encoding (degree 4).
pub(crate) const DIRECTION_DIM: usize = 16;

/// Keys whose tensors are integers (int64 scalars in nerfstudio's state dict).
fn is_integer_key(key: &str) -> bool {
    ["max_res", "num_levels", "log2_hashmap_size"]
        .iter()
        .any(|name| key.rsplit('.').next() == Some(name))
}

/// One trainable tensor as the model holds it.
#[derive(Clone, Debug)]
pub enum ParameterValue<B: Backend> {
    /// Stored as torch stores it (hash tables, appearance codes).
    Matrix(Tensor<B, 2>),
    /// A linear layer's weight, `[in, out]` in burn; torch stores the transpose.
    LinearWeight(Tensor<B, 2>),
    /// A bias.
    Vector(Tensor<B, 1>),
}

impl<B: Backend> ParameterValue<B> {
    /// The shape in torch's layout, without reading the values.
    pub fn torch_shape(&self) -> Vec<usize> {
        match self {
            Self::Matrix(t) => t.dims().to_vec(),
            Self::LinearWeight(t) => t.dims().into_iter().rev().collect(),
            Self::Vector(t) => t.dims().to_vec(),
        }
    }

    /// The number of values.
    pub fn num_values(&self) -> usize {
        self.torch_shape().iter().product()
    }

    /// The shape and values in torch's layout.
    pub fn torch_values(&self) -> (Vec<usize>, Vec<f32>) {
        let read = |t: Tensor<B, 2>| -> (Vec<usize>, Vec<f32>) {
            let shape = t.dims().to_vec();
            (
                shape,
                t.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default(),
            )
        };
        match self {
            Self::Matrix(t) => read(t.clone()),
            Self::LinearWeight(t) => read(t.clone().transpose()),
            Self::Vector(t) => {
                let (_, values) = read(t.clone().unsqueeze_dim(0));
                (vec![values.len()], values)
            }
        }
    }
}

impl<B: AutodiffBackend> ParameterValue<B> {
    /// The gradient of this parameter in `grads`, in the same layout; `None` when it got none.
    pub fn grad(&self, grads: &B::Gradients) -> Option<ParameterValue<B::InnerBackend>> {
        Some(match self {
            Self::Matrix(t) => ParameterValue::Matrix(t.grad(grads)?),
            Self::LinearWeight(t) => ParameterValue::LinearWeight(t.grad(grads)?),
            Self::Vector(t) => ParameterValue::Vector(t.grad(grads)?),
        })
    }
}

/// A trainable tensor with its nerfstudio key (without `_model.`).
#[derive(Clone, Debug)]
pub struct NamedParameter<B: Backend> {
    pub key: String,
    pub value: ParameterValue<B>,
    /// The parameter's id, as optimisers know it.
    pub id: ParamId,
}

fn mlp_parameters<B: Backend>(mlp: &Mlp<B>, prefix: &str, out: &mut Vec<NamedParameter<B>>) {
    for (i, layer) in mlp.layers.iter().enumerate() {
        out.push(NamedParameter {
            key: format!("{prefix}.layers.{i}.weight"),
            value: ParameterValue::LinearWeight(layer.weight.val()),
            id: layer.weight.id,
        });
        if let Some(bias) = &layer.bias {
            out.push(NamedParameter {
                key: format!("{prefix}.layers.{i}.bias"),
                value: ParameterValue::Vector(bias.val()),
                id: bias.id,
            });
        }
    }
}

/// Every trainable tensor of `model` with its key: the field's (the `fields` group of nerfstudio's
/// optimisers) first, then the proposal networks' (the `proposal_networks` group), then the camera
/// optimiser's corrections when it has them (`camera_opt`). A proposal
/// network's hash table is named `encoding.hash_table` (its state dict also has it as
/// `mlp_base.0.hash_table`: the same tensor).
pub fn parameters<B: Backend>(model: &Nerfacto<B>) -> Vec<NamedParameter<B>> {
    let mut out = Vec::new();
    let field = &model.field;
    out.push(NamedParameter {
        key: "field.mlp_base.model.0.hash_table".into(),
        value: ParameterValue::Matrix(field.encoding.table.val()),
        id: field.encoding.table.id,
    });
    mlp_parameters(&field.mlp_base, "field.mlp_base.model.1", &mut out);
    mlp_parameters(&field.mlp_head, "field.mlp_head", &mut out);
    if let Some(codes) = &field.appearance_codes {
        out.push(NamedParameter {
            key: "field.embedding_appearance.embedding.weight".into(),
            value: ParameterValue::Matrix(codes.val()),
            id: codes.id,
        });
    }
    for (i, network) in model.proposals.iter().enumerate() {
        out.push(NamedParameter {
            key: format!("proposal_networks.{i}.encoding.hash_table"),
            value: ParameterValue::Matrix(network.encoding.table.val()),
            id: network.encoding.table.id,
        });
        if model
            .config
            .proposal_net_args_list
            .as_ref()
            .and_then(|a| a.get(i))
            .and_then(|a| a.use_linear)
            == Some(true)
        {
            let layer = &network.mlp.layers[0];
            out.push(NamedParameter {
                key: format!("proposal_networks.{i}.linear.weight"),
                value: ParameterValue::LinearWeight(layer.weight.val()),
                id: layer.weight.id,
            });
            if let Some(bias) = &layer.bias {
                out.push(NamedParameter {
                    key: format!("proposal_networks.{i}.linear.bias"),
                    value: ParameterValue::Vector(bias.val()),
                    id: bias.id,
                });
            }
        } else {
            mlp_parameters(&network.mlp, &format!("proposal_networks.{i}.mlp_base.1"), &mut out);
        }
    }
    if let Some(camera) = &model.camera_optimizer {
        out.push(NamedParameter {
            key: POSE_ADJUSTMENT_KEY.into(),
            value: ParameterValue::Matrix(camera.pose_adjustment.val()),
            id: camera.pose_adjustment.id,
        });
    }
    out
}

/// The Adam moments `checkpoint`'s file holds for `model`'s parameters, by the keys of
/// [`parameters`] ([`super::checkpoint::read_adam_moments`]). nerfstudio's tiny-cuda-nn checkpoints
/// name their parameters as they store them, the flat vectors (empty ones too) beside torch tensors
/// such as the appearance codes; their moments are split as the vectors were
/// ([`super::tcnn::Plan::split_moments`]). Our safetensors runs store every model by its keys.
pub fn read_model_moments<B: Backend>(
    model: &Nerfacto<B>,
    checkpoint: &Checkpoint,
) -> Result<Option<BTreeMap<String, AdamMoment>>, NerfactoError> {
    let keys: Vec<String> = parameters(model).into_iter().map(|p| p.key).collect();
    let path = &checkpoint.path;
    match &model.tcnn {
        Some(plan) if !super::checkpoint::is_safetensors(path) => {
            let stored: Vec<&str> = checkpoint
                .shapes()
                .map(|(key, _)| key)
                .filter(|key| super::tcnn::is_vector(key))
                .chain(keys.iter().map(String::as_str).filter(|key| !plan.covers(key)))
                .collect();
            let moments = super::checkpoint::read_adam_moments(path, &stored)?;
            Ok(moments.map(|m| plan.split_moments(m)))
        }
        _ => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            super::checkpoint::read_adam_moments(path, &keys)
        }
    }
}

fn stored(shape: Vec<usize>, values: Vec<f32>) -> StoredTensor {
    StoredTensor { shape, values }
}

/// The state dict of `model` (keys without `_model.`): its parameters and the buffers nerfstudio
/// stores beside them (`aabb`, `max_res`, `num_levels`, `log2_hashmap_size` of each field).
pub fn state_dict<B: Backend>(model: &Nerfacto<B>) -> BTreeMap<String, StoredTensor> {
    let mut dict = BTreeMap::new();
    for p in parameters(model) {
        let (shape, values) = p.value.torch_values();
        if let Some(rest) = p.key.strip_suffix(".encoding.hash_table") {
            // The proposal network's MLP holds the same encoding module.
            dict.insert(
                format!("{rest}.mlp_base.0.hash_table"),
                stored(shape.clone(), values.clone()),
            );
        }
        dict.insert(p.key, stored(shape, values));
    }
    let aabb = match &model.mapping {
        SpaceMapping::SceneBox { min, max } => min.iter().chain(max).copied().collect(),
        // nerfstudio's default scene box (scene_scale 1), unused under contraction.
        SpaceMapping::Contraction => vec![-1.0, -1.0, -1.0, 1.0, 1.0, 1.0],
    };
    let mut buffers = |prefix: String, encoding: &super::encoding::HashEncoding<B>, max_res: usize| {
        dict.insert(format!("{prefix}.aabb"), stored(vec![2, 3], aabb.clone()));
        dict.insert(format!("{prefix}.max_res"), stored(vec![], vec![max_res as f32]));
        dict.insert(
            format!("{prefix}.num_levels"),
            stored(vec![], vec![encoding.num_levels() as f32]),
        );
        dict.insert(
            format!("{prefix}.log2_hashmap_size"),
            stored(vec![], vec![encoding.log2_table_size as f32]),
        );
    };
    buffers("field".into(), &model.field.encoding, model.config.max_res.unwrap_or(0));
    let args = model.config.proposal_net_args_list.clone().unwrap_or_default();
    for (i, network) in model.proposals.iter().enumerate() {
        let max_res = args.get(i).and_then(|a| a.max_res).unwrap_or(0);
        buffers(format!("proposal_networks.{i}"), &network.encoding, max_res);
    }
    match &model.tcnn {
        // The model was built from this plan's pieces, so it has every one of them.
        Some(plan) => plan.flatten(dict).expect("a tiny-cuda-nn model has its plan's layers"),
        None => dict,
    }
}

/// Writes `model` as a safetensors file of its state dict with nerfstudio's `_model.` keys
/// (integers as int64 scalars, as torch stores them), atomically. `step` is the last training step
/// it took (0-based, as nerfstudio's checkpoints record it); `None` for a model that took none.
///
/// `moments` (the trainer's Adam state, [`super::training::NerfactoTrainer::adam_moments`]) go in
/// the same file, as nerfstudio's checkpoints hold `optimizers` beside `pipeline`: per parameter
/// `optimizers.{group}.{key}.exp_avg`, `.exp_avg_sq` (torch's layout) and `.step` (one value), read
/// back by [`super::checkpoint::read_adam_moments`].
pub fn save<B: Backend>(
    model: &Nerfacto<B>,
    step: Option<usize>,
    moments: Option<&BTreeMap<String, AdamMoment>>,
    path: &Path,
) -> Result<(), NerfactoError> {
    let dict = state_dict(model);
    let mut bytes: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = dict
        .into_iter()
        .map(|(key, t)| {
            let (dtype, data) = if is_integer_key(&key) {
                let ints: Vec<i64> = t.values.iter().map(|&v| v as i64).collect();
                (safetensors::Dtype::I64, bytemuck::cast_slice(&ints).to_vec())
            } else {
                (safetensors::Dtype::F32, bytemuck::cast_slice(&t.values).to_vec())
            };
            (format!("_model.{key}"), dtype, t.shape, data)
        })
        .collect();
    for (key, moment) in moments.into_iter().flatten() {
        let name = super::checkpoint::optimiser_key(key);
        let f32s = |v: &[f32]| bytemuck::cast_slice(v).to_vec();
        for (suffix, t) in [("exp_avg", &moment.exp_avg), ("exp_avg_sq", &moment.exp_avg_sq)] {
            bytes.push((
                format!("{name}.{suffix}"),
                safetensors::Dtype::F32,
                t.shape.clone(),
                f32s(&t.values),
            ));
        }
        bytes.push((
            format!("{name}.step"),
            safetensors::Dtype::F32,
            vec![1],
            f32s(&[moment.step as f32]),
        ));
    }
    let views = bytes
        .iter()
        .map(|(name, dtype, shape, data)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| NerfactoError::format(path, format!("cannot lay out `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(
        "format".to_string(),
        "nerfstudio nerfacto state dict (difix3d)".to_string(),
    );
    if let Some(step) = step {
        metadata.insert(STEP_METADATA.to_string(), step.to_string());
    }
    let serialized = safetensors::serialize(views, Some(metadata))
        .map_err(|e| NerfactoError::format(path, format!("cannot serialise: {e}")))?;
    crate::disk::write_bytes_atomic(path, &serialized).map_err(|source| NerfactoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The sizes a fresh model is built with: the config's, `ns-train nerfacto`'s defaults where the
/// config leaves them out (16 levels 16..2048, 2^19 entries, 2 features, widths 64, appearance 32,
/// proposal networks 5 levels of 2^17 up to 128 and 256 with width 16).
pub fn resolve_sizes(config: &NerfactoConfig) -> NerfactoConfig {
    let mut c = config.clone();
    c.num_levels.get_or_insert(16);
    c.max_res.get_or_insert(2048);
    c.log2_hashmap_size.get_or_insert(19);
    c.features_per_level.get_or_insert(2);
    c.hidden_dim.get_or_insert(64);
    c.hidden_dim_color.get_or_insert(64);
    c.appearance_embed_dim.get_or_insert(32);
    let defaults = [128, 256];
    let list = c.proposal_net_args_list.get_or_insert_with(|| {
        defaults
            .iter()
            .map(|&max_res| ProposalNetArgs {
                hidden_dim: Some(16),
                log2_hashmap_size: Some(17),
                num_levels: Some(5),
                max_res: Some(max_res),
                use_linear: Some(false),
                base_res: 16,
            })
            .collect()
    });
    for (i, args) in list.iter_mut().enumerate() {
        args.hidden_dim.get_or_insert(16);
        args.log2_hashmap_size.get_or_insert(17);
        args.num_levels.get_or_insert(5);
        args.max_res.get_or_insert(defaults[i.min(1)]);
        args.use_linear.get_or_insert(false);
    }
    c
}

/// A fresh state dict for `config` (sizes resolved by [`resolve_sizes`]) and `num_images` training
/// images, as nerfstudio initialises one (see the module docs), as a checkpoint `Nerfacto::load`
/// builds a model from. `label` names it in errors.
pub fn initial(
    config: &NerfactoConfig,
    num_images: usize,
    seed: u64,
    label: &Path,
) -> Result<Checkpoint, NerfactoError> {
    let c = resolve_sizes(config);
    let invalid = |m: String| NerfactoError::format(label, m);
    c.validate().map_err(invalid)?;
    if c.use_same_proposal_network {
        return Err(invalid(
            "`use_same_proposal_network` is not yet supported for training (issue 18); train with one \
             network per proposal pass"
                .into(),
        ));
    }
    let list = c.proposal_net_args_list.clone().unwrap_or_default();
    if list.is_empty() {
        return Err(invalid("`proposal_net_args_list` is empty".into()));
    }
    let mut rng = Rng(seed);
    let mut dict = BTreeMap::new();
    let (levels, log2, features) = (
        c.num_levels.unwrap_or(16),
        c.log2_hashmap_size.unwrap_or(19),
        c.features_per_level.unwrap_or(2),
    );
    let check_grid = |levels: usize, log2: u32| -> Result<usize, NerfactoError> {
        if levels == 0 || log2 > super::encoding::MAX_LOG2_HASHMAP_SIZE {
            return Err(invalid(format!(
                "a hash grid of {levels} levels of 2^{log2} entries cannot be built (at least 1 level, at most 2^{})",
                super::encoding::MAX_LOG2_HASHMAP_SIZE
            )));
        }
        Ok(levels << log2)
    };
    let int = |v: usize| stored(vec![], vec![v as f32]);
    let aabb = stored(vec![2, 3], vec![-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);

    // The field.
    let rows = check_grid(levels, log2)?;
    let encoded = levels * features;
    let hidden = c.hidden_dim.unwrap_or(64);
    let hidden_color = c.hidden_dim_color.unwrap_or(64);
    let appearance = c.appearance_embed_dim.unwrap_or(32);
    dict.insert("field.aabb".into(), aabb.clone());
    dict.insert("field.max_res".into(), int(c.max_res.unwrap_or(2048)));
    dict.insert("field.num_levels".into(), int(levels));
    dict.insert("field.log2_hashmap_size".into(), int(log2 as usize));
    dict.insert(
        "field.mlp_base.model.0.hash_table".into(),
        stored(
            vec![rows, features],
            uniform(rows * features, HASH_INIT_SCALE, &mut rng),
        ),
    );
    linear(
        &mut dict,
        "field.mlp_base.model.1.layers.0".into(),
        encoded,
        hidden,
        &mut rng,
    );
    linear(
        &mut dict,
        "field.mlp_base.model.1.layers.1".into(),
        hidden,
        1 + GEO_FEAT_DIM,
        &mut rng,
    );
    let head_in = DIRECTION_DIM + GEO_FEAT_DIM + appearance;
    linear(
        &mut dict,
        "field.mlp_head.layers.0".into(),
        head_in,
        hidden_color,
        &mut rng,
    );
    linear(
        &mut dict,
        "field.mlp_head.layers.1".into(),
        hidden_color,
        hidden_color,
        &mut rng,
    );
    linear(&mut dict, "field.mlp_head.layers.2".into(), hidden_color, 3, &mut rng);
    if appearance > 0 {
        let codes = (0..num_images.max(1) * appearance).map(|_| rng.normal()).collect();
        dict.insert(
            "field.embedding_appearance.embedding.weight".into(),
            stored(vec![num_images.max(1), appearance], codes),
        );
    }

    // One proposal network per pass; nerfstudio takes `proposal_net_args_list[min(i, len - 1)]`.
    for i in 0..c.num_proposal_iterations() {
        let args = &list[i.min(list.len() - 1)];
        let (levels, log2) = (args.num_levels.unwrap_or(5), args.log2_hashmap_size.unwrap_or(17));
        let rows = check_grid(levels, log2)?;
        let prefix = format!("proposal_networks.{i}");
        // `HashMLPDensityField` keeps its default of 2 features per level.
        let features = 2;
        dict.insert(format!("{prefix}.aabb"), aabb.clone());
        dict.insert(format!("{prefix}.max_res"), int(args.max_res.unwrap_or(128)));
        dict.insert(format!("{prefix}.num_levels"), int(levels));
        dict.insert(format!("{prefix}.log2_hashmap_size"), int(log2 as usize));
        let values = uniform(rows * features, HASH_INIT_SCALE, &mut rng);
        dict.insert(
            format!("{prefix}.encoding.hash_table"),
            stored(vec![rows, features], values.clone()),
        );
        dict.insert(
            format!("{prefix}.mlp_base.0.hash_table"),
            stored(vec![rows, features], values),
        );
        if args.use_linear == Some(true) {
            linear(&mut dict, format!("{prefix}.linear"), levels * features, 1, &mut rng);
        } else {
            let width = args.hidden_dim.unwrap_or(16);
            linear(
                &mut dict,
                format!("{prefix}.mlp_base.1.layers.0"),
                levels * features,
                width,
                &mut rng,
            );
            linear(&mut dict, format!("{prefix}.mlp_base.1.layers.1"), width, 1, &mut rng);
        }
    }
    Ok(Checkpoint::from_tensors(PathBuf::from(label), dict))
}

/// `n` values uniform in [-bound, bound].
fn uniform(n: usize, bound: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect()
}

/// A torch `nn.Linear(fan_in, out)` as initialised by default: weight and bias uniform in ±1/√fan_in.
fn linear(dict: &mut BTreeMap<String, StoredTensor>, key: String, fan_in: usize, out: usize, rng: &mut Rng) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    dict.insert(
        format!("{key}.weight"),
        stored(vec![out, fan_in], uniform(out * fan_in, bound, rng)),
    );
    dict.insert(format!("{key}.bias"), stored(vec![out], uniform(out, bound, rng)));
}
