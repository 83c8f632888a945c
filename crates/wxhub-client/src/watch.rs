//! The watch stream: `GET /v1/watch` read in a background task that writes every event into the
//! cache, and reopens the stream (resuming with `Last-Event-ID`) when it breaks. While it is
//! down, the cache simply expires values as the hub said, so reads fall back to polling.

use std::time::Duration;

use futures_util::StreamExt;
use wxhub_types::WatchEvent;

use crate::Client;

/// The first pause before reopening a broken stream; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// The longest a stream may stay silent: the hub sends a heartbeat every 15 s.
const SILENCE: Duration = Duration::from_secs(45);

/// The background task keeping the cache current; stopped when dropped.
pub struct Watching {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn spawn(client: Client) -> Watching {
    Watching {
        task: tokio::spawn(run(client)),
    }
}

async fn run(client: Client) {
    let mut last_event_id: Option<String> = None;
    let mut pause = FIRST_PAUSE;
    loop {
        match follow(&client, &mut last_event_id).await {
            Ok(()) => pause = FIRST_PAUSE,
            Err(e) => tracing::debug!(error = %e, "watch stream broke; reopening"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Reads one stream until it ends.
async fn follow(client: &Client, last_event_id: &mut Option<String>) -> Result<(), String> {
    let mut request = client
        .inner
        .http
        .get(client.url("/v1/watch"))
        .bearer_auth(&client.inner.key);
    if let Some(id) = last_event_id.as_deref() {
        request = request.header("last-event-id", id);
    }
    let response = request
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = response.bytes_stream();
    let mut pending = String::new();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, body.next()).await {
            Err(_) => return Err("silent for too long".into()),
            Ok(None) => return Ok(()),
            Ok(Some(chunk)) => chunk.map_err(|e| e.without_url().to_string())?,
        };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            apply(client, &block, last_event_id);
        }
    }
}

/// Applies one event block to the cache.
fn apply(client: &Client, block: &str, last_event_id: &mut Option<String>) {
    let mut data = None;
    for line in block.lines() {
        if let Some(id) = line.strip_prefix("id: ") {
            *last_event_id = Some(id.to_string());
        } else if let Some(json) = line.strip_prefix("data: ") {
            data = serde_json::from_str::<WatchEvent>(json).ok();
        }
    }
    let Some(event) = data else { return };
    let cache = &client.inner.cache;
    match event.value {
        Some(value) => cache.put(&event.key, &value, event.generation, event.expires_in),
        // A consumer without `read` learns only that its cached value is stale.
        None => cache.forget_older(&event.key, event.generation),
    }
}
