//! The domains of plain numbers that parse but may make no sense (NaN, zero sizes, negative steps,
//! a degree past the highest supported), and the sane upper limits shared by every input: the CLI's
//! value parsers (`src/cli/values.rs`), the viewer's panels and the jobs' configs all check against
//! these, so a value means the same thing wherever it comes from.
//!
//! Each check returns the value, or one sentence stating the rule it breaks, for the caller to prefix
//! with the flag, key or file it came from.

/// The largest image side anything renders, trains on or fixes (wgpu's texture limit on most GPUs).
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// The most steps a run may ask for: far beyond any real run (gsplat's default is 30000), and
/// small enough that step arithmetic (schedules, intervals, resumed counts) never overflows.
pub const MAX_STEPS: usize = 100_000_000;

/// A step count of at most [`MAX_STEPS`].
pub fn steps(steps: usize) -> Result<usize, String> {
    if steps > MAX_STEPS {
        return Err(format!(
            "{steps} steps is more than the limit of {MAX_STEPS} (at 100 steps per second that run would take {:.0} days)",
            steps as f64 / 100.0 / 86_400.0
        ));
    }
    Ok(steps)
}

/// The most frames a recording may have: a day at 12 fps, far past any flythrough, but small
/// enough that a typo in a duration fails at once instead of starting a render that never ends.
pub const MAX_FRAMES: usize = 1_000_000;

/// The highest spherical-harmonics degree of 3DGS scenes.
pub const MAX_SH_DEGREE: u32 = 3;

/// A finite number (not NaN, not infinite).
pub fn finite(value: f64) -> Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("must be a finite number, not {value}"))
    }
}

/// A finite number greater than zero.
pub fn positive(value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a finite number greater than 0, not {value}"))
    }
}

/// A finite number that is zero or more.
pub fn non_negative(value: f64) -> Result<f64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a finite number of at least 0, not {value}"))
    }
}

/// A finite number in [0, 1].
pub fn unit_interval(value: f64) -> Result<f64, String> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be a number between 0 and 1, not {value}"))
    }
}

/// A whole number of at least 1 (a count of steps, samples, views).
pub fn at_least_one(value: usize) -> Result<usize, String> {
    if value >= 1 {
        Ok(value)
    } else {
        Err("must be at least 1, not 0".into())
    }
}

/// An image side (or a crop or a resolution): between 1 and [`MAX_IMAGE_SIDE`].
pub fn image_side(value: u32) -> Result<u32, String> {
    if (1..=MAX_IMAGE_SIDE).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between 1 and {MAX_IMAGE_SIDE} pixels, not {value}"))
    }
}

/// A spherical-harmonics degree: 0 to [`MAX_SH_DEGREE`].
pub fn sh_degree(value: u32) -> Result<u32, String> {
    if value <= MAX_SH_DEGREE {
        Ok(value)
    } else {
        Err(format!("must be between 0 and {MAX_SH_DEGREE}, not {value}"))
    }
}

/// The number of frames `duration_s` seconds at `fps` make (at least one), refused when either
/// number is not positive or the count exceeds [`MAX_FRAMES`].
pub fn frame_count(duration_s: f64, fps: f64) -> Result<usize, String> {
    let duration_s = positive(duration_s).map_err(|m| format!("the duration {m}"))?;
    let fps = positive(fps).map_err(|m| format!("fps {m}"))?;
    let frames = (duration_s * fps).round();
    if frames > MAX_FRAMES as f64 {
        return Err(format!(
            "{duration_s} s at {fps} fps is {frames:.0} frames, more than the limit of {MAX_FRAMES}"
        ));
    }
    Ok((frames as usize).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_their_domain_are_refused() {
        assert!(finite(f64::NAN).is_err());
        assert!(finite(f64::INFINITY).is_err());
        assert_eq!(finite(-2.5), Ok(-2.5));
        assert!(positive(0.0).is_err());
        assert!(positive(-1.0).is_err());
        assert!(positive(f64::NAN).is_err());
        assert_eq!(positive(1e-9), Ok(1e-9));
        assert!(non_negative(-0.1).is_err());
        assert_eq!(non_negative(0.0), Ok(0.0));
        assert!(unit_interval(1.5).is_err());
        assert!(unit_interval(f64::NAN).is_err());
        assert_eq!(unit_interval(1.0), Ok(1.0));
        assert!(at_least_one(0).is_err());
        assert!(image_side(0).is_err());
        assert!(image_side(MAX_IMAGE_SIDE + 1).is_err());
        assert_eq!(image_side(MAX_IMAGE_SIDE), Ok(MAX_IMAGE_SIDE));
        assert!(sh_degree(4).is_err());
        assert_eq!(sh_degree(3), Ok(3));
    }

    #[test]
    fn frame_counts_are_bounded_and_the_error_gives_the_numbers() {
        assert_eq!(frame_count(6.0, 30.0), Ok(180));
        assert_eq!(frame_count(0.001, 30.0), Ok(1));
        let error = frame_count(1e12, 30.0).unwrap_err();
        assert!(
            error.contains("1000000000000") && error.contains("30") && error.contains("1000000"),
            "{error}"
        );
        assert!(frame_count(f64::NAN, 30.0).is_err());
        assert!(frame_count(6.0, 0.0).is_err());
        assert!(frame_count(6.0, f64::INFINITY).is_err());
    }
}
