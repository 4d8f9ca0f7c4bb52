//! The one-step DDPM update Difix uses: the input latent is treated as the noisy latent at timestep
//! `t` (199) and mapped straight to the predicted clean latent,
//! `z0 = (z - sqrt(1 - abar_t) * eps) / sqrt(abar_t)`.
//! (With a single inference step the DDPM posterior's previous-step terms vanish.)

use std::path::Path;

use serde::Deserialize;

use super::DifixError;

#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "start")]
    pub beta_start: f64,
    #[serde(default = "end")]
    pub beta_end: f64,
    #[serde(default = "schedule")]
    pub beta_schedule: String,
    #[serde(default = "steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "epsilon")]
    pub prediction_type: String,
}

fn start() -> f64 {
    0.00085
}
fn end() -> f64 {
    0.012
}
fn schedule() -> String {
    "scaled_linear".into()
}
fn steps() -> usize {
    1000
}
fn epsilon() -> String {
    "epsilon".into()
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            beta_start: start(),
            beta_end: end(),
            beta_schedule: schedule(),
            num_train_timesteps: steps(),
            prediction_type: epsilon(),
        }
    }
}

/// `z0 = a * z - b * eps` for one timestep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneStep {
    pub timestep: usize,
    pub alpha_cumprod: f64,
    pub a: f64,
    pub b: f64,
}

impl SchedulerConfig {
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        let beta = |i: usize| {
            let t = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
            match self.beta_schedule.as_str() {
                "linear" => self.beta_start + t * (self.beta_end - self.beta_start),
                _ => {
                    let (s, e) = (self.beta_start.sqrt(), self.beta_end.sqrt());
                    (s + t * (e - s)).powi(2)
                }
            }
        };
        let mut acc = 1.0;
        (0..n)
            .map(|i| {
                acc *= 1.0 - beta(i);
                acc
            })
            .collect()
    }

    /// The coefficients of the one-step update at `timestep`; `path` is only used in error messages.
    pub fn one_step(&self, timestep: usize, path: &Path) -> Result<OneStep, DifixError> {
        if !matches!(self.beta_schedule.as_str(), "scaled_linear" | "linear") {
            return Err(DifixError::format(
                path,
                format!("beta_schedule `{}` is not supported", self.beta_schedule),
            ));
        }
        if self.prediction_type != "epsilon" {
            return Err(DifixError::format(
                path,
                format!(
                    "prediction_type `{}` is not supported (Difix predicts epsilon)",
                    self.prediction_type
                ),
            ));
        }
        let table = self.alphas_cumprod();
        let alpha_cumprod = *table.get(timestep).ok_or_else(|| {
            DifixError::Input(format!(
                "timestep {timestep} is outside 0..{}",
                self.num_train_timesteps
            ))
        })?;
        Ok(OneStep {
            timestep,
            alpha_cumprod,
            a: 1.0 / alpha_cumprod.sqrt(),
            b: ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_coefficients_at_199() {
        let step = SchedulerConfig::default().one_step(199, Path::new("x")).unwrap();
        // Values from the reference facts (diffusers' DDPMScheduler, float32 there).
        assert!((step.alpha_cumprod - 0.755238).abs() < 2e-6, "{}", step.alpha_cumprod);
        assert!((step.a - 1.150689).abs() < 2e-6);
        assert!((step.b - 0.569285).abs() < 2e-6);
    }

    #[test]
    fn rejects_out_of_range_timesteps() {
        assert!(SchedulerConfig::default().one_step(1000, Path::new("x")).is_err());
    }
}
