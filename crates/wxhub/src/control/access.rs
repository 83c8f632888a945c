//! Who may call what: the consumers in force, those of the file followed by those added at runtime,
//! switched as a whole ([`Access`]) whenever either changes. Runtime consumers are stored beside
//! the runtime accounts and follow the same feed; this file keeps them in step with the store
//! and decides which one is in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::stored::Definitions;
use super::{Control, ControlError};
use crate::configuration::{ConsumerSettings, Settings};
use crate::consumers::{self, KeyCache, RuntimeConsumer};

/// What a message of the account feed said of a runtime consumer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Said<'a> {
    /// It was stored with this definition.
    Put(&'a str),
    /// It was removed.
    Removed,
    /// Nothing: a read that failed is tried again.
    Nothing,
}

/// Who may call what, switched as a whole by a reload or a change of a runtime consumer: the
/// consumers and a key cache that serves exactly them.
pub struct Access {
    /// The configuration the consumers come from, its `consumers` those of the file followed by
    /// those added at runtime.
    pub settings: Arc<Settings>,
    /// Verified keys and grants of those consumers.
    pub keys: KeyCache,
}

impl Access {
    /// Access as `settings` defines it.
    pub fn new(settings: Arc<Settings>) -> Access {
        Access {
            settings,
            keys: KeyCache::default(),
        }
    }
}

impl Control {
    /// Reads a consumer's `apps` as the configuration file in force would
    /// ([`crate::configuration::read_grants`]).
    pub fn read_grants(
        &self,
        texts: &[String],
    ) -> Result<Vec<crate::configuration::AppGrant>, crate::configuration::FieldError> {
        crate::configuration::read_grants(texts, &self.settings.load().grants())
    }

    /// Whether the configuration file in force defines the consumer `name`.
    pub fn is_file_consumer(&self, name: &str) -> bool {
        self.settings
            .load()
            .consumers
            .iter()
            .any(|c| c.name == name)
    }

    /// The consumers in force (the file's, then the runtime ones), each with whether it was
    /// added at runtime.
    pub fn consumers(&self) -> Vec<(ConsumerSettings, bool)> {
        let file = self.settings.load();
        let from_file: std::collections::HashSet<&str> =
            file.consumers.iter().map(|c| c.name.as_str()).collect();
        self.access
            .load()
            .settings
            .consumers
            .iter()
            .map(|c| (c.clone(), !from_file.contains(c.name.as_str())))
            .collect()
    }

    /// Adds or replaces the runtime consumer `name` on every instance sharing the store; in force
    /// here when this returns (a replaced key is refused from then on). Returns whether it is new.
    /// A new one is refused once there are [`consumers::MAX_RUNTIME_CONSUMERS`] (as this instance
    /// knows them: two instances adding the last one at once may both succeed).
    pub async fn put_consumer(
        &self,
        name: &str,
        consumer: RuntimeConsumer,
    ) -> Result<bool, ControlError> {
        let _order = self.consumer_changes.lock().await;
        if self.is_file_consumer(name) {
            return Err(ControlError::ConsumerFromConfig(name.to_string()));
        }
        let taken_by = {
            let runtime = self.lock_runtime_consumers();
            if !runtime.contains_key(name) && runtime.len() >= consumers::MAX_RUNTIME_CONSUMERS {
                return Err(ControlError::TooManyConsumers);
            }
            let file = self.settings.load();
            file.consumers
                .iter()
                .find(|c| c.key_matches(&consumer.key_sha256))
                .map(|c| c.name.clone())
                .or_else(|| {
                    runtime
                        .iter()
                        .find(|(other, c)| {
                            other.as_str() != name && c.key_sha256 == consumer.key_sha256
                        })
                        .map(|(other, _)| other.clone())
                })
        };
        if let Some(other) = taken_by {
            return Err(ControlError::KeyInUse(other));
        }
        let storage_name = consumers::storage_name(name);
        let created = self.store.get_account(&storage_name).await?.is_none();
        self.store
            .put_account(&storage_name, &consumer.definition())
            .await?;
        self.lock_runtime_consumers()
            .insert(name.to_string(), consumer);
        self.publish_consumers();
        tracing::info!(consumer = %name, created, "runtime consumer stored");
        Ok(created)
    }

