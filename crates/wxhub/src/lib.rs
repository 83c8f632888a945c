//! wxhub: a WeChat credential hub (中控服务器).
//!
//! One service holds the AppSecrets, keeps every WeChat credential fresh and hands the credentials
//! to any number of business servers, which never call WeChat's token endpoints themselves.
//!
//! The modules follow the architecture of docs/architecture.md#parts:
//! - [`configuration`] — the TOML file and its environment overrides;
//! - [`credential`] — typed credential keys and tokens;
//! - [`upstream`] — WeChat's HTTP endpoints, with classified errors;
//! - [`store`] — where tokens live (memory, SQLite, Redis for several instances);
//! - [`engine`] — the refresh scheduler, single-flight and invalidation;
//! - [`hub`] — the read side: pre-rendered tokens served at memory speed;
//! - [`platform`] — the third-party platform: pushes, authorizers, revocation;
//! - [`history`] — each credential's refreshes of the last hour, for operators;
//! - [`api`] — HTTP routes, consumer authentication, health and metrics;
//! - [`gateway`] — WeChat's own API shape, with tokens handled, for unmodified SDKs;
//! - [`startup`] — wires them together into a running application;
//! - [`fdlimit`] — the file-descriptor limit, raised at start, and the connections it allows;
//! - [`demo`] — the hub against an in-process `wechat-mock`, nothing to configure.

pub mod allocator;
pub mod api;
pub mod audit;
pub mod background;
pub mod children;
pub mod clock;
pub mod configuration;
pub mod consumers;
pub mod control;
pub mod demo;
pub mod engine;
pub mod envelope;
pub mod fdlimit;
pub mod forward;
pub mod gateway;
pub mod history;
pub mod jssdk;
pub mod kinds;
pub mod metrics;
pub mod plan;
pub mod platform;
pub mod read;
pub mod registry;
pub mod seal;
pub mod startup;
pub mod store;
pub mod suites;
pub mod telemetry;
pub mod token;
pub mod upstream;
