//! Tokens another system fetched, taken over by the hub: moving an app onto the hub in legacy
//! mode must not kill the token its servers use, so that token is stored as the next generation
//! and served instead of a new one being fetched. One write path for both ways in: an import for
//! a credential the hub serves ([`Engine::import`]) and a token given with an account being added
//! ([`Engine::import_unregistered`]).

use std::sync::Arc;
use std::time::Duration;

use super::{Engine, Shared};
use crate::kinds::CredentialKey;
use crate::read::Credential;
use crate::store::{CasOutcome, StoreError};
use crate::token::Token;

/// The longest life WeChat gives an access token, and so the longest an imported one may have.
const LONGEST_LIFE: Duration = Duration::from_secs(7200);

/// Why an imported token was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A refresh is running (here or on another instance): importing now could be overwritten.
    #[error("a refresh of this credential is in progress; try again in a few seconds")]
    Busy,
    /// The store holds a newer generation than the caller expected.
    #[error("the store holds generation {stored}, newer than the import expects")]
    Newer {
        /// What the store holds.
        stored: u64,
    },
    /// The token is already expired or has no life.
    #[error("expires_in must be between 1 and 7200 seconds")]
    Lifetime,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Stores a live token another system fetched, as the next generation, and serves it: moving
    /// an app onto the hub in legacy mode then does not kill the token its servers use. Refused
    /// while a refresh runs anywhere (the lease is taken for the write) and, when
    /// `expected_generation` is given, if the store holds a newer one.
    pub async fn import(
        &self,
        credential: &Arc<Credential>,
        value: String,
        expires_in: Duration,
        expected_generation: Option<u64>,
    ) -> Result<Token, ImportError> {
        if expires_in.is_zero() || expires_in > LONGEST_LIFE {
            return Err(ImportError::Lifetime);
        }
        let shared = &self.shared;
        let key = &credential.key;
        if !shared
            .store
            .acquire_lease(key, &shared.node_id, shared.lease_ttl)
            .await?
        {
            return Err(ImportError::Busy);
        }
        let result = shared
            .write_imported(key, value, expires_in, expected_generation)
            .await;
        let _ = shared.store.release_lease(key, &shared.node_id).await;
        let token = result?;
        shared.apply_change(key, token.clone());
        Ok(token)
    }

    /// Stores a live token for `key` before its account is registered (an account added with the
    /// token its servers use), as the next generation. The write of [`Engine::import`] without
    /// the lease and without serving: nothing refreshes a key that is not registered yet, and
    /// the registration that follows serves what the store holds. The caller checks the lifetime.
    pub async fn import_unregistered(
        &self,
        key: &CredentialKey,
        value: String,
        expires_in: Duration,
    ) -> Result<Token, ImportError> {
        self.shared
            .write_imported(key, value, expires_in, None)
            .await
    }
}

impl Shared {
    /// Writes `value` under `key` as the generation after the stored one (compare-and-set),
    /// living `expires_in` from now; refused if the store holds a newer generation than
    /// `expected_generation`, or gets one meanwhile.
    async fn write_imported(
        &self,
        key: &CredentialKey,
        value: String,
        expires_in: Duration,
        expected_generation: Option<u64>,
    ) -> Result<Token, ImportError> {
        let stored = self.store.get(key).await?;
        let stored_generation = stored.as_ref().map_or(0, |t| t.generation);
        if expected_generation.is_some_and(|g| stored_generation > g) {
            return Err(ImportError::Newer {
                stored: stored_generation,
            });
        }
        let now = self.clock.now();
        let token = Token {
            value,
            expires_at: now.plus(expires_in),
            fetched_at: now,
            generation: stored_generation + 1,
        };
        match self.store.compare_and_set(key, &token).await? {
            CasOutcome::Applied => Ok(token),
            CasOutcome::Stale { current } => Err(ImportError::Newer {
                stored: current.map_or(0, |t| t.generation),
            }),
        }
    }
}
