//! Starting Difix from a plain SD-Turbo VAE, as the reference's `src/model.py` does when it is given
//! neither a pretrained name nor a checkpoint (`Difix.__init__`, the "random weights" branch that
//! `train_difix.py` takes):
//!
//! - the four 1x1 skip convs `decoder.skip_conv_1..4` (no bias; [out, in] = (512, 512), (512, 256),
//!   (512, 128), (256, 128) for SD's VAE) are created with every weight `1e-5`
//!   (`torch.nn.init.constant_(..., 1e-5)`), so at the start the skip path adds almost nothing and
//!   the decoder is SD-Turbo's;
//! - a LoRA adapter `vae_skip` of rank 4 (`LoraConfig(r=4, init_lora_weights="gaussian")`, PEFT's
//!   default `lora_alpha` 8, so scale 2) wraps every decoder module whose name ends with `conv1`,
//!   `conv2`, `conv_in`, `conv_shortcut`, `conv`, `conv_out`, `skip_conv_1..4`, `to_k`, `to_q`,
//!   `to_v` or `to_out.0`: PEFT's "gaussian" init draws `lora_A` from N(0, 1/r) and sets `lora_B`
//!   to zero, so the adapter starts as the identity.
//!
//! Only for training: for inference a plain folder gets the skip convs (its output is then within
//! rounding of SD-Turbo's VAE) but no adapter, which would merge to nothing.

use super::vae::VaeConfig;
use crate::nn::weights::Weights;

/// `torch.nn.init.constant_(skip_conv.weight, 1e-5)`.
pub const SKIP_INIT: f32 = 1e-5;
/// `lora_rank_vae` of the reference's `Difix`.
pub const LORA_RANK: usize = 4;
/// PEFT's adapter name in the reference.
pub const ADAPTER: &str = "vae_skip";
/// `target_modules_vae` of the reference (matched as name suffixes of decoder modules).
pub const LORA_TARGETS: [&str; 14] = [
    "conv1",
    "conv2",
    "conv_in",
    "conv_shortcut",
    "conv",
    "conv_out",
    "skip_conv_1",
    "skip_conv_2",
    "skip_conv_3",
    "skip_conv_4",
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
];

/// Whether these VAE weights are a plain SD VAE: no Difix skip convs.
pub fn lacks_skip_convs(weights: &Weights) -> bool {
    !weights.contains("decoder.skip_conv_1.weight")
}

/// Adds `decoder.skip_conv_{i+1}.weight` filled with [`SKIP_INIT`], shaped for `cfg`'s channels the
/// way `Vae::load` reads them (skip `s[n-1-i]` onto the channels entering up block `i`).
pub fn add_skip_convs(weights: &mut Weights, cfg: &VaeConfig) {
    let ch = &cfg.block_out_channels;
    let n = ch.len();
    // The activation recorded before down block i has the channels coming out of block i - 1.
    let skip_channels: Vec<usize> = (0..n).map(|i| if i == 0 { ch[0] } else { ch[i - 1] }).collect();
    let rev: Vec<usize> = ch.iter().rev().copied().collect();
    let mut prev = rev[0];
    for (i, &out) in rev.iter().enumerate() {
        let cin = skip_channels[n - 1 - i];
        weights.insert_created(
            &format!("decoder.skip_conv_{}.weight", i + 1),
            vec![prev, cin, 1, 1],
            vec![SKIP_INIT; prev * cin],
        );
        prev = out;
    }
}

/// Whether any decoder module already has a LoRA pair.
pub fn has_decoder_lora(weights: &Weights) -> bool {
    weights
        .stored_shapes()
        .iter()
        .any(|(k, _)| k.starts_with("decoder.") && k.contains(".lora_A."))
}

/// Adds a fresh rank-`rank` LoRA pair beside every targeted decoder weight (conv: A (r, in, kh, kw),
/// B (out, r, 1, 1); linear: A (r, in), B (out, r)); A ~ N(0, 1/r) from `seed`, B = 0. Returns how
/// many modules got one.
pub fn add_decoder_lora(weights: &mut Weights, rank: usize, seed: u64) -> usize {
    let mut rng = SplitMix(seed);
    let mut count = 0;
    for (key, shape) in weights.stored_shapes() {
        let Some(module) = key.strip_suffix(".weight") else {
            continue;
        };
        // A PEFT-wrapped module stores its weight as `M.base_layer.weight`.
        let module = module.strip_suffix(".base_layer").unwrap_or(module);
        if !module.starts_with("decoder.") || !LORA_TARGETS.iter().any(|t| module.ends_with(t)) {
            continue;
        }
        // Suffix matches are on whole names: `...conv` must not catch `...skip_conv` (listed anyway)
        // or a norm; a target is a conv (4-d) or linear (2-d) weight.
        let (out, a_shape, b_shape) = match shape[..] {
            [out, cin, kh, kw] => (out, vec![rank, cin, kh, kw], vec![out, rank, 1, 1]),
            [out, cin] => (out, vec![rank, cin], vec![out, rank]),
            _ => continue,
        };
        let a_len: usize = a_shape.iter().product();
        let std = 1.0 / rank as f32;
        let a: Vec<f32> = (0..a_len).map(|_| rng.normal() * std).collect();
        weights.insert_created(&format!("{module}.lora_A.{ADAPTER}.weight"), a_shape, a);
        weights.insert_created(
            &format!("{module}.lora_B.{ADAPTER}.weight"),
            b_shape,
            vec![0.0; out * rank],
        );
        count += 1;
    }
    count
}

