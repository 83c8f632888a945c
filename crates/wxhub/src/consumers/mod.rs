//! Consumers: who may read which account, below both the API that checks them and the control
//! plane that changes them.
//!
//! - [`keys`] — the bearer keys verified so far and each consumer's grants as sets, so that a
//!   request's check is one keyed hash and one lookup;
//! - [`runtime`] — consumers added through the admin API: their stored form, and how they join
//!   the configuration file's consumers.

pub mod keys;
pub mod runtime;

pub use keys::KeyCache;
pub use runtime::{
    merged, name_of, storage_name, valid_name, RuntimeConsumer, MAX_RUNTIME_CONSUMERS,
};
