//! Difix3D's Gram-matrix (style) loss (`src/loss.py`): images ImageNet-normalised, VGG16 features at
//! relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, and per layer the weighted mean squared difference
//! of the Gram matrices divided by the layer's size. Difix training adds it after a warm-up, on a
//! random crop the caller takes.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::backbone::{Backbone, Net};
use crate::nn::weights::WeightsError;

/// The reference's `STYLE_WEIGHTS`, relu1_2 to relu5_3.
pub const STYLE_WEIGHTS: [f32; 5] = [1.0 / 2.6, 1.0 / 4.8, 1.0 / 3.7, 1.0 / 5.6, 10.0 / 1.5];
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

pub struct GramLoss<B: Backend> {
    vgg: Backbone<B>,
    mean: Tensor<B, 4>,
    std: Tensor<B, 4>,
}

impl<B: Backend> GramLoss<B> {
    /// Loads torchvision's VGG16 weights (`vgg16-397923af.pth`); AlexNet is refused.
    pub fn load(vgg16: &Path, device: &B::Device) -> Result<Self, WeightsError> {
        let vgg = Backbone::load(vgg16, device)?;
        if vgg.net() != Net::Vgg16 {
            return Err(WeightsError::format(
                vgg16,
                "the Gram loss needs VGG16 weights, not AlexNet",
            ));
        }
        let constant = |v: [f32; 3]| Tensor::<B, 4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), device);
        Ok(Self {
            vgg,
            mean: constant(IMAGENET_MEAN),
            std: constant(IMAGENET_STD),
        })
    }

    /// The loss between a prediction and its target, both [N, 3, H, W] in [0, 1].
    pub fn loss(&self, prediction: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
        let features = |x: Tensor<B, 4>| self.vgg.forward((x - self.mean.clone()) / self.std.clone());
        features(prediction)
            .into_iter()
            .zip(features(target))
            .zip(STYLE_WEIGHTS)
            .map(|((p, t), weight)| {
                let [_, d, h, w] = t.dims();
                let difference = gram(p) - gram(t);
                difference.powi_scalar(2).mean() * (weight / (d * h * w) as f32)
            })
            .reduce(|sum, l| sum + l)
            .expect("VGG16 has five read-outs")
    }
}

/// The smallest crop side the loss can take: VGG16 halves its input with a 2x2, stride-2 max pool
/// before each of relu2_2 .. relu5_3 (four times before relu5_3, the last layer read), and every
/// read-out needs at least one pixel (its convolutions are padded, so only the pools shrink it).
pub fn min_crop() -> usize {
    1 << Net::Vgg16.pools_before_last_read_out()
}

/// The reference's `gram_matrix`: features [b, d, h, w] as (b·d) rows of h·w, times their transpose.
fn gram<B: Backend>(features: Tensor<B, 4>) -> Tensor<B, 2> {
    let [b, d, h, w] = features.dims();
    let rows = features.reshape([b * d, h * w]);
    rows.clone().matmul(rows.transpose())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_smallest_crop_survives_four_poolings() {
        assert_eq!(super::min_crop(), 16);
    }
}
