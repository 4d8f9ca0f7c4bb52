//! Deterministic random numbers (SplitMix64) so training and refinement runs are reproducible.

pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A uniformly random permutation of 0..n (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, self.below(i + 1));
        }
        order
    }
}

/// Training views in gsplat's order: its loader (`batch_size=1, shuffle=True`) visits every view
/// once per epoch, in a fresh random order each epoch.
pub struct Epochs {
    order: Vec<usize>,
    next: usize,
    views: usize,
}

impl Epochs {
    pub fn new(views: usize) -> Self {
        Self {
            order: Vec::new(),
            next: 0,
            views,
        }
    }

    /// The next view (0..views; `views` must be > 0).
    pub fn next(&mut self, rng: &mut Rng) -> usize {
        if self.next >= self.order.len() {
            self.order = rng.permutation(self.views.max(1));
            self.next = 0;
        }
        self.next += 1;
        self.order[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_visit_every_view_once_in_a_new_order() {
        let mut rng = Rng(7);
        let mut epochs = Epochs::new(20);
        let first: Vec<usize> = (0..20).map(|_| epochs.next(&mut rng)).collect();
        let second: Vec<usize> = (0..20).map(|_| epochs.next(&mut rng)).collect();
        for epoch in [&first, &second] {
            let mut sorted = epoch.clone();
            sorted.sort();
            assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        }
        assert_ne!(first, second);
        assert_ne!(first, (0..20).collect::<Vec<_>>());
    }
}
