//! `[[apps]]`: the official accounts and mini programs whose tokens the hub keeps, each with its
//! token mode and its JS-SDK tickets.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::error::{ConfigError, Place};
use super::source::Node;
use super::validate::{first_defined, Cx};
use super::{RefreshOverrides, Secret};
use crate::token::TicketKind;

/// How an official account's access token is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TokenMode {
    /// `cgi-bin/stable_token`: rotation only near expiry, safe alongside other fetchers (default).
    #[default]
    Stable,
    /// `cgi-bin/token`: every fetch rotates the token (for accounts that must keep the old API).
    Legacy,
}

/// `[[apps]]`: one official account or mini program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSettings {
    /// The account's appid; unique in the file.
    pub appid: String,
    /// The AppSecret the tokens are fetched with.
    pub secret: Secret,
    /// Which token endpoint to use.
    pub mode: TokenMode,
    /// The JS-SDK tickets to keep fresh besides the access token.
    pub tickets: Vec<TicketKind>,
    /// Refresh timing of this app's credentials, where it differs from `[refresh]`.
    pub refresh: RefreshOverrides,
}

impl TokenMode {
    /// The mode as the configuration spells it: `stable` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Stable => "stable",
            TokenMode::Legacy => "legacy",
        }
    }
}

impl FromStr for TokenMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stable" => Ok(TokenMode::Stable),
            "legacy" => Ok(TokenMode::Legacy),
            other => Err(format!(
                "unknown mode {other:?}; expected \"stable\" or \"legacy\""
            )),
        }
    }
}

impl fmt::Display for TokenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const APP_KEYS: &[&str] = &[
    "appid",
    "secret",
    "secret_file",
    "mode",
    "tickets",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];

impl Cx<'_> {
    pub(super) fn apps(&self, node: Option<&Node>) -> Result<Vec<AppSettings>, ConfigError> {
        let mut apps = Vec::new();
        let mut first: HashMap<String, &Place> = HashMap::new();
        for table in self.entries(node, "apps", APP_KEYS)? {
            let appid_node = self.required(&table, "appid")?;
            let appid_path = table.key_path("appid");
            let appid = self.identifier(appid_node, &appid_path)?;
            if let Some(place) = first.get(&appid) {
                return Err(self.err(
                    &appid_node.place,
                    appid_path,
                    format!(
                        "duplicate appid {appid:?} (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            first.insert(appid.clone(), &appid_node.place);
            let secret = self.secret(&table)?;
            let mode = match table.get("mode") {
                Some(node) => {
                    let path = table.key_path("mode");
                    let text = self.string(node, &path)?;
                    text.parse::<TokenMode>()
                        .map_err(|what| self.err(&node.place, path, what))?
                }
                None => TokenMode::default(),
            };
            let tickets = match table.get("tickets") {
                Some(node) => self.string_set(node, &table.key_path("tickets"), |text| {
                    text.parse::<TicketKind>().map_err(|_| {
                        format!("unknown ticket {text:?}; expected \"jsapi\" or \"wx_card\"")
                    })
                })?,
                None => Vec::new(),
            };
            let refresh = self.refresh_overrides(&table)?;
            apps.push(AppSettings {
                appid,
                secret,
                mode,
                tickets,
                refresh,
            });
        }
        Ok(apps)
    }
}
