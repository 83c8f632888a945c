//! Integration tests: `wechat-mock` and the hub run in-process on port 0 with lifetimes of a few
//! seconds; assertions are on what WeChat saw (the mock's counters) and what consumers saw.

pub use wxhub_test_support::helpers;
pub use wxhub_test_support::platform as platform_support;
pub use wxhub_test_support::suites as suites_support;

mod auth;
mod client;
mod consumers;
mod corps;
mod demo;
mod faults;
mod gateway;
mod gateway_metrics;
mod gateway_upstream;
mod hardening;
mod invalidation;
mod kinds;
mod paused_clock;
mod platform;
mod refresh_cycle;
mod restart;
mod rollover;
mod runtime;
mod runtime_suites;
mod sdk;
mod suites;
mod tickets;
mod watch;
