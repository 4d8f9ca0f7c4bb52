//! Checkpoints of nerfstudio's tiny-cuda-nn implementation of nerfacto (`implementation="tcnn"`,
//! the default on a GPU): each network is one flat `params` vector in tiny-cuda-nn's layout. This
//! module turns those vectors into the per-layer tensors of the torch implementation's keys, and
//! back, so the rest of the model reads and writes one set of keys. The facts it relies on, with
//! their sources in tiny-cuda-nn and nerfstudio, are in `docs/tcnn-layout.md`.
//!
//! The vectors (keys without `_model.`):
//!
//! - `field.mlp_base.model.params`: `MLPWithHashEncoding` as one `NetworkWithInputEncoding`: the
//!   density MLP's weights, then the hash grid's table;
//! - `field.mlp_head.tcnn_encoding.params`: the colour MLP;
//! - `proposal_networks.N.encoding.tcnn_encoding.params` (also stored as
//!   `proposal_networks.N.mlp_base.0.tcnn_encoding.params`, the same module): a proposal grid;
//!   `proposal_networks.N.mlp_base.1.tcnn_encoding.params`: its MLP.
//!
//! A fully fused MLP has no biases; its matrices are stored row-major `[out, in]`, one after the
//! other, with the input width padded to a multiple of 16 and the last layer's outputs too. The
//! padded inputs are 1 (tiny-cuda-nn's encodings pad with ones), so the padded columns of the first
//! matrix act as a bias: they become the first layer's bias here, and the bias goes back into the
//! first padded column on the way out. The hash grid's table is `[rows, F]`, its levels laid out as
//! [`GridLayout::Tcnn`] says.

use std::collections::BTreeMap;

use super::checkpoint::{AdamMoment, Checkpoint, StoredTensor};
use super::config::NerfactoConfig;
use super::encoding::{grid_shape, GridLayout};
use super::field::GridSizes;
use super::state::{DIRECTION_DIM, GEO_FEAT_DIM};
use super::NerfactoError;

/// tiny-cuda-nn pads network inputs and outputs to a multiple of this.
const PAD: usize = 16;
/// The widths tiny-cuda-nn's `FullyFusedMLP` runs (nerfstudio picks `CutlassMLP` for others).
const FULLY_FUSED_WIDTHS: [usize; 4] = [16, 32, 64, 128];
/// nerfacto's defaults, for a checkpoint whose config gives no widths: `hidden_dim`,
/// `hidden_dim_color` and the proposal networks' `hidden_dim`.
const DEFAULT_WIDTHS: (usize, usize, usize) = (64, 64, 16);

/// Whether the checkpoint stores nerfacto in tiny-cuda-nn's layout.
pub fn is_tcnn(checkpoint: &Checkpoint) -> bool {
    checkpoint.contains("field.mlp_base.model.params")
}

/// What an MLP's padded inputs hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Ones: `tcnn.Network`'s identity encoding pads with them, so the padded columns of the first
    /// matrix are a bias.
    Ones,
    /// Zeros: a grid feeding its network directly (`NetworkWithInputEncoding`) pads with them, so
    /// the padded columns do nothing.
    Zeros,
}

/// A fully fused MLP's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpSizes {
    pub inputs: usize,
    pub outputs: usize,
    pub width: usize,
    /// Hidden layers: the network has this many matrices plus one.
    pub hidden_layers: usize,
    pub padding: Padding,
}

impl MlpSizes {
    /// The `[out, in]` shapes of its matrices as stored (padded).
    fn padded_shapes(&self) -> Vec<[usize; 2]> {
        let mut shapes = vec![[self.width, self.inputs.next_multiple_of(PAD)]];
        shapes.extend((1..self.hidden_layers).map(|_| [self.width, self.width]));
        shapes.push([self.outputs.next_multiple_of(PAD), self.width]);
        shapes
    }

    fn num_params(&self) -> usize {
        self.padded_shapes().iter().map(|[o, i]| o * i).sum()
    }

