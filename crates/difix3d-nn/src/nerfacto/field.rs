//! Nerfacto's fields: the main field (`NerfactoField`, nerfstudio/fields/nerfacto_field.py) and the
//! proposal networks (`HashMLPDensityField`, nerfstudio/fields/density_fields.py), built from the
//! tensors of a checkpoint.
//!
//! Both map a world position to the grid's unit cube the same way: scene contraction with the L∞
//! norm (`SceneContraction(order=inf)`: points with `‖x‖∞ ≥ 1` move to `(2 − 1/‖x‖∞) x/‖x‖∞`, so
//! all of space fits in [−2, 2]³), then `(x + 2) / 4`; without contraction the scene box is
//! stretched to the cube instead. Points that do not land strictly inside the cube are evaluated at
//! the origin and their density is zeroed, as nerfstudio's "selector" does. The density is
//! `average_init_density · exp(first MLP output)`.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation;

use super::checkpoint::Checkpoint;
use super::encoding::{spherical_harmonics, GridLayout, HashEncoding};
use super::points_kernel;
use super::sampler::RaySamples;
use super::NerfactoError;
use crate::nn::linear::{linear, linear_grouped, repeat_rows, Activation};

/// How positions reach the unit cube of the hash grid.
#[derive(Clone, Debug, PartialEq)]
pub enum SpaceMapping {
    /// MipNeRF-360's contraction with the L∞ norm (nerfacto's default).
    Contraction,
    /// The scene box `[min, max]` stretched to the cube (`disable_scene_contraction`).
    SceneBox { min: [f32; 3], max: [f32; 3] },
}

/// Points in the hash grids' unit cube.
#[derive(Clone, Debug)]
pub struct CubePoints<B: Backend> {
    /// `[N, 3]`, the origin where a point is outside the cube (as in nerfstudio).
    pub unit: Tensor<B, 2>,
    /// `[N, 1]`: 1 where the point lies strictly inside the cube, else 0.
    pub inside: Tensor<B, 2>,
}

impl SpaceMapping {
    /// `positions` `[N, 3]` in the cube.
    pub fn to_unit_cube<B: Backend>(&self, positions: Tensor<B, 2>) -> CubePoints<B> {
        let unit = match self {
            SpaceMapping::Contraction => (contract(positions) + 2.0) / 4.0,
            SpaceMapping::SceneBox { min, max } => {
                let device = positions.device();
                let min = Tensor::<B, 1>::from_floats(*min, &device).reshape([1, 3]);
                let max = Tensor::<B, 1>::from_floats(*max, &device).reshape([1, 3]);
                (positions - min.clone()) / (max - min)
            }
        };
        let inside = unit
            .clone()
            .greater_elem(0.0)
            .bool_and(unit.clone().lower_elem(1.0))
            .all_dim(1)
            .float(); // [N, 1]
        CubePoints {
            unit: unit * inside.clone(),
            inside,
        }
    }

    /// The positions of `samples` along the rays `origins`, `directions` `[R, 3]` in the cube,
    /// `[R · n, 3]` ([`Self::to_unit_cube`] of [`RaySamples::positions`]): under contraction one
    /// kernel on the GPU backends ([`points_kernel`]).
    pub fn samples_to_unit_cube<B: Backend>(
        &self,
        origins: &Tensor<B, 2>,
        directions: &Tensor<B, 2>,
        samples: &RaySamples<B>,
    ) -> CubePoints<B> {
        if *self == SpaceMapping::Contraction {
            if let Some((unit, inside)) = points_kernel::contracted_samples(origins, directions, &samples.midpoints()) {
                return CubePoints { unit, inside };
            }
        }
        self.to_unit_cube(samples.positions(origins, directions))
    }
}

/// `SceneContraction(order=float("inf"))`: `x` where `‖x‖∞ < 1`, else `(2 − 1/‖x‖∞) · (x / ‖x‖∞)`.
pub fn contract<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let magnitude = x.clone().abs().max_dim(1); // [N, 1]
    let outside = magnitude.clone().greater_equal_elem(1.0);
    let contracted = (magnitude.clone().recip().neg() + 2.0) * (x.clone() / magnitude);
    x.mask_where(outside.expand(contracted.shape()), contracted)
}

