//! Secrets and where they come from: [`Secret`] (never printed), read inline, from `"${ENV}"` or
//! from a `*_file` by every section that has one, and `[secrets] master_key`, which seals the
//! secrets the hub writes itself.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;

use super::error::ConfigError;
use super::source::Node;
use super::validate::{Cx, Table};

/// A secret value (AppSecret, corp secret): `Debug` and `Display` print `***` and nothing else,
/// so a secret cannot leak through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

/// Where a [`Secret`] was read from; shown by `check-config`, never the value itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration file (or built in code).
    Inline,
    /// `secret = "${NAME}"`: the environment variable `NAME`.
    Env(String),
    /// `secret_file = "…"`: the resolved path of that file.
    File(PathBuf),
}

impl Secret {
    /// Wraps a secret value given in code (its source is [`SecretSource::Inline`]).
    pub fn new(value: String) -> Self {
        Secret {
            value,
            source: SecretSource::Inline,
        }
    }

    pub(crate) fn with_source(value: String, source: SecretSource) -> Self {
        Secret { value, source }
    }

    /// The secret value itself, for the one place that must send it (the upstream request).
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the secret was read from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `[secrets]`: what protects secrets the hub writes to its store itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SecretsSettings {
    /// `master_key`: 32 bytes (base64 in the file). AppSecrets given through the admin API are
    /// sealed with it before they reach any store; without it the admin API refuses secrets.
    pub master_key: Option<MasterKey>,
}

/// The 32-byte key of `[secrets] master_key`. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl MasterKey {
    /// Wraps raw key bytes (tests and tools; the file gives base64).
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The key bytes, for the one place that seals and unseals.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

const SECRETS_KEYS: &[&str] = &["master_key", "master_key_file"];

/// `${NAME}` → `Some(Ok(NAME))`; something that starts like a reference but is not one →
/// `Some(Err(()))`; anything else (an inline secret) → `None`.
fn env_reference(text: &str) -> Option<Result<&str, ()>> {
    let inner = text.strip_prefix("${")?;
    let name = inner.strip_suffix('}');
    Some(match name {
        Some(name)
            if !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(name)
        }
        _ => Err(()),
    })
}

impl Cx<'_> {
    /// `secret = "inline"`, `secret = "${ENV_NAME}"` or `secret_file = "path"`: exactly one.
    /// No message ever includes the value.
    pub(super) fn secret(&self, table: &Table) -> Result<Secret, ConfigError> {
        self.secret_named(table, "secret")
    }

    /// [`Cx::secret`] under the key `name` (and `{name}_file`).
    pub(super) fn secret_named(&self, table: &Table, name: &str) -> Result<Secret, ConfigError> {
        let secret_path = table.key_path(name);
        let file_key = format!("{name}_file");
        let file_path = table.key_path(&file_key);
        match (table.get(name), table.get(&file_key)) {
            (Some(_), Some(file)) => Err(self.err(
                &file.place,
                file_path,
                format!("give the secret either as `{name}` or as `{file_key}`, not both"),
            )),
            (None, None) => Err(self.err(
                table.place,
                secret_path,
                format!("required key is missing: give `{name} = \"${{ENV_NAME}}\"`, `{name} = \"…\"` or `{file_key} = \"path\"`"),
            )),
            (Some(node), None) => {
                let text = self.string(node, &secret_path)?;
                match env_reference(text) {
                    Some(Ok(name)) => match (self.env)(name) {
                        None => Err(self.err(
                            &node.place,
                            secret_path,
                            format!("environment variable {name} is not set"),
                        )),
                        Some(value) if value.trim().is_empty() => Err(self.err(
                            &node.place,
                            secret_path,
                            format!("environment variable {name} is empty"),
                        )),
                        Some(value) => Ok(Secret::with_source(
                            value.trim().to_string(),
                            SecretSource::Env(name.to_string()),
                        )),
                    },
                    Some(Err(())) => Err(self.err(
                        &node.place,
                        secret_path,
                        "malformed environment reference: write \"${NAME}\" (letters, digits and '_')",
                    )),
                    None if text.trim().is_empty() => {
                        Err(self.err(&node.place, secret_path, "must not be empty"))
                    }
                    None => Ok(Secret::with_source(
                        text.trim().to_string(),
                        SecretSource::Inline,
                    )),
                }
            }
            (None, Some(node)) => {
                let text = self.string(node, &file_path)?;
                if text.is_empty() {
                    return Err(self.err(&node.place, file_path, "must not be empty"));
                }
                let path = self.resolve(text);
                let content = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        &node.place,
                        &file_path,
                        format!("cannot read secret file {}: {e}", path.display()),
                    )
                })?;
                let value = content.trim();
                if value.is_empty() {
                    return Err(self.err(
                        &node.place,
                        file_path,
                        format!("secret file {} is empty", path.display()),
                    ));
                }
                Ok(Secret::with_source(
                    value.to_string(),
                    SecretSource::File(path),
                ))
            }
        }
    }

    /// `[secrets]`: `master_key` (or `master_key_file`), base64 of exactly 32 bytes.
    pub(super) fn secrets(&self, node: Option<&Node>) -> Result<SecretsSettings, ConfigError> {
        let Some(node) = node else {
            return Ok(SecretsSettings::default());
        };
        let table = self.table(node, "secrets".into(), SECRETS_KEYS)?;
        if table.get("master_key").is_none() && table.get("master_key_file").is_none() {
            return Ok(SecretsSettings::default());
        }
        let secret = self.secret_named(&table, "master_key")?;
        let place = table
            .get("master_key")
            .or_else(|| table.get("master_key_file"))
            .map_or(table.place, |n| &n.place);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                self.err(
                    place,
                    table.key_path("master_key"),
                    "must be 32 bytes in base64 (44 characters); make one with `openssl rand -base64 32`",
                )
            })?;
        Ok(SecretsSettings {
            master_key: Some(MasterKey(bytes)),
        })
    }
}
