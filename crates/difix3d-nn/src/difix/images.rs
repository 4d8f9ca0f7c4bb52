//! Moving pictures between the `image` crate and burn tensors, and the pipeline's size rules.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{imageops::FilterType, RgbImage};

/// How the working resolution is chosen (the output always has the input's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizePolicy {
    /// Resize to exactly this (height, width), as the reference CLI does with 576x1024.
    Fixed { height: u32, width: u32 },
    /// Keep the input's size, floored to multiples of 8 (what Difix3D does when it fixes renders).
    Native,
}

impl SizePolicy {
    pub fn working_size(&self, width: u32, height: u32) -> (u32, u32) {
        match *self {
            SizePolicy::Fixed { height, width } => (width, height),
            SizePolicy::Native => ((width / 8 * 8).max(8), (height / 8 * 8).max(8)),
        }
    }
}

/// `left | right` on one canvas (right resized to left's height when they differ).
pub fn side_by_side(left: &RgbImage, right: &RgbImage) -> RgbImage {
    let (w, h) = left.dimensions();
    let right = resize(right, w, h);
    let mut out = RgbImage::new(2 * w, h);
    image::imageops::replace(&mut out, left, 0, 0);
    image::imageops::replace(&mut out, &right, w as i64, 0);
    out
}

/// Lanczos resize (the reference uses PIL's LANCZOS), skipped when the size already matches.
pub fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        image.clone()
    } else {
        image::imageops::resize(image, width, height, FilterType::Lanczos3)
    }
}

/// What Difix3D's training data gets from torchvision's `F.resize(tensor, [height, width])` on an
/// image in [0, 1]: bilinear with antialiasing (torchvision's default since 0.17), i.e.
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=True)`. Per axis,
/// output pixel `i` averages the input around `scale * (i + 0.5)` (`scale` = input / output) with a
/// triangle filter whose half-width is 1 input pixel, or `scale` pixels when shrinking (so every input
/// pixel counts); taps past the border are dropped and the weights renormalised. The aspect ratio is
/// not kept. Values in [0, 1], like the reference's float tensor (no rounding to 8 bits).
pub fn resize_bilinear_antialiased(image: &RgbImage, width: u32, height: u32) -> image::Rgb32FImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let columns = antialiased_bilinear_taps(in_w, out_w);
    let rows = antialiased_bilinear_taps(in_h, out_h);
    // Rows first (input height x output width), then columns.
    let mut wide = vec![0f64; in_h * out_w * 3];
    for y in 0..in_h {
        for (x, (start, weights)) in columns.iter().enumerate() {
            for (k, w) in weights.iter().enumerate() {
                let px = image.get_pixel((start + k) as u32, y as u32);
                for c in 0..3 {
                    wide[(y * out_w + x) * 3 + c] += w * f64::from(px[c]) / 255.0;
                }
            }
        }
    }
    let mut out = image::Rgb32FImage::new(width, height);
    for (y, (start, weights)) in rows.iter().enumerate() {
        for x in 0..out_w {
            let mut sum = [0f64; 3];
            for (k, w) in weights.iter().enumerate() {
                let at = ((start + k) * out_w + x) * 3;
                for (c, s) in sum.iter_mut().enumerate() {
                    *s += w * wide[at + c];
                }
            }
            out.put_pixel(x as u32, y as u32, image::Rgb(sum.map(|v| v as f32)));
        }
    }
    out
}

/// For each of `output` pixels along one axis: the first input pixel it reads and the weights of
/// the pixels from there (PyTorch's `_compute_indices_weights_aa` for the bilinear filter, the same
/// as PIL's).
fn antialiased_bilinear_taps(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let (support, inverse) = if scale >= 1.0 { (scale, 1.0 / scale) } else { (1.0, 1.0) };
    (0..output)
        .map(|i| {
            let centre = scale * (i as f64 + 0.5);
            // `as` truncates toward zero, as the C++ casts do.
            let first = ((centre - support + 0.5) as i64).max(0) as usize;
            let end = ((centre + support + 0.5) as i64).min(input as i64) as usize;
            let mut weights: Vec<f64> = (first..end)
                .map(|j| (1.0 - ((j as f64 - centre + 0.5) * inverse).abs()).max(0.0))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (first, weights)
        })
        .collect()
}

/// [1, 3, h, w] with values in [0, 1].
pub fn to_tensor<B: Backend>(image: &RgbImage, device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = image.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut planar = vec![0f32; 3 * w * h];
    for (i, px) in image.pixels().enumerate() {
        for c in 0..3 {
            planar[c * w * h + i] = px[c] as f32 / 255.0;
        }
    }
    Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device)
}

/// Converts one [3, h, w] or [1, 3, h, w] tensor in [0, 1] to 8-bit RGB.
pub fn to_image<B: Backend>(tensor: Tensor<B, 4>) -> Result<RgbImage, String> {
    let [_, _, h, w] = tensor.dims();
    let values: Vec<f32> = tensor
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| format!("{e:?}"))?;
    let plane = w * h;
    let mut image = RgbImage::new(w as u32, h as u32);
    for (i, px) in image.pixels_mut().enumerate() {
        for c in 0..3 {
            px[c] = (values[c * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_puts_raw_left_and_fixed_right() {
        let left = RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let right = RgbImage::from_pixel(3, 2, image::Rgb([200, 100, 0]));
        let both = side_by_side(&left, &right);
        assert_eq!(both.dimensions(), (6, 2));
        assert_eq!(both.get_pixel(2, 1).0, [10, 20, 30]);
        assert_eq!(both.get_pixel(3, 0).0, [200, 100, 0]);
    }
}
