//! Training rays from a set of views (photos, or Difix-fixed novel views) as nerfstudio's data
//! managers draw them (nerfstudio 1.1.5, `nerfstudio/data/pixel_samplers.py`):
//!
//! - [`PixelSampler::Pixels`] (`PixelSampler`, `ns-train nerfacto`'s default): each ray picks a view,
//!   then a pixel of it, uniformly;
//! - [`PixelSampler::Patches`] (`PatchPixelSampler`, which `VanillaDataManager._get_pixel_sampler`
//!   picks when the data manager's `patch_size > 1`, as Difix3D's does with 32): square patches of
//!   `size x size` neighbouring pixels. `set_num_rays_per_batch` rounds the batch down to whole
//!   patches (`(rays // size²) · size²`: 16384 rays are 16 patches of 32x32); each patch picks a
//!   view and its top-left corner `floor(u · (height − size))`, `floor(u · (width − size))`
//!   (`sample_method` without a mask), and its pixels follow row by row.
//!
//! Every ray goes through its pixel's centre (`RayGenerator`'s `pixel_offset=0.5`); the view's colour
//! there is the target and the view's index picks the appearance code (the camera index nerfstudio's
//! ray bundle carries: for a data manager built on Difix3D's novel views, the novel view's own index).

use burn::prelude::*;
use image::RgbImage;

use super::model::pixel_ray;
use super::training::RayBatch;
use crate::data::Camera;
use crate::rng::Rng;

/// How the pixels of a batch are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelSampler {
    /// Independent pixels, uniformly over views and then pixels.
    Pixels,
    /// Square patches of `size` x `size` pixels (`size` at least 1).
    Patches { size: u32 },
}

/// One pixel of one view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelIndex {
    pub view: usize,
    pub row: u32,
    pub column: u32,
}

impl PixelSampler {
    /// nerfstudio's sampler for a data manager's `patch_size` (1 or less: single pixels).
    pub fn for_patch_size(patch_size: u32) -> Self {
        if patch_size > 1 {
            Self::Patches { size: patch_size }
        } else {
            Self::Pixels
        }
    }

    /// The rays a batch really holds when `requested` are asked for (whole patches only).
    pub fn rays_per_batch(&self, requested: usize) -> usize {
        match *self {
            Self::Pixels => requested,
            Self::Patches { size } => {
                let area = (size as usize).pow(2);
                requested / area * area
            }
        }
    }

    /// Why views of these sizes (`width`, `height`) cannot be sampled with `requested` rays per batch.
    pub fn check(&self, requested: usize, sizes: impl IntoIterator<Item = (u32, u32)>) -> Result<(), String> {
        let Self::Patches { size } = *self else {
            return Ok(());
        };
        if size == 0 {
            return Err("the patch size must be at least 1".into());
        }
        if self.rays_per_batch(requested) == 0 {
            return Err(format!(
                "{requested} rays per batch is less than one {size}x{size} patch ({} rays)",
                size * size
            ));
        }
        if let Some((w, h)) = sizes.into_iter().find(|&(w, h)| w < size || h < size) {
            return Err(format!("{size}x{size} patches do not fit in a {w}x{h} view"));
        }
        Ok(())
    }

    /// The pixels of one batch of (about) `requested` rays over views of `sizes` (`width`,
    /// `height`; none empty and, for patches, none smaller than a patch: see [`Self::check`]).
    pub fn sample(&self, requested: usize, sizes: &[(u32, u32)], rng: &mut Rng) -> Vec<PixelIndex> {
        let rays = self.rays_per_batch(requested);
        let mut pixels = Vec::with_capacity(rays);
        if sizes.is_empty() {
            return pixels;
        }
        match *self {
            Self::Pixels => {
                for _ in 0..rays {
                    let view = rng.below(sizes.len());
                    let (w, h) = sizes[view];
                    let column = rng.below(w as usize) as u32;
                    let row = rng.below(h as usize) as u32;
                    pixels.push(PixelIndex { view, row, column });
                }
            }
            Self::Patches { size } => {
                let corner = |rng: &mut Rng, side: u32| {
                    // floor(u · (side − size)): 0 when the patch fills the side.
                    let room = side.saturating_sub(size) as usize;
                    if room == 0 {
                        0
                    } else {
                        rng.below(room) as u32
                    }
                };
                for _ in 0..rays / (size as usize).pow(2) {
                    let view = rng.below(sizes.len());
                    let (w, h) = sizes[view];
                    let top = corner(rng, h);
                    let left = corner(rng, w);
                    for dy in 0..size {
                        for dx in 0..size {
                            pixels.push(PixelIndex {
                                view,
                                row: top + dy,
                                column: left + dx,
                            });
                        }
                    }
                }
            }
        }
        pixels
    }
}

