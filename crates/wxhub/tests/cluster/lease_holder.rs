//! The instance holding a refresh lease dies (or freezes) in the middle of the upstream call:
//! another instance completes the refresh once the lease expires, consumers see no failure, and a
//! frozen holder that wakes up can never overwrite the newer token.
//!
//! The instances are real `wxhub` processes, so the kill is a real `SIGKILL`. The mock's delay
//! fault holds the holder's upstream call open long enough to kill it inside that call.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;
use wechat_mock::{FaultRule, MockServer};

use crate::common::*;
use crate::helpers::*;
use crate::process::{admin_consumer, wechat_section, ProcessHub};
use crate::redis_server::{unique_namespace, TestRedis};

/// How long the mock holds the lease holder's upstream call open. Below the instances' upstream
/// timeout (2 s), so that the call itself would succeed.
const HOLD_OPEN: Duration = Duration::from_millis(1_500);

/// A wait slice of the engine (a quarter of the lease TTL): how long after the lease expires
/// another instance may take to notice.
const WAIT_SLICE: Duration = Duration::from_secs(1);

/// The configuration (below `[server]`) of an instance serving one legacy app on the Redis
/// `namespace`.
fn legacy_app_on_redis(mock: &MockServer, appid: &str, url: &str, namespace: &str) -> String {
    format!(
        r#"
[store]
kind = "redis"
url = "{url}"
namespace = "{namespace}"

{wechat}
[refresh]
min_refresh_interval = "1s"
refresh_retry_interval = "2s"

[[apps]]
appid = "{appid}"
secret = "{secret}"
mode = "legacy"

{consumer}"#,
        wechat = wechat_section(mock),
        secret = secret_of(appid),
        consumer = admin_consumer(r#"["read", "invalidate", "admin"]"#),
    )
}

/// Three process instances of one legacy app on a fresh namespace, all serving its first token,
/// which is old enough to be reported (`min_refresh_interval` is 1 s).
struct Setup {
    /// The Redis (kept alive for the test).
    _redis: TestRedis,
    /// Configurations and logs of the processes.
    dir: tempfile::TempDir,
    /// The Redis URL.
    url: String,
    /// The instances' namespace.
    namespace: String,
    /// The WeChat mock.
    mock: std::sync::Arc<MockServer>,
    /// The instances; instance 0 is the one made to hold the lease.
    processes: Vec<ProcessHub>,
    /// The one (legacy) app.
    appid: &'static str,
    /// The token every instance served before the refresh.
    old: TokenAnswer,
}

async fn setup(appid: &'static str) -> Setup {
    let apps = [TestApp::legacy(appid)];
    let redis = TestRedis::get();
    let url = redis.url();
    let namespace = unique_namespace("lease");
    // A long overlap, as in production (300 s against a lease of a few seconds): the token a
    // dead holder may still have fetched does not kill the one consumers hold within the test.
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(60),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let processes: Vec<ProcessHub> = (0..INSTANCES)
        .map(|i| {
            ProcessHub::spawn(
                dir.path(),
                &format!("hub{i}"),
                &legacy_app_on_redis(&mock, appid, &url, &namespace),
            )
        })
        .collect();
    for process in &processes {
        process.hub.wait_ready().await;
    }
    let hubs: Vec<&TestHub> = processes.iter().map(|p| &p.hub).collect();
    let old = converged_on(&hubs, appid).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    Setup {
        _redis: redis,
        dir,
        url,
        namespace,
        mock,
        processes,
        appid,
        old,
    }
}

impl Setup {
    /// A consumer's view of every instance, dead or alive, in order.
    fn hubs(&self) -> Vec<TestHub> {
        self.processes
            .iter()
            .map(|p| TestHub::remote(p.hub.address.clone()))
            .collect()
    }

    /// The app's credential key.
    fn storage_key(&self) -> String {
        format!("access_token/{}", self.appid)
    }

    /// Holds the next `cgi-bin/token` call open, reports the current token to instance 0, and
    /// waits until instance 0 holds the lease and is inside that call. Returns the report's task.
    async fn hold_a_refresh_open_on_instance_0(
        &self,
    ) -> tokio::task::JoinHandle<Result<String, String>> {
        let calls_before = stats(&self.mock).calls("/cgi-bin/token", self.appid);
        self.mock.add_fault(FaultRule {
            path: "/cgi-bin/token".into(),
            account: Some(self.appid.to_string()),
            delay_ms: Some(HOLD_OPEN.as_millis() as u64),
            count: Some(1),
            ..FaultRule::default()
        });
        wechat_refuses_the_token(&self.mock, self.appid);
        let hubs = self.hubs();
        let appid = self.appid;
        let token = self.old.access_token.clone();
        let report =
            tokio::spawn(async move { report_through_balancer(&hubs, 0, appid, &token).await });
        wait_until(
            Duration::from_secs(5),
            "instance 0 is inside the upstream call",
            || async { stats(&self.mock).calls("/cgi-bin/token", self.appid) == calls_before + 1 },
        )
        .await;
        assert!(
            lease_owner(&self.url, &self.namespace, &self.storage_key())
                .await
                .is_some(),
            "the refresh lease is held"
        );
        let states: Vec<String> = {
            let mut states = Vec::new();
            for process in &self.processes {
                let credential = process.hub.credential(&self.storage_key()).await;
                states.push(credential["state"].as_str().unwrap_or_default().to_string());
            }
            states
        };
        assert_eq!(
            states[0], "refreshing",
            "instance 0 holds the lease: {states:?}"
        );
        assert!(
            states[1..].iter().all(|s| s != "refreshing"),
            "only instance 0 refreshes: {states:?}"
        );
        report
    }
}

/// Reports `token` on instances 1 and 2 (10 each, through the balancer) and returns the answers.
async fn reports_on_the_others(
    hubs: &[TestHub],
    appid: &str,
    token: &str,
) -> Vec<Result<String, String>> {
    let reports = (0..20).map(|i| report_through_balancer(hubs, 1 + i % 2, appid, token));
    join_all(reports).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_holder_mid_refresh_lets_another_instance_finish_it() {
    let mut setup = setup("wxcluster0lease01").await;
    let calls_before = stats(&setup.mock).calls("/cgi-bin/token", setup.appid);
    let first_report = setup.hold_a_refresh_open_on_instance_0().await;

    setup.processes[0].kill();
    let killed_at = Instant::now();
    let hubs = setup.hubs();
    let answers = reports_on_the_others(&hubs, setup.appid, &setup.old.access_token).await;
    let took = killed_at.elapsed();
    setup.mock.clear_faults();
    eprintln!("the refresh was completed {took:?} after the kill");
    // The consumer whose report was on the killed instance retries through the balancer.
    let first = first_report.await.expect("report task");

    let mut all = answers;
    all.push(first);
    let new = all[0]
        .clone()
        .unwrap_or_else(|e| panic!("a consumer saw: {e}"));
    for answer in &all {
        assert_eq!(
            answer.as_ref(),
            Ok(&new),
            "every reporter gets the one new token"
        );
    }
    assert_ne!(new, setup.old.access_token);
    assert!(
        took <= LEASE_TTL + WAIT_SLICE + Duration::from_millis(1_500),
        "the refresh was completed {took:?} after the kill (lease TTL {LEASE_TTL:?})"
    );
    assert_eq!(business_call(&hubs[1].client, &setup.mock, &new).await, 0);
    // The dead holder's call and the one that replaced it: nothing more.
    assert_eq!(
        stats(&setup.mock).calls("/cgi-bin/token", setup.appid),
        calls_before + 2
    );
    let survivors: Vec<&TestHub> = setup.processes[1..].iter().map(|p| &p.hub).collect();
    let current = converged_on(&survivors, setup.appid).await;
    assert_eq!(current.access_token, new);
    assert_eq!(current.generation, setup.old.generation + 1);
    assert_eq!(
        stored(&setup.url, &setup.namespace, &setup.storage_key()).await,
        Some((current.generation, new))
    );
    let seen = stats(&setup.mock);
    assert_eq!(
        seen.business_failures(setup.appid),
        seen.faults_injected("/cgi-bin/get_api_domain_ip"),
        "no consumer call failed, only the injected refusals"
    );

    // A replacement instance joins: it serves the current token at once and fetches nothing.
    let calls = stats(&setup.mock).calls("/cgi-bin/token", setup.appid);
    let replacement = ProcessHub::spawn(
        setup.dir.path(),
        "replacement",
        &legacy_app_on_redis(&setup.mock, setup.appid, &setup.url, &setup.namespace),
    );
    replacement.hub.wait_ready().await;
    let served = read_token(&replacement.hub, setup.appid).await;
    assert_eq!(served.map(|a| a.access_token), Some(current.access_token));
    assert_eq!(
        stats(&setup.mock).calls("/cgi-bin/token", setup.appid),
        calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_lease_holder_that_wakes_up_cannot_overwrite_the_newer_token() {
    let setup = setup("wxcluster0lease02").await;
    let first_report = setup.hold_a_refresh_open_on_instance_0().await;

    // Freeze the holder inside its upstream call, past the end of its lease.
    setup.processes[0].signal("STOP");
    let hubs = setup.hubs();
    let answers = reports_on_the_others(&hubs, setup.appid, &setup.old.access_token).await;
    setup.mock.clear_faults();
    let new = answers[0]
        .clone()
        .unwrap_or_else(|e| panic!("a consumer saw: {e}"));
    assert!(
        answers.iter().all(|a| a.as_ref() == Ok(&new)),
        "{answers:?}"
    );
    assert_ne!(new, setup.old.access_token);
    let generation = setup.old.generation + 1;

    // Wake it: its upstream call returns (or times out), its write loses the compare-and-set.
    setup.processes[0].signal("CONT");
    let first = first_report.await.expect("report task");
    assert_eq!(
        first,
        Ok(new.clone()),
        "the woken holder answers with the newer token"
    );
    wait_until(
        Duration::from_secs(10),
        "the woken holder's refresh is over",
        || async {
            let credential = setup.processes[0]
                .hub
                .credential(&setup.storage_key())
                .await;
            credential["state"] != "refreshing"
        },
    )
    .await;
    let all: Vec<&TestHub> = setup.processes.iter().map(|p| &p.hub).collect();
    let current = converged_on(&all, setup.appid).await;
    assert_eq!(
        (current.generation, current.access_token.clone()),
        (generation, new.clone())
    );
    assert_eq!(
        stored(&setup.url, &setup.namespace, &setup.storage_key()).await,
        Some((generation, new)),
        "the store still holds the newer token"
    );
}
