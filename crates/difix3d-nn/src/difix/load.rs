//! Reading a Difix model directory in the published diffusers layout (`nvidia/difix`,
//! `nvidia/difix_ref`, or SD-Turbo plus a trainer checkpoint `model_*.pkl`).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;

use super::scheduler::SchedulerConfig;
use super::text_encoder::{TextEncoder, TextEncoderConfig};
use super::tokenizer::ClipTokenizer;
use super::unet::{UNet, UNetConfig};
use super::vae::{Vae, VaeConfig};
use super::DifixError;
use crate::nn::loader::Loader;
use crate::nn::weights::{ParamKey, Weights};

/// What a user is told when the weights are not there.
pub fn missing_weights_help(dir: &Path) -> String {
    format!(
        "no Difix weights in {}: expected model_index.json, unet/, vae/, text_encoder/, tokenizer/ and \
         scheduler/ (the diffusers layout). On a machine with internet access run\n  \
         pip install -U huggingface_hub && huggingface-cli download nvidia/difix_ref --local-dir checkpoints/difix_ref\n\
         (or nvidia/difix for the model without reference views), then copy that folder here and pass it with --model. \
         See checkpoints/README.md.",
        dir.display()
    )
}

/// The parts of a model directory, read and checked but not yet on a device.
pub struct ModelFiles {
    pub root: PathBuf,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub text_encoder: TextEncoderConfig,
    pub scheduler: SchedulerConfig,
    pub scheduler_path: PathBuf,
    pub tokenizer: ClipTokenizer,
    /// The trainer's checkpoint applied over the directory's UNet and VAE.
    pub checkpoint: Option<PathBuf>,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DifixError> {
    let text = std::fs::read_to_string(path).map_err(|e| DifixError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DifixError::format(path, format!("bad config: {e}")))
}

impl ModelFiles {
    pub fn open(root: &Path, checkpoint: Option<&Path>) -> Result<Self, DifixError> {
        let parts = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"];
        if !root.is_dir() || parts.iter().any(|p| !root.join(p).is_dir()) {
            return Err(DifixError::MissingWeights(missing_weights_help(root)));
        }
        if let Some(ckpt) = checkpoint {
            if !ckpt.is_file() {
                return Err(DifixError::io(
                    ckpt,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint not found"),
                ));
            }
        }
        let scheduler_path = root.join("scheduler/scheduler_config.json");
        // Each config is checked against the architecture's rules here, naming the file and the key,
        // before any network is built from it.
        let config = |part: &str| root.join(part).join("config.json");
        let unet: UNetConfig = read_json(&config("unet"))?;
        unet.validate().map_err(|p| p.into_error(config("unet")))?;
        let vae: VaeConfig = read_json(&config("vae"))?;
        vae.validate().map_err(|p| p.into_error(config("vae")))?;
        let text_encoder: TextEncoderConfig = read_json(&config("text_encoder"))?;
        text_encoder
            .validate()
            .map_err(|p| p.into_error(config("text_encoder")))?;
        Ok(Self {
            root: root.to_path_buf(),
            unet,
            vae,
            text_encoder,
            scheduler: read_json(&scheduler_path)?,
            scheduler_path,
            tokenizer: ClipTokenizer::from_dir(&root.join("tokenizer"))?,
            checkpoint: checkpoint.map(Path::to_path_buf),
        })
    }

    fn weights(&self, part: &str, stem: &str, pickle_key: Option<&str>) -> Result<Weights, DifixError> {
        let mut weights = Weights::open_dir(&self.root.join(part), stem)?;
        if let (Some(ckpt), Some(key)) = (&self.checkpoint, pickle_key) {
            weights.override_from_pickle(ckpt, key)?;
        }
        Ok(weights)
    }

    pub fn load_text_encoder<B: Backend>(&self, device: &B::Device) -> Result<TextEncoder<B>, DifixError> {
        let mut weights = self.weights("text_encoder", "model", None)?;
        let config = self.root.join("text_encoder/config.json");
        let model = TextEncoder::load(
            &mut Loader {
                weights: &mut weights,
                device,
            },
            &self.text_encoder,
        )
        .map_err(|e| e.built_from(&config))?;
        weights.finish().map_err(|e| e.built_from(&config))?;
        Ok(model)
    }

    pub fn load_unet<B: Backend>(&self, device: &B::Device) -> Result<UNet<B>, DifixError> {
        Ok(self.load_unet_and_keys(device)?.0)
    }

    /// The UNet and the stored name of each of its parameters.
    pub fn load_unet_and_keys<B: Backend>(&self, device: &B::Device) -> Result<(UNet<B>, Vec<ParamKey>), DifixError> {
        let mut weights = self.weights("unet", "diffusion_pytorch_model", Some("state_dict_unet"))?;
        let config = self.root.join("unet/config.json");
        let model = UNet::load(
            &mut Loader {
                weights: &mut weights,
                device,
            },
            &self.unet,
        )
        .map_err(|e| e.built_from(&config))?;
        weights.finish().map_err(|e| e.built_from(&config))?;
        Ok((model, weights.param_keys))
    }

    pub fn load_vae<B: Backend>(&self, device: &B::Device) -> Result<Vae<B>, DifixError> {
        self.load_vae_with(device, false)
    }

    /// The VAE with its decoder LoRA merged (inference) or kept apart as trainable pairs.
    pub fn load_vae_with<B: Backend>(&self, device: &B::Device, keep_lora: bool) -> Result<Vae<B>, DifixError> {
        Ok(self.load_vae_and_keys(device, keep_lora)?.0)
    }

    /// [`Self::load_vae_with`] and the stored name of each parameter.
    pub fn load_vae_and_keys<B: Backend>(
        &self,
        device: &B::Device,
        keep_lora: bool,
    ) -> Result<(Vae<B>, Vec<ParamKey>), DifixError> {
        let mut weights = self.weights("vae", "diffusion_pytorch_model", Some("state_dict_vae"))?;
        weights.keep_lora = keep_lora;
        if let Some(alpha) = self.vae.lora_alpha {
            weights.lora_alpha = alpha;
        }
        // A plain SD-Turbo VAE: the skip convs (and, for training, the decoder LoRA) are created as
        // the reference's trainer creates them.
        if !self.vae.ignore_skip && super::sd_turbo::lacks_skip_convs(&weights) {
            super::sd_turbo::add_skip_convs(&mut weights, &self.vae);
            let mut what = format!("skip convs at {}", super::sd_turbo::SKIP_INIT);
            if keep_lora && !super::sd_turbo::has_decoder_lora(&weights) {
                let modules = super::sd_turbo::add_decoder_lora(&mut weights, super::sd_turbo::LORA_RANK, 0);
                what.push_str(&format!(
                    " and a rank-{} decoder LoRA on {modules} modules (B = 0)",
                    super::sd_turbo::LORA_RANK
                ));
            }
            log::info!(
                "{}: a plain SD-Turbo VAE (no Difix skip convs); created {what}",
                self.root.join("vae").display()
            );
        }
        let config = self.root.join("vae/config.json");
        let model = Vae::load(
            &mut Loader {
                weights: &mut weights,
                device,
            },
            &self.vae,
        )
        .map_err(|e| e.built_from(&config))?;
        weights.finish().map_err(|e| e.built_from(&config))?;
        Ok((model, weights.param_keys))
    }
}
