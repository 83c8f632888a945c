//! `[[corps]]`: the Work WeChat apps (a corpid and one agent's secret) whose tokens the hub
//! keeps, unique by (corpid, agentid).

use std::collections::HashMap;

use super::error::{ConfigError, Place};
use super::source::{Node, Value};
use super::validate::{first_defined, Cx};
use super::{RefreshOverrides, Secret};
use crate::token::CorpTicketKind;

/// `[[corps]]`: one Work WeChat app (a corpid and one of its agents' secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpSettings {
    /// The enterprise's corpid.
    pub corpid: String,
    /// The app's agentid, as text (`1000002`); (corpid, agentid) is unique in the file.
    pub agentid: String,
    /// The app's secret: Work WeChat issues one token per (corpid, secret).
    pub secret: Secret,
    /// The JS-SDK tickets to keep fresh besides the access token.
    pub tickets: Vec<CorpTicketKind>,
    /// Refresh timing of this app's credentials, where it differs from `[refresh]`.
    pub refresh: RefreshOverrides,
}

const CORP_KEYS: &[&str] = &[
    "corpid",
    "agentid",
    "secret",
    "secret_file",
    "tickets",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];

impl Cx<'_> {
    pub(super) fn corps(&self, node: Option<&Node>) -> Result<Vec<CorpSettings>, ConfigError> {
        let mut corps = Vec::new();
        let mut first: HashMap<(String, String), &Place> = HashMap::new();
        for table in self.entries(node, "corps", CORP_KEYS)? {
            let corpid_node = self.required(&table, "corpid")?;
            let corpid = self.identifier(corpid_node, &table.key_path("corpid"))?;
            let agentid_node = self.required(&table, "agentid")?;
            let agentid_path = table.key_path("agentid");
            let agentid = match agentid_node.value {
                Value::Int(n) if n >= 0 => n.to_string(),
                Value::Int(n) => {
                    return Err(self.err(
                        &agentid_node.place,
                        agentid_path,
                        format!("{n} is negative"),
                    ))
                }
                Value::Str(_) => self.identifier(agentid_node, &agentid_path)?,
                ref other => {
                    return Err(self.err(
                        &agentid_node.place,
                        agentid_path,
                        format!(
                            "expected a string or an integer, found {}",
                            other.type_name()
                        ),
                    ))
                }
            };
            let pair = (corpid.clone(), agentid.clone());
            if let Some(place) = first.get(&pair) {
                return Err(self.err(
                    &agentid_node.place,
                    agentid_path,
                    format!(
                        "duplicate corp app \"{corpid}/{agentid}\" (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            first.insert(pair, &agentid_node.place);
            let secret = self.secret(&table)?;
            let tickets = match table.get("tickets") {
                Some(node) => self.string_set(node, &table.key_path("tickets"), |text| {
                    text.parse::<CorpTicketKind>().map_err(|_| {
                        format!("unknown ticket {text:?}; expected \"jsapi\" or \"agent_config\"")
                    })
                })?,
                None => Vec::new(),
            };
            let refresh = self.refresh_overrides(&table)?;
            corps.push(CorpSettings {
                corpid,
                agentid,
                secret,
                tickets,
                refresh,
            });
        }
        Ok(corps)
    }
}
