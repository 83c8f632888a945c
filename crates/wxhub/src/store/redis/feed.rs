//! The Redis store's change feed: one pub/sub connection, on its own task, forwarding what other
//! instances (and this one) write to the local broadcast feeds.
//!
//! The token and account scripts publish every applied write on the namespace's channels; the
//! task here subscribes to them and hands each decoded message to the followers of
//! [`Store::subscribe`](crate::store::Store::subscribe) and
//! [`Store::subscribe_accounts`](crate::store::Store::subscribe_accounts). It is a task of its
//! own because it must outlive any one connection: when the connection drops, stops answering
//! pings, or Sentinel names another master, it reconnects with backoff and then raises the
//! resync signal ([`Store::subscribe_resync`](crate::store::Store::subscribe_resync)), so
//! followers reload what is stored once instead of the feed replaying every stored credential.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::Value;
use tokio::sync::{broadcast, oneshot, watch};

use super::codec::{decode_account_change, decode_change};
use super::connection::Connector;
use super::layout::Keys;
use super::{unavailable, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::store::{AccountChange, Change, StoreError};

/// First delay between reconnection attempts of the change feed; doubles per failure.
const FEED_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest delay between reconnection attempts of the change feed: how long after Redis returns
/// an instance may still be deaf to other instances' writes, at worst.
const FEED_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often the idle change-feed connection is pinged. A connection that silently died (a
/// network partition sends no reset) is noticed within this plus [`RESPONSE_TIMEOUT`].
const FEED_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Opens a pub/sub connection subscribed to the token and account channels, within
/// [`CONNECT_TIMEOUT`] + [`RESPONSE_TIMEOUT`].
pub(super) async fn subscribe(
    connector: &Connector,
    keys: &Keys,
) -> Result<(PubSubSink, PubSubStream), redis::RedisError> {
    let attempt = async {
        let (mut sink, stream) = connector.pubsub().await?.split();
        sink.subscribe(&[&keys.channel, &keys.accounts_channel])
            .await?;
        Ok((sink, stream))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "timed out subscribing to the change channel",
        ))),
    }
}

/// What the pub/sub task owns.
pub(super) struct FeedTask {
    /// Opens new pub/sub connections (to the current master).
    pub(super) connector: Connector,
    /// Key and channel names.
    pub(super) keys: Keys,
    /// The local feed the messages are forwarded to.
    pub(super) changes: broadcast::Sender<Change>,
    /// The local account feed.
    pub(super) accounts: broadcast::Sender<AccountChange>,
    /// The resync signal, raised after each reconnect.
    pub(super) resync: watch::Sender<u64>,
    /// Set while subscribed.
    pub(super) connected: Arc<AtomicBool>,
}

/// Why [`FeedTask::pump`] returned.
enum PumpEnd {
    /// The store was dropped.
    Stopped,
    /// The connection ended or stopped answering.
    Disconnected,
}

/// The pub/sub task: forwards the channel's messages to the local feed; when the connection is
/// lost, reconnects with backoff and raises the resync signal so that whatever was written
/// meanwhile is reloaded. Ends when the store is dropped.
pub(super) async fn run_feed(
    task: FeedTask,
    first: (PubSubSink, PubSubStream),
    mut stop: oneshot::Receiver<()>,
) {
    let mut connection = Some(first);
    let mut failures: u32 = 0;
    loop {
        let (sink, stream) = match connection.take() {
            Some(connected) => connected,
            None => {
                let delay = FEED_BACKOFF_MIN
                    .saturating_mul(1 << failures.min(10))
                    .min(FEED_BACKOFF_MAX);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match task.reconnect().await {
                    Ok(connected) => connected,
                    Err(e) => {
                        if failures == 0 {
                            tracing::warn!(error = %e, "Redis change feed: reconnecting failed; retrying with backoff");
                        }
                        failures = failures.saturating_add(1);
                        continue;
                    }
                }
            }
        };
        failures = 0;
        task.connected.store(true, Ordering::Relaxed);
        let end = task.pump(sink, stream, &mut stop).await;
        task.connected.store(false, Ordering::Relaxed);
        match end {
            PumpEnd::Stopped => return,
            PumpEnd::Disconnected => {
                tracing::warn!("Redis change feed disconnected; reconnecting");
            }
        }
    }
}

impl FeedTask {
    /// Subscribes again, then raises the resync signals: followers reload every stored token
    /// once, the writes made while the feed was down among them. Subscribing first means nothing
    /// written in between is lost either (it is then seen twice, which the engine ignores).
    async fn reconnect(&self) -> Result<(PubSubSink, PubSubStream), StoreError> {
        let connected = subscribe(&self.connector, &self.keys)
            .await
            .map_err(|e| unavailable("subscribing to the change channel", &e))?;
        // Account changes made meanwhile are reconciled by whoever follows the account feed.
        let _ = self.accounts.send(AccountChange::Resync);
        self.resync.send_modify(|n| *n = n.wrapping_add(1));
        tracing::info!("Redis change feed reconnected; followers reload every stored credential");
        Ok(connected)
    }

    /// Forwards messages until the connection ends, stops answering pings, or the store is
    /// dropped.
    async fn pump(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        stop: &mut oneshot::Receiver<()>,
    ) -> PumpEnd {
        let mut ping = tokio::time::interval(FEED_PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut master = self.connector.master_changes();
        master.mark_unchanged();
        loop {
            tokio::select! {
                _ = &mut *stop => return PumpEnd::Stopped,
                // Sentinel named another master: subscribe there (the old one may be alive but
                // no longer written to).
                _ = master.changed() => return PumpEnd::Disconnected,
                message = stream.next() => {
                    let Some(message) = message else {
                        self.connector.suspect();
                        return PumpEnd::Disconnected;
                    };
                    if message.get_channel_name() == self.keys.accounts_channel {
                        match decode_account_change(message.get_payload_bytes()) {
                            Some(change) => {
                                let _ = self.accounts.send(change);
                            }
                            None => tracing::warn!("Redis account feed: ignoring an undecodable message"),
                        }
                        continue;
                    }
                    match decode_change(message.get_payload_bytes()) {
                        Some(change) => {
                            let _ = self.changes.send(change);
                        }
                        None => tracing::warn!("Redis change feed: ignoring an undecodable message"),
                    }
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        self.connector.suspect();
                        return PumpEnd::Disconnected;
                    }
                }
            }
        }
    }
}
