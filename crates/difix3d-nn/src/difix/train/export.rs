//! Trained networks written back as a model folder in the published diffusers layout — the source
//! model's folder with the UNet and VAE weights replaced, under the same key names (the decoder LoRA
//! as PEFT `base_layer` / `lora_A` / `lora_B` keys). `difix3d fix --model` and the viewer load it
//! like any Difix model, and so does the reference pipeline. Written to a staging folder and
//! renamed into place, so a crash never leaves a half-written model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::step::Nets;
use crate::difix::load::ModelFiles;
use crate::difix::DifixError;
use crate::nn::weights::ParamKey;
use crate::tensor_file::F32Tensors;

/// Writes `nets` (with the stored names in `unet_keys` / `vae_keys`) into `out`, a copy of
/// `source`'s folder; `extra` adds files (a trainer's state) before the folder goes into place.
pub fn export<B: Backend>(
    nets: &Nets<B>,
    unet_keys: &[ParamKey],
    vae_keys: &[ParamKey],
    source: &ModelFiles,
    out: &Path,
    extra: &mut dyn FnMut(&Path) -> Result<(), DifixError>,
) -> Result<(), DifixError> {
    let name = out
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let staging = out.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let result = write_model(nets, unet_keys, vae_keys, source, &staging)
        .and_then(|()| extra(&staging))
        .and_then(|()| replace_dir(&staging, out));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn write_model<B: Backend>(
    nets: &Nets<B>,
    unet_keys: &[ParamKey],
    vae_keys: &[ParamKey],
    source: &ModelFiles,
    dir: &Path,
) -> Result<(), DifixError> {
    let _ = std::fs::remove_dir_all(dir);
    copy_except_weights(&source.root, dir)?;
    write_weights(
        &nets.unet,
        unet_keys,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    )?;
    write_weights(
        &nets.vae,
        vae_keys,
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    )
}

/// Copies the model folder, leaving out the UNet's and the VAE's weight files (rewritten).
fn copy_except_weights(from: &Path, to: &Path) -> Result<(), DifixError> {
    std::fs::create_dir_all(to).map_err(|e| DifixError::io(to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| DifixError::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DifixError::io(from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_except_weights(&path, &target)?;
            continue;
        }
        let component = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let file = entry.file_name().to_string_lossy().into_owned();
        let replaced = matches!(component, "unet" | "vae") && file.contains(".safetensors");
        if !replaced {
            std::fs::copy(&path, &target).map_err(|e| DifixError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Every parameter of `module` as f32 safetensors under its stored name.
fn write_weights<B: Backend, M: Module<B>>(module: &M, keys: &[ParamKey], path: &Path) -> Result<(), DifixError> {
    let mut collect = Collect {
        keys: keys.iter().map(|k| (k.id, k)).collect(),
        tensors: F32Tensors::default(),
        unnamed: 0,
    };
    module.visit(&mut collect);
    if collect.unnamed > 0 {
        return Err(DifixError::format(
            path,
            format!("{} parameters have no stored name to be written under", collect.unnamed),
        ));
    }
    collect
        .tensors
        .write(path, None)
        .map_err(|e| DifixError::format(path, e.to_string()))
}

struct Collect<'a> {
    keys: HashMap<ParamId, &'a ParamKey>,
    tensors: F32Tensors,
    unnamed: usize,
}

impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(key) = self.keys.get(&param.id) else {
            self.unnamed += 1;
            return;
        };
        let mut tensor = param.val();
        if key.transposed && D == 2 {
            tensor = tensor.swap_dims(0, 1);
        }
        self.tensors.push(key.key.clone(), tensor);
    }
}

/// Moves `staging` to `out`, replacing what was there.
fn replace_dir(staging: &Path, out: &Path) -> Result<(), DifixError> {
    let old: Option<PathBuf> = out
        .exists()
        .then(|| out.with_extension(format!("old-{}", std::process::id())));
    if let Some(old) = &old {
        std::fs::rename(out, old).map_err(|e| DifixError::io(out, e))?;
    }
    std::fs::rename(staging, out).map_err(|e| DifixError::io(out, e))?;
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}
