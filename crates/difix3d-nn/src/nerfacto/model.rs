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

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::camera_optimizer::{CameraOptimizer, Mode, POSE_ADJUSTMENT_KEY};
use super::checkpoint::Checkpoint;
use super::config::{Background, NerfactoConfig, EVAL_NEAR_PLANE};
use super::field::{Appearance, DensityField, GridSizes, NerfactoField, SpaceMapping};
use super::sampler::{median_depth, RaySamples, Spacing};
use super::tcnn::Plan;
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

/// How [`Nerfacto::forward`] renders a batch.
#[derive(Clone, Debug)]
pub enum Pass<B: Backend> {
    /// As nerfstudio renders outside training: near plane 0, fixed quantiles, the average
    /// appearance code, colours clamped to [0, 1].
    Eval,
    /// As in a training step.
    Train(TrainingPass<B>),
}

/// What a training step's forward pass needs besides the rays (nerfstudio's training mode).
#[derive(Clone, Debug)]
pub struct TrainingPass<B: Backend> {
    /// Each ray's training image `[R]` (the appearance code it gets).
    pub images: Tensor<B, 1, Int>,
    /// One jitter per sampling pass, `[R, 1]` each in [0, 1) (`single_jitter`: one number per ray
    /// and pass): the initial sampler's, then each PDF pass's, the field's last; as many as there
    /// are proposal passes plus one (a pass without one samples at the fixed quantiles of
    /// evaluation).
    pub jitter: Vec<Tensor<B, 2>>,
    /// The exponent the proposal weights are raised to before PDF sampling (weight annealing).
    pub anneal: f32,
    /// Whether the proposal networks get gradients this step (nerfstudio's update schedule).
    pub update_proposals: bool,
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
    /// How its tiny-cuda-nn checkpoint's vectors split (`None`: the torch implementation's); it is
    /// saved in the same layout.
    pub tcnn: Option<Plan>,
    /// The training images' pose corrections, when the config's camera optimiser is on and the
    /// checkpoint has them or training set them up ([`Self::with_camera_optimizer`]).
    pub camera_optimizer: Option<CameraOptimizer<B>>,
    device: B::Device,
}

/// The trainable parts of a [`Nerfacto`], each with its own optimiser.
pub struct Networks<B: Backend> {
    pub field: NerfactoField<B>,
    pub proposals: Vec<DensityField<B>>,
    pub camera_optimizer: Option<CameraOptimizer<B>>,
}

/// What a [`Nerfacto`] holds besides its networks.
#[derive(Clone, Debug)]
pub struct ModelSettings<B: Backend> {
    pub mapping: SpaceMapping,
    pub config: NerfactoConfig,
    pub tcnn: Option<Plan>,
    pub device: B::Device,
}

