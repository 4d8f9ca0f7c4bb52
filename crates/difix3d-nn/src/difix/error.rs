//! Errors of the Difix network, its configs, its weights (a [`WeightsError`]) and its pipeline. Every
//! variant names the file or the key it is about, so a user can fix the problem without reading the
//! source.

use std::path::{Path, PathBuf};

use crate::nn::weights::WeightsError;

#[derive(Debug, thiserror::Error)]
pub enum DifixError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what the model layout says it should be.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// The model directory (or a part of it) is absent.
    #[error("{0}")]
    MissingWeights(String),
    /// A config value that breaks the architecture's rules ([`ConfigProblem`]).
    #[error("{path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A weight file of the model.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Inputs the pipeline cannot run on (sizes, reference counts, ...).
    #[error("{0}")]
    Input(String),
    /// The backend failed while the model ran (a device error, a result that cannot be read back).
    /// A backend that cannot run here at all is a [`crate::nn::backend::BackendError`].
    #[error("{0}")]
    Backend(String),
}

impl DifixError {
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
    /// fault as the weight file's: the message names the config the shapes came from too
    /// ([`WeightsError::built_from`]; a config value the network refused gets the same note).
    pub fn built_from(self, config: &Path) -> Self {
        match self {
            Self::Key { path, key, message } if !message.contains("finite") => Self::Key {
                path,
                key,
                message: format!("{message} (the shapes follow {})", config.display()),
            },
            Self::Weights(error) => Self::Weights(error.built_from(config)),
            other => other,
        }
    }
}

/// A model config value that breaks the architecture's rules: the key and the rule it breaks.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigProblem {
    pub key: &'static str,
    pub rule: String,
}

impl ConfigProblem {
    /// The error for `file` (the config's path, or its place in the model folder).
    pub fn into_error(self, file: impl AsRef<Path>) -> DifixError {
        DifixError::Key {
            path: file.as_ref().to_path_buf(),
            key: self.key.to_string(),
            message: self.rule,
        }
    }
}

/// Checks that `groups` is positive and divides each of `channels` (GroupNorm's rule).
pub(crate) fn check_groups(key: &'static str, groups: usize, channels: &[usize]) -> Result<(), ConfigProblem> {
    if groups == 0 {
        return Err(ConfigProblem {
            key,
            rule: "must be greater than 0".into(),
        });
    }
    match channels.iter().find(|&&c| c % groups != 0) {
        None => Ok(()),
        Some(c) => Err(ConfigProblem {
            key,
            rule: format!("{groups} must divide every block's channels (block_out_channels has {c})"),
        }),
    }
}

/// Checks that each `(key, value)` is greater than 0.
pub(crate) fn check_positive(values: &[(&'static str, usize)]) -> Result<(), ConfigProblem> {
    match values.iter().find(|(_, v)| *v == 0) {
        None => Ok(()),
        Some((key, _)) => Err(ConfigProblem {
            key,
            rule: "must be greater than 0".into(),
        }),
    }
}

/// Checks that a float setting is finite and greater than 0.
pub(crate) fn check_positive_f64(key: &'static str, value: f64) -> Result<(), ConfigProblem> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ConfigProblem {
            key,
            rule: format!("must be a finite number greater than 0, not {value}"),
        })
    }
}
