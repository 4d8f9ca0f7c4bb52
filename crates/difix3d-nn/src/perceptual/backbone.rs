//! The convolutional `features` of torchvision's VGG16 and AlexNet, cut where LPIPS reads them
//! (after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 for VGG; after each of the five ReLUs for
//! AlexNet). Weights come from torchvision's own files (`features.N.weight`), whatever their widths,
//! so the same code runs the real networks and the tiny test ones.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::Tensor;

use crate::nn::flex_kernels::conv2d;
use crate::nn::loader::Loader;
use crate::nn::weights::{Weights, WeightsError};

/// Which torchvision network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Net {
    Vgg16,
    Alex,
}

impl Net {
    /// torchvision's `features` as layers (C conv, R ReLU, P max pool) with the LPIPS read-outs
    /// (`|`) in between; torch's layer index of each C/R/P is its position ignoring the `|`s.
    fn layout(self) -> &'static str {
        match self {
            Net::Vgg16 => "CRCR|PCRCR|PCRCRCR|PCRCRCR|PCRCRCR|",
            Net::Alex => "CR|PCR|PCR|CR|CR|",
        }
    }

    /// How many max pools the input passes before the last read-out.
    pub fn pools_before_last_read_out(self) -> u32 {
        let layout = self.layout();
        let last = layout.rfind('|').unwrap_or(0);
        layout[..last].matches('P').count() as u32
    }

    /// (kernel, stride) of the max pools.
    fn pool(self) -> (usize, usize) {
        match self {
            Net::Vgg16 => (2, 2),
            Net::Alex => (3, 2),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Net::Vgg16 => "vgg",
            Net::Alex => "alex",
        }
    }
}

enum Layer<B: Backend> {
    Conv(Box<Conv2d<B>>),
    Relu,
    Pool,
    ReadOut,
}

/// The feature network up to its last LPIPS read-out.
pub struct Backbone<B: Backend> {
    net: Net,
    layers: Vec<Layer<B>>,
    /// Channels at each read-out.
    pub widths: Vec<usize>,
}

impl<B: Backend> Backbone<B> {
    /// Loads torchvision weights (`vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth`, or any state dict
    /// with the same `features.N` keys); which network it is follows from the first kernel's size.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self, WeightsError> {
        let mut weights = Weights::open_pickle(path)?;
        // The classifier head is not part of the features.
        weights.allow_unused("classifier.");
        let first = weights.shape("features.0.weight").ok_or_else(|| {
            WeightsError::format(
                path,
                "no `features.0.weight`: not a torchvision VGG16/AlexNet state dict",
            )
        })?;
        let net = match first.as_slice() {
            [_, 3, 11, 11] => Net::Alex,
            [_, 3, 3, 3] => Net::Vgg16,
            other => {
                return Err(WeightsError::format(
                    path,
                    format!(
                        "`features.0.weight` is {other:?}: neither VGG16 ([64, 3, 3, 3]) nor AlexNet ([64, 3, 11, 11])"
                    ),
                ))
            }
        };
        let mut loader = Loader::<B> {
            weights: &mut weights,
            device,
        };
        let mut layers = Vec::new();
        let mut widths = Vec::new();
        let mut channels = 3;
        let mut index = 0;
        for op in net.layout().chars() {
            match op {
                'C' => {
                    let key = format!("features.{index}.weight");
                    let shape = loader
                        .weights
                        .shape(&key)
                        .ok_or_else(|| WeightsError::format(path, format!("no `{key}`")))?;
                    let (cout, kernel) = match shape.as_slice() {
                        [cout, cin, k, k2] if *cin == channels && k == k2 => (*cout, *k),
                        other => {
                            return Err(WeightsError::format(
                                path,
                                format!("`{key}` is {other:?}, expected [out, {channels}, k, k]"),
                            ))
                        }
                    };
                    // AlexNet's first layer is the only 11x11 (stride 4, padding 2); the others keep
                    // the size ("same" padding).
                    let (stride, pad) = if kernel == 11 { (4, 2) } else { (1, kernel / 2) };
                    let conv = loader.conv_strided(
                        &format!("features.{index}"),
                        channels,
                        cout,
                        kernel,
                        stride,
                        PaddingConfig2d::Explicit(pad, pad, pad, pad),
                        true,
                    )?;
                    // A frozen feature network: gradients flow to its input, never to its weights, so
                    // a training step does not spend a backward pass on them.
                    layers.push(Layer::Conv(Box::new(conv.no_grad())));
                    channels = cout;
                }
                'R' => layers.push(Layer::Relu),
                'P' => layers.push(Layer::Pool),
                _ => {
                    layers.push(Layer::ReadOut);
                    widths.push(channels);
                    continue;
                }
            }
            index += 1;
        }
        weights.finish()?;
        Ok(Self { net, layers, widths })
    }

    pub fn net(&self) -> Net {
        self.net
    }

    /// The activations at each read-out for images [N, 3, H, W] (already normalised as the network
    /// expects).
    pub fn forward(&self, mut x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let (kernel, stride) = self.net.pool();
        let mut outputs = Vec::with_capacity(self.widths.len());
        for layer in &self.layers {
            match layer {
                Layer::Conv(conv) => x = conv2d(conv, x),
                Layer::Relu => x = relu(x),
                Layer::Pool => x = max_pool2d(x, [kernel, kernel], [stride, stride], [0, 0], [1, 1], false),
                Layer::ReadOut => outputs.push(x.clone()),
            }
        }
        outputs
    }
}
