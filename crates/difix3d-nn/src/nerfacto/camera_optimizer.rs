//! nerfstudio's camera optimiser (nerfstudio 1.1.5, `cameras/camera_optimizers.py` and
//! `cameras/lie_groups.py`): one learned pose correction per training image, applied to that image's
//! rays during training only.
//!
//! - `pose_adjustment` `[N, 6]` (N training images, zeros at the start): a translation, then a
//!   rotation vector (`CameraOptimizer.__init__`);
//! - a row becomes a correction `[R|t]` by `exp_map_SO3xR3` (rotation by Rodrigues' formula with the
//!   angle clamped to at least 0.01, translation as is) or `exp_map_SE3` (the exponential map of
//!   SE(3), with Taylor terms below an angle of 0.01), [`Mode`];
//! - `apply_to_raybundle`: a ray of image `i` starts at `origin + t_i` and runs along `R_i · d`
//!   (not renormalised), in `NerfactoModel.get_outputs` when training; evaluation and rendering
//!   never apply it;
//! - the regulariser added to the loss (`get_loss_dict`): `mean_i |t_i| · trans_l2_penalty +
//!   mean_i |ω_i| · rot_l2_penalty` (penalties 1e-2 and 1e-3), torch's norm having gradient 0 at 0;
//! - its optimiser group `camera_opt` (`method_configs["nerfacto"]`): Adam lr 1e-3, eps 1e-15,
//!   decaying exponentially to 1e-4 over 5000 steps ([`learning_rate`]).
//!
//! `ns-train nerfacto` and Difix3D's `difix3d_config.py` both set `mode="SO3xR3"`; Difix3D's README
//! command turns it off (`--pipeline.model.camera-optimizer.mode off`).

use burn::module::{Module, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::NerfactoError;

/// The state-dict key of the corrections (without `_model.`).
pub const POSE_ADJUSTMENT_KEY: &str = "camera_optimizer.pose_adjustment";
/// The camera optimiser's Adam learning rate at the start (`camera_opt`: `lr=1e-3`).
pub const LR_INIT: f64 = 1e-3;
/// Its scheduler's `lr_final`.
pub const LR_FINAL: f64 = 1e-4;
/// Its scheduler's `max_steps`.
pub const LR_DECAY_STEPS: usize = 5000;

/// `CameraOptimizerConfig.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Poses are taken as given.
    #[serde(rename = "off")]
    Off,
    /// A rotation and a translation, each from its own part of the row (`exp_map_SO3xR3`).
    #[default]
    SO3xR3,
    /// The exponential map of SE(3) (`exp_map_SE3`).
    SE3,
}

/// `CameraOptimizerConfig` (the `camera_optimizer` key of a nerfacto config), with nerfacto's
/// defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraOptimizerConfig {
    pub mode: Mode,
    pub trans_l2_penalty: f32,
    pub rot_l2_penalty: f32,
}

impl Default for CameraOptimizerConfig {
    fn default() -> Self {
        Self {
            mode: Mode::SO3xR3,
            trans_l2_penalty: 1e-2,
            rot_l2_penalty: 1e-3,
        }
    }
}

impl CameraOptimizerConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("trans_l2_penalty", self.trans_l2_penalty),
            ("rot_l2_penalty", self.rot_l2_penalty),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("`camera_optimizer.{name}` is {value}; it must be 0 or more"));
            }
        }
        Ok(())
    }
}

/// The learning rate of the `camera_opt` group at step `s` (0-based).
pub fn learning_rate(step: usize) -> f64 {
    super::training::exponential_decay(LR_INIT, LR_FINAL, LR_DECAY_STEPS, step)
}

/// The learned corrections, one row per training image.
#[derive(Module, Debug)]
pub struct CameraOptimizer<B: Backend> {
    /// `[N, 6]`: translation, then rotation vector.
    pub pose_adjustment: Param<Tensor<B, 2>>,
}

