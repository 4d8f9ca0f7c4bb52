//! The nerfacto settings a checkpoint does not store, with the defaults of `ns-train nerfacto`
//! (`method_configs["nerfacto"]` over `NerfactoModelConfig` in nerfstudio/models/nerfacto.py).
//!
//! The checkpoint holds the sizes of every network (hash levels, table sizes, MLP widths, the
//! appearance embedding) as buffers and tensor shapes, so those keys are optional here: absent, they
//! are read from the checkpoint; given, they must agree with it. What only the training config knows
//! (the base grid resolution, sample counts, the density scale, near/far planes, background...) comes
//! from this file or its defaults. The JSON keys are nerfstudio's own names, so a run's `config.yml`
//! translates key for key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::camera_optimizer::CameraOptimizerConfig;
use super::NerfactoError;

/// Where rendering starts sampling: nerfstudio's `NearFarCollider` resets the near plane to 0 outside
/// training (`reset_near_plane`), so evaluation and `ns-render` sample from the camera centre.
pub const EVAL_NEAR_PLANE: f32 = 0.0;

/// The largest sample count per ray accepted (nerfacto uses 256 at most; more is surely a typo).
const MAX_SAMPLES_PER_RAY: usize = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NerfactoConfig {
    /// Hash-grid levels of the field (checkpoint: `field.num_levels`).
    pub num_levels: Option<usize>,
    /// Finest grid resolution of the field (checkpoint: `field.max_res`).
    pub max_res: Option<usize>,
    /// log2 of the hash-table size per level (checkpoint: `field.log2_hashmap_size`).
    pub log2_hashmap_size: Option<u32>,
    /// Features per hash-grid level (checkpoint: the hash table's width).
    pub features_per_level: Option<usize>,
    /// Width of the density MLP (checkpoint: its first layer).
    pub hidden_dim: Option<usize>,
    /// Width of the colour MLP (checkpoint: its first layer).
    pub hidden_dim_color: Option<usize>,
    /// Length of the per-image appearance code, 0 without one (checkpoint: the embedding's width).
    pub appearance_embed_dim: Option<usize>,
    /// The proposal networks' sizes (checkpoint: their buffers and shapes).
    pub proposal_net_args_list: Option<Vec<ProposalNetArgs>>,
    /// Coarsest grid resolution of the field (not stored; nerfacto's default 16).
    pub base_res: usize,
    /// Samples per ray of each proposal pass (nerfacto: 256, then 96).
    pub num_proposal_samples_per_ray: Vec<usize>,
    /// Samples per ray the field itself is evaluated at (nerfacto: 48).
    pub num_nerf_samples_per_ray: usize,
    /// Scale of every density (`ns-train nerfacto` sets 0.01; the model config alone says 1.0).
    pub average_init_density: f32,
    /// Near plane during training; rendering starts at [`EVAL_NEAR_PLANE`] like nerfstudio's.
    pub near_plane: f32,
    pub far_plane: f32,
    pub background_color: Background,
    /// Outside training the colour MLP gets the mean of the per-image codes (true) or zeros (false).
    pub use_average_appearance_embedding: bool,
    /// Without contraction the scene box (`field.aabb`) is mapped to the grid instead.
    pub disable_scene_contraction: bool,
    pub proposal_initial_sampler: InitialSampler,
    /// One proposal network serves every proposal pass.
    pub use_same_proposal_network: bool,
    /// Training only: the per-image pose corrections (`SO3xR3` unless the config says otherwise, as
    /// `ns-train nerfacto`; `refine --method nerfacto` sets its own mode, off by default).
    pub camera_optimizer: CameraOptimizerConfig,
}

/// One proposal network's sizes (`proposal_net_args_list` in nerfstudio); absent sizes come from
/// the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalNetArgs {
    #[serde(default)]
    pub hidden_dim: Option<usize>,
    #[serde(default)]
    pub log2_hashmap_size: Option<u32>,
    #[serde(default)]
    pub num_levels: Option<usize>,
    #[serde(default)]
    pub max_res: Option<usize>,
    #[serde(default)]
    pub use_linear: Option<bool>,
    /// Not stored; `HashMLPDensityField`'s default 16 (nerfacto never changes it).
    #[serde(default = "default_base_res")]
    pub base_res: usize,
}

