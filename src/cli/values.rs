//! clap value parsers for every numeric flag: each parses the text, then checks the value against
//! its domain with the shared rules in [`difix3d::validate`], so `--distance nan` or `--steps 0` is
//! refused at the command line, naming the flag (clap adds it) and the rule.

use std::str::FromStr;

use difix3d::validate;

fn parse<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse().map_err(|e| format!("'{s}' is not a number: {e}"))
}

/// A finite number greater than 0.
pub fn positive_f32(s: &str) -> Result<f32, String> {
    validate::positive(f64::from(parse::<f32>(s)?)).map(|v| v as f32)
}

/// A finite number greater than 0.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    validate::positive(parse(s)?)
}

/// A finite number of at least 0.
pub fn non_negative_f32(s: &str) -> Result<f32, String> {
    validate::non_negative(f64::from(parse::<f32>(s)?)).map(|v| v as f32)
}

/// A finite number between 0 and 1.
pub fn unit_interval_f32(s: &str) -> Result<f32, String> {
    validate::unit_interval(f64::from(parse::<f32>(s)?)).map(|v| v as f32)
}

/// A camera optimiser mode by nerfstudio's name (`CameraOptimizerConfig.mode`).
pub fn camera_optimizer_mode(s: &str) -> Result<difix3d::nerfacto::camera_optimizer::Mode, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_string()))
        .map_err(|_| format!("'{s}' is not a camera optimiser mode: off, SO3xR3 or SE3"))
}

/// A whole number of at least 1 (steps, intervals, samples).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    validate::at_least_one(parse(s)?)
}

/// A whole number of at least 1, as u32 (iterations, frames).
pub fn at_least_one_u32(s: &str) -> Result<u32, String> {
    let v: u32 = parse(s)?;
    validate::at_least_one(v as usize).map(|_| v)
}

/// An image side, crop or resolution: 1 to [`validate::MAX_IMAGE_SIDE`] pixels.
pub fn image_side(s: &str) -> Result<u32, String> {
    validate::image_side(parse(s)?)
}

/// An image side as usize (crop sides).
pub fn image_side_usize(s: &str) -> Result<usize, String> {
    image_side(s).map(|v| v as usize)
}

/// A dataset's image factor (`images_N/`): 1 or more.
pub fn factor(s: &str) -> Result<u32, String> {
    at_least_one_u32(s)
}

/// A spherical-harmonics degree, 0 to 3.
pub fn sh_degree(s: &str) -> Result<u32, String> {
    validate::sh_degree(parse(s)?)
}

/// Frames per second: positive and at most 1000.
pub fn fps(s: &str) -> Result<f32, String> {
    let v = positive_f32(s)?;
    if v > 1000.0 {
        return Err(format!("must be at most 1000 frames per second, not {v}"));
    }
    Ok(v)
}

/// A duration in seconds: finite, from 0 to a week (`Duration::from_secs_f64` panics past its range).
pub fn seconds(s: &str) -> Result<f64, String> {
    let value = validate::non_negative(parse(s)?)?;
    if value > 604_800.0 {
        return Err(format!("{value} s is more than a week (604800 s)"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_refuse_values_outside_their_domain() {
        assert!(positive_f32("nan").is_err());
        assert!(positive_f32("inf").is_err());
        assert!(positive_f32("0").is_err());
        assert!(positive_f32("1e39").is_err(), "overflows f32 to infinity");
        assert!(positive_f64("-2e-5").is_err());
        assert!(non_negative_f32("-0.5").is_err());
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-3").is_err());
        assert!(image_side("0").is_err());
        assert!(image_side("16385").is_err());
        assert!(sh_degree("4").is_err());
        assert_eq!(sh_degree("3"), Ok(3));
        assert!(fps("0").is_err());
        assert!(fps("5000").is_err());
        assert!(factor("0").is_err());
        assert!(positive_f32("abc").unwrap_err().contains("not a number"));
    }
}
