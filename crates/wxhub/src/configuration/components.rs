//! `[[components]]`: the third-party platforms (开放平台) whose pushes the hub receives, with the
//! Token and EncodingAESKeys that sign and seal them, and whose authorizers' tokens it keeps.

use std::collections::HashMap;

use super::error::{ConfigError, Place};
use super::source::Node;
use super::validate::{first_defined, Cx, Table};
use super::{AppSettings, RefreshOverrides, Secret};
use crate::token::TicketKind;

/// `[[components]]`: one third-party platform (开放平台 component).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSettings {
    /// The platform's appid; unique in the file and distinct from every `[[apps]]` appid.
    pub component_appid: String,
    /// The platform's AppSecret (`component_appsecret`).
    pub secret: Secret,
    /// The message-check Token set on the platform: signs every push.
    pub token: Secret,
    /// The 43-character EncodingAESKey that seals every push.
    pub encoding_aes_key: Secret,
    /// The key used before the last change in WeChat's console, tried when the current one
    /// fails, so pushes sealed during a key change are not lost.
    pub previous_encoding_aes_key: Option<Secret>,
    /// JS-SDK tickets kept fresh for every authorizer of this platform.
    pub authorizer_tickets: Vec<TicketKind>,
    /// Refresh timing of the component token and the authorizers' credentials.
    pub refresh: RefreshOverrides,
}

const COMPONENT_KEYS: &[&str] = &[
    "component_appid",
    "secret",
    "secret_file",
    "token",
    "token_file",
    "encoding_aes_key",
    "encoding_aes_key_file",
    "previous_encoding_aes_key",
    "previous_encoding_aes_key_file",
    "authorizer_tickets",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];

impl Cx<'_> {
    pub(super) fn components(
        &self,
        node: Option<&Node>,
        apps: &[AppSettings],
    ) -> Result<Vec<ComponentSettings>, ConfigError> {
        let mut components = Vec::new();
        let mut first: HashMap<String, &Place> = HashMap::new();
        for table in self.entries(node, "components", COMPONENT_KEYS)? {
            let appid_node = self.required(&table, "component_appid")?;
            let appid_path = table.key_path("component_appid");
            let component_appid = self.identifier(appid_node, &appid_path)?;
            if let Some(place) = first.get(&component_appid) {
                return Err(self.err(
                    &appid_node.place,
                    appid_path,
                    format!(
                        "duplicate component_appid {component_appid:?} (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            if apps.iter().any(|a| a.appid == component_appid) {
                return Err(self.err(
                    &appid_node.place,
                    appid_path,
                    format!("{component_appid:?} is also an [[apps]] appid; a platform's appid is its own"),
                ));
            }
            first.insert(component_appid.clone(), &appid_node.place);
            let secret = self.secret(&table)?;
            let token = self.secret_named(&table, "token")?;
            let encoding_aes_key = self.aes_key(&table, "encoding_aes_key")?;
            let previous_encoding_aes_key = if table.get("previous_encoding_aes_key").is_some()
                || table.get("previous_encoding_aes_key_file").is_some()
            {
                Some(self.aes_key(&table, "previous_encoding_aes_key")?)
            } else {
                None
            };
            let authorizer_tickets = match table.get("authorizer_tickets") {
                Some(node) => {
                    self.string_set(node, &table.key_path("authorizer_tickets"), |text| {
                        text.parse::<TicketKind>().map_err(|_| {
                            format!("unknown ticket {text:?}; expected \"jsapi\" or \"wx_card\"")
                        })
                    })?
                }
                None => Vec::new(),
            };
            let refresh = self.refresh_overrides(&table)?;
            components.push(ComponentSettings {
                component_appid,
                secret,
                token,
                encoding_aes_key,
                previous_encoding_aes_key,
                authorizer_tickets,
                refresh,
            });
        }
        Ok(components)
    }

    /// An EncodingAESKey given like a secret under `name`: 43 characters of base64 that decode
    /// to 32 bytes. The message never includes the value.
    pub(super) fn aes_key(&self, table: &Table, name: &str) -> Result<Secret, ConfigError> {
        let secret = self.secret_named(table, name)?;
        if wechat_crypto::EncodingAesKey::parse(secret.expose()).is_err() {
            let place = table
                .get(name)
                .or_else(|| table.get(&format!("{name}_file")))
                .map_or(table.place, |n| &n.place);
            return Err(self.err(
                place,
                table.key_path(name),
                "must be the platform's 43-character EncodingAESKey (letters and digits); the value is not shown",
            ));
        }
        Ok(secret)
    }
}