/// nerfstudio's `MLP` (torch implementation): linear layers with ReLU between them.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    /// Reads `{prefix}.layers.{i}.weight` / `.bias` for consecutive `i` from 0, checking that the
    /// widths chain from `in_dim`.
    pub fn load(
        checkpoint: &Checkpoint,
        prefix: &str,
        in_dim: usize,
        device: &B::Device,
    ) -> Result<Self, NerfactoError> {
        let mut layers = Vec::new();
        let mut width = in_dim;
        while checkpoint.contains(&format!("{prefix}.layers.{}.weight", layers.len())) {
            let key = format!("{prefix}.layers.{}", layers.len());
            let out = match checkpoint.tensor(&format!("{key}.weight"))?.shape.as_slice() {
                [out, _] => *out,
                other => {
                    return Err(
                        checkpoint.error(format!("`_model.{key}.weight` has shape {other:?}, expected [out, in]"))
                    )
                }
            };
            layers.push(load_linear(checkpoint, &key, width, out, device)?);
            width = out;
        }
        if layers.is_empty() {
            return Err(checkpoint.error(format!("`_model.{prefix}.layers.0.weight` is missing")));
        }
        Ok(Self { layers })
    }

    pub fn out_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.weight.dims()[1])
    }

    /// The layers with ReLU after each but the last (no output activation). On the GPU backends
    /// each layer is [`crate::nn::linear`]'s kernel for narrow layers over many rows.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_from(0, x)
    }

    /// [`Self::forward`] from layer `start` on, `x` being the input of that layer.
    pub fn forward_from(&self, start: usize, mut x: Tensor<B, 2>) -> Tensor<B, 2> {
        for (i, layer) in self.layers.iter().enumerate().skip(start) {
            x = linear(
                x,
                layer.weight.val(),
                layer.bias.as_ref().map(|b| b.val()),
                self.activation(i),
            );
        }
        x
    }

    /// What follows layer `i`: ReLU, except after the last.
    pub fn activation(&self, i: usize) -> Activation {
        match i + 1 < self.layers.len() {
            true => Activation::Relu,
            false => Activation::None,
        }
    }
}

/// A torch `nn.Linear` (`weight` [out, in], `bias` [out]) as a burn `Linear` (weight [in, out]); in
/// a tiny-cuda-nn checkpoint the bias may be absent.
fn load_linear<B: Backend>(
    checkpoint: &Checkpoint,
    key: &str,
    in_dim: usize,
    out_dim: usize,
    device: &B::Device,
) -> Result<Linear<B>, NerfactoError> {
    let weight = checkpoint.values(&format!("{key}.weight"), &[out_dim, in_dim])?;
    let weight = Tensor::<B, 1>::from_floats(weight, device)
        .reshape([out_dim, in_dim])
        .transpose();
    // tiny-cuda-nn's layers have no bias, except the one its padded inputs make (see `super::tcnn`).
    let bias = match checkpoint.layout == GridLayout::Tcnn && !checkpoint.contains(&format!("{key}.bias")) {
        true => None,
        false => {
            let bias = checkpoint.values(&format!("{key}.bias"), &[out_dim])?;
            Some(Param::from_tensor(Tensor::<B, 1>::from_floats(bias, device)))
        }
    };
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias,
    })
}

/// The grid sizes a field's buffers record (`max_res`, `num_levels`, `log2_hashmap_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridSizes {
    pub num_levels: usize,
    pub max_res: usize,
    pub log2_hashmap_size: u32,
}

impl GridSizes {
    /// The buffers under `prefix` (`field` or `proposal_networks.N`).
    pub fn read(checkpoint: &Checkpoint, prefix: &str) -> Result<Self, NerfactoError> {
        let log2 = checkpoint.integer(&format!("{prefix}.log2_hashmap_size"))?;
        Ok(Self {
            num_levels: checkpoint.integer(&format!("{prefix}.num_levels"))?,
            max_res: checkpoint.integer(&format!("{prefix}.max_res"))?,
            log2_hashmap_size: u32::try_from(log2)
                .map_err(|_| checkpoint.error(format!("`_model.{prefix}.log2_hashmap_size` is {log2}")))?,
        })
    }
}

