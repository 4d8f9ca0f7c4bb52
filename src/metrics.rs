//! Image quality metrics shared by tests, evaluation and benchmarks.

/// Peak signal-to-noise ratio in dB of two equally sized images with values in [0, 1].
/// Identical images give infinity.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr: images differ in size");
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x as f64) - (*y as f64)).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    -10.0 * mse.log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_matches_hand_computation() {
        // MSE = 0.01 -> 20 dB.
        let a = vec![0.5f32; 100];
        let b = vec![0.6f32; 100];
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-4);
        assert!(psnr(&a, &a).is_infinite());
    }
}