impl<B: Backend> CameraOptimizer<B> {
    /// No correction for any of `cameras` images (nerfstudio's start).
    pub fn zeros(cameras: usize, device: &B::Device) -> Self {
        Self {
            pose_adjustment: Param::from_tensor(Tensor::zeros([cameras, 6], device)),
        }
    }

    /// The corrections a checkpoint holds ([`POSE_ADJUSTMENT_KEY`]), `None` when it has none.
    pub fn read(checkpoint: &Checkpoint, device: &B::Device) -> Result<Option<Self>, NerfactoError> {
        if !checkpoint.contains(POSE_ADJUSTMENT_KEY) {
            return Ok(None);
        }
        let stored = checkpoint.tensor(POSE_ADJUSTMENT_KEY)?;
        if stored.shape.len() != 2 || stored.shape[1] != 6 {
            return Err(checkpoint.error(format!(
                "`_model.{POSE_ADJUSTMENT_KEY}` has shape {:?}; the camera optimiser stores [cameras, 6]",
                stored.shape
            )));
        }
        let values = Tensor::<B, 1>::from_floats(stored.values.as_slice(), device).reshape([stored.shape[0], 6]);
        Ok(Some(Self {
            pose_adjustment: Param::from_tensor(values),
        }))
    }

    /// The number of cameras it corrects.
    pub fn cameras(&self) -> usize {
        self.pose_adjustment.dims()[0]
    }

    /// Moves each ray of `images` `[R]` as `apply_to_raybundle` does: `origins` `[R, 3]` by the
    /// image's translation, `directions` `[R, 3]` by its rotation.
    pub fn correct(
        &self,
        mode: Mode,
        origins: Tensor<B, 2>,
        directions: Tensor<B, 2>,
        images: Tensor<B, 1, Int>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [rays, _] = origins.dims();
        let Some(corrections) = corrections(mode, self.pose_adjustment.val()) else {
            return (origins, directions);
        };
        // Every image's correction once, then one per ray: the same values and gradients as
        // nerfstudio's per-ray maps.
        let per_ray = corrections.reshape([0, 12]).select(0, images).reshape([rays, 3, 4]);
        let rotation = per_ray.clone().narrow(2, 0, 3);
        let translation = per_ray.narrow(2, 3, 1).reshape([rays, 3]);
        let directions = rotation.matmul(directions.reshape([rays, 3, 1])).reshape([rays, 3]);
        (origins + translation, directions)
    }

    /// How far the corrections have moved the cameras (nerfstudio's `get_metrics_dict`).
    pub fn metrics(&self) -> CorrectionMetrics {
        let pose = self.pose_adjustment.val();
        let norms = |part: Tensor<B, 2>| -> Vec<f32> {
            norm_rows(part)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default()
        };
        let (translation, rotation) = (norms(pose.clone().narrow(1, 0, 3)), norms(pose.narrow(1, 3, 3)));
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        let max = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(*x));
        CorrectionMetrics {
            translation_mean: mean(&translation),
            translation_max: max(&translation),
            rotation_mean_degrees: mean(&rotation).to_degrees(),
            rotation_max_degrees: max(&rotation).to_degrees(),
        }
    }

    /// The regulariser nerfstudio adds to the loss (`camera_opt_regularizer`), a `[1]` tensor.
    pub fn regularizer(&self, config: &CameraOptimizerConfig) -> Tensor<B, 1> {
        let pose = self.pose_adjustment.val();
        let mean_norm = |part: Tensor<B, 2>| norm_rows(part).mean();
        mean_norm(pose.clone().narrow(1, 0, 3)) * config.trans_l2_penalty
            + mean_norm(pose.narrow(1, 3, 3)) * config.rot_l2_penalty
    }
}

/// The size of the learned corrections, as nerfstudio logs them (`camera_opt_translation_mean`,
/// `_max`, `camera_opt_rotation_mean`, `_max`): translations in the model's units, rotation angles in
/// degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CorrectionMetrics {
    pub translation_mean: f32,
    pub translation_max: f32,
    pub rotation_mean_degrees: f32,
    pub rotation_max_degrees: f32,
}