fn default_base_res() -> usize {
    16
}

/// What shows where the rays' accumulated weight is below 1 (`RGBRenderer.background_color`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    /// The colour of the ray's last sample (nerfacto's default).
    LastSample,
    Black,
    White,
    /// Random during training; outside training nerfstudio adds nothing, which is black.
    Random,
}

/// How the first proposal pass spaces its samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialSampler {
    /// Uniform up to distance 1, then linear in disparity (`UniformLinDispPiecewiseSampler`).
    Piecewise,
    Uniform,
}

impl Default for NerfactoConfig {
    fn default() -> Self {
        Self {
            num_levels: None,
            max_res: None,
            log2_hashmap_size: None,
            features_per_level: None,
            hidden_dim: None,
            hidden_dim_color: None,
            appearance_embed_dim: None,
            proposal_net_args_list: None,
            base_res: 16,
            num_proposal_samples_per_ray: vec![256, 96],
            num_nerf_samples_per_ray: 48,
            average_init_density: 0.01,
            near_plane: 0.05,
            far_plane: 1000.0,
            background_color: Background::LastSample,
            use_average_appearance_embedding: true,
            disable_scene_contraction: false,
            proposal_initial_sampler: InitialSampler::Piecewise,
            use_same_proposal_network: false,
            camera_optimizer: CameraOptimizerConfig::default(),
        }
    }
}

impl NerfactoConfig {
    /// Reads a JSON config; keys left out keep `ns-train nerfacto`'s defaults.
    pub fn read(path: &Path) -> Result<Self, NerfactoError> {
        let text = std::fs::read_to_string(path).map_err(|source| NerfactoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| NerfactoError::format(path, format!("not a nerfacto config: {e}")))?;
        config.validate().map_err(|m| NerfactoError::format(path, m))?;
        Ok(config)
    }

    /// The number of proposal passes before the field's own samples.
    pub fn num_proposal_iterations(&self) -> usize {
        self.num_proposal_samples_per_ray.len()
    }

    /// Checks the values nothing else checks; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let count = |name: &str, n: usize| -> Result<(), String> {
            if n == 0 || n > MAX_SAMPLES_PER_RAY {
                Err(format!(
                    "`{name}` is {n}; it must be between 1 and {MAX_SAMPLES_PER_RAY}"
                ))
            } else {
                Ok(())
            }
        };
        if self.num_proposal_samples_per_ray.is_empty() {
            return Err("`num_proposal_samples_per_ray` is empty; nerfacto needs at least one proposal pass".into());
        }
        for &n in &self.num_proposal_samples_per_ray {
            count("num_proposal_samples_per_ray", n)?;
        }
        count("num_nerf_samples_per_ray", self.num_nerf_samples_per_ray)?;
        if !(self.average_init_density.is_finite() && self.average_init_density > 0.0) {
            return Err(format!(
                "`average_init_density` is {}; it must be a positive number",
                self.average_init_density
            ));
        }
        if !(self.near_plane.is_finite() && self.near_plane >= 0.0) {
            return Err(format!("`near_plane` is {}; it must be 0 or more", self.near_plane));
        }
        if !(self.far_plane.is_finite() && self.far_plane > self.near_plane.max(EVAL_NEAR_PLANE)) {
            return Err(format!(
                "`far_plane` is {}; it must be finite and beyond the near plane",
                self.far_plane
            ));
        }
        self.camera_optimizer.validate()?;
        let base =
            std::iter::once(self.base_res).chain(self.proposal_net_args_list.iter().flatten().map(|p| p.base_res));
        for b in base {
            if b == 0 || b > super::encoding::MAX_GRID_RESOLUTION {
                return Err(format!(
                    "`base_res` is {b}; it must be between 1 and {}",
                    super::encoding::MAX_GRID_RESOLUTION
                ));
            }
        }
        Ok(())
    }
}
