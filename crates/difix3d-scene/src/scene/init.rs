//! Splats made from a sparse point cloud: how a dataset is shown before any training, and the
//! starting point of training.

use super::{Splats, SH_C0};

/// One isotropic splat per point, coloured by the point, opacity 0.9, sized from the mean distance
/// to its 3 nearest neighbours (as the 3DGS/gsplat initialisation does). `None` for no points.
pub fn from_points(points: &[([f32; 3], [u8; 3])]) -> Option<Splats> {
    if points.is_empty() {
        return None;
    }
    let positions: Vec<glam::Vec3> = points.iter().map(|(p, _)| glam::Vec3::from(*p)).collect();
    let spacing = mean_knn_distances(&positions, 3);
    let n = points.len();
    let logit = |p: f32| (p / (1.0 - p)).ln();
    Some(Splats {
        means: points.iter().map(|(p, _)| *p).collect(),
        log_scales: spacing.iter().map(|d| [d.max(1e-7).ln(); 3]).collect(),
        rotations: vec![[1.0, 0.0, 0.0, 0.0]; n],
        opacity_logits: vec![logit(0.9); n],
        sh_degree: 0,
        sh: points
            .iter()
            .map(|(_, c)| c.map(|v| (v as f32 / 255.0 - 0.5) / SH_C0))
            .collect(),
    })
}

/// For each point, the mean distance to its `k` nearest other points, found with a uniform grid.
/// Points with no neighbours (a single point) get the distance 1.
pub fn mean_knn_distances(points: &[glam::Vec3], k: usize) -> Vec<f32> {
    knn_distances(points, k)
        .iter()
        .map(|d| d.iter().sum::<f32>() / d.len() as f32)
        .collect()
}

/// For each point, the root mean square of the distances to its `k` nearest other points: gsplat's
/// initial splat size (`sqrt((knn(x, 4)[:, 1:] ** 2).mean(-1))`). A single point gets 1.
pub fn rms_knn_distances(points: &[glam::Vec3], k: usize) -> Vec<f32> {
    knn_distances(points, k)
        .iter()
        .map(|d| (d.iter().map(|v| v * v).sum::<f32>() / d.len() as f32).sqrt())
        .collect()
}

/// For each point, the distances to its `k` nearest other points in increasing order, found with a
/// uniform grid. Points with no neighbours (a single point) get `[1.0]`.
pub fn knn_distances(points: &[glam::Vec3], k: usize) -> Vec<Vec<f32>> {
    let n = points.len();
    if n < 2 {
        return vec![vec![1.0]; n];
    }
    let (lo, hi) = points.iter().fold(
        (glam::Vec3::splat(f32::MAX), glam::Vec3::splat(f32::MIN)),
        |(lo, hi), p| (lo.min(*p), hi.max(*p)),
    );
    let extent = (hi - lo).max(glam::Vec3::splat(1e-6));
    // About two points per cell on average, measured over the axes the points really spread along
    // (a flat or collinear cloud would otherwise get tiny cells and a huge shell search).
    let spread: Vec<f32> = extent
        .to_array()
        .into_iter()
        .filter(|e| *e > extent.max_element() * 1e-3)
        .collect();
    let volume: f32 = spread.iter().product();
    let cell = (volume / (n as f32 / 2.0))
        .powf(1.0 / spread.len() as f32)
        .max(extent.max_element() / 1024.0)
        .max(1e-6);
    let key = |p: glam::Vec3| ((p - lo) / cell).floor().as_ivec3();
    let mut grid: std::collections::HashMap<glam::IVec3, Vec<u32>> = std::collections::HashMap::new();
    for (i, p) in points.iter().enumerate() {
        grid.entry(key(*p)).or_default().push(i as u32);
    }
    let k = k.min(n - 1);
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = key(*p);
            let mut best: Vec<f32> = Vec::with_capacity(k + 1);
            // Grow the searched shell until k neighbours are found and no closer one can lie outside.
            for r in 0i32.. {
                for dz in -r..=r {
                    for dy in -r..=r {
                        for dx in -r..=r {
                            if dx.abs().max(dy.abs()).max(dz.abs()) != r {
                                continue;
                            }
                            let Some(cell_points) = grid.get(&(c + glam::IVec3::new(dx, dy, dz))) else {
                                continue;
                            };
                            for &j in cell_points {
                                if j as usize == i {
                                    continue;
                                }
                                let d = p.distance(points[j as usize]);
                                let pos = best.partition_point(|&b| b <= d);
                                if pos < k {
                                    best.insert(pos, d);
                                    best.truncate(k);
                                }
                            }
                        }
                    }
                }
                if best.len() == k && best[k - 1] <= r as f32 * cell {
                    break;
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_matches_brute_force() {
        let mut state = 12345u32;
        let mut rnd = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32
        };
        let points: Vec<glam::Vec3> = (0..300)
            .map(|_| glam::Vec3::new(rnd() * 10.0, rnd(), rnd() * 3.0))
            .collect();
        let fast = mean_knn_distances(&points, 3);
        for (i, p) in points.iter().enumerate() {
            let mut d: Vec<f32> = points
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, q)| p.distance(*q))
                .collect();
            d.sort_by(f32::total_cmp);
            let want = (d[0] + d[1] + d[2]) / 3.0;
            assert!((fast[i] - want).abs() < 1e-5, "point {i}: {} vs {}", fast[i], want);
        }
    }

    #[test]
    fn rms_knn_is_the_root_mean_square_of_the_neighbour_distances() {
        // Neighbours of the origin at 1, 2 and 2 (and a far point).
        let points = [
            glam::Vec3::ZERO,
            glam::Vec3::X,
            glam::Vec3::Y * 2.0,
            glam::Vec3::Z * -2.0,
            glam::Vec3::splat(9.0),
        ];
        let rms = rms_knn_distances(&points, 3)[0];
        assert!((rms - 3.0f32.sqrt()).abs() < 1e-6, "{rms}");
        let mean = mean_knn_distances(&points, 3)[0];
        assert!((mean - 5.0 / 3.0).abs() < 1e-6, "{mean}");
    }

    #[test]
    fn splats_from_points_are_valid() {
        let s = from_points(&[([0.0, 0.0, 0.0], [255, 0, 0]), ([1.0, 0.0, 0.0], [0, 255, 0])]).unwrap();
        s.validate(std::path::Path::new("test")).unwrap();
        assert!((s.log_scales[0][0] - 0.0).abs() < 1e-6);
        assert!((SH_C0 * s.sh[0][0] + 0.5 - 1.0).abs() < 1e-6);
        assert!(from_points(&[]).is_none());
    }

    #[test]
    fn flat_and_collinear_clouds_are_quick() {
        let line: Vec<glam::Vec3> = (0..2000).map(|i| glam::Vec3::new(i as f32 * 0.01, 0.0, 0.0)).collect();
        let d = mean_knn_distances(&line, 3);
        // Neighbours at 0.01, 0.01, 0.02 in the middle of the line.
        assert!((d[1000] - 0.04 / 3.0).abs() < 1e-4, "{}", d[1000]);
        let plane: Vec<glam::Vec3> = (0..2500)
            .map(|i| glam::Vec3::new((i % 50) as f32, (i / 50) as f32, 0.0))
            .collect();
        let d = mean_knn_distances(&plane, 3);
        assert!((d[25 * 50 + 25] - 1.0).abs() < 1e-5);
    }
}
