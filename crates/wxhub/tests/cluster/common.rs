//! What the cluster tests share: starting N instances on one Redis namespace, consumers that go
//! through a load balancer, and looking into Redis.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wechat_mock::MockServer;
use wxhub::configuration::{RedisSettings, StoreSettings};

use crate::helpers::*;

/// How many instances every test runs.
pub const INSTANCES: usize = 3;

/// The refresh lease TTL of the test instances: their upstream timeout (2 s, see
/// `helpers::settings_for`) plus the engine's 2 s margin.
pub const LEASE_TTL: Duration = Duration::from_secs(4);

/// Hub options for `apps` on the Redis at `url`, under `namespace`.
pub fn redis_options(apps: &[TestApp], url: &str, namespace: &str) -> HubOptions {
    let mut options = HubOptions::new(apps);
    options.store = StoreSettings::Redis(RedisSettings::url(url).with_namespace(namespace));
    options
}

/// Starts [`INSTANCES`] in-process instances sharing `namespace` on the Redis at `url`, and
/// waits until every one is ready.
pub async fn spawn_cluster(
    mock: &MockServer,
    apps: &[TestApp],
    url: &str,
    namespace: &str,
) -> Arc<Vec<TestHub>> {
    let mut hubs = Vec::with_capacity(INSTANCES);
    for _ in 0..INSTANCES {
        hubs.push(spawn_app(mock, redis_options(apps, url, namespace)).await);
    }
    for hub in &hubs {
        hub.wait_ready().await;
    }
    Arc::new(hubs)
}

/// Waits until every hub serves the same access token of `appid`, and returns it.
pub async fn converged(hubs: &[TestHub], appid: &str) -> TokenAnswer {
    let hubs: Vec<&TestHub> = hubs.iter().collect();
    converged_on(&hubs, appid).await
}