impl<B: AutodiffBackend> Nerfacto<B> {
    /// The same model on the inner backend, without autodiff (for evaluation during training).
    pub fn valid(&self) -> Nerfacto<B::InnerBackend> {
        Nerfacto {
            field: self.field.valid(),
            proposals: self.proposals.iter().map(|p| p.valid()).collect(),
            mapping: self.mapping.clone(),
            config: self.config.clone(),
            tcnn: self.tcnn.clone(),
            camera_optimizer: self.camera_optimizer.as_ref().map(|c| c.valid()),
            device: self.field.encoding.table.val().inner().device(),
        }
    }
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
        // tiny-cuda-nn's flat vectors, split into the torch implementation's keys.
        let tcnn = match super::tcnn::is_tcnn(checkpoint) {
            true => Some(Plan::new(checkpoint, &config)?),
            false => None,
        };
        let unflattened = tcnn.as_ref().map(|plan| checkpoint.unflatten(plan));
        let checkpoint = unflattened.as_ref().unwrap_or(checkpoint);
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
            field.encoding.features_per_level(),
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
            field.appearance_dim(),
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
        let camera_optimizer = match config.camera_optimizer.mode {
            Mode::Off => None,
            _ => CameraOptimizer::read(checkpoint, device)?,
        };
        Ok(Self {
            field,
            proposals,
            mapping,
            config,
            tcnn,
            camera_optimizer,
            device: device.clone(),
        })
    }

    /// The model set up to train on `cameras` images as its config says: with the camera
    /// optimiser on, the checkpoint's corrections (which must be one per image) or zeros, as
    /// nerfstudio starts them; off, none (a checkpoint's are then left out, and not saved). The
    /// error says what does not fit, for the caller to name the checkpoint.
    pub fn with_camera_optimizer(mut self, cameras: usize) -> Result<Self, String> {
        self.camera_optimizer = match (self.config.camera_optimizer.mode, self.camera_optimizer.take()) {
            (Mode::Off, _) => None,
            (_, Some(loaded)) if loaded.cameras() != cameras => {
                return Err(format!(
                    "the checkpoint's `_model.{POSE_ADJUSTMENT_KEY}` corrects {} camera(s) but there are \
                     {cameras} training image(s); train with the dataset the model was trained on, or turn \
                     the camera optimiser off (`camera_optimizer.mode`: \"off\")",
                    loaded.cameras()
                ))
            }
            (_, Some(loaded)) => Some(loaded),
            (_, None) => Some(CameraOptimizer::zeros(cameras, &self.device)),
        };
        Ok(self)
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The networks, and the rest of the model to put them back with ([`Self::from_parts`]): an
    /// optimiser step takes the networks by value.
    pub fn into_parts(self) -> (Networks<B>, ModelSettings<B>) {
        let settings = ModelSettings {
            mapping: self.mapping,
            config: self.config,
            tcnn: self.tcnn,
            device: self.device,
        };
        let networks = Networks {
            field: self.field,
            proposals: self.proposals,
            camera_optimizer: self.camera_optimizer,
        };
        (networks, settings)
    }

    pub fn from_parts(networks: Networks<B>, settings: ModelSettings<B>) -> Self {
        Self {
            field: networks.field,
            proposals: networks.proposals,
            camera_optimizer: networks.camera_optimizer,
            mapping: settings.mapping,
            config: settings.config,
            tcnn: settings.tcnn,
            device: settings.device,
        }
    }

    /// Renders rays from `origins` `[R, 3]` along unit `directions` `[R, 3]` as nerfstudio does
    /// outside training.
    pub fn render_rays(&self, origins: Tensor<B, 2>, directions: Tensor<B, 2>) -> RayOutputs<B> {
        self.forward(origins, directions, &Pass::Eval)
    }

    /// Renders rays as nerfstudio's `NerfactoModel.get_outputs` does, outside training or in a
    /// training step (see [`Pass`]).
    pub fn forward(&self, origins: Tensor<B, 2>, directions: Tensor<B, 2>, pass: &Pass<B>) -> RayOutputs<B> {
        let [rays, _] = origins.dims();
        let training = match pass {
            Pass::Eval => None,
            Pass::Train(t) => Some(t),
        };
        // `NearFarCollider` resets the near plane to 0 outside training.
        let near = training.map_or(EVAL_NEAR_PLANE, |_| self.config.near_plane);
        let spacing = Spacing::new(self.config.proposal_initial_sampler, near, self.config.far_plane);
        let jitter = |pass_index: usize| training.and_then(|t| t.jitter.get(pass_index).cloned());
        // The first pass spaces its bins evenly (jittered in training); every later one draws them
        // from the previous weights (raised to the annealing exponent in training).
        let next = |previous: Option<&(RaySamples<B>, Tensor<B, 2>)>, index: usize, count: usize| match previous {
            None => match jitter(index) {
                None => RaySamples::uniform(rays, count, &spacing, &self.device),
                Some(j) => RaySamples::stratified(count, &spacing, j),
            },
            Some((samples, weights)) => {
                let weights = match training {
                    Some(t) => weights.clone().detach().powf_scalar(t.anneal),
                    None => weights.clone(),
                };
                samples.resample_jittered(weights, count, &spacing, jitter(index))
            }
        };
        let mut passes: Vec<(RaySamples<B>, Tensor<B, 2>)> = Vec::with_capacity(self.proposals.len() + 1);
        for (index, (network, &count)) in self
            .proposals
            .iter()
            .zip(&self.config.num_proposal_samples_per_ray)
            .enumerate()
        {
            let samples = next(passes.last(), index, count);
            let points = self.mapping.samples_to_unit_cube(&origins, &directions, &samples);
            let mut density = network.density_at(points);
            if training.is_some_and(|t| !t.update_proposals) {
                // nerfstudio evaluates the proposal networks under `torch.no_grad()` between updates.
                density = density.detach();
            }
            let weights = samples.weights(density.reshape([rays, count]));
            passes.push((samples, weights));
        }
        // The field's pass: every sample of a ray looks along the ray (one direction per ray).
        let count = self.config.num_nerf_samples_per_ray;
        let samples = next(passes.last(), passes.len(), count);
        let points = self.mapping.samples_to_unit_cube(&origins, &directions, &samples);
        let appearance = match training {
            None => Appearance::Eval,
            Some(t) => Appearance::Images(t.images.clone()),
        };
        let field = self.field.forward_with(points, directions, &appearance);
        let weights = samples.weights(field.density.reshape([rays, count]));
        let mut rgb = field.rgb.reshape([rays, count, 3]);
        if training.is_none() {
            let nan = rgb.clone().is_nan();
            rgb = rgb.mask_fill(nan, 0.0);
        }

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
        };
        // Only outside training are colours clamped (`RGBRenderer.forward`).
        let rgb = if training.is_none() { rgb.clamp(0.0, 1.0) } else { rgb };

        let midpoints = samples.midpoints();
        let expected = (weights.clone() * midpoints.clone()).sum_dim(1) / (accumulation.clone() + 1e-10);
        let low = midpoints.clone().min().into_scalar().elem::<f32>();
        let high = midpoints.max().into_scalar().elem::<f32>();
        let expected_depth = expected.clamp(low, high);
        let depth = median_depth(&samples, weights.clone().detach());
        let proposal_depths = passes
            .iter()
            .map(|(s, w)| median_depth(s, w.clone().detach()))
            .collect();
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
        let image = self.render_camera_unless(camera, rays_per_chunk, &|| false);
        // The only `None` is a stop, and this one never stops.
        image.unwrap_or_else(|| unreachable!("render_camera_unless stopped without being asked"))
    }

    /// [`Self::render_camera`] that asks `stop` before each chunk and gives up (`None`) when it says
    /// so: the viewer's way to drop a frame the camera has already left.
    pub fn render_camera_unless(
        &self,
        camera: &Camera,
        rays_per_chunk: usize,
        stop: &dyn Fn() -> bool,
    ) -> Option<RenderedImage> {
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
            if stop() {
                return None;
            }
            let end = (start + chunk).min(pixels);
            let rays = end - start;
            let o = Tensor::<B, 1>::from_floats(&origins[start * 3..end * 3], &self.device).reshape([rays, 3]);
            let d = Tensor::<B, 1>::from_floats(&directions[start * 3..end * 3], &self.device).reshape([rays, 3]);
            let out = self.render_rays(o, d);
            image.rgb.extend(to_vec(out.rgb));
            image.accumulation.extend(to_vec(out.accumulation));
            image.depth.extend(to_vec(out.depth));
        }
        Some(image)
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
    for row in 0..camera.height {
        for column in 0..camera.width {
            let (o, d) = pixel_ray(camera, column, row);
            origins.extend_from_slice(&o);
            directions.extend_from_slice(&d);
        }
    }
    (origins, directions)
}

/// The ray through the centre of pixel (`column`, `row`) of `camera`: origin and unit direction
/// (see [`camera_rays`]).
pub fn pixel_ray(camera: &Camera, column: u32, row: u32) -> ([f32; 3], [f32; 3]) {
    let rotation = glam::Mat3::from(camera.world_from_camera.matrix3);
    let origin = glam::Vec3::from(camera.world_from_camera.translation);
    let x = (column as f32 + 0.5 - camera.cx) / camera.fx;
    let y = (row as f32 + 0.5 - camera.cy) / camera.fy;
    let d = rotation.x_axis * x + rotation.y_axis * y + rotation.z_axis;
    let d = d / d.length();
    (origin.to_array(), d.to_array())
}
