//! `[server]`: the HTTP listener consumers talk to, its timeouts and its connection limits.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::ConfigError;
use super::source::{section_keys, Node};
use super::validate::Cx;

/// `[server]`: the HTTP listener consumers talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// The address the API binds to (default `127.0.0.1:8080`: private unless asked otherwise).
    pub listen: SocketAddr,
    /// The longest any request may take before it is answered with an error (default 10 s).
    /// Also how long shutdown waits for requests in progress before closing their connections.
    pub request_timeout: Duration,
    /// `events_listen`: an optional second listener serving only WeChat's event receiver, so
    /// the consumer API can stay on a private address while WeChat reaches the receiver.
    pub events_listen: Option<SocketAddr>,
    /// How long a client has to send a request's headers (default 10 s): from the connection's
    /// start for its first request, from the first byte for later ones. Slower clients are
    /// disconnected, so a trickle of header bytes cannot hold a connection open.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (default 60 s).
    pub idle_timeout: Duration,
    /// How many connections are served at once; more are answered 503 and closed. `None` (the
    /// default) derives it from the file-descriptor limit, so connections alone can never use up
    /// the descriptors the store and the WeChat client need.
    pub max_connections: Option<usize>,
    /// How many watch streams one consumer may hold open at once (default 64), below the
    /// process-wide cap, so that one key cannot take every slot and shut the others out.
    pub max_watchers_per_consumer: usize,
}

/// The default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// See [`ServerSettings::max_watchers_per_consumer`].
pub const DEFAULT_MAX_WATCHERS_PER_CONSUMER: usize = 64;

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            request_timeout: Duration::from_secs(10),
            events_listen: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_watchers_per_consumer: DEFAULT_MAX_WATCHERS_PER_CONSUMER,
        }
    }
}

impl Cx<'_> {
    pub(super) fn server(&self, node: Option<&Node>) -> Result<ServerSettings, ConfigError> {
        let mut server = ServerSettings::default();
        let Some(node) = node else {
            return Ok(server);
        };
        let table = self.table(node, "server".into(), &section_keys("server"))?;
        if let Some(node) = table.get("listen") {
            let path = table.key_path("listen");
            let text = self.string(node, &path)?;
            server.listen = text.parse().map_err(|_| {
                self.err(
                    &node.place,
                    &path,
                    format!(
                        "invalid address {text:?}; expected an IP address and port, e.g. \"127.0.0.1:8080\""
                    ),
                )
            })?;
        }
        if let Some(node) = table.get("request_timeout") {
            server.request_timeout =
                self.positive_duration(node, &table.key_path("request_timeout"))?;
        }
        if let Some(node) = table.get("events_listen") {
            let path = table.key_path("events_listen");
            let text = self.string(node, &path)?;
            server.events_listen = Some(text.parse().map_err(|_| {
                self.err(
                    &node.place,
                    &path,
                    format!(
                        "invalid address {text:?}; expected an IP address and port, e.g. \"0.0.0.0:8443\""
                    ),
                )
            })?);
        }
        if let Some(node) = table.get("header_read_timeout") {
            server.header_read_timeout =
                self.positive_duration(node, &table.key_path("header_read_timeout"))?;
        }
        if let Some(node) = table.get("idle_timeout") {
            server.idle_timeout = self.positive_duration(node, &table.key_path("idle_timeout"))?;
        }
        if let Some(node) = table.get("max_connections") {
            server.max_connections =
                Some(self.positive_count(node, table.key_path("max_connections"))?);
        }
        if let Some(node) = table.get("max_watchers_per_consumer") {
            server.max_watchers_per_consumer =
                self.positive_count(node, table.key_path("max_watchers_per_consumer"))?;
        }
        Ok(server)
    }
}
