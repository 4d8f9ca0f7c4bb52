//! A nerfacto field as a point cloud and as splats: what `ns-export pointcloud` does (nerfstudio
//! 1.1.5, `exporter_utils.generate_point_cloud`), from given cameras instead of random training rays.
//!
//! Every pixel of every camera is rendered; a pixel whose accumulation exceeds `min_accumulation`
//! (nerfstudio: the RGBA alpha > 0.5) gives the point `origin + direction * depth` (the median
//! depth along the unit ray, nerfstudio's default `depth` output) with the rendered colour. Points
//! outside the crop box (nerfstudio's default: the cube [-1, 1]^3 of its normalised frame) are
//! dropped, then the statistical outliers (open3d's `remove_statistical_outlier(nb_neighbors=20,
//! std_ratio=10)`, nerfstudio's defaults: a point goes when its mean distance to its 20 nearest
//! neighbours exceeds the mean of those distances by 10 standard deviations).
//!
//! `difix3d nerfacto-export` makes the points isotropic splats ([`crate::scene::init::from_points`]: the size of a 3DGS
//! initialisation), so the result opens in the viewer and starts a splat training.

use burn::tensor::backend::Backend;

use super::model::{camera_rays, Nerfacto};
use crate::data::Camera;
use crate::scene;

/// How [`point_cloud`] picks its points; the defaults are `ns-export pointcloud`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    /// Keep pixels whose accumulation is above this (nerfstudio: 0.5).
    pub min_accumulation: f32,
    /// Keep points inside this box (min, max corners) of the checkpoint's world frame; `None`
    /// keeps every point (nerfstudio: [-1, 1]^3).
    pub crop: Option<([f32; 3], [f32; 3])>,
    /// Drop statistical outliers (nerfstudio: on, 20 neighbours, 10 standard deviations).
    pub remove_outliers: bool,
    /// At most this many points, taken evenly from those kept (nerfstudio: 1,000,000).
    pub max_points: usize,
    /// Rays rendered at once.
    pub rays_per_chunk: usize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            min_accumulation: 0.5,
            crop: Some(([-1.0; 3], [1.0; 3])),
            remove_outliers: true,
            max_points: 1_000_000,
            rays_per_chunk: 4096,
        }
    }
}

/// The neighbours and spread open3d's statistical outlier removal uses in `ns-export`.
const OUTLIER_NEIGHBOURS: usize = 20;
const OUTLIER_STD_RATIO: f32 = 10.0;

/// The coloured points of `model` seen from `cameras` (see the module docs); `progress` is called
/// after each camera with (cameras done, cameras).
pub fn point_cloud<B: Backend>(
    model: &Nerfacto<B>,
    cameras: &[Camera],
    settings: &ExportSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<([f32; 3], [u8; 3])> {
    let mut points = Vec::new();
    for (done, camera) in cameras.iter().enumerate() {
        let image = model.render_camera(camera, settings.rays_per_chunk);
        let (origins, directions) = camera_rays(camera);
        for (pixel, &accumulation) in image.accumulation.iter().enumerate() {
            if accumulation <= settings.min_accumulation {
                continue;
            }
            let depth = image.depth[pixel];
            let point: [f32; 3] = std::array::from_fn(|a| origins[3 * pixel + a] + directions[3 * pixel + a] * depth);
            let inside = settings
                .crop
                .is_none_or(|(lo, hi)| (0..3).all(|a| point[a] >= lo[a] && point[a] <= hi[a]));
            if inside && point.iter().all(|v| v.is_finite()) {
                let colour = std::array::from_fn(|c| crate::image_io::quantize(image.rgb[3 * pixel + c]));
                points.push((point, colour));
            }
        }
        progress(done + 1, cameras.len());
    }
    if settings.remove_outliers {
        points = without_outliers(points);
    }
    evenly(points, settings.max_points)
}

/// open3d's `remove_statistical_outlier(OUTLIER_NEIGHBOURS, OUTLIER_STD_RATIO)`: the mean distance of
/// each point to its neighbours, their mean and (sample) standard deviation over the cloud, and
/// only the points whose mean distance is below mean + ratio * deviation kept.
fn without_outliers(points: Vec<([f32; 3], [u8; 3])>) -> Vec<([f32; 3], [u8; 3])> {
    if points.len() <= OUTLIER_NEIGHBOURS {
        return points;
    }
    let positions: Vec<glam::Vec3> = points.iter().map(|(p, _)| glam::Vec3::from(*p)).collect();
    let spacing = scene::init::mean_knn_distances(&positions, OUTLIER_NEIGHBOURS);
    let n = spacing.len() as f64;
    let mean = spacing.iter().map(|&d| f64::from(d)).sum::<f64>() / n;
    let variance = spacing.iter().map(|&d| (f64::from(d) - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let limit = mean + f64::from(OUTLIER_STD_RATIO) * variance.sqrt();
    points
        .into_iter()
        .zip(spacing)
        .filter(|(_, d)| f64::from(*d) < limit)
        .map(|(p, _)| p)
        .collect()
}

/// At most `max` of `items`, evenly spaced (all of them when there are no more than `max`).
fn evenly<T>(items: Vec<T>, max: usize) -> Vec<T> {
    let n = items.len();
    if n <= max {
        return items;
    }
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) * max / n != i * max / n)
        .map(|(_, item)| item)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_keeps_at_most_max_spread_over_the_input() {
        let kept = evenly((0..10).collect::<Vec<_>>(), 4);
        assert_eq!(kept.len(), 4);
        assert_eq!(kept, vec![2, 4, 7, 9]);
        assert_eq!(evenly(vec![1, 2, 3], 5), vec![1, 2, 3]);
    }

    #[test]
    fn a_far_point_is_an_outlier_and_a_grid_has_none() {
        let mut points: Vec<([f32; 3], [u8; 3])> = (0..125)
            .map(|i| ([(i % 5) as f32, (i / 5 % 5) as f32, (i / 25) as f32], [0; 3]))
            .collect();
        assert_eq!(without_outliers(points.clone()).len(), 125);
        points.push(([1000.0, 0.0, 0.0], [255; 3]));
        let kept = without_outliers(points);
        assert_eq!(kept.len(), 125);
        assert!(kept.iter().all(|(p, _)| p[0] < 10.0));
    }
}
