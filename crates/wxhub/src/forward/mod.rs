//! Calls forwarded to WeChat on a consumer's behalf, below both the gateway listeners and the
//! main API's `/v1/…/wechat/…` route, which share it. See `docs/architecture.md#gateway`.
//!
//! The parts, one concern each:
//! - [`proxy`] — the outgoing call, streamed to WeChat and back, and its answer inspected;
//! - [`heal`] — a call refused for a dead hub-served token: one refresh, one replay;
//! - [`reply`] — WeChat's answer shapes; [`query`] — query strings;
//! - [`transport`] — the HTTP client that reaches WeChat; [`pool`] — its connections.

pub mod heal;
pub mod pool;
pub mod proxy;
pub mod query;
pub mod reply;
pub mod transport;

pub use proxy::{Forwarded, Forwarder, Outgoing};
pub use reply::Host;
