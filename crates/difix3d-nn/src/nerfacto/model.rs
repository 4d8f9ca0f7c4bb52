//! A nerfacto model loaded from a checkpoint, rendering rays and pinhole cameras as nerfstudio's
//! `NerfactoModel.get_outputs` does outside training (nerfstudio/models/nerfacto.py).
//!
//! Per batch of rays: the near plane is 0 and the far plane the config's (`NearFarCollider` outside
//! training); the proposal sampler runs its passes (evenly spaced bins for the first, PDF sampling
//! from the previous weights after), each proposal network's density giving that pass's weights; the
//! field is evaluated at the last pass's samples; colour, accumulation and depth are composited from
//! its weights; the background fills what the weights leave (nerfacto: the last sample's colour);
//! colours are clamped to [0, 1].

use std::path::Path;

use burn::prelude::*;

use super::checkpoint::Checkpoint;
use super::config::{Background, NerfactoConfig, EVAL_NEAR_PLANE};
use super::field::{DensityField, GridSizes, NerfactoField, SpaceMapping};
use super::sampler::{median_depth, RaySamples, Spacing};
use super::NerfactoError;
use crate::data::Camera;

/// What rendering a batch of `R` rays gives.
#[derive(Clone, Debug)]
pub struct RayOutputs<B: Backend> {
    /// `[R, 3]` in [0, 1].
    pub rgb: Tensor<B, 2>,
    /// `[R, 1]`: the sum of the field's weights.
    pub accumulation: Tensor<B, 2>,
    /// `[R, 1]`: median depth (distance along the unit ray direction).
    pub depth: Tensor<B, 2>,
    /// `[R, 1]`: weighted mean depth, clipped to the batch's sample range as nerfstudio clips it.
    pub expected_depth: Tensor<B, 2>,
    /// The median depth of each proposal pass, `[R, 1]` each.
    pub proposal_depths: Vec<Tensor<B, 2>>,
    /// Every pass's samples and weights (proposal passes, then the field's), for inspection.
    pub passes: Vec<(RaySamples<B>, Tensor<B, 2>)>,
}

/// A rendered camera, row-major from the top-left pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedImage {
    pub width: u32,
    pub height: u32,
    /// RGB in [0, 1], 3 values per pixel.
    pub rgb: Vec<f32>,
    pub accumulation: Vec<f32>,
    /// Median depth along each pixel's unit ray.
    pub depth: Vec<f32>,
}

/// A nerfacto model: the main field, the proposal networks and the settings they run with.
#[derive(Debug)]
pub struct Nerfacto<B: Backend> {
    pub field: NerfactoField<B>,
    /// One per proposal pass (the same network repeated with `use_same_proposal_network`).
    pub proposals: Vec<DensityField<B>>,
    pub mapping: SpaceMapping,
    pub config: NerfactoConfig,
    device: B::Device,
}

impl<B: Backend> Nerfacto<B> {
    /// Reads a checkpoint and, optionally, a JSON config (nerfacto's defaults otherwise).
    pub fn open(checkpoint: &Path, config: Option<&Path>, device: &B::Device) -> Result<Self, NerfactoError> {
        let config = match config {
            Some(path) => NerfactoConfig::read(path)?,
            None => NerfactoConfig::default(),
        };
        Self::load(&Checkpoint::read(checkpoint)?, config, device)
    }

