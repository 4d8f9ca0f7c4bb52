//! Adaptive density control, as gsplat's `DefaultStrategy` does it: splats whose projected mean keeps
//! getting large gradients are cloned (when small) or split in two (when large); nearly transparent
//! and, after the first opacity reset, huge splats are pruned; opacities are reset every few thousand
//! steps. Runs on the CPU copy of the splats every `refine_every` steps.

use glam::{Quat, Vec3};

use crate::scene::Splats;

#[derive(Clone, Debug, PartialEq)]
pub struct DensifyConfig {
    pub refine_start: usize,
    pub refine_stop: usize,
    pub refine_every: usize,
    pub reset_every: usize,
    /// Mean 2D-gradient norm (NDC units) above which a splat grows.
    pub grow_grad2d: f32,
    /// Splats larger than this (times the scene scale) are split, smaller ones cloned.
    pub grow_scale3d: f32,
    pub prune_opacity: f32,
    pub prune_scale3d: f32,
    /// gsplat's `absgrad` (AbsGS): grow from the sums over pixels of the absolute per-pixel 2D-mean
    /// gradients instead of the norm of their sum (use with a higher `grow_grad2d`, see
    /// [`DensifyConfig::ABSGRAD_GROW_GRAD2D`]).
    pub absgrad: bool,
}

impl Default for DensifyConfig {
    fn default() -> Self {
        Self {
            refine_start: 500,
            refine_stop: 15_000,
            refine_every: 100,
            reset_every: 3000,
            grow_grad2d: 0.0002,
            grow_scale3d: 0.01,
            prune_opacity: 0.005,
            prune_scale3d: 0.1,
            absgrad: false,
        }
    }
}

impl DensifyConfig {
    /// The growth threshold gsplat's `DefaultStrategy` documents for `absgrad=True` (0.0008; 0.0002
    /// without).
    pub const ABSGRAD_GROW_GRAD2D: f32 = 0.0008;

    /// Intervals of at least 1 (they divide step numbers) and finite, non-negative thresholds.
    pub fn validate(&self) -> Result<(), String> {
        use crate::validate;
        let name = |what: &'static str| move |m: String| format!("densification {what}: {m}");
        validate::at_least_one(self.refine_every).map_err(name("interval"))?;
        validate::at_least_one(self.reset_every).map_err(name("opacity reset interval"))?;
        for (what, value) in [
            ("gradient threshold", self.grow_grad2d),
            ("split scale", self.grow_scale3d),
            ("prune opacity", self.prune_opacity),
            ("prune scale", self.prune_scale3d),
        ] {
            validate::non_negative(f64::from(value)).map_err(name(what))?;
        }
        Ok(())
    }

    /// Whether to refine and whether to reset opacities after gsplat's (0-based) step `s`, as
    /// `DefaultStrategy.step_post_backward` decides: refine when `s > refine_start`, every
    /// `refine_every` steps, before `refine_stop`; reset every `reset_every` steps from
    /// `reset_every` on, before `refine_stop`. (gsplat 1.5.3's reset test,
    /// `step % reset_every == 0 & step > 0`, is never true because `&` binds first, so 1.5.3 never
    /// resets; its main branch has fixed it to `and`, which this follows. Runs shorter than
    /// `reset_every` are the same either way.)
    pub fn due(&self, s: usize) -> (bool, bool) {
        if s >= self.refine_stop {
            return (false, false);
        }
        let refine = s > self.refine_start && s.is_multiple_of(self.refine_every.max(1));
        let reset = s > 0 && s.is_multiple_of(self.reset_every.max(1));
        (refine, reset)
    }
}

/// Per-splat 2D-gradient statistics gathered between refinements.
#[derive(Clone, Debug, Default)]
pub struct GradStats {
    pub grad2d: Vec<f32>,
    pub count: Vec<f32>,
}

impl GradStats {
    pub fn new(n: usize) -> Self {
        Self {
            grad2d: vec![0.0; n],
            count: vec![0.0; n],
        }
    }

    /// Adds one view's 2D-mean gradients (pixels) of the splats it drew; gsplat measures them in
    /// NDC, i.e. scaled by half the image size.
    pub fn add(&mut self, mean2d: &[[f32; 2]], visible: &[bool], width: u32, height: u32) {
        for (i, (g, v)) in mean2d.iter().zip(visible).enumerate() {
            if *v {
                let gx = g[0] * width as f32 / 2.0;
                let gy = g[1] * height as f32 / 2.0;
                self.grad2d[i] += (gx * gx + gy * gy).sqrt();
                self.count[i] += 1.0;
            }
        }
    }
}