    /// The sizes of an MLP of `width` from `inputs` to `outputs` with `count` parameters; an error
    /// when no number of hidden layers gives that count.
    fn solve(inputs: usize, outputs: usize, width: usize, padding: Padding, count: usize) -> Result<Self, String> {
        if !FULLY_FUSED_WIDTHS.contains(&width) {
            return Err(format!(
                "width {width}: only tiny-cuda-nn's FullyFusedMLP (widths {FULLY_FUSED_WIDTHS:?}) is read; \
                 its CutlassMLP is not yet"
            ));
        }
        let one = Self {
            inputs,
            outputs,
            width,
            hidden_layers: 1,
            padding,
        };
        let ends = one.num_params();
        let per_layer = width * width;
        if count >= ends && (count - ends).is_multiple_of(per_layer) {
            return Ok(Self {
                hidden_layers: 1 + (count - ends) / per_layer,
                ..one
            });
        }
        Err(format!(
            "{count} parameters do not make a fully fused MLP of width {width} from {inputs} to {outputs} \
             values; is the config's width right?"
        ))
    }
}

/// One stored layer, torch's way: `weight` `[out, in]` and an optional bias.
struct Layer {
    weight: StoredTensor,
    bias: Option<StoredTensor>,
}

/// What a layer's bias is made of, from the weights of its padded inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bias {
    /// Their sum: the bias of weights (the padded inputs are all 1).
    PaddedSum,
    /// The first one's: the Adam moments of the bias (see [`Plan::split_moments`]).
    FirstPadded,
}

/// The layers of a fully fused MLP from its flat `params`.
fn mlp_layers(params: &[f32], sizes: MlpSizes, bias: Bias) -> Vec<Layer> {
    let shapes = sizes.padded_shapes();
    let last = shapes.len() - 1;
    let mut offset = 0;
    let mut layers = Vec::with_capacity(shapes.len());
    for (i, [rows, cols]) in shapes.into_iter().enumerate() {
        let matrix = &params[offset..offset + rows * cols];
        offset += rows * cols;
        let ins = if i == 0 { sizes.inputs } else { cols };
        let outs = if i == last { sizes.outputs } else { rows };
        let mut weight = Vec::with_capacity(outs * ins);
        for r in 0..outs {
            weight.extend_from_slice(&matrix[r * cols..r * cols + ins]);
        }
        // The padded inputs are ones: their weights add up to a bias.
        let rule = bias;
        let bias = (ins < cols && sizes.padding == Padding::Ones).then(|| {
            let padded = |r: usize| &matrix[r * cols + ins..(r + 1) * cols];
            let values = match rule {
                Bias::PaddedSum => (0..outs).map(|r| padded(r).iter().sum()).collect(),
                Bias::FirstPadded => (0..outs).map(|r| padded(r)[0]).collect(),
            };
            StoredTensor {
                shape: vec![outs],
                values,
            }
        });
        layers.push(Layer {
            weight: StoredTensor {
                shape: vec![outs, ins],
                values: weight,
            },
            bias,
        });
    }
    layers
}

/// The flat `params` of a fully fused MLP from its layers (the inverse of [`mlp_layers`]; padded
/// outputs get zero weights, the bias goes to the first padded input).
fn mlp_params(layers: &[Layer], sizes: MlpSizes) -> Vec<f32> {
    let shapes = sizes.padded_shapes();
    let mut params = Vec::with_capacity(sizes.num_params());
    for (layer, [rows, cols]) in layers.iter().zip(shapes) {
        let [outs, ins] = [layer.weight.shape[0], layer.weight.shape[1]];
        let mut matrix = vec![0f32; rows * cols];
        for r in 0..outs {
            matrix[r * cols..r * cols + ins].copy_from_slice(&layer.weight.values[r * ins..(r + 1) * ins]);
            if let Some(bias) = &layer.bias {
                matrix[r * cols + ins] = bias.values[r];
            }
        }
        params.extend(matrix);
    }
    params
}

/// Where each flat vector's pieces go, for one checkpoint.
#[derive(Clone, Debug)]
pub struct Plan {
    vectors: Vec<Vector>,
}

/// One stored vector: its key and its pieces in storage order.
#[derive(Clone, Debug)]
struct Vector {
    key: String,
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
enum Piece {
    /// An MLP, stored as `{prefix}.layers.{i}.weight` / `.bias`.
    Mlp { prefix: String, sizes: MlpSizes },
    /// A hash table `[rows, features]`, stored under `key`.
    Grid { key: String, rows: usize, features: usize },
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Mlp { sizes, .. } => sizes.num_params(),
            Piece::Grid { rows, features, .. } => rows * features,
        }
    }
}