/// Reads the hash table `key` ([levels · 2^log2, features]) into a grid.
fn hash_encoding<B: Backend>(
    checkpoint: &Checkpoint,
    key: &str,
    sizes: GridSizes,
    base_res: usize,
    device: &B::Device,
) -> Result<HashEncoding<B>, NerfactoError> {
    let table = checkpoint.tensor(key)?;
    let [rows, features] = match table.shape.as_slice() {
        [r, f] => [*r, *f],
        other => {
            return Err(checkpoint.error(format!(
                "`_model.{key}` has shape {other:?}, expected [levels · table size, features]"
            )))
        }
    };
    let tensor = Tensor::<B, 1>::from_floats(table.values.as_slice(), device).reshape([rows, features]);
    HashEncoding::new(
        tensor,
        checkpoint.layout,
        sizes.num_levels,
        base_res,
        sizes.max_res,
        sizes.log2_hashmap_size,
    )
    .map_err(|m| checkpoint.error(format!("`_model.{key}`: {m}")))
}

/// `NerfactoField`: hash grid → density MLP (density + 15 geometry features), then the colour MLP
/// over the SH-encoded direction, those features and the appearance code.
#[derive(Module, Debug)]
pub struct NerfactoField<B: Backend> {
    pub encoding: HashEncoding<B>,
    pub mlp_base: Mlp<B>,
    pub mlp_head: Mlp<B>,
    /// The per-training-image appearance codes `[images, dim]`
    /// (`field.embedding_appearance.embedding.weight`); `None` without an appearance embedding.
    pub appearance_codes: Option<Param<Tensor<B, 2>>>,
    /// Outside training the colour MLP gets the mean of the codes (true) or zeros (false).
    pub average_appearance: bool,
    pub average_init_density: f32,
}

/// Which appearance code the colour MLP gets.
#[derive(Clone, Debug)]
pub enum Appearance<B: Backend> {
    /// Outside training: the mean code or zeros, as the field was configured.
    Eval,
    /// Training: each ray's training-image index, `[R]`, for samples that are the `N / R`
    /// consecutive samples of each ray. (nerfstudio indexes the embedding per sample; each ray's
    /// samples share its image, so the code, and its share of the colour MLP's first layer, are
    /// computed once per ray; under autodiff that is a sum over each ray's samples instead of a
    /// scatter of every sample into the table, which burn's GPU backends run one thread per code
    /// column.)
    Images(Tensor<B, 1, Int>),
}

/// nerfstudio's `trunc_exp` (nerfstudio/field_components/activations.py): `exp(x)` forward, with the
/// gradient `exp(min(x, 15))` so a large pre-activation cannot blow the gradient up. The forward is
/// exactly `exp(x)`: the added term is a value minus itself, whose gradient is the clamped factor.
pub fn trunc_exp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let factor = x.clone().clamp_max(15.0).exp().detach();
    let linear = x.clone() * factor;
    x.exp().detach() + (linear.clone() - linear.detach())
}

/// What the main field computes at a batch of samples.
pub struct FieldOutputs<B: Backend> {
    /// `[N, 1]`
    pub density: Tensor<B, 2>,
    /// `[N, 3]` in [0, 1]
    pub rgb: Tensor<B, 2>,
}

