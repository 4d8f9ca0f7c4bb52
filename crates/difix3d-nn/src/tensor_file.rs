//! Writing f32 tensors to a safetensors file atomically: training checkpoints, optimiser states and
//! exported model weights all go through here.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::image_io::{write_atomic, ImageError};

/// Named f32 tensors gathered for one file.
#[derive(Default)]
pub struct F32Tensors {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
}

impl F32Tensors {
    /// Adds `tensor` (read back and converted to f32) under `name`.
    pub fn push<B: Backend, const D: usize>(&mut self, name: String, tensor: Tensor<B, D>) {
        let shape = tensor.dims().to_vec();
        let values: Vec<f32> = tensor
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("a float tensor converts to f32");
        self.tensors.push((name, shape, bytemuck::cast_slice(&values).to_vec()));
    }

    /// Writes the file (temp file, then rename) with `metadata` in its header.
    pub fn write(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<(), ImageError> {
        let views: Vec<(String, safetensors::tensor::TensorView)> = self
            .tensors
            .iter()
            .map(|(name, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("shape and byte count agree");
                (name.clone(), view)
            })
            .collect();
        write_atomic(path, |tmp| {
            safetensors::serialize_to_file(views, metadata, tmp).map_err(|e| e.to_string())
        })
    }
}