/// The grid rows and levels of a tiny-cuda-nn grid with the sizes under `prefix`.
fn grid_rows(checkpoint: &Checkpoint, prefix: &str, base_res: usize) -> Result<(usize, usize), NerfactoError> {
    let sizes = GridSizes::read(checkpoint, prefix)?;
    let shape = grid_shape(
        GridLayout::Tcnn,
        sizes.num_levels,
        base_res,
        sizes.max_res,
        sizes.log2_hashmap_size,
        1,
    );
    Ok((shape.table_rows(), sizes.num_levels))
}

/// Whether `key` is one of tiny-cuda-nn's stored vectors: a module's `params`, named once (a
/// proposal grid is stored again under its `Sequential`'s `mlp_base.0`).
pub fn is_vector(key: &str) -> bool {
    key.ends_with(".params") && !key.contains(".mlp_base.0.")
}

/// The length of the stored vector `key`.
fn stored_len(checkpoint: &Checkpoint, key: &str) -> Result<usize, NerfactoError> {
    let t = checkpoint.tensor(key)?;
    match t.shape.as_slice() {
        [n] => Ok(*n),
        other => Err(checkpoint.error(format!("`_model.{key}` has shape {other:?}, expected one flat vector"))),
    }
}

impl Plan {
    /// How `checkpoint`'s vectors split, with the sizes the checkpoint does not store from `config`
    /// (grid base resolutions, MLP widths, features per level; nerfacto's defaults where absent).
    pub fn new(checkpoint: &Checkpoint, config: &NerfactoConfig) -> Result<Self, NerfactoError> {
        let error = |key: &str, m: String| checkpoint.error(format!("`_model.{key}`: {m}"));
        let features = config.features_per_level.unwrap_or(2);
        let mut vectors = Vec::new();

        // The field: density MLP, then its grid, in one vector.
        let key = "field.mlp_base.model.params";
        let (rows, levels) = grid_rows(checkpoint, "field", config.base_res)?;
        let grid_len = rows * features;
        let total = stored_len(checkpoint, key)?;
        let mlp_len = total
            .checked_sub(grid_len)
            .ok_or_else(|| error(key, format!("{total} values; its hash grid alone needs {grid_len}")))?;
        let width = config.hidden_dim.unwrap_or(DEFAULT_WIDTHS.0);
        let outputs = 1 + GEO_FEAT_DIM;
        let base =
            MlpSizes::solve(levels * features, outputs, width, Padding::Zeros, mlp_len).map_err(|m| error(key, m))?;
        vectors.push(Vector {
            key: key.into(),
            pieces: vec![
                Piece::Mlp {
                    prefix: "field.mlp_base.model.1".into(),
                    sizes: base,
                },
                Piece::Grid {
                    key: "field.mlp_base.model.0.hash_table".into(),
                    rows,
                    features,
                },
            ],
        });

        // The colour MLP: SH, geometry features and the appearance code in, RGB out.
        let key = "field.mlp_head.tcnn_encoding.params";
        let appearance = match checkpoint.tensor("field.embedding_appearance.embedding.weight") {
            Ok(t) => t.shape.get(1).copied().unwrap_or(0),
            Err(_) => 0,
        };
        let inputs = DIRECTION_DIM + GEO_FEAT_DIM + appearance;
        let width = config.hidden_dim_color.unwrap_or(DEFAULT_WIDTHS.1);
        let head = MlpSizes::solve(inputs, 3, width, Padding::Ones, stored_len(checkpoint, key)?)
            .map_err(|m| error(key, m))?;
        vectors.push(Vector {
            key: key.into(),
            pieces: vec![Piece::Mlp {
                prefix: "field.mlp_head".into(),
                sizes: head,
            }],
        });

        // The proposal networks: a grid vector, and an MLP vector (or a torch linear layer).
        let args = config.proposal_net_args_list.clone().unwrap_or_default();
        for i in (0..).take_while(|i| checkpoint.contains(&format!("proposal_networks.{i}.num_levels"))) {
            let prefix = format!("proposal_networks.{i}");
            let arg = args.get(i.min(args.len().saturating_sub(1)));
            let base_res = arg.map_or(16, |a| a.base_res);
            let (rows, levels) = grid_rows(checkpoint, &prefix, base_res)?;
            let key = format!("{prefix}.encoding.tcnn_encoding.params");
            let total = stored_len(checkpoint, &key)?;
            if !total.is_multiple_of(rows) {
                return Err(error(
                    &key,
                    format!("{total} values are not a whole number of features for its {rows} grid rows"),
                ));
            }
            let proposal_features = total / rows;
            vectors.push(Vector {
                key,
                pieces: vec![Piece::Grid {
                    key: format!("{prefix}.encoding.hash_table"),
                    rows,
                    features: proposal_features,
                }],
            });
            let key = format!("{prefix}.mlp_base.1.tcnn_encoding.params");
            if checkpoint.contains(&key) {
                let width = arg.and_then(|a| a.hidden_dim).unwrap_or(DEFAULT_WIDTHS.2);
                let count = stored_len(checkpoint, &key)?;
                let sizes = MlpSizes::solve(levels * proposal_features, 1, width, Padding::Ones, count)
                    .map_err(|m| error(&key, m))?;
                vectors.push(Vector {
                    key,
                    pieces: vec![Piece::Mlp {
                        prefix: format!("{prefix}.mlp_base.1"),
                        sizes,
                    }],
                });
            }
        }
        Ok(Self { vectors })
    }