/// [`converged`] over borrowed hubs.
pub async fn converged_on(hubs: &[&TestHub], appid: &str) -> TokenAnswer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut answers = Vec::new();
        for hub in hubs {
            answers.push(read_token(hub, appid).await);
        }
        if let Some(Some(first)) = answers.first() {
            let same = answers.iter().all(|a| {
                a.as_ref().is_some_and(|a| {
                    a.access_token == first.access_token && a.generation == first.generation
                })
            });
            if same {
                return first.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the instances do not agree on the token of {appid}: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `attempt` every 50 ms until it returns something; fails the test after `deadline`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = Instant::now() + deadline;
    loop {
        if let Some(found) = attempt().await {
            return found;
        }
        assert!(
            Instant::now() < give_up,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The access token `hub` serves for `appid`, or `None` if it does not answer 200.
pub async fn read_token(hub: &TestHub, appid: &str) -> Option<TokenAnswer> {
    let response = hub
        .client
        .get(hub.url(&format!("/v1/apps/{appid}/access_token")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// Reports `token` of `appid` through a load balancer: starting at instance `first`, moving on
/// to the next instance when one cannot be reached (as a load balancer retries a dead backend).
/// Returns the token answered, or a description of what the consumer saw instead of a 200.
pub async fn report_through_balancer(
    hubs: &[TestHub],
    first: usize,
    appid: &str,
    token: &str,
) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..hubs.len() {
        let hub = &hubs[(first + attempt) % hubs.len()];
        let sent = hub
            .client
            .post(hub.url(&format!("/v1/apps/{appid}/access_token/invalidate")))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({ "access_token": token }))
            .send()
            .await;
        match sent {
            // Not reachable: the balancer tries the next instance.
            Err(e) if e.is_connect() || e.is_request() => last = format!("{e}"),
            Err(e) => return Err(format!("instance {}: {e}", (first + attempt) % hubs.len())),
            Ok(response) if response.status() == 200 => {
                let answer: TokenAnswer = response
                    .json()
                    .await
                    .map_err(|e| format!("undecodable answer: {e}"))?;
                return Ok(answer.access_token);
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(format!("HTTP {status}: {body}"));
            }
        }
    }
    Err(format!("no instance answered: {last}"))
}

/// What one consumer saw.
#[derive(Default, Debug)]
pub struct ConsumerReport {
    /// Business API calls made.
    pub business_calls: u64,
    /// Errcodes of failed business calls.
    pub failures: Vec<i64>,
    /// Hub answers other than 200 (status and body).
    pub hub_errors: Vec<String>,
    /// Distinct tokens received.
    pub tokens_seen: std::collections::HashSet<String>,
}

/// A business server behind a load balancer: asks the next instance (round robin) for the token
/// once the one it holds has reached its `expires_in`, and calls the business API every
/// `every` with whatever it holds, until `stop` reaches zero.
pub async fn consume(
    hubs: Arc<Vec<TestHub>>,
    mock: Arc<MockServer>,
    appid: String,
    first: usize,
    every: Duration,
    running: Arc<AtomicUsize>,
) -> ConsumerReport {
    let mut report = ConsumerReport::default();
    let mut held: Option<(String, Instant)> = None;
    let mut next = first;
    while running.load(Ordering::Relaxed) > 0 {
        let expired = held
            .as_ref()
            .is_none_or(|(_, until)| Instant::now() >= *until);
        if expired {
            let hub = &hubs[next % hubs.len()];
            next += 1;
            let response = hub
                .client
                .get(hub.url(&format!("/v1/apps/{appid}/access_token")))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 200 => {
                    let answer: TokenAnswer = r.json().await.expect("token JSON");
                    report.tokens_seen.insert(answer.access_token.clone());
                    let until = Instant::now() + Duration::from_secs(answer.expires_in);
                    held = Some((answer.access_token, until));
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    report.hub_errors.push(format!("HTTP {status}: {body}"));
                }
                Err(e) => report.hub_errors.push(e.to_string()),
            }
        }
        if let Some((token, _)) = &held {
            let errcode = business_call(&hubs[0].client, &mock, token).await;
            report.business_calls += 1;
            if errcode != 0 {
                report.failures.push(errcode);
            }
        }
        tokio::time::sleep(every).await;
    }
    report
}

/// Starts `n` consumers of `appid` spread over the instances; they run until the returned flag
/// is set to zero.
pub fn start_consumers(
    hubs: &Arc<Vec<TestHub>>,
    mock: &Arc<MockServer>,
    appids: &[&str],
    per_app: usize,
) -> (
    Arc<AtomicUsize>,
    Vec<(String, tokio::task::JoinHandle<ConsumerReport>)>,
) {
    let running = Arc::new(AtomicUsize::new(1));
    let mut consumers = Vec::new();
    for appid in appids {
        for i in 0..per_app {
            let handle = tokio::spawn(consume(
                hubs.clone(),
                mock.clone(),
                appid.to_string(),
                i,
                Duration::from_millis(250),
                running.clone(),
            ));
            consumers.push((appid.to_string(), handle));
        }
    }
    (running, consumers)
}

/// Stops the consumers and collects what they saw; fails the test if any saw a failure.
pub async fn finish_consumers(
    running: Arc<AtomicUsize>,
    consumers: Vec<(String, tokio::task::JoinHandle<ConsumerReport>)>,
) -> Vec<(String, ConsumerReport)> {
    running.store(0, Ordering::Relaxed);
    let mut reports = Vec::new();
    for (appid, handle) in consumers {
        let report = handle.await.expect("consumer task");
        assert!(
            report.failures.is_empty() && report.hub_errors.is_empty(),
            "{appid}: a consumer saw failures: {report:?}"
        );
        assert!(report.business_calls > 0, "{appid}: {report:?}");
        reports.push((appid, report));
    }
    reports
}

/// A plain connection to the Redis at `url`, to look at what the instances wrote.
pub async fn raw_redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test Redis")
}

/// The owner of the refresh lease of `storage_key`, if anyone holds it.
pub async fn lease_owner(url: &str, namespace: &str, storage_key: &str) -> Option<String> {
    let mut conn = raw_redis(url).await;
    redis::cmd("GET")
        .arg(format!("{{{namespace}}}:lease:{storage_key}"))
        .query_async(&mut conn)
        .await
        .expect("GET lease")
}

/// The (generation, value) stored in Redis for `storage_key`.
pub async fn stored(url: &str, namespace: &str, storage_key: &str) -> Option<(u64, String)> {
    let mut conn = raw_redis(url).await;
    let (generation, value): (Option<u64>, Option<String>) = redis::cmd("HMGET")
        .arg(format!("{{{namespace}}}:token:{storage_key}"))
        .arg("generation")
        .arg("value")
        .query_async(&mut conn)
        .await
        .expect("HMGET token");
    generation.zip(value)
}

/// `/readyz` of `hub`: (HTTP status, the `status` field).
pub async fn readiness(hub: &TestHub) -> Option<(u16, String)> {
    let response = hub.client.get(hub.url("/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.ok()?;
    Some((
        status,
        body["status"].as_str().unwrap_or_default().to_string(),
    ))
}

/// WeChat answers 40001 to every business call made with `appid`'s token until
/// `MockServer::clear_faults`: a hub that checks a reported token finds it dead, as it is once
/// another party has replaced it, without the test waiting out WeChat's overlap. Like a really
/// dead token, it stays dead however often it is checked (an instance may check more than once:
/// a report can arrive between the end of one check and the refresh it leads to). Clear the
/// faults once the reports are answered, so that later business calls are judged normally.
pub fn wechat_refuses_the_token(mock: &MockServer, appid: &str) {
    mock.add_fault(wechat_mock::FaultRule {
        path: "/cgi-bin/get_api_domain_ip".into(),
        account: Some(appid.to_string()),
        errcode: Some(40001),
        ..wechat_mock::FaultRule::default()
    });
}