impl<B: Backend> NerfactoField<B> {
    /// Reads `field.*`. `base_res` is not stored; `average_appearance` picks the mean code (true) or
    /// zeros for rendering.
    pub fn load(
        checkpoint: &Checkpoint,
        base_res: usize,
        average_init_density: f32,
        average_appearance: bool,
        device: &B::Device,
    ) -> Result<Self, NerfactoError> {
        let sizes = GridSizes::read(checkpoint, "field")?;
        let encoding = hash_encoding(checkpoint, "field.mlp_base.model.0.hash_table", sizes, base_res, device)?;
        let mlp_base = Mlp::load(checkpoint, "field.mlp_base.model.1", encoding.out_dim(), device)?;
        if mlp_base.out_dim() < 2 {
            return Err(checkpoint.error(format!(
                "`_model.field.mlp_base` outputs {} values; nerfacto's outputs density and geometry features",
                mlp_base.out_dim()
            )));
        }
        let geo_feat_dim = mlp_base.out_dim() - 1;
        let appearance = match checkpoint.contains("field.embedding_appearance.embedding.weight") {
            false => None,
            true => {
                let key = "field.embedding_appearance.embedding.weight";
                let table = checkpoint.tensor(key)?;
                let [images, dim] = match table.shape.as_slice() {
                    [i, d] if *i > 0 => [*i, *d],
                    other => {
                        return Err(
                            checkpoint.error(format!("`_model.{key}` has shape {other:?}, expected [images, dim]"))
                        )
                    }
                };
                let codes = Tensor::<B, 1>::from_floats(table.values.as_slice(), device).reshape([images, dim]);
                Some(Param::from_tensor(codes))
            }
        };
        let appearance_dim = appearance.as_ref().map_or(0, |a| a.dims()[1]);
        let head_in = 16 + geo_feat_dim + appearance_dim;
        let mlp_head = Mlp::load(checkpoint, "field.mlp_head", head_in, device)?;
        if mlp_head.out_dim() != 3 {
            return Err(checkpoint.error(format!(
                "`_model.field.mlp_head` outputs {} values, expected 3 (RGB)",
                mlp_head.out_dim()
            )));
        }
        Ok(Self {
            encoding,
            mlp_base,
            mlp_head,
            appearance_codes: appearance,
            average_appearance,
            average_init_density,
        })
    }

    /// The width of the appearance code, 0 without one.
    pub fn appearance_dim(&self) -> usize {
        self.appearance_codes.as_ref().map_or(0, |a| a.dims()[1])
    }

    pub fn geo_feat_dim(&self) -> usize {
        self.mlp_base.out_dim() - 1
    }

    /// Density and colour at `positions` `[N, 3]` seen along unit `directions` `[N, 3]`
    /// (`NerfactoField.get_density` + `get_outputs` outside training).
    pub fn forward(
        &self,
        mapping: &SpaceMapping,
        positions: Tensor<B, 2>,
        directions: Tensor<B, 2>,
    ) -> FieldOutputs<B> {
        self.forward_with(mapping.to_unit_cube(positions), directions, &Appearance::Eval)
    }

