//! `[[suites]]` and `[[providers]]`: Work WeChat's third-party side (企业微信服务商). A suite is a
//! third-party app (第三方应用) or a 代开发 template: Work WeChat pushes its suite ticket to the
//! command callback URL, signed with the suite's Token and sealed with its EncodingAESKey, and
//! every corp that installs it becomes an auth corp of the hub. A provider is the service
//! provider's own credential. See docs/suites.md.

use std::collections::HashMap;

use super::error::{ConfigError, Place};
use super::source::Node;
use super::validate::{first_defined, Cx};
use super::{RefreshOverrides, Secret};
use crate::token::CorpTicketKind;

/// `[[suites]]`: one suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteSettings {
    /// The suite's id (`ww…` or `tj…`): the receive id of every push, unique in the file.
    pub suite_id: String,
    /// The suite's secret (`suite_secret`).
    pub secret: Secret,
    /// The command callback's Token: signs every push.
    pub token: Secret,
    /// The command callback's 43-character EncodingAESKey: seals every push.
    pub encoding_aes_key: Secret,
    /// The key used before the last change in the provider console, tried when the current one
    /// fails, so pushes sealed during a key change are not lost.
    pub previous_encoding_aes_key: Option<Secret>,
    /// JS-SDK tickets kept fresh for every corp that installed the suite.
    pub corp_tickets: Vec<CorpTicketKind>,
    /// Refresh timing of the suite token and the auth corps' credentials.
    pub refresh: RefreshOverrides,
}

/// `[[providers]]`: one service provider's own credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSettings {
    /// The provider's corpid, unique in the file.
    pub corpid: String,
    /// The provider secret (`provider_secret`).
    pub secret: Secret,
    /// Refresh timing of the provider token.
    pub refresh: RefreshOverrides,
}

const SUITE_KEYS: &[&str] = &[
    "suite_id",
    "secret",
    "secret_file",
    "token",
    "token_file",
    "encoding_aes_key",
    "encoding_aes_key_file",
    "previous_encoding_aes_key",
    "previous_encoding_aes_key_file",
    "corp_tickets",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];

const PROVIDER_KEYS: &[&str] = &[
    "corpid",
    "secret",
    "secret_file",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];

impl Cx<'_> {
    pub(super) fn suites(&self, node: Option<&Node>) -> Result<Vec<SuiteSettings>, ConfigError> {
        let mut suites = Vec::new();
        let mut first: HashMap<String, &Place> = HashMap::new();
        for table in self.entries(node, "suites", SUITE_KEYS)? {
            let id_node = self.required(&table, "suite_id")?;
            let id_path = table.key_path("suite_id");
            let suite_id = self.identifier(id_node, &id_path)?;
            if let Some(place) = first.get(&suite_id) {
                return Err(self.err(
                    &id_node.place,
                    id_path,
                    format!(
                        "duplicate suite_id {suite_id:?} (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            first.insert(suite_id.clone(), &id_node.place);
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
            let corp_tickets = match table.get("corp_tickets") {
                Some(node) => self.string_set(node, &table.key_path("corp_tickets"), |text| {
                    text.parse::<CorpTicketKind>().map_err(|_| {
                        format!("unknown ticket {text:?}; expected \"jsapi\" or \"agent_config\"")
                    })
                })?,
                None => Vec::new(),
            };
            let refresh = self.refresh_overrides(&table)?;
            suites.push(SuiteSettings {
                suite_id,
                secret,
                token,
                encoding_aes_key,
                previous_encoding_aes_key,
                corp_tickets,
                refresh,
            });
        }
        Ok(suites)
    }

    pub(super) fn providers(
        &self,
        node: Option<&Node>,
    ) -> Result<Vec<ProviderSettings>, ConfigError> {
        let mut providers = Vec::new();
        let mut first: HashMap<String, &Place> = HashMap::new();
        for table in self.entries(node, "providers", PROVIDER_KEYS)? {
            let id_node = self.required(&table, "corpid")?;
            let id_path = table.key_path("corpid");
            let corpid = self.identifier(id_node, &id_path)?;
            if let Some(place) = first.get(&corpid) {
                return Err(self.err(
                    &id_node.place,
                    id_path,
                    format!(
                        "duplicate provider corpid {corpid:?} (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            first.insert(corpid.clone(), &id_node.place);
            let secret = self.secret(&table)?;
            let refresh = self.refresh_overrides(&table)?;
            providers.push(ProviderSettings {
                corpid,
                secret,
                refresh,
            });
        }
        Ok(providers)
    }
}
