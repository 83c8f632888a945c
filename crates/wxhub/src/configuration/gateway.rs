//! `[gateway]`: the optional listeners shaped like WeChat's own API hosts, and the byte sizes that
//! bound what they hold in memory.

use std::net::SocketAddr;

use super::error::ConfigError;
use super::source::{section_keys, Node, Value};
use super::validate::Cx;

/// `[gateway]`: listeners that answer like api.weixin.qq.com and qyapi.weixin.qq.com, so that an
/// unmodified WeChat SDK uses the hub by changing its base URL (docs/architecture.md#gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Where the official-account gateway listens (`None`: no such listener).
    pub listen: Option<SocketAddr>,
    /// Where the Work WeChat gateway listens (`None`: no such listener).
    pub work_listen: Option<SocketAddr>,
    /// The largest request body the gateway accepts (default 10 MiB); bodies are held up to this
    /// size so that a call refused for a dead token can be replayed.
    pub max_body: usize,
    /// How many bytes of request bodies all calls together may hold for a replay (default
    /// 64 MiB). A call whose body does not fit goes to WeChat streamed, without a replay: many
    /// large uploads at once cannot take the process's memory.
    pub replay_memory: usize,
}

/// The default `[gateway] max_body`: 10 MiB, WeChat's own limit for most media uploads.
pub const DEFAULT_GATEWAY_MAX_BODY: usize = 10 * 1024 * 1024;

/// The default `[gateway] replay_memory`.
pub const DEFAULT_GATEWAY_REPLAY_MEMORY: usize = 64 * 1024 * 1024;

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: None,
            work_listen: None,
            max_body: DEFAULT_GATEWAY_MAX_BODY,
            replay_memory: DEFAULT_GATEWAY_REPLAY_MEMORY,
        }
    }
}

impl Cx<'_> {
    /// `[gateway]`: two optional listen addresses and a body size (`"10MiB"`, `"512KiB"`, or a
    /// number of bytes).
    pub(super) fn gateway(&self, node: Option<&Node>) -> Result<GatewaySettings, ConfigError> {
        let mut gateway = GatewaySettings::default();
        let Some(node) = node else {
            return Ok(gateway);
        };
        let table = self.table(node, "gateway".into(), &section_keys("gateway"))?;
        for key in ["listen", "work_listen"] {
            let Some(node) = table.get(key) else { continue };
            let path = table.key_path(key);
            let text = self.string(node, &path)?;
            let address = text.parse().map_err(|_| {
                self.err(
                    &node.place,
                    &path,
                    format!(
                        "invalid address {text:?}; expected an IP address and port, e.g. \"127.0.0.1:8081\""
                    ),
                )
            })?;
            match key {
                "listen" => gateway.listen = Some(address),
                _ => gateway.work_listen = Some(address),
            }
        }
        if let Some(node) = table.get("max_body") {
            gateway.max_body = self.size(node, table.key_path("max_body"))?;
        }
        if let Some(node) = table.get("replay_memory") {
            gateway.replay_memory = self.size(node, table.key_path("replay_memory"))?;
        }
        Ok(gateway)
    }

    /// A positive size in bytes: `"10MiB"`, `"512KiB"` or a number of bytes.
    fn size(&self, node: &Node, path: String) -> Result<usize, ConfigError> {
        let size = match &node.value {
            Value::Str(text) => parse_size(text),
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        };
        size.filter(|n| *n > 0).ok_or_else(|| {
            self.err(
                &node.place,
                path,
                "expected a positive size such as \"10MiB\", \"512KiB\" or a number of bytes",
            )
        })
    }
}

/// A byte size: digits, optionally followed by `B`, `KiB`, `MiB` or `GiB`.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: usize = digits.parse().ok()?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    count.checked_mul(unit)
}
