//! wxhub: a WeChat credential hub (中控服务器).
//!
//! One service holds the AppSecrets, keeps every WeChat credential fresh and hands the credentials
//! to any number of business servers, which never call WeChat's token endpoints themselves.
//!
//! The modules follow the architecture of DESIGN §2:
//! - [`configuration`] — the TOML file and its environment overrides;
//! - [`credential`] — typed credential keys and tokens;
//! - [`upstream`] — WeChat's HTTP endpoints, with classified errors;
//! - [`store`] — where tokens live (memory, SQLite, Redis for several instances);
//! - [`engine`] — the refresh scheduler, single-flight and invalidation;
//! - [`hub`] — the read side: pre-rendered tokens served at memory speed;
//! - [`platform`] — the third-party platform: pushes, authorizers, revocation;
//! - [`api`] — HTTP routes, consumer authentication, health and metrics;
//! - [`startup`] — wires them together into a running application;
//! - [`demo`] — the hub against an in-process `wechat-mock`, nothing to configure.

pub mod api;
pub mod configuration;
pub mod control;
pub mod credential;
pub mod demo;
pub mod engine;
pub mod hub;
pub mod jssdk;
pub mod metrics;
pub mod platform;
pub mod registry;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod upstream;
