//! A read-once store of named weights from safetensors files (single or sharded) and torch pickles.
//!
//! Modules pull their tensors out by name with the shape the config says they must have; what was never
//! pulled is reported at the end as "unexpected". That gives one clear error per bad key instead of a
//! silently half-initialised network. PEFT LoRA layers (`M.base_layer.weight` + `M.lora_A.<adapter>`
//! + `M.lora_B.<adapter>`) are merged here, at load time, so the network code never sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// A weight file that cannot be used: every variant names the file (and the key) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but is not a weight file of the expected kind.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// The weight files are absent.
    #[error("{0}")]
    Missing(String),
    /// A weight has the wrong shape or values, is missing or is unexpected.
    #[error("{path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl WeightsError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// A weight that is missing, unexpected or of the wrong shape may as well be the config's
    /// fault as the weight file's: the message names the config the shapes came from too.
    pub fn built_from(self, config: &Path) -> Self {
        match self {
            Self::Key { path, key, message } if !message.contains("finite") => Self::Key {
                path,
                key,
                message: format!("{message} (the shapes follow {})", config.display()),
            },
            other => other,
        }
    }
}

/// Where one tensor's bytes live.
enum Source {
    Safetensors {
        file: usize,
        dtype: Dtype,
        start: usize,
        end: usize,
    },
    /// A tensor from a torch pickle, already decoded to f32.
    Decoded(Arc<Vec<f32>>),
}

struct Entry {
    shape: Vec<usize>,
    path: PathBuf,
    source: Source,
}

/// A PEFT LoRA pair as stored: A (down) and B (up) with their keys, and the merge scale alpha / rank.
pub struct LoraPair {
    pub a: Vec<f32>,
    pub a_shape: Vec<usize>,
    pub a_key: String,
    pub b: Vec<f32>,
    pub b_shape: Vec<usize>,
    pub b_key: String,
    pub scale: f32,
}

/// Which stored tensor a module parameter came from, so trained weights can be written back under
/// the same names (`transposed`: torch's [out, in] linear weight, kept as [in, out] by burn).
#[derive(Clone, Debug)]
pub struct ParamKey {
    pub id: burn::module::ParamId,
    pub key: String,
    pub transposed: bool,
}

/// Named tensors of one model component (e.g. the UNet), possibly spread over several files.
pub struct Weights {
    maps: Vec<memmap2::Mmap>,
    entries: BTreeMap<String, Entry>,
    taken: BTreeSet<String>,
    /// Keys that may be present without being used (buffers like `position_ids`).
    ignorable: Vec<String>,
    /// PEFT's `lora_alpha`; the merge scale is `alpha / rank`.
    pub lora_alpha: f32,
    /// Keep LoRA pairs apart (for training them) instead of merging them into their base weights.
    pub keep_lora: bool,
    /// The stored name of every parameter built from these weights.
    pub param_keys: Vec<ParamKey>,
    /// Name of the files for messages: the single file or the index.
    pub origin: PathBuf,
}

