//! [`ConfigError`]: what is wrong with a configuration, by key path.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error. Display: `<file>: <key path>: <message>` (file and key path are
/// omitted when unknown / not applicable).
#[derive(Debug)]
pub struct ConfigError {
    file: Option<PathBuf>,
    path: String,
    message: String,
}

impl ConfigError {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub(super) fn with_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }

    /// The config file, when loaded with [`load_file`](super::load_file).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The full key path, e.g. `gateway.upstream.url` (empty for file-level errors such as
    /// YAML syntax errors).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
