//! Integration tests: every rule of the mock, driven through HTTP against an in-process server
//! with lifetimes of a few seconds. Each test starts its own server, so they run in parallel.

mod authorizers;
mod business;
mod cli;
mod common;
mod component;
mod faults;
mod platform;
mod quota;
mod server;
mod stable;
mod suite_receiver;
mod suites;
mod tickets;
mod token;
mod work;