/// The Euclidean norm of each row of `x` `[N, K]`, `[N, 1]`, with torch's gradient at a zero row
/// (0, where `sqrt`'s would be infinite).
fn norm_rows<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let squared = x.powi_scalar(2).sum_dim(1);
    let zero = squared.clone().equal_elem(0.0);
    squared.mask_fill(zero.clone(), 1.0).sqrt().mask_fill(zero, 0.0)
}

/// The correction `[R|t]` of each row of `tangent` `[N, 6]`, `[N, 3, 4]`; `None` when off.
pub fn corrections<B: Backend>(mode: Mode, tangent: Tensor<B, 2>) -> Option<Tensor<B, 3>> {
    match mode {
        Mode::Off => None,
        Mode::SO3xR3 => Some(exp_map_so3xr3(tangent)),
        Mode::SE3 => Some(exp_map_se3(tangent)),
    }
}

/// The skew-symmetric matrices `[N, 3, 3]` of vectors `v` `[N, 3]`: `K v' = v × v'`.
fn skew<B: Backend>(v: Tensor<B, 2>) -> Tensor<B, 3> {
    let n = v.dims()[0];
    let c = |i: usize| v.clone().narrow(1, i, 1);
    let zero = Tensor::<B, 2>::zeros([n, 1], &v.device());
    let entries = vec![zero.clone(), -c(2), c(1), c(2), zero.clone(), -c(0), -c(1), c(0), zero];
    Tensor::cat(entries, 1).reshape([n, 3, 3])
}

/// The identity, `[N, 3, 3]`.
fn identity<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 3> {
    Tensor::<B, 2>::eye(3, device).unsqueeze_dim::<3>(0).repeat_dim(0, n)
}

/// `[R | t]` from `rotation` `[N, 3, 3]` and `translation` `[N, 3]`.
fn compose<B: Backend>(rotation: Tensor<B, 3>, translation: Tensor<B, 2>) -> Tensor<B, 3> {
    let n = translation.dims()[0];
    Tensor::cat(vec![rotation, translation.reshape([n, 3, 1])], 2)
}

/// `exp_map_SO3xR3` (from pytorch3d, as nerfstudio strips it down): `R = I + a K + b K²` with
/// `θ = sqrt(max(|ω|², 1e-4))`, `a = sin θ / θ`, `b = (1 − cos θ) / θ²`; `t` as given.
fn exp_map_so3xr3<B: Backend>(tangent: Tensor<B, 2>) -> Tensor<B, 3> {
    let n = tangent.dims()[0];
    let log_rot = tangent.clone().narrow(1, 3, 3);
    let angle = log_rot.clone().powi_scalar(2).sum_dim(1).clamp_min(1e-4).sqrt(); // [N, 1]
    let inverse = angle.clone().recip();
    let fac1 = inverse.clone() * angle.clone().sin();
    let fac2 = inverse.clone() * inverse * (angle.cos().neg() + 1.0);
    let skews = skew(log_rot);
    let squared = skews.clone().matmul(skews.clone());
    let per = |f: Tensor<B, 2>| f.reshape([n, 1, 1]);
    let rotation = per(fac1) * skews + per(fac2) * squared + identity(n, &tangent.device());
    compose(rotation, tangent.narrow(1, 0, 3))
}

