//! Test-only support for wxhub's tests: never published, never a dependency of anything but
//! tests (`[dev-dependencies]`), so nothing here is compiled into the hub.
//!
//! It is one crate rather than files each test binary includes, so every test binary (and the
//! store's unit tests) builds the same code once, with no path includes and no dead-code
//! allowances for the parts a given binary does not use.
//!
//! - [`redis`]: a real `redis-server` (shared, private, TLS, or a Sentinel group).
//! - [`faulty_store`]: a store with faults a test switches on (a slow write, failing reads).
//! - [`helpers`]: the mock and the hub started in-process ([`helpers::spawn_app`],
//!   [`helpers::TestHub`], [`helpers::HubOptions`]) and condition waits with deadlines.
//! - [`logs`]: the hub's log lines, captured by a test that must show a value never reaches them.
//! - [`in_process`]: WeChat in process (the mock's routes behind the hub's WeChat client), for
//!   engine tests on tokio's paused clock.
//! - [`platform`]: what the third-party platform tests share (the push relay, the platform's
//!   settings and mocks).
//! - [`suites`]: what the Work WeChat suite tests share (the suite's and the provider's settings,
//!   a mock that pushes suite tickets through the relay, installs).

pub mod faulty_store;
pub mod helpers;
pub mod in_process;
pub mod logs;
pub mod platform;
pub mod redis;
pub mod suites;
