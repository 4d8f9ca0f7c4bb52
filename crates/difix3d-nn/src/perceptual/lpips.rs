//! LPIPS (Zhang et al. 2018, the `lpips` package v0.1): images scaled to [-1, 1] and shifted/scaled
//! per channel, features from VGG16 or AlexNet, each read-out normalised over channels, squared
//! differences weighted per channel by the calibrated linear layers (`linK.model.1.weight`), averaged
//! over space and summed over the read-outs. Lower is more similar.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::backbone::{Backbone, Net};
use crate::nn::weights::{Weights, WeightsError};

/// lpips's `ScalingLayer` (ImageNet statistics in [-1, 1] units).
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// lpips's `normalize_tensor` epsilon.
const EPS: f64 = 1e-10;

/// Where the two weight files of an LPIPS network are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LpipsFiles {
    /// torchvision's ImageNet weights of VGG16 (`vgg16-397923af.pth`) or AlexNet
    /// (`alexnet-owt-7be5be79.pth`).
    pub backbone: PathBuf,
    /// lpips's linear layers for that network (`weights/v0.1/vgg.pth` or `alex.pth` of the lpips
    /// package); by default the copy `scripts/fetch_assets.sh` puts in `assets/lpips/`.
    pub lin: Option<PathBuf>,
}

pub struct Lpips<B: Backend> {
    backbone: Backbone<B>,
    /// Per read-out: the linear layer's weights as [1, C, 1, 1].
    lins: Vec<Tensor<B, 4>>,
    shift: Tensor<B, 4>,
    scale: Tensor<B, 4>,
}

impl<B: Backend> Lpips<B> {
    pub fn load(files: &LpipsFiles, device: &B::Device) -> Result<Self, WeightsError> {
        let backbone = Backbone::load(&files.backbone, device)?;
        let name = backbone.net().name();
        let lin = match &files.lin {
            Some(path) => path.clone(),
            None => bundled_lin(name).ok_or_else(|| {
                WeightsError::Missing(format!(
                    "no LPIPS linear layers for {name}: run scripts/fetch_assets.sh (assets/lpips/{name}.pth) or pass the lpips package's weights/v0.1/{name}.pth"
                ))
            })?,
        };
        let mut weights = Weights::open_pickle(&lin)?;
        let lins = backbone
            .widths
            .iter()
            .enumerate()
            .map(|(k, &c)| weights.tensor::<B, 4>(&format!("lin{k}.model.1.weight"), [1, c, 1, 1], device))
            .collect::<Result<Vec<_>, _>>()?;
        weights.finish()?;
        let constant = |v: [f32; 3]| Tensor::<B, 4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), device);
        Ok(Self {
            backbone,
            lins,
            shift: constant(SHIFT),
            scale: constant(SCALE),
        })
    }

    pub fn net(&self) -> Net {
        self.backbone.net()
    }

    /// LPIPS between images [N, 3, H, W] with values in [0, 1] (lpips's `normalize=True`): [N].
    pub fn distance(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
        self.layer_distances(a, b)
            .into_iter()
            .reduce(|sum, d| sum + d)
            .expect("a backbone has read-outs")
    }

    /// Each read-out's share of [`Self::distance`].
    pub fn layer_distances(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Vec<Tensor<B, 1>> {
        let prepare = |x: Tensor<B, 4>| (x * 2.0 - 1.0 - self.shift.clone()) / self.scale.clone();
        let fa = self.backbone.forward(prepare(a));
        let fb = self.backbone.forward(prepare(b));
        fa.into_iter()
            .zip(fb)
            .zip(&self.lins)
            .map(|((x, y), lin)| {
                let diff = (unit_channels(x) - unit_channels(y)).powi_scalar(2);
                let weighted = (diff * lin.clone()).sum_dim(1);
                let [n, _, _, _] = weighted.dims();
                weighted.reshape([n as i32, -1]).mean_dim(1).reshape([n])
            })
            .collect()
    }
}

/// lpips's `normalize_tensor`: each pixel's feature vector divided by its length.
fn unit_channels<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / (norm + EPS)
}

/// The default LPIPS linear-layer file for `net_name` (`vgg`, `alex`) under `assets/lpips/`, if it
/// is there.
pub fn bundled_lin(net_name: &str) -> Option<PathBuf> {
    let file = format!("{net_name}.pth");
    [
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("assets/lpips")
            .join(&file),
        Path::new("assets/lpips").join(&file),
    ]
    .into_iter()
    .find(|p| p.is_file())
}
