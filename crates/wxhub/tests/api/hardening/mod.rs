//! Defences found by an attacker's review: connection limits and timeouts, shutdown under hostile
//! clients, scopes that never leak a credential, a hostile upstream, file permissions, and the
//! parsing of the authentication header.

mod auth_scheme;
mod files;
mod listener;
mod scopes;
mod upstream;
