//! What operators work with: the status page (`GET /status`) in a real browser — headless
//! Chromium, driven over the DevTools protocol, against a hub running on `wechat-mock` — the
//! refresh history it charts, and the Prometheus alert rules and dashboard under docs/.

pub use wxhub_test_support::helpers;
pub use wxhub_test_support::platform as platform_support;

mod browser;
mod monitoring;
mod page;