    /// Builds the model from a checkpoint's tensors; sizes the config gives must match them.
    pub fn load(
        checkpoint: &Checkpoint,
        mut config: NerfactoConfig,
        device: &B::Device,
    ) -> Result<Self, NerfactoError> {
        config
            .validate()
            .map_err(|m| checkpoint.error(format!("config: {m}")))?;
        let mismatch = |name: &str, configured: usize, stored: usize, key: &str| {
            checkpoint.error(format!(
                "the config's `{name}` is {configured} but the checkpoint's `_model.{key}` says {stored}"
            ))
        };
        let agree = |name: &str, configured: Option<usize>, stored: usize, key: &str| match configured {
            Some(c) if c != stored => Err(mismatch(name, c, stored, key)),
            _ => Ok(stored),
        };

        let field = NerfactoField::load(
            checkpoint,
            config.base_res,
            config.average_init_density,
            config.use_average_appearance_embedding,
            device,
        )?;
        let sizes = GridSizes::read(checkpoint, "field")?;
        let hash_key = "field.mlp_base.model.0.hash_table";
        config.num_levels = Some(agree(
            "num_levels",
            config.num_levels,
            sizes.num_levels,
            "field.num_levels",
        )?);
        config.max_res = Some(agree("max_res", config.max_res, sizes.max_res, "field.max_res")?);
        config.log2_hashmap_size = Some(agree(
            "log2_hashmap_size",
            config.log2_hashmap_size.map(|v| v as usize),
            sizes.log2_hashmap_size as usize,
            "field.log2_hashmap_size",
        )? as u32);
        config.features_per_level = Some(agree(
            "features_per_level",
            config.features_per_level,
            field.encoding.features_per_level,
            hash_key,
        )?);
        let first_width = |mlp: &super::field::Mlp<B>| mlp.layers[0].weight.dims()[1];
        config.hidden_dim = Some(agree(
            "hidden_dim",
            config.hidden_dim,
            first_width(&field.mlp_base),
            "field.mlp_base.model.1.layers.0.weight",
        )?);
        config.hidden_dim_color = Some(agree(
            "hidden_dim_color",
            config.hidden_dim_color,
            first_width(&field.mlp_head),
            "field.mlp_head.layers.0.weight",
        )?);
        config.appearance_embed_dim = Some(agree(
            "appearance_embed_dim",
            config.appearance_embed_dim,
            field.appearance.as_ref().map_or(0, |a| a.dims()[1]),
            "field.embedding_appearance.embedding.weight",
        )?);

        // The proposal networks stored, and the one each pass uses.
        let stored = (0..)
            .take_while(|i| checkpoint.contains(&format!("proposal_networks.{i}.num_levels")))
            .count();
        let passes = config.num_proposal_iterations();
        let expected = if config.use_same_proposal_network { 1 } else { passes };
        if stored != expected {
            return Err(checkpoint.error(format!(
                "the checkpoint has {stored} proposal network(s) but the config runs {passes} proposal pass(es){}; \
                 set `num_proposal_samples_per_ray` (one count per pass) and `use_same_proposal_network` to match",
                if config.use_same_proposal_network {
                    " with one shared network"
                } else {
                    ""
                }
            )));
        }
        let args = config.proposal_net_args_list.clone().unwrap_or_default();
        let mut networks = Vec::with_capacity(stored);
        let mut resolved_args = Vec::with_capacity(stored);
        for i in 0..stored {
            // nerfstudio takes `proposal_net_args_list[min(i, len - 1)]`.
            let arg = args.get(i.min(args.len().saturating_sub(1)));
            let base_res = arg.map_or(16, |a| a.base_res);
            let network = DensityField::load(checkpoint, i, base_res, config.average_init_density, device)?;
            let prefix = format!("proposal_networks.{i}");
            let sizes = GridSizes::read(checkpoint, &prefix)?;
            let linear = checkpoint.contains(&format!("{prefix}.linear.weight"));
            let mut resolved = arg.cloned().unwrap_or(super::config::ProposalNetArgs {
                hidden_dim: None,
                log2_hashmap_size: None,
                num_levels: None,
                max_res: None,
                use_linear: None,
                base_res,
            });
            let key = |name: &str| format!("{prefix}.{name}");
            resolved.num_levels = Some(agree(
                "proposal_net_args_list[].num_levels",
                resolved.num_levels,
                sizes.num_levels,
                &key("num_levels"),
            )?);
            resolved.max_res = Some(agree(
                "proposal_net_args_list[].max_res",
                resolved.max_res,
                sizes.max_res,
                &key("max_res"),
            )?);
            resolved.log2_hashmap_size = Some(agree(
                "proposal_net_args_list[].log2_hashmap_size",
                resolved.log2_hashmap_size.map(|v| v as usize),
                sizes.log2_hashmap_size as usize,
                &key("log2_hashmap_size"),
            )? as u32);
            if let Some(configured) = resolved.use_linear {
                if configured != linear {
                    return Err(checkpoint.error(format!(
                        "the config's `proposal_net_args_list[{i}].use_linear` is {configured} but the checkpoint's \
                         proposal network {i} {} a single linear layer",
                        if linear { "is" } else { "is not" }
                    )));
                }
            }
            resolved.use_linear = Some(linear);
            if !linear {
                resolved.hidden_dim = Some(agree(
                    "proposal_net_args_list[].hidden_dim",
                    resolved.hidden_dim,
                    first_width(&network.mlp),
                    &key("mlp_base.1.layers.0.weight"),
                )?);
            }
            networks.push(network);
            resolved_args.push(resolved);
        }
        config.proposal_net_args_list = Some(resolved_args);
        let proposals = if config.use_same_proposal_network {
            (0..passes).map(|_| networks[0].clone()).collect()
        } else {
            networks
        };

        let mapping = if config.disable_scene_contraction {
            let aabb = checkpoint.values("field.aabb", &[2, 3])?;
            SpaceMapping::SceneBox {
                min: [aabb[0], aabb[1], aabb[2]],
                max: [aabb[3], aabb[4], aabb[5]],
            }
        } else {
            SpaceMapping::Contraction
        };
        Ok(Self {
            field,
            proposals,
            mapping,
            config,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Renders rays from `origins` `[R, 3]` along unit `directions` `[R, 3]`.
    pub fn render_rays(&self, origins: Tensor<B, 2>, directions: Tensor<B, 2>) -> RayOutputs<B> {
        let [rays, _] = origins.dims();
        let spacing = Spacing::new(
            self.config.proposal_initial_sampler,
            EVAL_NEAR_PLANE,
            self.config.far_plane,
        );
        // The first pass spaces its bins evenly; every later one draws them from the previous weights.
        let next = |previous: Option<&(RaySamples<B>, Tensor<B, 2>)>, count: usize| match previous {
            None => RaySamples::uniform(rays, count, &spacing, &self.device),
            Some((samples, weights)) => samples.resample(weights.clone(), count, &spacing),
        };
        let mut passes: Vec<(RaySamples<B>, Tensor<B, 2>)> = Vec::with_capacity(self.proposals.len() + 1);
        for (network, &count) in self.proposals.iter().zip(&self.config.num_proposal_samples_per_ray) {
            let samples = next(passes.last(), count);
            let density = network.density(&self.mapping, samples.positions(&origins, &directions));
            let weights = samples.weights(density.reshape([rays, count]));
            passes.push((samples, weights));
        }
        // The field's pass: every sample of a ray looks along the ray.
        let count = self.config.num_nerf_samples_per_ray;
        let samples = next(passes.last(), count);
        let positions = samples.positions(&origins, &directions);
        let sample_directions = directions
            .reshape([rays, 1, 3])
            .expand([rays, count, 3])
            .reshape([rays * count, 3]);
        let field = self.field.forward(&self.mapping, positions, sample_directions);
        let weights = samples.weights(field.density.reshape([rays, count]));
        let rgb = field.rgb.reshape([rays, count, 3]);
        let nan = rgb.clone().is_nan();
        let rgb = rgb.mask_fill(nan, 0.0);

        let w = weights.clone().reshape([rays, count, 1]);
        let accumulation = weights.clone().sum_dim(1); // [R, 1]
        let composited = (w * rgb.clone()).sum_dim(1).reshape([rays, 3]);
        let background = match self.config.background_color {
            Background::LastSample => Some(rgb.narrow(1, count - 1, 1).reshape([rays, 3])),
            Background::White => Some(Tensor::ones([rays, 3], &self.device)),
            Background::Black | Background::Random => None,
        };
        let rgb = match background {
            Some(bg) => composited + bg * (accumulation.clone().neg() + 1.0),
            None => composited,
        }
        .clamp(0.0, 1.0);

        let midpoints = samples.midpoints();
        let expected = (weights.clone() * midpoints.clone()).sum_dim(1) / (accumulation.clone() + 1e-10);
        let low = midpoints.clone().min().into_scalar().elem::<f32>();
        let high = midpoints.max().into_scalar().elem::<f32>();
        let expected_depth = expected.clamp(low, high);
        let depth = median_depth(&samples, weights.clone());
        let proposal_depths = passes.iter().map(|(s, w)| median_depth(s, w.clone())).collect();
        passes.push((samples, weights));
        RayOutputs {
            rgb,
            accumulation,
            depth,
            expected_depth,
            proposal_depths,
            passes,
        }
    }

    /// Renders a pinhole camera, `rays_per_chunk` rays at a time.
    pub fn render_camera(&self, camera: &Camera, rays_per_chunk: usize) -> RenderedImage {
        let (origins, directions) = camera_rays(camera);
        let pixels = origins.len() / 3;
        let chunk = rays_per_chunk.max(1);
        let mut image = RenderedImage {
            width: camera.width,
            height: camera.height,
            rgb: Vec::with_capacity(pixels * 3),
            accumulation: Vec::with_capacity(pixels),
            depth: Vec::with_capacity(pixels),
        };
        let to_vec = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
        for start in (0..pixels).step_by(chunk) {
            let end = (start + chunk).min(pixels);
            let rays = end - start;
            let o = Tensor::<B, 1>::from_floats(&origins[start * 3..end * 3], &self.device).reshape([rays, 3]);
            let d = Tensor::<B, 1>::from_floats(&directions[start * 3..end * 3], &self.device).reshape([rays, 3]);
            let out = self.render_rays(o, d);
            image.rgb.extend(to_vec(out.rgb));
            image.accumulation.extend(to_vec(out.accumulation));
            image.depth.extend(to_vec(out.depth));
        }
        image
    }
}

/// The rays of every pixel of `camera` (origins and unit directions, 3 values per pixel, row-major
/// from the top-left), through the pixel centres as nerfstudio's `Cameras.generate_rays` casts them.
/// `camera` uses OpenCV axes (+z forward, +y down); nerfstudio's OpenGL camera-to-world matrices
/// become one by negating their y and z columns.
pub fn camera_rays(camera: &Camera) -> (Vec<f32>, Vec<f32>) {
    let pixels = camera.width as usize * camera.height as usize;
    let mut origins = Vec::with_capacity(pixels * 3);
    let mut directions = Vec::with_capacity(pixels * 3);
    let rotation = glam::Mat3::from(camera.world_from_camera.matrix3);
    let origin = glam::Vec3::from(camera.world_from_camera.translation);
    for row in 0..camera.height {
        for column in 0..camera.width {
            let x = (column as f32 + 0.5 - camera.cx) / camera.fx;
            let y = (row as f32 + 0.5 - camera.cy) / camera.fy;
            let d = rotation.x_axis * x + rotation.y_axis * y + rotation.z_axis;
            let d = d / d.length();
            origins.extend_from_slice(&origin.to_array());
            directions.extend_from_slice(&d.to_array());
        }
    }
    (origins, directions)
}
