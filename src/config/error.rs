//! [`ConfigError`]: everything wrong with a configuration, each [`Problem`] by key path.

use std::fmt;
use std::path::{Path, PathBuf};

/// One bad setting. Display: `<key path>: <message>` (just the message when the problem is
/// not one key's, e.g. a YAML syntax error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    path: String,
    message: String,
}

impl Problem {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
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

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration was refused: every problem found, in the order of the file's
/// sections. A file that YAML or serde cannot read has one (serde stops at its first);
/// values that read but are invalid are all reported.
///
/// Display: one line per problem, `<file>: <key path>: <message>` (file and key path are
/// omitted when unknown / not applicable).
#[derive(Debug)]
pub struct ConfigError {
    file: Option<PathBuf>,
    // Split so that there is always a first problem for `path()` and `message()`.
    first: Problem,
    more: Vec<Problem>,
}

impl ConfigError {
    /// `None` when there are no problems.
    pub(super) fn from_problems(problems: Vec<Problem>) -> Option<Self> {
        let mut problems = problems.into_iter();
        let first = problems.next()?;
        Some(ConfigError {
            file: None,
            first,
            more: problems.collect(),
        })
    }

    pub(super) fn with_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }

    /// The config file, when loaded with [`load_file`](super::load_file).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Every problem, in the order of the file's sections.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        std::iter::once(&self.first).chain(&self.more)
    }

    /// The first problem's key path, e.g. `gateway.upstream.url` (empty for file-level errors
    /// such as YAML syntax errors).
    pub fn path(&self) -> &str {
        self.first.path()
    }

    /// The first problem's message.
    pub fn message(&self) -> &str {
        self.first.message()
    }
}

impl From<Problem> for ConfigError {
    fn from(first: Problem) -> Self {
        ConfigError {
            file: None,
            first,
            more: Vec::new(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if let Some(file) = &self.file {
                write!(f, "{}: ", file.display())?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