    /// [`Self::forward`] with the appearance code chosen as in training or outside it, and
    /// `directions` `[D, 3]` for `D` dividing `N`: each shared by `N / D` consecutive samples (a
    /// ray's, so its direction encoding is computed once per ray rather than per sample, with the
    /// same values).
    pub fn forward_with(
        &self,
        points: CubePoints<B>,
        directions: Tensor<B, 2>,
        appearance: &Appearance<B>,
    ) -> FieldOutputs<B> {
        let CubePoints { unit, inside } = points;
        let h = self.mlp_base.forward(self.encoding.forward(unit));
        let density_before_activation = h.clone().narrow(1, 0, 1);
        let geometry = h.narrow(1, 1, self.geo_feat_dim());
        let density = trunc_exp(density_before_activation) * self.average_init_density * inside;

        // The colour MLP's first layer takes [SH(direction), geometry, appearance code]. Direction
        // and code are the same for all the samples of a ray, so their share of the layer (and its
        // bias) is computed once per direction and added to the geometry's share of each sample as
        // a bias per group of rows: the same sum as over the concatenated inputs, in another order.
        let [d, _] = directions.dims();
        // nerfstudio hands the SH encoding `(d + 1) / 2`: tiny-cuda-nn maps it back to `d`, its torch
        // fallback does not (see `spherical_harmonics`); tiny-cuda-nn's basis also has the opposite
        // sign on every odd component. The torch fallback runs under `torch.no_grad()`, so no
        // gradient reaches the directions through it (they carry one with the camera optimiser);
        // tiny-cuda-nn's encoding passes one on.
        let sh = match self.encoding.layout {
            GridLayout::Torch => spherical_harmonics((directions.detach() + 1.0) / 2.0),
            GridLayout::Tcnn => {
                let signs: [f32; 16] = std::array::from_fn(|k| if k % 2 == 1 { -1.0 } else { 1.0 });
                let signs = Tensor::<B, 1>::from_floats(signs, &directions.device()).reshape([1, 16]);
                spherical_harmonics(directions) * signs
            }
        };
        let first = &self.mlp_head.layers[0];
        let weight = first.weight.val(); // [16 + geometry + code, hidden]
        let geo_dim = self.geo_feat_dim();
        let bias = first.bias.as_ref().map(|b| b.val());
        let mut shared = linear(sh, weight.clone().narrow(0, 0, 16), bias, Activation::None); // [D, hidden]
        if let Some(codes) = &self.appearance_codes {
            let dim = codes.dims()[1];
            let code_weight = weight.clone().narrow(0, 16 + geo_dim, dim);
            match appearance {
                Appearance::Images(images) => {
                    let code = codes.val().select(0, images.clone());
                    let per_ray = linear(code, code_weight, None, Activation::None); // [R, hidden]
                    let groups = d.max(per_ray.dims()[0]);
                    shared = repeat_rows(shared, groups) + repeat_rows(per_ray, groups);
                }
                Appearance::Eval if self.average_appearance => {
                    shared = shared + linear(codes.val().mean_dim(0), code_weight, None, Activation::None);
                }
                Appearance::Eval => {}
            }
        }
        let geometry_weight = weight.narrow(0, 16, geo_dim);
        let hidden = linear_grouped(geometry, geometry_weight, shared, self.mlp_head.activation(0));
        let rgb = activation::sigmoid(self.mlp_head.forward_from(1, hidden));
        FieldOutputs { density, rgb }
    }
}

/// `HashMLPDensityField`: a small hash grid and MLP (or one linear layer) giving only density.
#[derive(Module, Debug)]
pub struct DensityField<B: Backend> {
    pub encoding: HashEncoding<B>,
    pub mlp: Mlp<B>,
    pub average_init_density: f32,
}

impl<B: Backend> DensityField<B> {
    /// Reads `proposal_networks.{index}.*`.
    pub fn load(
        checkpoint: &Checkpoint,
        index: usize,
        base_res: usize,
        average_init_density: f32,
        device: &B::Device,
    ) -> Result<Self, NerfactoError> {
        let prefix = format!("proposal_networks.{index}");
        let sizes = GridSizes::read(checkpoint, &prefix)?;
        let encoding = hash_encoding(
            checkpoint,
            &format!("{prefix}.encoding.hash_table"),
            sizes,
            base_res,
            device,
        )?;
        let mlp = if checkpoint.contains(&format!("{prefix}.linear.weight")) {
            // `use_linear`: one linear layer straight from the encoding.
            Mlp {
                layers: vec![load_linear(
                    checkpoint,
                    &format!("{prefix}.linear"),
                    encoding.out_dim(),
                    1,
                    device,
                )?],
            }
        } else {
            Mlp::load(checkpoint, &format!("{prefix}.mlp_base.1"), encoding.out_dim(), device)?
        };
        if mlp.out_dim() != 1 {
            return Err(checkpoint.error(format!(
                "`_model.{prefix}` outputs {} values, expected 1 (density)",
                mlp.out_dim()
            )));
        }
        Ok(Self {
            encoding,
            mlp,
            average_init_density,
        })
    }

    /// Density `[N, 1]` at `positions` `[N, 3]` (`HashMLPDensityField.get_density`).
    pub fn density(&self, mapping: &SpaceMapping, positions: Tensor<B, 2>) -> Tensor<B, 2> {
        self.density_at(mapping.to_unit_cube(positions))
    }

    /// Density `[N, 1]` at `points` already in the cube.
    pub fn density_at(&self, points: CubePoints<B>) -> Tensor<B, 2> {
        let CubePoints { unit, inside } = points;
        let before_activation = self.mlp.forward(self.encoding.forward(unit));
        trunc_exp(before_activation) * self.average_init_density * inside
    }
}
