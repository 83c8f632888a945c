//! Why a control operation was refused: one type for every way the set of accounts or consumers
//! changes, so the admin API maps each refusal to its answer in one place.

use crate::configuration::ConfigError;
use crate::registry::AccountId;
use crate::seal::SealError;
use crate::store::StoreError;

/// Why a control operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The account is defined in the configuration file.
    #[error("{0} is defined in the configuration file; change it there and reload")]
    FromConfig(AccountId),
    /// No such account.
    #[error("no runtime account {0}")]
    NotFound(AccountId),
    /// Secrets cannot be accepted without a master key to seal them.
    #[error(
        "this read_index has no [secrets] master_key, so it cannot store secrets given at runtime; \
         set one (32 bytes, base64) on every instance"
    )]
    NoMasterKey,
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored account could not be read back.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A stored account is not in a format this version reads.
    #[error("stored account {0} is unreadable")]
    Unreadable(String),
    /// The configuration file is broken; nothing was changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A live token can be imported with the account only when the account is new.
    #[error("{0} exists already; import its token with PUT …/access_token")]
    NotNew(AccountId),
    /// The hub was not started from a file, so there is nothing to reload.
    #[error("this hub was not started from a configuration file")]
    NoFile,
    /// A stored authorizer or installed corp belongs to a platform or suite the configuration
    /// no longer has.
    #[error("stored account {0} belongs to a platform or suite that is not configured")]
    UnknownComponent(String),
    /// This operation does not apply to that kind of account.
    #[error("{0} cannot be changed this way")]
    WrongKind(AccountId),
    /// WeChat refused the new account's appid or secret at its first fetch: it was not kept.
    #[error("WeChat refused the first token fetch of {0} ({1}); the account was not added")]
    RefusedByWechat(AccountId, String),
    /// The consumer is defined in the configuration file.
    #[error("consumer {0:?} is defined in the configuration file; change it there and reload")]
    ConsumerFromConfig(String),
    /// No such runtime consumer.
    #[error("no runtime consumer {0:?}")]
    UnknownConsumer(String),
    /// As many runtime consumers as a hub takes exist already.
    #[error(
        "there are {} runtime consumers already, the most a read_index takes (a request with an unknown \
         key is compared with every consumer's); delete one first, or define the consumer in the \
         configuration file",
        crate::consumers::MAX_RUNTIME_CONSUMERS
    )]
    TooManyConsumers,
    /// Another consumer has this key.
    #[error("consumer {0:?} has this key already; every consumer needs its own key")]
    KeyInUse(String),
}
