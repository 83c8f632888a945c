//! The engine's background tasks: the scheduler, the change feed and the store health check.
//! Each ends when the engine's cancellation token fires, without waiting for anything else.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{broadcast, watch};

use super::{random_unit, Reason, Shared};
use crate::store::Change;

/// How often the engine checks that the store answers: how soon an outage shows as degraded, and
/// how soon held-back refreshes resume after it.
const STORE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long one of those checks waits for the store's answer.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Refreshes that failed on the store are re-planned within this after the store answers again,
/// spread at random so that the nodes of a cluster do not all ask at the same instant.
const STORE_RECOVERY_SPREAD: Duration = Duration::from_millis(250);

/// The scheduler: starts the refresh of each key when it is due, one worker permit per job.
pub(super) async fn run_scheduler(shared: Arc<Shared>) {
    loop {
        let permit = tokio::select! {
            permit = shared.workers.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shared.cancel.cancelled() => return,
        };
        let sleep_until = {
            let mut state = shared.lock();
            if state.shutdown {
                return;
            }
            let now = shared.clock.now();
            match state.pop_due(now) {
                Some(id) => {
                    if let Some(credential) = state.entries.get(&id).map(|e| e.credential.clone()) {
                        let _ = shared.start_or_join(
                            &mut state,
                            &credential,
                            Reason::Scheduled,
                            Some(permit),
                        );
                    }
                    continue;
                }
                None => state.next_deadline().map(|at| at.since(now)),
            }
        };
        let notified = shared.scheduler_wakeup.notified();
        tokio::select! {
            _ = async {
                match sleep_until {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = notified => {}
            _ = shared.cancel.cancelled() => return,
        }
    }
}

/// Applies other nodes' writes to this node's view as soon as they are published. When the
/// feed may have missed some (this subscriber lagged, or the store's `resync` signal says its
/// feed reconnected), reloads every stored credential once and applies the newer generations.
pub(super) async fn run_change_feed(
    shared: Arc<Shared>,
    mut feed: broadcast::Receiver<Change>,
    mut resync: Option<watch::Receiver<u64>>,
) {
    loop {
        let received = tokio::select! {
            received = feed.recv() => received,
            alive = next_resync(resync.as_mut()) => {
                if alive {
                    tracing::info!("store change feed reconnected; reloading every credential");
                    reload(&shared).await;
                } else {
                    // The store dropped its signal: nothing more will come from it.
                    resync = None;
                }
                continue;
            }
            _ = shared.cancel.cancelled() => return,
        };
        match received {
            Ok(change) => shared.apply_change(&change.key, change.token),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "change feed lagged; reloading every credential");
                reload(&shared).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Waits for the next resync signal; false once the store dropped it. Never returns for a store
/// without one.
async fn next_resync(signal: Option<&mut watch::Receiver<u64>>) -> bool {
    match signal {
        Some(signal) => signal.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Reloads every stored credential and applies what is newer than this node's view.
async fn reload(shared: &Shared) {
    match shared.store.load_all().await {
        Ok(all) => {
            for (key, token) in all {
                shared.apply_change(&key, token);
            }
        }
        Err(e) => {
            shared.metrics.count_store_error();
            tracing::warn!(error = %e, "reloading every credential failed");
        }
    }
}

impl Shared {
    /// Re-plans, within [`STORE_RECOVERY_SPREAD`], every refresh that is waiting to retry after
    /// a store failure: once the store answers there is no reason to wait out the backoff.
    fn retry_store_failures(&self) {
        let mut state = self.lock();
        let now = self.clock.now();
        let waiting: Vec<_> = state
            .entries
            .iter()
            .filter(|(_, entry)| entry.waits_for_store())
            .map(|(id, entry)| (*id, entry.due))
            .collect();
        for (id, due) in waiting {
            let at = now.plus(STORE_RECOVERY_SPREAD.mul_f64(random_unit()));
            if due.is_none_or(|(due, _)| at < due) {
                state.schedule(id, at);
            }
        }
        drop(state);
        self.scheduler_wakeup.notify_one();
    }
}

/// Checks every [`STORE_CHECK_INTERVAL`] that the store answers; keeps the `wxhub_store_up` gauge
/// current, logs each outage once when it starts and once when it ends, and re-plans the
/// refreshes the outage held back as soon as it ends.
pub(super) async fn run_store_health(shared: Arc<Shared>) {
    let mut up = true;
    let mut down_since = std::time::Instant::now();
    // Instances started together check at different moments.
    let offset = STORE_CHECK_INTERVAL.mul_f64(rand::thread_rng().gen::<f64>());
    tokio::select! {
        _ = tokio::time::sleep(offset) => {}
        _ = shared.cancel.cancelled() => return,
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STORE_CHECK_INTERVAL) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let answered = matches!(
            tokio::time::timeout(STORE_CHECK_TIMEOUT, shared.store.ping()).await,
            Ok(Ok(()))
        );
        shared.metrics.set_store_up(answered);
        match (up, answered) {
            (true, false) => {
                down_since = std::time::Instant::now();
                shared.metrics.count_store_error();
                tracing::warn!(
                    store = shared.store.kind(),
                    "the store does not answer: degraded; serving every token from memory while \
                     it is valid, refreshes wait for the store"
                );
            }
            (false, true) => {
                tracing::info!(
                    store = shared.store.kind(),
                    down_ms = down_since.elapsed().as_millis() as u64,
                    "the store answers again; resuming refreshes"
                );
                shared.retry_store_failures();
            }
            _ => {}
        }
        up = answered;
    }
}