/// A small seeded generator (SplitMix64) with Box-Muller normals: reproducible LoRA inits without
/// another dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difix::load::ModelFiles;
    use burn::tensor::{Tensor, TensorData};
    use std::path::Path;

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// The tiny test model with its VAE made a plain SD VAE: no skip convs, no LoRA (PEFT's
    /// `M.base_layer.weight` back to `M.weight`), as SD-Turbo's `vae/` is.
    pub(crate) fn plain_tiny(to: &Path) {
        let repo = crate::repo_root();
        copy_tree(&repo.join("tests/fixtures/difix/tiny"), to);
        let file = to.join("vae/diffusion_pytorch_model.safetensors");
        let bytes = std::fs::read(&file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut kept = Vec::new();
        for (name, view) in st.tensors() {
            if name.contains("skip_conv") || name.contains(".lora_") {
                continue;
            }
            kept.push((name.replace(".base_layer.", "."), view));
        }
        let out = safetensors::serialize(kept, None).unwrap();
        std::fs::write(&file, out).unwrap();
        let config = to.join("vae/config.json");
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        for key in ["gamma", "ignore_skip", "lora_rank"] {
            json.as_object_mut().unwrap().remove(key);
        }
        std::fs::write(&config, json.to_string()).unwrap();
    }

    /// SD-Turbo's VAE given the Difix weights as the reference creates them starts as the plain VAE:
    /// skip convs at 1e-5 add almost nothing, LoRA B = 0 adds nothing.
    #[test]
    fn a_plain_vae_starts_as_itself() {
        type B = burn::backend::NdArray<f32>;
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        plain_tiny(dir.path());
        let files = ModelFiles::open(dir.path(), None).unwrap();
        let mut off = ModelFiles::open(dir.path(), None).unwrap();
        off.vae.ignore_skip = true;
        let plain = off.load_vae::<B>(&device).unwrap();
        let (training, keys) = files.load_vae_and_keys::<B>(&device, true).unwrap();
        let inference = files.load_vae::<B>(&device).unwrap();
        let keys: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        for want in [
            "decoder.skip_conv_1.weight",
            "decoder.skip_conv_4.weight",
            "decoder.skip_conv_2.lora_A.vae_skip.weight",
            "decoder.conv_in.lora_B.vae_skip.weight",
            "decoder.mid_block.attentions.0.to_q.lora_A.vae_skip.weight",
            "decoder.up_blocks.0.upsamplers.0.conv.lora_A.vae_skip.weight",
        ] {
            assert!(keys.contains(&want), "{want} not among the trained keys");
        }
        assert!(!keys.iter().any(|k| k.starts_with("encoder.") && k.contains("lora")));
        let (h, w) = (32, 32);
        let values: Vec<f32> = (0..3 * h * w).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, [1, 3, h, w]), &device);
        let run = |vae: &crate::difix::vae::Vae<B>| {
            let e = vae.encode(x.clone());
            vae.decode(e.mean, &e.skips)
        };
        let reference = run(&plain);
        for (name, vae) in [("training", &training), ("inference", &inference)] {
            let diff = (run(vae) - reference.clone()).abs().max().into_scalar();
            assert!(diff < 1e-3, "{name}: {diff}");
            assert!(diff > 0.0, "{name}: the skip path should add a little");
        }

        // The created weights themselves.
        let mut weights = Weights::open_dir(&dir.path().join("vae"), "diffusion_pytorch_model").unwrap();
        add_skip_convs(&mut weights, &files.vae);
        let modules = add_decoder_lora(&mut weights, LORA_RANK, 0);
        assert!(modules > 20, "{modules}");
        let skip = weights
            .take_values("decoder.skip_conv_2.weight", &[32, 16, 1, 1])
            .unwrap();
        assert!(skip.iter().all(|&v| v == SKIP_INIT));
        let b = weights
            .take_values("decoder.conv_out.lora_B.vae_skip.weight", &[3, 4, 1, 1])
            .unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
        let a = weights
            .take_values("decoder.conv_out.lora_A.vae_skip.weight", &[4, 16, 3, 3])
            .unwrap();
        let var = a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32;
        assert!((var.sqrt() - 0.25).abs() < 0.05, "std {} (1 / rank = 0.25)", var.sqrt());
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut rng = SplitMix(7);
        let xs: Vec<f32> = (0..20000).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
