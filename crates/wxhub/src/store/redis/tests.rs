//! The Redis store against a real `redis-server`: the shared contract (on a plain server and on
//! a one-node Cluster), what two instances on one namespace see of each other, the stored layout,
//! damaged entries, persistence, and outages of Redis and of the change feed.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::broadcast;

use super::{Persistence, RedisStore};
use crate::kinds::CredentialKey;
use crate::store::conformance::{self, store_conformance_tests, Fixture};
use crate::store::{Store, StoreError, CHANGE_FEED_CAPACITY};
use crate::token::Timestamp;
use wxhub_test_support::redis::{unique_namespace, RedisServer, ServerOptions, TestRedis};

async fn open(url: &str, namespace: &str) -> RedisStore {
    RedisStore::open(url, namespace)
        .await
        .unwrap_or_else(|e| panic!("opening the Redis store at {url}: {e}"))
}

async fn fixture() -> Fixture {
    let redis = TestRedis::get();
    let store = open(&redis.url(), &unique_namespace("conformance")).await;
    Fixture::with_guard(Arc::new(store), redis)
}

store_conformance_tests!(async fixture);

/// Two stores on one namespace, as two hub instances would have.
async fn two_stores() -> (TestRedis, Arc<dyn Store>, Arc<dyn Store>) {
    let redis = TestRedis::get();
    let namespace = unique_namespace("shared");
    let a = open(&redis.url(), &namespace).await;
    let b = open(&redis.url(), &namespace).await;
    (redis, Arc::new(a), Arc::new(b))
}