    /// Whether the torch key `key` is a piece of one of the plan's vectors.
    pub fn covers(&self, key: &str) -> bool {
        self.vectors.iter().flat_map(|v| &v.pieces).any(|p| match p {
            Piece::Mlp { prefix, .. } => key.starts_with(&format!("{prefix}.layers.")),
            Piece::Grid { key: grid, .. } => key == grid,
        })
    }

    /// The per-layer tensors (torch's keys) of the stored vector `key` holding `values`; `None`
    /// for a key that is not one of the plan's.
    pub fn split(&self, key: &str, values: &[f32]) -> Option<Vec<(String, StoredTensor)>> {
        self.split_as(key, values, Bias::PaddedSum)
    }

    /// The Adam moments of a tiny-cuda-nn checkpoint's parameters (by its keys: the vectors, and
    /// torch tensors such as the appearance codes) by the torch keys of the model's parameters.
    ///
    /// A bias takes the moments of the first padded input's weights: every padded input is 1, so
    /// each of those weights has had the bias's gradient. (tiny-cuda-nn moves each of them by its
    /// own Adam step, so with `k` padded inputs its bias moves `k` times as far per step as the
    /// single bias here does: the proposal networks' first layers have 6, the colour MLP's 1.)
    pub fn split_moments(&self, moments: BTreeMap<String, AdamMoment>) -> BTreeMap<String, AdamMoment> {
        let mut out = BTreeMap::new();
        for (key, moment) in moments {
            if moment.exp_avg.values.is_empty() {
                // A parameterless encoding's empty `params` (the SH encoding's).
                continue;
            }
            let average = self.split_as(&key, &moment.exp_avg.values, Bias::FirstPadded);
            let squares = self.split_as(&key, &moment.exp_avg_sq.values, Bias::FirstPadded);
            match (average, squares) {
                (Some(average), Some(squares)) => {
                    for ((piece, exp_avg), (_, exp_avg_sq)) in average.into_iter().zip(squares) {
                        let step = moment.step;
                        out.insert(
                            piece,
                            AdamMoment {
                                step,
                                exp_avg,
                                exp_avg_sq,
                            },
                        );
                    }
                }
                _ => {
                    out.insert(key, moment);
                }
            }
        }
        out
    }

    fn split_as(&self, key: &str, values: &[f32], bias: Bias) -> Option<Vec<(String, StoredTensor)>> {
        let vector = self.vectors.iter().find(|v| v.key == key)?;
        let mut out = Vec::new();
        let mut offset = 0;
        for piece in &vector.pieces {
            let part = &values[offset..offset + piece.len()];
            offset += piece.len();
            match piece {
                Piece::Mlp { prefix, sizes } => {
                    for (i, layer) in mlp_layers(part, *sizes, bias).into_iter().enumerate() {
                        out.push((format!("{prefix}.layers.{i}.weight"), layer.weight));
                        if let Some(bias) = layer.bias {
                            out.push((format!("{prefix}.layers.{i}.bias"), bias));
                        }
                    }
                }
                Piece::Grid { key, rows, features } => out.push((
                    key.clone(),
                    StoredTensor {
                        shape: vec![*rows, *features],
                        values: part.to_vec(),
                    },
                )),
            }
        }
        Some(out)
    }

