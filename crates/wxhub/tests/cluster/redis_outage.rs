//! Redis goes away: every instance keeps serving what it holds, says it is degraded, and picks up
//! where it left off when Redis returns — without refreshing anything twice because of the
//! outage. Each test runs its own `redis-server`, since it stops it.

use std::time::Duration;

use tokio::time::Instant;
use wechat_mock::FaultRule;

use crate::common::*;
use crate::helpers::*;
use crate::redis_server::{unique_namespace, RedisServer};

/// How long the tests keep Redis down.
const OUTAGE: Duration = Duration::from_secs(10);

/// Waits until every instance answers `/readyz` with `expected` (`ok`, `degraded`) and a 200, and
/// its metrics agree.
async fn wait_for_readiness(hubs: &[TestHub], expected: &str, deadline: Duration) {
    let degraded = if expected == "degraded" { 1 } else { 0 };
    wait_until(
        deadline,
        &format!("every instance says {expected}"),
        || async {
            for hub in hubs {
                if readiness(hub).await != Some((200, expected.to_string())) {
                    return false;
                }
                if !hub
                    .metrics()
                    .await
                    .contains(&format!("wxhub_degraded {degraded}\n"))
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

/// Waits until every instance serves a token of `appid` with a generation above `generation`.
async fn wait_for_generation_above(hubs: &[TestHub], appid: &str, generation: u64) -> TokenAnswer {
    wait_for(
        Duration::from_secs(30),
        &format!("a refresh of {appid} beyond generation {generation}"),
        || async {
            let answer = converged(hubs, appid).await;
            (answer.generation > generation).then_some(answer)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_served_through_a_redis_restart_and_nothing_is_refreshed_twice() {
    let stable = "wxcluster0outage1";
    let legacy = "wxcluster0outage2";
    let apps = [TestApp::stable(stable), TestApp::legacy(legacy)];
    let mut redis = RedisServer::start(true);
    let url = redis.url();
    let mock = spawn_mock(
        Duration::from_secs(20),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hubs = spawn_cluster(&mock, &apps, &url, &unique_namespace("outage")).await;
    let (running, consumers) = start_consumers(&hubs, &mock, &[stable, legacy], 2);

    // The instances fetched both tokens when they started; stopping Redis now puts the legacy
    // refresh (due 10 s before the 20 s expiry) inside the outage.
    let before_outage = converged(&hubs, legacy).await;
    redis.stop();
    let stopped = Instant::now();

    wait_for_readiness(&hubs, "degraded", Duration::from_secs(5)).await;
    // Still served from memory, everywhere.
    for hub in hubs.iter() {
        let served = read_token(hub, legacy)
            .await
            .expect("served during the outage");
        assert_eq!(
            (served.access_token, served.generation),
            (before_outage.access_token.clone(), before_outage.generation)
        );
    }
    tokio::time::sleep_until(stopped + OUTAGE).await;
    redis.restart();

    wait_for_readiness(&hubs, "ok", Duration::from_secs(10)).await;
    wait_for_generation_above(&hubs, legacy, before_outage.generation).await;
    finish_consumers(running, consumers).await;

    let stats = stats(&mock);
    for (appid, path) in [
        (legacy, "/cgi-bin/token"),
        (stable, "/cgi-bin/stable_token"),
    ] {
        let current = converged(&hubs, appid).await;
        assert_eq!(
            stats.issued(path, appid),
            current.generation,
            "{appid}: every token WeChat issued became one generation: none was fetched twice"
        );
        assert_eq!(
            stats.business_failures(appid),
            0,
            "{appid}: {:?}",
            stats.business
        );
    }
    assert_eq!(
        stats.calls("/cgi-bin/token", legacy),
        stats.issued("/cgi-bin/token", legacy),
        "no upstream call was wasted"
    );
    assert_eq!(stats.force_refreshes(stable), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_is_refilled_from_memory_and_generations_continue() {
    let appid = "wxcluster0outage3";
    let apps = [TestApp::legacy(appid)];
    let mut redis = RedisServer::start(false);
    let url = redis.url();
    let namespace = unique_namespace("empty");
    let mock = spawn_mock(
        Duration::from_secs(20),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hubs = spawn_cluster(&mock, &apps, &url, &namespace).await;
    let (running, consumers) = start_consumers(&hubs, &mock, &[appid], 3);
    let first = converged(&hubs, appid).await;

    // Without persistence, Redis comes back empty.
    redis.restart();
    assert_eq!(
        stored(&url, &namespace, &format!("access_token/{appid}")).await,
        None
    );

    let next = wait_for_generation_above(&hubs, appid, first.generation).await;
    finish_consumers(running, consumers).await;
    assert_eq!(
        next.generation,
        first.generation + 1,
        "generations continue from what the instances held"
    );
    let current = converged(&hubs, appid).await;
    assert_eq!(
        stored(&url, &namespace, &format!("access_token/{appid}")).await,
        Some((current.generation, current.access_token.clone()))
    );
    let stats = stats(&mock);
    assert_eq!(
        stats.calls("/cgi-bin/token", appid),
        current.generation,
        "one fetch per generation: the instances did not each fetch their own token"
    );
    assert_eq!(stats.business_failures(appid), 0, "{:?}", stats.business);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_fetched_while_redis_is_down_is_served_and_written_when_it_returns() {
    let appid = "wxcluster0outage4";
    let apps = [TestApp::legacy(appid)];
    let mut redis = RedisServer::start(true);
    let url = redis.url();
    let namespace = unique_namespace("unwritten");
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(60),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hubs = spawn_cluster(&mock, &apps, &url, &namespace).await;
    let old = converged(&hubs, appid).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let calls_before = stats(&mock).calls("/cgi-bin/token", appid);

    // Instance 0 starts a refresh whose upstream call is held open; Redis dies meanwhile.
    mock.add_fault(FaultRule {
        path: "/cgi-bin/token".into(),
        account: Some(appid.to_string()),
        delay_ms: Some(1_500),
        count: Some(1),
        ..FaultRule::default()
    });
    wechat_refuses_the_token(&mock, appid);
    let report = {
        let hubs = hubs.clone();
        let token = old.access_token.clone();
        tokio::spawn(async move { report_through_balancer(&hubs, 0, appid, &token).await })
    };
    wait_until(
        Duration::from_secs(5),
        "instance 0 is inside the upstream call",
        || async { stats(&mock).calls("/cgi-bin/token", appid) == calls_before + 1 },
    )
    .await;
    redis.stop();
    let stopped = Instant::now();

    // The call returns: instance 0 serves the new token although it cannot write it yet.
    let fetched = wait_for(
        Duration::from_secs(5),
        "instance 0 serves what it fetched",
        || async {
            read_token(&hubs[0], appid)
                .await
                .filter(|a| a.access_token != old.access_token)
        },
    )
    .await;
    assert_eq!(fetched.generation, old.generation + 1);
    tokio::time::sleep_until(stopped + Duration::from_secs(3)).await;
    redis.restart();

    let answer = report.await.expect("report task");
    mock.clear_faults();
    assert_eq!(answer, Ok(fetched.access_token.clone()));
    let current = converged(&hubs, appid).await;
    assert_eq!(
        (current.generation, &current.access_token),
        (fetched.generation, &fetched.access_token)
    );
    assert_eq!(
        stored(&url, &namespace, &format!("access_token/{appid}")).await,
        Some((current.generation, current.access_token.clone()))
    );
    assert_eq!(
        stats(&mock).calls("/cgi-bin/token", appid),
        calls_before + 1,
        "the outage did not cause a second fetch"
    );
    assert_eq!(
        business_call(&hubs[1].client, &mock, &current.access_token).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_token_expiring_during_an_outage_is_renewed_by_each_instance_to_one_value() {
    let appid = "wxcluster0outage5";
    let apps = [TestApp::stable(appid)];
    let mut redis = RedisServer::start(true);
    let url = redis.url();
    let namespace = unique_namespace("alone");
    let mock = spawn_mock(
        Duration::from_secs(20),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hubs = spawn_cluster(&mock, &apps, &url, &namespace).await;
    let (running, consumers) = start_consumers(&hubs, &mock, &[appid], 3);
    let current = converged(&hubs, appid).await;

    // Stop Redis 12 s into the token's 20 s life: its refresh (due 15 s in) and its expiry both
    // fall into the outage.
    let left = u64::try_from(seconds_until(&current.expires_at)).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(left.saturating_sub(8))).await;
    redis.stop();
    let stopped = Instant::now();

    // Each instance renews it on its own, and WeChat gives them all the same token.
    let renewed = wait_for_generation_above(&hubs, appid, current.generation).await;
    assert!(
        stopped.elapsed() < OUTAGE,
        "renewed {:?} into the outage",
        stopped.elapsed()
    );
    assert_eq!(renewed.generation, current.generation + 1);
    tokio::time::sleep_until(stopped + OUTAGE).await;
    redis.restart();

    // Written once Redis is back; every instance agrees with the store.
    wait_for_readiness(&hubs, "ok", Duration::from_secs(10)).await;
    let storage_key = format!("access_token/{appid}");
    wait_until(
        Duration::from_secs(10),
        "the renewed token is stored",
        || async {
            stored(&url, &namespace, &storage_key).await
                == Some((renewed.generation, renewed.access_token.clone()))
        },
    )
    .await;
    finish_consumers(running, consumers).await;
    assert_eq!(
        converged(&hubs, appid).await.access_token,
        renewed.access_token
    );
    let stats = stats(&mock);
    assert_eq!(
        stats.issued("/cgi-bin/stable_token", appid),
        renewed.generation,
        "one token per generation"
    );
    assert!(
        stats.calls("/cgi-bin/stable_token", appid) < renewed.generation + INSTANCES as u64,
        "one call per instance for the renewal made alone: {:?}",
        stats.calls
    );
    assert_eq!(stats.force_refreshes(appid), 0);
    assert_eq!(stats.business_failures(appid), 0, "{:?}", stats.business);
}
