//! The read side: what consumers are served, at memory speed.
//!
//! Credentials come and go at runtime (the registry adds and removes them), so the index is a
//! set of concurrent maps whose reads take no lock: an account's entry is found by its
//! [`crate::kinds::AccountId`], and holds the account's credentials. Each
//! credential has one [`Slot`] holding an `Arc<Served>` that the engine swaps atomically when the
//! token (or its refresh plan) changes. A read is: two hash lookups, one atomic load, one small
//! buffer for the body. It never waits on the store, the engine or WeChat. Adding or removing an
//! account touches only that account's entries.
//!
//! One concern per file:
//! - [`served`] — what a read hands out: the pre-rendered [`Served`] value and the [`Previous`]
//!   one it replaced, and the [`Change`] announced to watchers;
//! - [`handle`] — the [`Credential`] handle and its [`Slot`];
//! - [`index`] — the read index, [`ReadIndex`], and the account lookups;
//! - [`lives`] — served expiries and configured credentials, kept for the metrics and readiness.

mod handle;
mod index;
mod lives;
mod served;

pub use handle::{Credential, CredentialId, Slot};
pub use index::{AccountEntry, Missing, ReadIndex};
pub use served::{Change, Previous, Served, OVERLAP};
