//! The one error type of configuration loading: every message names the file, the line (or the
//! environment variable) and the key.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// A line of the configuration file (1-based).
    Line(usize),
    /// An environment variable that overrode or supplied the value.
    Env(String),
    /// Nowhere in particular: the file as a whole, or a built-in default.
    Nowhere,
}

/// Why the configuration could not be loaded.
///
/// Displayed as `<file>:<line>: <key path>: <what is wrong>`, e.g.
/// `wxhub.toml:14: apps[1].appid: duplicate appid "wx12" (first defined at line 8)`. A value
/// taken from an environment variable is displayed as
/// `<file>: <key path> (from environment variable <NAME>): <what is wrong>`. The message never
/// contains a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    place: Place,
    key: Option<String>,
    message: String,
    /// Mistakes found in other sections of the same file, each displayed on a line of its own
    /// after this one, so that one run of `check-config` reports them all.
    others: Vec<ConfigError>,
}

impl ConfigError {
    pub(super) fn new(
        file: &Path,
        place: Place,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            place,
            key,
            message: message.into(),
            others: Vec::new(),
        }
    }

    /// The first of `errors`, carrying the rest (there is at least one).
    pub(super) fn all(mut errors: Vec<ConfigError>) -> ConfigError {
        let mut first = errors.remove(0);
        first.others = errors;
        first
    }

    /// The mistakes found besides this one, in file order of their sections.
    pub fn others(&self) -> &[ConfigError] {
        &self.others
    }

    /// The configuration file the error is about (as named by the caller of `load`/`parse`).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The 1-based line of the offending value, when it came from the file.
    pub fn line(&self) -> Option<usize> {
        match self.place {
            Place::Line(line) => Some(line),
            _ => None,
        }
    }

    /// The environment variable the offending value came from, if it did.
    pub fn env_var(&self) -> Option<&str> {
        match &self.place {
            Place::Env(var) => Some(var),
            _ => None,
        }
    }

    /// The dotted key path of the offending value, e.g. `apps[1].appid`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Place::Line(line) = self.place {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        if let Place::Env(var) = &self.place {
            write!(f, " (from environment variable {var})")?;
        }
        write!(f, ": {}", self.message)?;
        for other in &self.others {
            write!(f, "\n{other}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