/// What a refinement did, and for each new splat the old splat whose optimiser state it keeps
/// (`None`: a new splat, starting with zero moments).
pub struct Refined {
    pub splats: Splats,
    pub origin: Vec<Option<usize>>,
    pub cloned: usize,
    pub split: usize,
    pub pruned: usize,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn max_scale(log_scale: &[f32; 3]) -> f32 {
    log_scale.iter().copied().fold(f32::MIN, f32::max).exp()
}

/// Grows and prunes `splats` from the statistics (gsplat's `_grow_gs` then `_prune_gs`) after
/// gsplat's (0-based) step `step`: huge splats are pruned only once `step > reset_every`.
/// `normal` draws standard normal samples for the positions of split children.
pub fn refine(
    splats: &Splats,
    stats: &GradStats,
    config: &DensifyConfig,
    scene_scale: f32,
    step: usize,
    normal: &mut dyn FnMut() -> f32,
) -> Refined {
    let n = splats.len();
    let k = crate::scene::sh_coeffs(splats.sh_degree);
    let mut grow_clone = vec![false; n];
    let mut grow_split = vec![false; n];
    for i in 0..n {
        let grad = stats.grad2d[i] / stats.count[i].max(1.0);
        if grad > config.grow_grad2d {
            if max_scale(&splats.log_scales[i]) <= config.grow_scale3d * scene_scale {
                grow_clone[i] = true;
            } else {
                grow_split[i] = true;
            }
        }
    }
    // Kept originals first (split ones are replaced by their children), then clones, then children.
    let mut out = Splats {
        sh_degree: splats.sh_degree,
        ..Splats::default()
    };
    let mut origin = Vec::new();
    let push = |out: &mut Splats, i: usize, mean: [f32; 3], log_scale: [f32; 3]| {
        out.means.push(mean);
        out.log_scales.push(log_scale);
        out.rotations.push(splats.rotations[i]);
        out.opacity_logits.push(splats.opacity_logits[i]);
        out.sh.extend_from_slice(&splats.sh[i * k..(i + 1) * k]);
    };
    for (i, split) in grow_split.iter().enumerate() {
        if !split {
            push(&mut out, i, splats.means[i], splats.log_scales[i]);
            origin.push(Some(i));
        }
    }
    let mut cloned = 0;
    for i in (0..n).filter(|&i| grow_clone[i]) {
        push(&mut out, i, splats.means[i], splats.log_scales[i]);
        origin.push(None);
        cloned += 1;
    }
    let mut split = 0;
    for i in (0..n).filter(|&i| grow_split[i]) {
        let [w, x, y, z] = splats.rotations[i];
        let rotation = Quat::from_xyzw(x, y, z, w).normalize();
        let scale = Vec3::from(splats.log_scales[i]).exp();
        let child_scale = (scale / 1.6).to_array().map(f32::ln);
        for _ in 0..2 {
            let offset = rotation * (scale * Vec3::new(normal(), normal(), normal()));
            let mean = (Vec3::from(splats.means[i]) + offset).to_array();
            push(&mut out, i, mean, child_scale);
            origin.push(None);
        }
        split += 1;
    }

    // Prune.
    let keep: Vec<bool> = (0..out.len())
        .map(|i| {
            let transparent = sigmoid(out.opacity_logits[i]) < config.prune_opacity;
            let huge = step > config.reset_every && max_scale(&out.log_scales[i]) > config.prune_scale3d * scene_scale;
            !(transparent || huge)
        })
        .collect();
    let pruned = keep.iter().filter(|k| !**k).count();
    let mut kept = Splats {
        sh_degree: out.sh_degree,
        ..Splats::default()
    };
    let mut kept_origin = Vec::new();
    for (i, keep) in keep.iter().enumerate() {
        if *keep {
            kept.means.push(out.means[i]);
            kept.log_scales.push(out.log_scales[i]);
            kept.rotations.push(out.rotations[i]);
            kept.opacity_logits.push(out.opacity_logits[i]);
            kept.sh.extend_from_slice(&out.sh[i * k..(i + 1) * k]);
            kept_origin.push(origin[i]);
        }
    }
    Refined {
        splats: kept,
        origin: kept_origin,
        cloned,
        split,
        pruned,
    }
}

/// Caps every opacity at twice the pruning threshold (gsplat's periodic opacity reset).
pub fn reset_opacities(splats: &mut Splats, config: &DensifyConfig) {
    let p = config.prune_opacity * 2.0;
    let cap = (p / (1.0 - p)).ln();
    for o in &mut splats.opacity_logits {
        *o = o.min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splats(n: usize) -> Splats {
        Splats {
            means: (0..n).map(|i| [i as f32, 0.0, 0.0]).collect(),
            log_scales: vec![[0.001f32.ln(); 3]; n],
            rotations: vec![[1.0, 0.0, 0.0, 0.0]; n],
            opacity_logits: vec![0.0; n],
            sh_degree: 0,
            sh: (0..n).map(|i| [i as f32; 3]).collect(),
        }
    }

    #[test]
    fn clones_small_splits_large_prunes_transparent() {
        let mut s = splats(4);
        s.log_scales[1] = [0.5f32.ln(); 3]; // large
        s.opacity_logits[3] = -10.0; // transparent
        let mut stats = GradStats::new(4);
        stats.add(&[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], &[true; 4], 100, 100);
        let mut z = 0.0;
        let mut normal = || {
            z += 0.5;
            z
        };
        let r = refine(&s, &stats, &DensifyConfig::default(), 1.0, 600, &mut normal);
        assert_eq!((r.cloned, r.split, r.pruned), (1, 1, 1));
        // Kept: 0, 2 (3 pruned; 1 replaced by children), then the clone of 0, then two children of 1.
        assert_eq!(r.origin, vec![Some(0), Some(2), None, None, None]);
        assert_eq!(r.splats.len(), 5);
        assert_eq!(r.splats.sh[2], [0.0; 3], "the clone copies splat 0");
        let child = r.splats.log_scales[3][0].exp();
        assert!((child - 0.5 / 1.6).abs() < 1e-6);
        assert!(r.splats.means[3] != s.means[1], "children are moved within the parent");
    }

    #[test]
    fn opacity_reset_caps_at_twice_the_prune_threshold() {
        let mut s = splats(2);
        s.opacity_logits = vec![5.0, -8.0];
        reset_opacities(&mut s, &DensifyConfig::default());
        assert!((sigmoid(s.opacity_logits[0]) - 0.01).abs() < 1e-6);
        assert_eq!(s.opacity_logits[1], -8.0);
    }
}