impl Weights {
    /// Opens `dir/<stem>.safetensors`, or the shards listed in `dir/<stem>.safetensors.index.json`.
    pub fn open_dir(dir: &Path, stem: &str) -> Result<Self, WeightsError> {
        let single = dir.join(format!("{stem}.safetensors"));
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        if single.is_file() {
            return Self::open_files(std::slice::from_ref(&single), single.clone());
        }
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| WeightsError::io(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| WeightsError::format(&index, format!("not JSON: {e}")))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| WeightsError::format(&index, "no `weight_map` object"))?;
            let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
            let files: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            return Self::open_files(&files, index);
        }
        Err(WeightsError::Missing(format!(
            "{}: neither {stem}.safetensors nor {stem}.safetensors.index.json exists",
            dir.display()
        )))
    }

    fn open_files(files: &[PathBuf], origin: PathBuf) -> Result<Self, WeightsError> {
        let mut store = Self {
            maps: Vec::new(),
            entries: BTreeMap::new(),
            taken: BTreeSet::new(),
            ignorable: Vec::new(),
            lora_alpha: 8.0,
            keep_lora: false,
            param_keys: Vec::new(),
            origin,
        };
        for path in files {
            let file = std::fs::File::open(path).map_err(|e| WeightsError::io(path, e))?;
            // SAFETY: the map is read-only and the file is not modified while the model loads; a
            // concurrent writer could at worst change weight values, not memory safety of our reads.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| WeightsError::io(path, e))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| WeightsError::format(path, format!("not a safetensors file: {e}")))?;
            let base = 8 + header_len;
            let index = store.maps.len();
            for (name, info) in meta.tensors() {
                let (start, end) = info.data_offsets;
                store.entries.insert(
                    name.clone(),
                    Entry {
                        shape: info.shape.clone(),
                        path: path.clone(),
                        source: Source::Safetensors {
                            file: index,
                            dtype: info.dtype,
                            start: base + start,
                            end: base + end,
                        },
                    },
                );
            }
            store.maps.push(map);
        }
        Ok(store)
    }

    /// The tensors of a torch pickle holding a plain state dict (`torch.save(model.state_dict())`,
    /// like torchvision's and lpips's weight files).
    pub fn open_pickle(path: &Path) -> Result<Self, WeightsError> {
        if !path.is_file() {
            return Err(WeightsError::Missing(format!("{}: no such file", path.display())));
        }
        let mut store = Self::open_files(&[], path.to_path_buf())?;
        let reader = burn_store::pytorch::PytorchReader::new(path)
            .map_err(|e| WeightsError::format(path, format!("not a torch state dict: {e}")))?;
        store.insert_pickled(path, reader)?;
        Ok(store)
    }

    /// Replaces (or adds) tensors with those of a torch pickle (the trainer's `model_*.pkl`), read
    /// from the dict under `top_key` (e.g. `state_dict_unet`).
    pub fn override_from_pickle(&mut self, path: &Path, top_key: &str) -> Result<usize, WeightsError> {
        let reader = burn_store::pytorch::PytorchReader::with_top_level_key(path, top_key)
            .map_err(|e| WeightsError::format(path, format!("cannot read `{top_key}`: {e}")))?;
        self.insert_pickled(path, reader)
    }

    fn insert_pickled(
        &mut self,
        path: &Path,
        reader: burn_store::pytorch::PytorchReader,
    ) -> Result<usize, WeightsError> {
        let mut count = 0;
        for (name, snapshot) in reader.into_tensors() {
            let data = snapshot
                .to_data()
                .map_err(|e| WeightsError::format(path, format!("tensor `{name}`: {e:?}")))?
                .convert::<f32>();
            let values = data
                .to_vec::<f32>()
                .map_err(|e| WeightsError::format(path, format!("tensor `{name}`: {e:?}")))?;
            let shape = snapshot.shape.to_vec();
            self.entries.insert(
                name,
                Entry {
                    shape,
                    path: path.to_path_buf(),
                    source: Source::Decoded(Arc::new(values)),
                },
            );
            count += 1;
        }
        Ok(count)
    }

    /// Adds a tensor made in memory rather than read from a file (the Difix weights a plain SD-Turbo
    /// VAE lacks); an existing key is left as it is.
    pub fn insert_created(&mut self, key: &str, shape: Vec<usize>, values: Vec<f32>) {
        let entry = Entry {
            shape,
            path: self.origin.clone(),
            source: Source::Decoded(Arc::new(values)),
        };
        self.entries.entry(key.to_string()).or_insert(entry);
    }

    /// Every stored key with its shape, in name order.
    pub fn stored_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.entries.iter().map(|(k, e)| (k.clone(), e.shape.clone())).collect()
    }

    /// Keys matching any of these substrings may stay unused without an error.
    pub fn allow_unused(&mut self, pattern: &str) {
        self.ignorable.push(pattern.to_string());
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key) || self.lora_base(key).is_some()
    }

    /// The stored shape of `key` (after LoRA resolution), for modules whose sizes are not in a config.
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        if let Some(e) = self.entries.get(key) {
            return Some(e.shape.clone());
        }
        self.lora_base(key)
            .and_then(|base| self.entries.get(&base).map(|e| e.shape.clone()))
    }

    /// `M.weight` -> `M.base_layer.weight` when `M` is wrapped by PEFT.
    fn lora_base(&self, key: &str) -> Option<String> {
        let (module, leaf) = key.rsplit_once('.')?;
        let base = format!("{module}.base_layer.{leaf}");
        self.entries.contains_key(&base).then_some(base)
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.entries
            .get(key)
            .map(|e| e.path.clone())
            .unwrap_or_else(|| self.origin.clone())
    }

    fn key_error(&self, key: &str, message: impl Into<String>) -> WeightsError {
        WeightsError::Key {
            path: self.path_of(key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Decodes a stored tensor to f32 and marks it used.
    fn raw(&mut self, key: &str) -> Result<(Vec<usize>, Vec<f32>), WeightsError> {
        let entry = self.entries.get(key).ok_or_else(|| self.key_error(key, "missing"))?;
        let values = match &entry.source {
            Source::Decoded(values) => values.as_ref().clone(),
            Source::Safetensors {
                file,
                dtype,
                start,
                end,
            } => {
                let bytes = self.maps[*file]
                    .get(*start..*end)
                    .ok_or_else(|| self.key_error(key, "data offsets lie outside the file (truncated?)"))?;
                decode(bytes, *dtype).map_err(|m| self.key_error(key, m))?
            }
        };
        let expected: usize = entry.shape.iter().product();
        if values.len() != expected {
            return Err(self.key_error(
                key,
                format!("holds {} values for shape {:?}", values.len(), entry.shape),
            ));
        }
        // NaN or infinite weights turn every output black without any error, so they fail here, in
        // the one pass that decodes each tensor.
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.key_error(
                key,
                format!(
                    "value {i} of {} is {}; every weight must be finite (the file is corrupt)",
                    values.len(),
                    values[i]
                ),
            ));
        }
        let shape = entry.shape.clone();
        self.taken.insert(key.to_string());
        Ok((shape, values))
    }

    /// The f32 values of `key`, checked against `shape`, with a PEFT LoRA merged in when present.
    pub fn take_values(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>, WeightsError> {
        let stored_key = if self.entries.contains_key(key) {
            key.to_string()
        } else if let Some(base) = self.lora_base(key) {
            base
        } else {
            return Err(self.key_error(key, format!("missing (expected shape {shape:?})")));
        };
        let (stored, mut values) = self.raw(&stored_key)?;
        if stored != shape {
            return Err(self.key_error(
                &stored_key,
                format!("shape {stored:?} in the file, the model needs {shape:?}"),
            ));
        }
        // A LoRA pair may sit beside `M.base_layer.weight` (PEFT save) or beside a plain `M.weight`
        // (the trainer's checkpoint applied over a stock model).
        if let Some(module) = key.strip_suffix(".weight") {
            if !self.keep_lora && self.adapter_key(module, "lora_A").is_some() {
                self.merge_lora(module, key, shape, &mut values)?;
            }
        }
        Ok(values)
    }

    /// `W += alpha / r * (B @ A)` with A: (r, in, kh, kw) or (r, in), B: (out, r, 1, 1) or (out, r).
    fn merge_lora(&mut self, module: &str, key: &str, shape: &[usize], w: &mut [f32]) -> Result<(), WeightsError> {
        let a_key = self
            .adapter_key(module, "lora_A")
            .ok_or_else(|| self.key_error(key, "LoRA base without lora_A"))?;
        let b_key = a_key.replacen(".lora_A.", ".lora_B.", 1);
        let (a_shape, a) = self.raw(&a_key)?;
        let (b_shape, b) = self.raw(&b_key)?;
        let rank = a_shape[0];
        let out = shape[0];
        let fan_in: usize = shape[1..].iter().product();
        if a.len() != rank * fan_in || b_shape.first() != Some(&out) || b.len() != out * rank {
            return Err(self.key_error(
                key,
                format!("LoRA shapes A {a_shape:?} and B {b_shape:?} do not fit the base weight {shape:?}"),
            ));
        }
        let scale = self.lora_alpha / rank as f32;
        for o in 0..out {
            for r in 0..rank {
                let coeff = scale * b[o * rank + r];
                if coeff == 0.0 {
                    continue;
                }
                let row = &a[r * fan_in..(r + 1) * fan_in];
                for (dst, src) in w[o * fan_in..(o + 1) * fan_in].iter_mut().zip(row) {
                    *dst += coeff * src;
                }
            }
        }
        Ok(())
    }

    /// The name `key` is stored under (`M.base_layer.weight` for a PEFT-wrapped `M.weight`).
    pub fn stored_key(&self, key: &str) -> String {
        if self.entries.contains_key(key) {
            return key.to_string();
        }
        self.lora_base(key).unwrap_or_else(|| key.to_string())
    }

    /// With [`Self::keep_lora`]: the LoRA pair of `module`, or `None` when it has none.
    pub fn take_lora(&mut self, module: &str) -> Result<Option<LoraPair>, WeightsError> {
        if !self.keep_lora {
            return Ok(None);
        }
        let Some(a_key) = self.adapter_key(module, "lora_A") else {
            return Ok(None);
        };
        let b_key = a_key.replacen(".lora_A.", ".lora_B.", 1);
        let (a_shape, a) = self.raw(&a_key)?;
        let (b_shape, b) = self.raw(&b_key)?;
        let rank = a_shape[0];
        if b_shape.get(1) != Some(&rank) {
            return Err(self.key_error(&b_key, format!("LoRA B {b_shape:?} does not follow A {a_shape:?}")));
        }
        Ok(Some(LoraPair {
            a,
            a_shape,
            a_key,
            b,
            b_shape,
            b_key,
            scale: self.lora_alpha / rank as f32,
        }))
    }

    fn adapter_key(&self, module: &str, which: &str) -> Option<String> {
        let prefix = format!("{module}.{which}.");
        self.entries
            .range(prefix.clone()..)
            .next()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(&prefix))
            .cloned()
    }

    /// A float tensor of exactly `shape` on `device`.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightsError> {
        let values = self.take_values(key, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Fails on keys nobody asked for: they mean the file is for a different architecture.
    pub fn finish(&self) -> Result<(), WeightsError> {
        let unused: Vec<&String> = self
            .entries
            .keys()
            .filter(|k| !self.taken.contains(*k) && !self.ignorable.iter().any(|p| k.contains(p.as_str())))
            .collect();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(self.key_error(
                first,
                format!(
                    "unexpected key ({} unused in all, the model does not have this weight)",
                    unused.len()
                ),
            )),
        }
    }
}

fn decode(bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>, String> {
    let values = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => return Err(format!("dtype {other:?} is not a float type")),
    };
    Ok(values)
}
