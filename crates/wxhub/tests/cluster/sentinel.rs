//! Redis run highly available with Sentinel: the master dies mid-run (or an operator switches
//! over while it is alive), the Sentinels promote its replica, and the instances follow — their
//! command connections and their change feeds move to the new master, consumers keep being
//! served, and generations continue from where they were.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wxhub::configuration::{RedisSettings, RedisTarget, StoreSettings};

use crate::common::*;
use crate::helpers::*;
use crate::redis_server::{unique_namespace, SentinelGroup};

/// Hub options for `apps` on the master the Sentinels of `group` name, under `namespace`.
fn sentinel_options(apps: &[TestApp], group: &SentinelGroup, namespace: &str) -> HubOptions {
    let mut options = HubOptions::new(apps);
    let mut redis = RedisSettings::url("unused").with_namespace(namespace);
    redis.target = RedisTarget::Sentinel {
        master: SentinelGroup::MASTER_NAME.to_string(),
        sentinels: group.sentinel_urls(),
    };
    options.store = StoreSettings::Redis(redis);
    options
}

/// A Sentinel group, a mock whose tokens live 8 s (a refresh every 4 s or so, several before and
/// after a failover) and the cluster's instances on the group's master under `namespace`, ready.
async fn sentinel_cluster(
    apps: &[TestApp],
    namespace: &str,
) -> (
    SentinelGroup,
    Arc<wechat_mock::MockServer>,
    Arc<Vec<TestHub>>,
) {
    let group = tokio::task::spawn_blocking(SentinelGroup::start)
        .await
        .expect("starting the Sentinel group");
    let mock = spawn_mock(
        Duration::from_secs(8),
        Duration::from_secs(4),
        apps,
        &[],
        |c| c,
    )
    .await;
    let mut hubs = Vec::new();
    for _ in 0..INSTANCES {
        hubs.push(spawn_app(&mock, sentinel_options(apps, &group, namespace)).await);
    }
    for hub in &hubs {
        hub.wait_ready().await;
    }
    (group, mock, Arc::new(hubs))
}

/// Waits until every hub serves the same token of `appid` with a generation above `generation`.
async fn generation_above(hubs: &[TestHub], appid: &str, generation: u64) -> TokenAnswer {
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
async fn instances_follow_a_sentinel_failover_and_nothing_is_lost() {
    let legacy = "wxcluster0sentinel1";
    let stable = "wxcluster0sentinel2";
    let apps = [TestApp::legacy(legacy), TestApp::stable(stable)];
    let namespace = unique_namespace("sentinel");
    let (mut group, mock, hubs) = sentinel_cluster(&apps, &namespace).await;
    let (running, consumers) = start_consumers(&hubs, &mock, &[legacy, stable], 2);

    let before = generation_above(&hubs, legacy, 1).await;
    let replica_port = group.replica.port();
    group.master.stop();
    let killed = Instant::now();

    // The Sentinels agree the master is down (1 s without an answer) and promote the replica.
    wait_until(
        Duration::from_secs(20),
        "the Sentinels promote the replica",
        || async { group.master_port() == Some(replica_port) },
    )
    .await;
    let promoted = killed.elapsed();

    // Two refreshes after the failover: both written to the new master, both seen by every
    // instance through its feed there.
    let after = generation_above(&hubs, legacy, before.generation + 1).await;
    let new_master = group.replica.url();
    let namespace_key = format!("access_token/{legacy}");
    wait_until(
        Duration::from_secs(10),
        "the new master holds the current generation",
        || async {
            let current = converged(&hubs, legacy).await;
            stored(&new_master, &namespace, &namespace_key).await
                == Some((current.generation, current.access_token))
        },
    )
    .await;
    let reports = finish_consumers(running, consumers).await;

    let stats = stats(&mock);
    let current = converged(&hubs, legacy).await;
    assert!(current.generation >= after.generation);
    assert_eq!(
        stats.issued("/cgi-bin/token", legacy),
        current.generation,
        "every token WeChat issued became one generation: none lost in the failover, none \
         fetched twice (promoted after {promoted:?})"
    );
    let distinct: std::collections::HashSet<&String> = reports
        .iter()
        .filter(|(appid, _)| appid == legacy)
        .flat_map(|(_, report)| report.tokens_seen.iter())
        .collect();
    assert!(
        distinct.len() as u64 <= current.generation,
        "consumers saw {} distinct tokens for {} generations",
        distinct.len(),
        current.generation
    );
    for appid in [legacy, stable] {
        assert_eq!(
            stats.business_failures(appid),
            0,
            "{appid}: {:?}",
            stats.business
        );
    }
    assert_eq!(stats.force_refreshes(stable), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_moves_the_instances_off_a_master_that_stays_up() {
    let appid = "wxcluster0sentinel3";
    let apps = [TestApp::legacy(appid)];
    let namespace = unique_namespace("switchover");
    let (group, mock, hubs) = sentinel_cluster(&apps, &namespace).await;
    let (running, consumers) = start_consumers(&hubs, &mock, &[appid], 2);

    let before = converged(&hubs, appid).await;
    let replica_port = group.replica.port();
    group.switchover();
    wait_until(
        Duration::from_secs(20),
        "the Sentinels promote the replica",
        || async { group.master_port() == Some(replica_port) },
    )
    .await;

    // The old master is up, now a read-only replica: the instances must write elsewhere.
    let after = generation_above(&hubs, appid, before.generation + 1).await;
    let key = format!("access_token/{appid}");
    wait_until(
        Duration::from_secs(10),
        "the new master holds the current generation",
        || async {
            let current = converged(&hubs, appid).await;
            stored(&group.replica.url(), &namespace, &key).await
                == Some((current.generation, current.access_token))
        },
    )
    .await;
    finish_consumers(running, consumers).await;
    let stats = stats(&mock);
    let current = converged(&hubs, appid).await;
    assert!(current.generation >= after.generation);
    assert_eq!(
        stats.issued("/cgi-bin/token", appid),
        current.generation,
        "one token per generation across the switchover"
    );
    assert_eq!(stats.business_failures(appid), 0, "{:?}", stats.business);
}