    /// Removes the runtime consumer `name` on every instance sharing the store; refused here when
    /// this returns, and its open watch streams end.
    pub async fn delete_consumer(&self, name: &str) -> Result<(), ControlError> {
        let _order = self.consumer_changes.lock().await;
        if self.is_file_consumer(name) {
            return Err(ControlError::ConsumerFromConfig(name.to_string()));
        }
        let stored = self
            .store
            .remove_account(&consumers::storage_name(name))
            .await?;
        let known = self.lock_runtime_consumers().remove(name).is_some();
        if !stored && !known {
            return Err(ControlError::UnknownConsumer(name.to_string()));
        }
        self.publish_consumers();
        tracing::info!(consumer = %name, "runtime consumer removed");
        Ok(())
    }

    /// The feed says the runtime consumer `name` changed (here or on another instance): puts in
    /// force what the store holds now. The store is read rather than the message trusted, so that
    /// a message overtaken by a later write (this instance's own, say) cannot bring an old key
    /// back.
    ///
    /// Fails closed: the consumer leaves the table before the read, and stays out if the read
    /// fails, so that a removed or re-keyed consumer's old key is not served here while the store
    /// cannot be read; the caller tries again ([`Control::run_account_feed`]). Out of force at
    /// once, unless `said` is what is in force already (this instance's own write, typically):
    /// then the read decides, and a consumer just put here is not refused for the length of it.
    pub(super) async fn follow_consumer(
        &self,
        name: &str,
        said: Said<'_>,
    ) -> Result<(), ControlError> {
        let _order = self.consumer_changes.lock().await;
        let held = self.lock_runtime_consumers().remove(name);
        let news = match said {
            Said::Put(definition) => {
                held.is_some() && RuntimeConsumer::from_definition(definition) != held
            }
            Said::Removed => held.is_some(),
            Said::Nothing => false,
        };
        if news {
            self.publish_consumers();
        }
        let definition = match self.store.get_account(&consumers::storage_name(name)).await {
            Ok(definition) => definition,
            Err(e) => {
                self.publish_consumers();
                tracing::warn!(consumer = %name, error = %e, "a runtime consumer changed but could not be read back; it is refused here until it can");
                return Err(e.into());
            }
        };
        let consumer = definition.as_deref().and_then(|d| {
            let read = RuntimeConsumer::from_definition(d);
            if read.is_none() {
                tracing::warn!(consumer = %name, "a stored runtime consumer is unreadable; it is not served");
            }
            read
        });
        if let Some(consumer) = consumer {
            self.lock_runtime_consumers()
                .insert(name.to_string(), consumer);
        }
        self.publish_consumers();
        Ok(())
    }

    /// Makes the runtime consumers those stored (at a start, or a resync of the feed).
    pub(super) fn replace_runtime_consumers(&self, stored: Definitions) {
        let mut read = BTreeMap::new();
        for (name, definition) in stored {
            match RuntimeConsumer::from_definition(&definition) {
                Some(consumer) => {
                    read.insert(name, consumer);
                }
                None => {
                    tracing::warn!(consumer = %name, "a stored runtime consumer is unreadable; it is not served")
                }
            }
        }
        *self.lock_runtime_consumers() = read;
        self.publish_consumers();
    }

    /// Puts in force the consumers of the file in force and the runtime ones, if they differ
    /// from those in force. Open watch streams follow at their next event or heartbeat.
    pub(super) fn publish_consumers(&self) {
        let runtime = self.lock_runtime_consumers();
        let file = self.settings.load_full();
        let merged = consumers::merged(&file, &runtime);
        if self.access.load().settings.consumers == merged {
            return;
        }
        let mut settings = (*file).clone();
        settings.consumers = merged;
        self.access.store(Arc::new(Access::new(Arc::new(settings))));
    }

    pub(super) fn lock_runtime_consumers(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, RuntimeConsumer>> {
        self.runtime_consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file `new` takes over the runtime consumers it names: their stored definitions go, so
    /// that removing the name from the file later does not bring an old key back.
    pub(super) async fn take_over_consumers(&self, new: &Settings) {
        let _consumers = self.consumer_changes.lock().await;
        let taken: Vec<String> = {
            let runtime = self.lock_runtime_consumers();
            new.consumers
                .iter()
                .filter(|c| runtime.contains_key(&c.name))
                .map(|c| c.name.clone())
                .collect()
        };
        for name in taken {
            // The file's consumer is in force either way; a failed removal is only logged
            // (the reload itself is done) and the runtime one stays shadowed.
            match self
                .store
                .remove_account(&consumers::storage_name(&name))
                .await
            {
                Ok(_) => {
                    self.lock_runtime_consumers().remove(&name);
                    tracing::info!(consumer = %name, "the configuration file took over a runtime consumer; its stored definition was removed");
                }
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "the configuration file took over a runtime consumer, whose stored definition could not be removed");
                }
            }
        }
        self.publish_consumers();
    }
}