/// Views to train on: cameras (in the model's frame) with their images, of the same sizes.
#[derive(Clone, Debug, Default)]
pub struct Views {
    pub cameras: Vec<Camera>,
    pub images: Vec<RgbImage>,
}

impl Views {
    /// Each view's (`width`, `height`).
    pub fn sizes(&self) -> Vec<(u32, u32)> {
        self.cameras.iter().map(|c| (c.width, c.height)).collect()
    }

    /// A batch of `sampler`'s rays with one jitter per ray and sampling pass (`passes` tensors of
    /// `[R, 1]`).
    pub fn batch<B: Backend>(
        &self,
        sampler: &PixelSampler,
        rays: usize,
        passes: usize,
        rng: &mut Rng,
        device: &B::Device,
    ) -> (RayBatch<B>, Vec<Tensor<B, 2>>) {
        let pixels = sampler.sample(rays, &self.sizes(), rng);
        let rays = pixels.len();
        let mut origins = Vec::with_capacity(rays * 3);
        let mut directions = Vec::with_capacity(rays * 3);
        let mut images = Vec::with_capacity(rays);
        let mut target = Vec::with_capacity(rays * 3);
        for p in &pixels {
            let (o, d) = pixel_ray(&self.cameras[p.view], p.column, p.row);
            origins.extend_from_slice(&o);
            directions.extend_from_slice(&d);
            images.push(p.view as i64);
            let colour = self.images[p.view].get_pixel(p.column, p.row);
            target.extend(colour.0.iter().map(|&v| v as f32 / 255.0));
        }
        let matrix = |v: Vec<f32>| Tensor::<B, 1>::from_floats(v.as_slice(), device).reshape([rays, 3]);
        let batch = RayBatch {
            origins: matrix(origins),
            directions: matrix(directions),
            images: Tensor::<B, 1, Int>::from_ints(images.as_slice(), device),
            target: matrix(target),
        };
        let jitter = (0..passes)
            .map(|_| {
                let values: Vec<f32> = (0..rays).map(|_| rng.uniform()).collect();
                Tensor::<B, 1>::from_floats(values.as_slice(), device).reshape([rays, 1])
            })
            .collect();
        (batch, jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Difix3D's batches: 16384 rays as 16 whole 32x32 patches, each a square of neighbouring
    /// pixels of one view, inside it; a batch that is not whole patches is rounded down.
    #[test]
    fn patches_are_whole_squares_inside_their_view() {
        let sampler = PixelSampler::for_patch_size(32);
        assert_eq!(sampler, PixelSampler::Patches { size: 32 });
        let sizes = [(64u32, 48u32), (40, 32), (32, 32)];
        let mut rng = Rng(7);
        let mut corners = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let pixels = sampler.sample(16384, &sizes, &mut rng);
            assert_eq!(pixels.len(), 16384);
            for patch in pixels.chunks(32 * 32) {
                let first = patch[0];
                let (w, h) = sizes[first.view];
                // nerfstudio's corner: floor(u · (side − 32)), so 0..side−32 (exclusive), or 0.
                assert!(first.row + 32 <= h && first.column + 32 <= w, "{first:?} in {w}x{h}");
                assert!(first.row < (h - 32).max(1) && first.column < (w - 32).max(1));
                corners.insert((first.view, first.row, first.column));
                for (i, p) in patch.iter().enumerate() {
                    assert_eq!(p.view, first.view);
                    assert_eq!(p.row, first.row + i as u32 / 32, "row-major within the patch");
                    assert_eq!(p.column, first.column + i as u32 % 32);
                }
            }
        }
        // The draws spread over the views and positions.
        assert!(corners.iter().any(|c| c.0 == 0) && corners.iter().any(|c| c.0 == 2));
        assert!(corners.len() > 100, "{} distinct patches", corners.len());

        assert_eq!(sampler.rays_per_batch(5000), 4 * 1024);
        assert_eq!(sampler.sample(5000, &sizes, &mut rng).len(), 4096);
        assert!(sampler.check(16384, sizes).is_ok());
        let e = sampler.check(16384, [(64, 31)]).unwrap_err();
        assert!(e.contains("64x31"), "{e}");
        let e = sampler.check(1000, [(64, 64)]).unwrap_err();
        assert!(e.contains("less than one"), "{e}");
    }

    #[test]
    fn single_pixels_cover_every_view() {
        let sampler = PixelSampler::for_patch_size(1);
        assert_eq!(sampler, PixelSampler::Pixels);
        let sizes = [(4u32, 3u32), (2, 2)];
        let pixels = sampler.sample(4096, &sizes, &mut Rng(3));
        assert_eq!(pixels.len(), 4096);
        for p in &pixels {
            let (w, h) = sizes[p.view];
            assert!(p.column < w && p.row < h);
        }
        let in_first = pixels.iter().filter(|p| p.view == 0).count();
        assert!((1800..2300).contains(&in_first), "{in_first}");
    }
}
