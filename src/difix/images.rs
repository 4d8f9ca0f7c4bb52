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
