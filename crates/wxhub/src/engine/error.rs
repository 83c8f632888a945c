//! Why a refresh failed, typed: the retry rules and the operators' view both follow from the
//! variant, never from a message or a class-name string.

use serde::Serialize;

use crate::plan::FailureClass;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// Why a refresh failed, as consumers and operators see it. Never carries a secret or token.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RefreshError {
    /// WeChat refused or could not be reached.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// The refresh lease ran out and another node took it while this one was working.
    #[error("the refresh lease was lost to another node")]
    LeaseLost,
    /// Compare-and-set refused a write although the store holds nothing for the key (a store
    /// that lost data mid-write).
    #[error("compare-and-set refused with nothing stored")]
    WriteRefused,
    /// Another node held the refresh lease and no new token appeared before the deadline.
    #[error("another node is refreshing and did not finish in time")]
    LeaseTimeout,
    /// The credential was removed while it was being refreshed; the result was dropped.
    #[error("the credential was removed")]
    Removed,
    /// The job ended without a result (shutdown).
    #[error("refresh aborted")]
    Aborted,
    /// A credential this one is fetched with (a platform's component token, a suite's token)
    /// failed and is waiting out its retry delay. Until then every credential that needs it fails
    /// at once: asking WeChat for it again on behalf of each (100,000 authorizers of one platform)
    /// would be a storm of calls against a failing upstream and its daily quota.
    #[error("{dependency} is unavailable: it failed {attempts} times and is tried again in {retry_in_s} s")]
    DependencyRetrying {
        /// The credential waited for (its key, never a value).
        dependency: String,
        /// Its failed attempts so far.
        attempts: u32,
        /// Seconds until it is tried again.
        retry_in_s: u64,
    },
}

/// The class of a failure: what `/v1/credentials`, logs and metrics show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Network, 5xx, busy: retried with backoff.
    Transient,
    /// The daily quota is spent.
    Quota,
    /// WeChat rejected the configuration.
    Config,
    /// The token used for a dependent call was dead.
    TokenInvalid,
    /// The store failed (or the lease was lost through it).
    Store,
    /// Waiting for another node's refresh timed out.
    LeaseTimeout,
    /// The credential was removed.
    Removed,
    /// Shutdown.
    Aborted,
}

impl ErrorClass {
    /// The class's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Quota => "quota",
            ErrorClass::Config => "config",
            ErrorClass::TokenInvalid => "token_invalid",
            ErrorClass::Store => "store",
            ErrorClass::LeaseTimeout => "lease_timeout",
            ErrorClass::Removed => "removed",
            ErrorClass::Aborted => "aborted",
        }
    }

    /// Whether the failure came from the store's side, so that the refresh is retried as soon as
    /// the store answers again.
    pub fn waits_for_store(self) -> bool {
        matches!(self, ErrorClass::Store | ErrorClass::LeaseTimeout)
    }
}

impl RefreshError {
    /// What decides the retry delay.
    pub fn failure_class(&self) -> FailureClass {
        match self {
            RefreshError::Upstream(UpstreamError::Quota { .. }) => FailureClass::Quota,
            RefreshError::Upstream(UpstreamError::Config { .. }) => FailureClass::Config,
            _ => FailureClass::Transient,
        }
    }

    /// The class shown to operators.
    pub fn class(&self) -> ErrorClass {
        match self {
            RefreshError::Upstream(UpstreamError::Transient { .. })
            | RefreshError::DependencyRetrying { .. } => ErrorClass::Transient,
            RefreshError::Upstream(UpstreamError::Quota { .. }) => ErrorClass::Quota,
            RefreshError::Upstream(UpstreamError::Config { .. }) => ErrorClass::Config,
            RefreshError::Upstream(UpstreamError::TokenInvalid { .. }) => ErrorClass::TokenInvalid,
            RefreshError::Store(_) | RefreshError::LeaseLost | RefreshError::WriteRefused => {
                ErrorClass::Store
            }
            RefreshError::LeaseTimeout => ErrorClass::LeaseTimeout,
            RefreshError::Removed => ErrorClass::Removed,
            RefreshError::Aborted => ErrorClass::Aborted,
        }
    }

    /// WeChat's errcode, if WeChat answered.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            RefreshError::Upstream(e) => e.errcode(),
            _ => None,
        }
    }
}