/// `exp_map_SE3`: the rotation by Rodrigues' formula and the translation by SE(3)'s left Jacobian,
/// with nerfstudio's series where `θ = |ω| < 0.01`.
fn exp_map_se3<B: Backend>(tangent: Tensor<B, 2>) -> Tensor<B, 3> {
    let n = tangent.dims()[0];
    let device = tangent.device();
    let lin = tangent.clone().narrow(1, 0, 3);
    let ang = tangent.narrow(1, 3, 3);
    let theta = norm_rows(ang.clone()); // [N, 1]
    let theta2 = theta.clone().powi_scalar(2);
    let theta3 = theta.clone().powi_scalar(3);
    let near_zero = theta.clone().lower_elem(1e-2);
    // `torch.where(near_zero, a, b)`: `a` where the angle is small.
    let pick = |small: Tensor<B, 2>, otherwise: Tensor<B, 2>| otherwise.mask_where(near_zero.clone(), small);
    let ones = Tensor::<B, 2>::ones([n, 1], &device);
    let theta_nz = pick(ones.clone(), theta.clone());
    let theta2_nz = pick(ones.clone(), theta2.clone());
    let theta3_nz = pick(ones, theta3);

    let sine = theta.clone().sin();
    let cosine = pick((theta2.clone() + 4.0).recip() * 8.0 - 1.0, theta.clone().cos());
    let sine_by_theta = pick(cosine.clone() * 0.5 + 0.5, sine.clone() / theta_nz);
    let one_minus_cosine_by_theta2 = pick(sine_by_theta.clone() * 0.5, (cosine.clone().neg() + 1.0) / theta2_nz);
    let per = |f: Tensor<B, 2>| f.reshape([n, 1, 1]);
    let outer = ang.clone().reshape([n, 3, 1]).matmul(ang.clone().reshape([n, 1, 3]));
    let rotation = per(one_minus_cosine_by_theta2.clone()) * outer
        + per(cosine) * identity(n, &device)
        + skew(sine_by_theta.clone() * ang.clone());

    let sine_by_theta = pick(theta2.clone().div_scalar(6.0).neg() + 1.0, sine_by_theta);
    let one_minus_cosine_by_theta2 = pick(theta2.clone().div_scalar(24.0).neg() + 0.5, one_minus_cosine_by_theta2);
    let theta_minus_sine_by_theta3 = pick(theta2.div_scalar(120.0).neg() + 1.0 / 6.0, (theta - sine) / theta3_nz);
    let cross = skew(ang.clone()).matmul(lin.clone().reshape([n, 3, 1])).reshape([n, 3]);
    let along = (ang.clone() * lin.clone()).sum_dim(1); // ωᵀ v, [N, 1]
    let translation =
        sine_by_theta * lin + one_minus_cosine_by_theta2 * cross + theta_minus_sine_by_theta3 * along * ang;
    compose(rotation, translation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 values")
    }

    /// Both maps give rotations (orthonormal, determinant 1) with the rotation vector as their axis,
    /// by its length; SO3xR3 keeps the translation as given.
    #[test]
    fn maps_give_rotations_about_the_rotation_vector() {
        let device = Default::default();
        let tangent = Tensor::<B, 2>::from_floats([[0.3, -0.2, 0.1, 0.4, -0.5, 0.6]], &device);
        let axis = glam::Vec3::new(0.4, -0.5, 0.6);
        let expected = glam::Mat3::from_axis_angle(axis.normalize(), axis.length());
        for mode in [Mode::SO3xR3, Mode::SE3] {
            let m = values(corrections(mode, tangent.clone()).expect("on"));
            for row in 0..3 {
                for col in 0..3 {
                    let want = expected.col(col)[row];
                    assert!((m[row * 4 + col] - want).abs() < 1e-6, "{mode:?} [{row}][{col}]");
                }
            }
            if mode == Mode::SO3xR3 {
                assert_eq!([m[3], m[7], m[11]], [0.3, -0.2, 0.1]);
            }
        }
        assert!(corrections(Mode::Off, tangent).is_none());
    }

    #[test]
    fn config_reads_nerfstudio_names() {
        let c: CameraOptimizerConfig = serde_json::from_str(r#"{"mode": "off"}"#).expect("valid");
        assert_eq!(c.mode, Mode::Off);
        assert_eq!(c.trans_l2_penalty, 1e-2);
        let c: CameraOptimizerConfig = serde_json::from_str(r#"{"mode": "SE3"}"#).expect("valid");
        assert_eq!(c.mode, Mode::SE3);
        assert!(serde_json::from_str::<CameraOptimizerConfig>(r#"{"mode": "se3"}"#).is_err());
        assert_eq!(CameraOptimizerConfig::default().mode, Mode::SO3xR3);
    }
}
