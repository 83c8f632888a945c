//! Several hub instances on one Redis behave as one hub: one upstream refresh per credential per
//! cycle, one refresh per invalidation storm whichever instances the reports land on, and no
//! consumer-visible failure when an instance dies or Redis goes away for a while.
//!
//! Every test runs three instances against one `wechat-mock` and one real `redis-server`, and
//! asserts on what WeChat saw (the mock's counters) and what consumers saw. Instances run
//! in-process (each with its own Redis connections, as separate processes would have), except
//! where an instance must really die: there they are child processes of the `wxhub` binary.

pub use wxhub_test_support::helpers;
pub use wxhub_test_support::platform as platform_support;
pub use wxhub_test_support::redis as redis_server;
pub use wxhub_test_support::suites as suites_support;

mod common;

mod cycle;
mod lease_holder;
mod platform;
mod platform_crash;
mod process;
mod redis_access;
mod redis_outage;
mod runtime;
mod sentinel;
mod storm;
mod suite_crash;
mod tickets;
mod watch;