    /// A state dict by torch's keys in tiny-cuda-nn's layout: the plan's pieces joined into their
    /// vectors (and each proposal grid's vector also under `mlp_base.0`, as nerfstudio's state dict
    /// has it), every other tensor kept; `None` when `dict` lacks one of the pieces.
    pub fn flatten(&self, mut dict: BTreeMap<String, StoredTensor>) -> Option<BTreeMap<String, StoredTensor>> {
        let joined = self.join(&dict)?;
        // The torch state dict's second name of a proposal grid goes too.
        dict.retain(|key, _| !self.covers(key) && !key.ends_with(".mlp_base.0.hash_table"));
        for (key, tensor) in joined {
            if let Some(network) = key.strip_suffix(".encoding.tcnn_encoding.params") {
                dict.insert(format!("{network}.mlp_base.0.tcnn_encoding.params"), tensor.clone());
            }
            dict.insert(key, tensor);
        }
        Some(dict)
    }

    /// The stored vectors (tiny-cuda-nn's keys) from per-layer tensors by torch's keys, the inverse
    /// of [`Self::split`]; `None` when `tensors` lacks one of them.
    fn join(&self, tensors: &BTreeMap<String, StoredTensor>) -> Option<Vec<(String, StoredTensor)>> {
        let mut out = Vec::new();
        for vector in &self.vectors {
            let mut values = Vec::new();
            for piece in &vector.pieces {
                match piece {
                    Piece::Mlp { prefix, sizes } => {
                        let layers = (0..=sizes.hidden_layers)
                            .map(|i| {
                                Some(Layer {
                                    weight: tensors.get(&format!("{prefix}.layers.{i}.weight"))?.clone(),
                                    bias: tensors.get(&format!("{prefix}.layers.{i}.bias")).cloned(),
                                })
                            })
                            .collect::<Option<Vec<_>>>()?;
                        values.extend(mlp_params(&layers, *sizes));
                    }
                    Piece::Grid { key, .. } => values.extend_from_slice(&tensors.get(key)?.values),
                }
            }
            out.push((
                vector.key.clone(),
                StoredTensor {
                    shape: vec![values.len()],
                    values,
                },
            ));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mlp_goes_out_and_back() {
        let sizes = MlpSizes {
            inputs: 20,
            outputs: 3,
            width: 16,
            hidden_layers: 2,
            padding: Padding::Ones,
        };
        assert_eq!(sizes.padded_shapes(), [[16, 32], [16, 16], [16, 16]]);
        assert_eq!(MlpSizes::solve(20, 3, 16, Padding::Ones, sizes.num_params()), Ok(sizes));
        assert!(MlpSizes::solve(20, 3, 16, Padding::Ones, sizes.num_params() + 1).is_err());
        assert!(MlpSizes::solve(20, 3, 24, Padding::Ones, sizes.num_params()).is_err());
        let zeros = MlpSizes {
            padding: Padding::Zeros,
            ..sizes
        };
        assert!(mlp_layers(&vec![1.0; zeros.num_params()], zeros, Bias::PaddedSum)
            .iter()
            .all(|l| l.bias.is_none()));
        let params: Vec<f32> = (0..sizes.num_params()).map(|i| (i % 97) as f32 - 48.0).collect();
        let layers = mlp_layers(&params, sizes, Bias::PaddedSum);
        // A bias's Adam moments are its first padded weight's.
        assert_eq!(
            mlp_layers(&params, sizes, Bias::FirstPadded)[0]
                .bias
                .as_ref()
                .unwrap()
                .values[0],
            params[20]
        );
        assert_eq!(layers[0].weight.shape, [16, 20]);
        assert_eq!(layers[2].weight.shape, [3, 16]);
        // The first layer's bias is its padded columns' sum; the others have none.
        let first_row_pad: f32 = params[20..32].iter().sum();
        assert_eq!(layers[0].bias.as_ref().unwrap().values[0], first_row_pad);
        assert!(layers[1].bias.is_none() && layers[2].bias.is_none());
        // Back: the same layers again (the padding now holds the bias in its first column).
        let again = mlp_layers(&mlp_params(&layers, sizes), sizes, Bias::PaddedSum);
        for (a, b) in layers.iter().zip(&again) {
            assert_eq!(a.weight.values, b.weight.values);
            assert_eq!(a.bias.as_ref().map(|b| &b.values), b.bias.as_ref().map(|b| &b.values));
        }
    }
}
