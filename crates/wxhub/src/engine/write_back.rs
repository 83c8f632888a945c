//! The store's side of a refresh job: writing a token just fetched (and keeping it offered while
//! the store does not answer), and putting back what a store that lost data is missing.

use std::time::Duration;

use tokio::time::Instant;

use super::{RefreshError, Shared};
use crate::kinds::CredentialKey;
use crate::read::{Credential, CredentialId};
use crate::store::{CasOutcome, StoreError};
use crate::token::Token;

/// First pause between attempts to write a token fetched while the store does not answer; it
/// doubles up to [`UNWRITTEN_RETRY_MAX`].
const UNWRITTEN_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest pause between those attempts. Short, so that the write lands as soon as the store is
/// back, before another node takes the (by then expired) lease and fetches again.
const UNWRITTEN_RETRY_MAX: Duration = Duration::from_millis(500);

impl Shared {
    /// The token this node holds for `id` if the store is behind it (holds nothing, or an older
    /// generation). Every token a node holds came from the store, so this only happens when the
    /// store lost data (a Redis restarted without persistence) or when a token fetched during an
    /// outage could not be written.
    pub(super) fn held_above(&self, id: CredentialId, stored: Option<&Token>) -> Option<Token> {
        let state = self.lock();
        let held = state.entries.get(&id)?.token.as_ref()?;
        stored
            .is_none_or(|s| s.generation < held.generation)
            .then(|| held.clone())
    }

    /// Puts `held` back into a store that is behind this node ([`Shared::held_above`]), so that
    /// generations continue from where the cluster is: a fresh generation 1 would be ignored by
    /// every node holding a higher one, and each would end up fetching its own token. Returns what
    /// the store holds afterwards.
    pub(super) async fn restore(
        &self,
        key: &CredentialKey,
        held: Token,
    ) -> Result<Option<Token>, RefreshError> {
        tracing::warn!(
            key = %key,
            generation = held.generation,
            "the store is behind this node (data lost, e.g. Redis restarted without persistence, \
             or a write failed during an outage); writing back the token held in memory"
        );
        match self.store.restore(key, &held).await? {
            CasOutcome::Applied => Ok(Some(held)),
            CasOutcome::Stale { current } => Ok(current),
        }
    }

    /// Writes a token just fetched from WeChat with compare-and-set.
    ///
    /// If the store does not answer, the token is not thrown away: WeChat has issued it (in legacy
    /// mode the previous one now dies after the overlap), so fetching again once the store is back
    /// would be a second refresh caused by the outage. This node serves it at once and keeps
    /// offering it to the store, at short intervals, until the store takes it (or refuses it for a
    /// newer one, which is then adopted) or until the token itself is due for refresh. Meanwhile
    /// the job stays in flight, so this node starts no other refresh of the key.
    pub(super) async fn write_fetched(
        &self,
        credential: &Credential,
        token: &Token,
    ) -> Result<CasOutcome, RefreshError> {
        let key = &credential.key;
        let mut pause = UNWRITTEN_RETRY_MIN;
        let mut serving_unwritten = false;
        let spec = credential.spec();
        let give_up = Instant::now()
            + spec
                .plan
                .due_at(spec.source.renewal(), token, 0.0)
                .since(self.clock.now());
        loop {
            let error = match self.store.compare_and_set(key, token).await {
                Ok(CasOutcome::Stale { current })
                    if current
                        .as_ref()
                        .is_none_or(|c| c.generation + 1 < token.generation) =>
                {
                    // The store is behind the generation this token follows: it lost data while
                    // it did not answer (a Redis restarted empty). Put this token back instead.
                    match self.store.restore(key, token).await {
                        Ok(outcome) => return Ok(outcome),
                        Err(e @ StoreError::Corrupt(_)) => return Err(e.into()),
                        Err(e) => e,
                    }
                }
                Ok(outcome) => {
                    if serving_unwritten {
                        tracing::info!(
                            key = %key,
                            generation = token.generation,
                            "the store answers again; the token fetched during the outage is written"
                        );
                    }
                    return Ok(outcome);
                }
                Err(e @ StoreError::Corrupt(_)) => return Err(e.into()),
                Err(e) => e,
            };
            self.metrics.count_store_error();
            if !serving_unwritten {
                serving_unwritten = true;
                tracing::warn!(
                    key = %key,
                    generation = token.generation,
                    error = %error,
                    "fetched a new token but the store does not answer; serving it from this \
                     node and writing it as soon as the store answers"
                );
                let mut state = self.lock();
                self.serve_in_flight(&mut state, credential.id, token.clone());
            }
            if Instant::now() + pause >= give_up || credential.is_retired() {
                return Err(error.into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(UNWRITTEN_RETRY_MAX);
        }
    }
}
