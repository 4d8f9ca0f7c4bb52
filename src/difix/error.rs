//! Errors of the Difix network, its weights and its pipeline. Every variant names the file or the
//! key it is about, so a user can fix the problem without reading the source.

use std::path::{Path, PathBuf};

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
    /// A weight has the wrong shape, is missing or is unexpected.
    #[error("{path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// Inputs the pipeline cannot run on (sizes, reference counts, ...).
    #[error("{0}")]
    Input(String),
    /// The requested backend cannot run on this machine.
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
}