/// A plain connection, to look at (or damage) what the store wrote.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_namespace_cannot_both_win_a_write() {
    let (_redis, a, b) = two_stores().await;
    conformance::cas_race_has_exactly_one_winner(&[a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_namespace_cannot_both_win_a_lease() {
    let (_redis, a, b) = two_stores().await;
    conformance::lease_race_has_exactly_one_winner(&[a.clone(), b.clone()]).await;
    let key = CredentialKey::access_token("wx_two_leases");
    let ttl = Duration::from_secs(30);
    assert!(a.acquire_lease(&key, "node-a", ttl).await.expect("acquire"));
    assert!(!b.acquire_lease(&key, "node-b", ttl).await.expect("acquire"));
    assert!(!b.release_lease(&key, "node-b").await.expect("release"));
    assert!(a.release_lease(&key, "node-a").await.expect("release"));
    assert!(b.acquire_lease(&key, "node-b", ttl).await.expect("acquire"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_another_store_reach_the_change_feed_once() {
    let (_redis, a, b) = two_stores().await;
    let mut feed_a = a.subscribe();
    let mut feed_b = b.subscribe();
    let key = CredentialKey::access_token("wx_feed_shared");

    let first = conformance::token("shared-1", 1);
    conformance::must_apply(&*a, &key, &first).await;
    let second = conformance::token("shared-2", 2);
    conformance::must_apply(&*b, &key, &second).await;
    for feed in [&mut feed_a, &mut feed_b] {
        assert_eq!(conformance::next_change(feed).await.token, first);
        assert_eq!(conformance::next_change(feed).await.token, second);
    }
    // Nothing else: a marker write is the next thing both feeds carry.
    let marker = CredentialKey::access_token("wx_feed_marker");
    conformance::must_apply(&*a, &marker, &conformance::token("marker", 1)).await;
    for feed in [&mut feed_a, &mut feed_b] {
        assert_eq!(conformance::next_change(feed).await.key, marker);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_keep_hubs_apart() {
    let redis = TestRedis::get();
    let one = open(&redis.url(), &unique_namespace("one")).await;
    let two = open(&redis.url(), &unique_namespace("two")).await;
    let mut feed_two = two.subscribe();
    let key = CredentialKey::access_token("wx_apart");

    conformance::must_apply(&one, &key, &conformance::token("one-1", 1)).await;
    assert_eq!(two.get(&key).await.expect("get"), None);
    assert!(two.load_all().await.expect("load_all").is_empty());
    assert!(one
        .acquire_lease(&key, "node-a", Duration::from_secs(30))
        .await
        .expect("acquire"));
    assert!(two
        .acquire_lease(&key, "node-b", Duration::from_secs(30))
        .await
        .expect("acquire"));
    // `two` starts its own generations and its feed carries only its own writes.
    conformance::must_apply(&two, &key, &conformance::token("two-1", 1)).await;
    assert_eq!(
        conformance::next_change(&mut feed_two).await.token.value,
        "two-1"
    );
}

/// A one-node Redis Cluster owning every slot: a script whose keys span two slots fails
/// there with `CROSSSLOT`, as on any Cluster.
async fn cluster_fixture() -> Fixture {
    let server = RedisServer::start_with(ServerOptions {
        args: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]
        .map(String::from)
        .to_vec(),
        ..ServerOptions::default()
    });
    let mut conn = raw(&server.url()).await;
    let _: Value = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER ADDSLOTSRANGE");
    conformance::eventually("the one-node cluster is up", || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        }
    })
    .await;
    let store = open(&server.url(), &unique_namespace("cluster")).await;
    Fixture::with_guard(Arc::new(store), server)
}

/// The whole contract again on a Redis Cluster: every script's keys share one hash slot.
mod on_a_cluster {
    use super::*;

    store_conformance_tests!(async cluster_fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_earlier_version_stored_without_hash_tags_is_moved_at_open() {
    let redis = TestRedis::get();
    let namespace = unique_namespace("untagged");
    let mut conn = raw(&redis.url()).await;
    let old_hash = |key: &str| format!("{namespace}:token:{key}");
    // Two credentials and an account in the old layout; an instance of this version has
    // already written a newer generation of the second under the tagged name.
    for (key, value, generation) in [
        ("access_token/wx_old_a", "old-a", 3),
        ("access_token/wx_old_b", "old-b", 2),
    ] {
        let _: Value = redis::cmd("HSET")
            .arg(old_hash(key))
            .arg("value")
            .arg(value)
            .arg("expires_at_ms")
            .arg(Timestamp::now().as_millis() + 3_600_000)
            .arg("fetched_at_ms")
            .arg(Timestamp::now().as_millis())
            .arg("generation")
            .arg(generation)
            .arg("updated_at_ms")
            .arg(Timestamp::now().as_millis())
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let _: Value = redis::cmd("SADD")
            .arg(format!("{namespace}:tokens"))
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("SADD");
    }
    let _: Value = redis::cmd("HSET")
        .arg(format!("{namespace}:accounts"))
        .arg("app/wx_old_a")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .expect("HSET accounts");
    let _: Value = redis::cmd("HSET")
        .arg(format!("{{{namespace}}}:token:access_token/wx_old_b"))
        .arg("value")
        .arg("new-b")
        .arg("expires_at_ms")
        .arg(Timestamp::now().as_millis() + 3_600_000)
        .arg("fetched_at_ms")
        .arg(Timestamp::now().as_millis())
        .arg("generation")
        .arg(5)
        .arg("updated_at_ms")
        .arg(Timestamp::now().as_millis())
        .query_async(&mut conn)
        .await
        .expect("HSET newer");

    let store = open(&redis.url(), &namespace).await;
    let mut loaded: Vec<(String, String, u64)> = store
        .load_all()
        .await
        .expect("load_all")
        .into_iter()
        .map(|(k, t)| (k.storage_key(), t.value, t.generation))
        .collect();
    loaded.sort();
    assert_eq!(
        loaded,
        vec![
            ("access_token/wx_old_a".into(), "old-a".into(), 3),
            ("access_token/wx_old_b".into(), "new-b".into(), 5),
        ],
        "moved, and the higher generation kept"
    );
    assert_eq!(
        store.load_accounts().await.expect("load_accounts"),
        vec![("app/wx_old_a".to_string(), "{}".to_string())]
    );
    let left: i64 = redis::cmd("EXISTS")
        .arg(format!("{namespace}:tokens"))
        .arg(format!("{namespace}:accounts"))
        .arg(old_hash("access_token/wx_old_a"))
        .arg(old_hash("access_token/wx_old_b"))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(left, 0, "nothing is left under the untagged names");
    // A second open finds nothing to move and changes nothing.
    drop(store);
    let again = open(&redis.url(), &namespace).await;
    assert_eq!(again.load_all().await.expect("load_all").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_prefixed_and_the_lease_is_a_set_with_an_expiry() {
    let redis = TestRedis::get();
    let namespace = unique_namespace("layout");
    let store = open(&redis.url(), &namespace).await;
    let key = CredentialKey::access_token("wx_layout");
    conformance::must_apply(&store, &key, &conformance::token("layout-1", 1)).await;
    assert!(store
        .acquire_lease(&key, "node-a", Duration::from_secs(30))
        .await
        .expect("acquire"));

    let mut conn = raw(&redis.url()).await;
    let generation: String = redis::cmd("HGET")
        .arg(format!("{{{namespace}}}:token:access_token/wx_layout"))
        .arg("generation")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(generation, "1");
    let lease = format!("{{{namespace}}}:lease:access_token/wx_layout");
    let owner: String = redis::cmd("GET")
        .arg(&lease)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(owner, "node-a");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&lease)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!((25_000..=30_000).contains(&ttl_ms), "lease PTTL {ttl_ms}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{{{namespace}}}:token:access_token/wx_layout"))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert_eq!(ttl, -1, "tokens never expire out of Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_entries_are_skipped_by_load_all_and_refused_by_key() {
    let redis = TestRedis::get();
    let namespace = unique_namespace("corrupt");
    let store = open(&redis.url(), &namespace).await;
    let good_key = CredentialKey::access_token("wx_good");
    let good = conformance::token("good-1", 1);
    conformance::must_apply(&store, &good_key, &good).await;

    let mut conn = raw(&redis.url()).await;
    let bad = format!("{{{namespace}}}:token:access_token/wx_bad");
    let _: Value = redis::cmd("HSET")
        .arg(&bad)
        .arg("value")
        .arg("SECRET-A")
        .arg("expires_at_ms")
        .arg("soon")
        .arg("fetched_at_ms")
        .arg("1")
        .arg("generation")
        .arg("one")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let _: Value = redis::cmd("SADD")
        .arg(format!("{{{namespace}}}:tokens"))
        .arg("access_token/wx_bad")
        .arg("nonsense/wx_x")
        .query_async(&mut conn)
        .await
        .expect("SADD");

    assert_eq!(
        store.load_all().await.expect("load_all"),
        vec![(good_key, good)]
    );
    let bad_key = CredentialKey::access_token("wx_bad");
    let errors = [
        store.get(&bad_key).await.map(|_| ()),
        store
            .compare_and_set(&bad_key, &conformance::token("replacement", 2))
            .await
            .map(|_| ()),
    ];
    for error in errors {
        match error {
            Err(StoreError::Corrupt(message)) => {
                assert!(message.contains("access_token/wx_bad"), "{message}");
                assert!(!message.contains("SECRET"), "{message}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_is_reported() {
    let mut without = RedisServer::start(false);
    let store = open(&without.url(), &unique_namespace("persistence")).await;
    assert_eq!(
        store.persistence().await.expect("CONFIG GET"),
        Persistence {
            aof: false,
            rdb: false
        }
    );
    drop(store);
    without.stop();

    let with_aof = RedisServer::start(true);
    let store = open(&with_aof.url(), &unique_namespace("persistence")).await;
    let persistence = store.persistence().await.expect("CONFIG GET");
    assert!(persistence.aof && persistence.any(), "{persistence:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_missed_while_the_feed_was_down_raises_the_resync_signal() {
    // A server of its own: cutting every pub/sub connection of the shared one would cut the
    // feeds of tests running beside this one.
    let redis = RedisServer::start(false);
    let namespace = unique_namespace("missed");
    let listener = open(&redis.url(), &namespace).await;
    let writer = open(&redis.url(), &namespace).await;
    let mut resync = listener
        .subscribe_resync()
        .expect("redis has a resync signal");
    let key = CredentialKey::access_token("wx_missed");

    // Cut every pub/sub connection of this Redis; the listener reconnects after a backoff,
    // and the write lands before it is subscribed again.
    kill_pubsub(&redis.url()).await;
    let missed = conformance::token("missed-1", 1);
    conformance::must_apply(&writer, &key, &missed).await;

    tokio::time::timeout(Duration::from_secs(10), resync.changed())
        .await
        .expect("a resync signal within 10 s")
        .expect("the signal is alive");
    let reloaded = listener.load_all().await.expect("load_all");
    assert!(
        reloaded.contains(&(key, missed)),
        "the reload holds the missed write"
    );
    conformance::eventually("the listener is subscribed again", || async {
        listener.feed_connected()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_many_stored_tokens_puts_nothing_on_the_change_feed() {
    // A server of its own, for the same reason as above.
    let redis = RedisServer::start(false);
    let namespace = unique_namespace("many");
    let listener = open(&redis.url(), &namespace).await;
    let writer = open(&redis.url(), &namespace).await;
    let mut resync = listener
        .subscribe_resync()
        .expect("redis has a resync signal");
    // More stored tokens than the feed holds: replaying them would overflow it.
    let stored = CHANGE_FEED_CAPACITY + 500;
    let mut seen = listener.subscribe();
    for i in 0..stored {
        let key = CredentialKey::access_token(format!("wx_many_{i:05}"));
        conformance::must_apply(&writer, &key, &conformance::token(&format!("t{i}"), 1)).await;
    }
    // Every one of those writes has reached the listener before the feed is cut.
    let last = CredentialKey::access_token(format!("wx_many_{:05}", stored - 1));
    loop {
        match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await {
            Ok(Ok(change)) if change.key == last => break,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            other => panic!("the listener did not see the last write: {other:?}"),
        }
    }
    let mut feed = listener.subscribe();

    kill_pubsub(&redis.url()).await;
    tokio::time::timeout(Duration::from_secs(10), resync.changed())
        .await
        .expect("a resync signal within 10 s")
        .expect("the signal is alive");
    conformance::eventually("the listener is subscribed again", || async {
        listener.feed_connected()
    })
    .await;

    // The next message on the feed is the next write, not a replay of the stored tokens.
    let after = CredentialKey::access_token("wx_many_after");
    let token = conformance::token("after-1", 1);
    conformance::must_apply(&writer, &after, &token).await;
    let first = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("a change within 10 s")
        .expect("the feed neither lagged nor closed");
    assert_eq!((first.key, first.token), (after, token));
}

/// Cuts every pub/sub connection of the Redis at `url`: only for a server the calling test
/// owns.
async fn kill_pubsub(url: &str) {
    let mut conn = raw(url).await;
    let _: Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_fails_fast_while_redis_is_down_and_recovers_with_it() {
    let mut redis = RedisServer::start(true);
    let namespace = unique_namespace("outage");
    let store = open(&redis.url(), &namespace).await;
    let writer = open(&redis.url(), &namespace).await;
    let mut feed = store.subscribe();
    let key = CredentialKey::access_token("wx_outage");
    let first = conformance::token("outage-1", 1);
    conformance::must_apply(&store, &key, &first).await;
    assert_eq!(conformance::next_change(&mut feed).await.token, first);

    redis.stop();
    let started = std::time::Instant::now();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .acquire_lease(&key, "node-a", Duration::from_secs(5))
            .await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "operations must fail fast while Redis is down, took {:?}",
        started.elapsed()
    );
    conformance::eventually("the feed notices the outage", || async {
        !store.feed_connected()
    })
    .await;

    redis.restart();
    conformance::eventually("the store answers again", || async {
        store.ping().await.is_ok()
    })
    .await;
    // The AOF kept the token; generations continue from it.
    assert_eq!(store.get(&key).await.expect("get"), Some(first.clone()));
    let second = conformance::token("outage-2", 2);
    conformance::eventually("the writer's connection is back", || async {
        writer.ping().await.is_ok()
    })
    .await;
    conformance::must_apply(&writer, &key, &second).await;
    // The feed comes back too: generation 2 arrives (perhaps after a re-published 1).
    loop {
        let change = conformance::next_change(&mut feed).await;
        if change.token.generation == 2 {
            assert_eq!(change.token, second);
            break;
        }
        assert_eq!(change.token, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_open_with_the_password_masked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
    match RedisStore::open(&url, "wxhub").await {
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains(&port.to_string()), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("opened a store on a closed port"),
    }
    // A TLS client against a server that does not speak TLS: refused at open, cleanly.
    let plain = TestRedis::get();
    let tls_url = plain
        .url()
        .replacen("redis://", "rediss://user:hunter2@", 1);
    match RedisStore::open(&tls_url, "wxhub").await {
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains("rediss://user:***@"), "{message}");
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("opened a TLS store on a plain-text server"),
    }
}
