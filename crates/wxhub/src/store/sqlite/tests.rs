//! The SQLite store on real files: the shared contract, reopening, two processes on one file,
//! refused files (newer schema, another application's, a missing directory), durability and
//! permissions, group commit, and damaged rows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::file::wal_path;
use super::{SqliteStore, SCHEMA_VERSION};
use crate::kinds::{AccountId, CredentialKey, Role};
use crate::store::conformance::{self, store_conformance_tests, Fixture};
use crate::store::{CasOutcome, Change, Store, StoreError};

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("wxhub.db")).expect("open");
    Fixture::with_guard(Arc::new(store), dir)
}

store_conformance_tests!(fixture);

/// Two stores on one file, as two processes would have.
fn two_stores() -> (tempfile::TempDir, Arc<dyn Store>, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let a = SqliteStore::open(&path).expect("open a");
    let b = SqliteStore::open(&path).expect("open b");
    (dir, Arc::new(a), Arc::new(b))
}

fn expect_corrupt(result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::Corrupt(message)) => message,
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, the file was opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wxhub.db");
    let refresh = CredentialKey::new(AccountId::authorizer("wxc", "wxa"), Role::RefreshToken);
    let access = CredentialKey::access_token("wx1");
    let refresh_token = conformance::token("refresh-1", 1);
    let access_token = conformance::token("access-2", 2);
    {
        let store = SqliteStore::open(&path).expect("open");
        conformance::must_apply(&store, &refresh, &refresh_token).await;
        conformance::must_apply(&store, &access, &conformance::token("access-1", 1)).await;
        conformance::must_apply(&store, &access, &access_token).await;
        assert!(store
            .acquire_lease(&access, "node-a", Duration::from_secs(60))
            .await
            .expect("acquire"));
    }

    let store = SqliteStore::open(&path).expect("reopen");
    let mut all = store.load_all().await.expect("load_all");
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (access.clone(), access_token.clone()),
        (refresh.clone(), refresh_token),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(all, expected);
    assert_eq!(store.get(&access).await.expect("get"), Some(access_token));
    let stale = store
        .compare_and_set(&access, &conformance::token("access-late", 2))
        .await
        .expect("compare_and_set");
    assert!(matches!(stale, CasOutcome::Stale { .. }));
    conformance::must_apply(&store, &access, &conformance::token("access-3", 3)).await;
    assert!(
        !store
            .acquire_lease(&access, "node-b", Duration::from_secs(60))
            .await
            .expect("acquire"),
        "a lease outlives the process that took it"
    );
    assert!(store
        .release_lease(&access, "node-a")
        .await
        .expect("release"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_cannot_both_win_a_write() {
    let (_dir, a, b) = two_stores();
    conformance::cas_race_has_exactly_one_winner(&[a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_cannot_both_win_a_lease() {
    let (_dir, a, b) = two_stores();
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
    let (_dir, a, b) = two_stores();
    let mut feed_a = a.subscribe();
    let mut feed_b = b.subscribe();
    let key = CredentialKey::access_token("wx_feed_shared");

    let first = conformance::token("shared-1", 1);
    conformance::must_apply(&*a, &key, &first).await;
    let expected = Change {
        key: key.clone(),
        token: first,
    };
    assert_eq!(conformance::next_change(&mut feed_a).await, expected);
    assert_eq!(conformance::next_change(&mut feed_b).await, expected);

    let second = conformance::token("shared-2", 2);
    conformance::must_apply(&*b, &key, &second).await;
    let expected = Change {
        key: key.clone(),
        token: second,
    };
    // Neither feed repeats generation 1: the next change on both is generation 2.
    assert_eq!(conformance::next_change(&mut feed_b).await, expected);
    assert_eq!(conformance::next_change(&mut feed_a).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_present_at_open_are_not_published_and_writes_right_after_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open a"));
    // Rows put in by a third connection, so that no store has published them.
    let mut raw = Connection::open(&path).expect("raw open");
    let tx = raw.transaction().expect("transaction");
    for i in 0..2_000 {
        let key = CredentialKey::access_token(format!("wx_present_{i:05}"));
        tx.execute(
            "INSERT INTO credentials VALUES (?1, 'present', 2000000000000, 1700000000000, 1, 0)",
            [key.storage_key()],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
    drop(raw);

    // b's read of what is present at open waits until every write below is committed.
    let release = super::watcher::hold::next_read_of(&path);
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open b"));
    let mut feed_b = b.subscribe();
    let written = CredentialKey::access_token("wx_after_open");
    conformance::must_apply(&*a, &written, &conformance::token("after", 1)).await;
    let last = CredentialKey::access_token("wx_after_open_2");
    conformance::must_apply(&*a, &last, &conformance::token("after-2", 1)).await;
    // b's own write does not wait for the read.
    let own = CredentialKey::access_token("wx_present_00000");
    tokio::time::timeout(
        conformance::DEADLINE,
        conformance::must_apply(&*b, &own, &conformance::token("own", 2)),
    )
    .await
    .expect("a write waited for the read of what was present at open");
    drop(release);

    // b's own write first (published as it commits), then the other store's two, once each;
    // none of the rows present at open, and b's own write not a second time: the next change
    // after them is a later write's.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(conformance::next_change(&mut feed_b).await.key);
    }
    assert_eq!(seen, [own.clone(), written, last]);
    let sentinel = CredentialKey::access_token("wx_sentinel");
    conformance::must_apply(&*a, &sentinel, &conformance::token("sentinel", 1)).await;
    assert_eq!(conformance::next_change(&mut feed_b).await.key, sentinel);
}

#[test]
fn a_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wxhub.db");
    drop(SqliteStore::open(&path).expect("open"));
    let conn = Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("set version");
    drop(conn);

    let message = expect_corrupt(SqliteStore::open(&path));
    assert!(message.contains("newer"), "{message}");
    assert!(
        message.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{message}"
    );
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    let conn = Connection::open(&path).expect("raw open");
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY);")
        .expect("create");
    drop(conn);
    let message = expect_corrupt(SqliteStore::open(&path));
    assert!(message.contains("not a wxhub database"), "{message}");

    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write");
    expect_corrupt(SqliteStore::open(&path));
}

#[test]
fn a_missing_directory_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing").join("wxhub.db");
    match SqliteStore::open(&path) {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("wxhub.db"), "{message}")
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("opened a file in a missing directory"),
    }
}

#[test]
fn the_file_is_durable_and_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wxhub.db");
    let store = SqliteStore::open(&path).expect("open");
    let db = store.shared.lock();
    let mode: String = db
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let synchronous: i64 = db
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .expect("synchronous");
    assert_eq!(
        synchronous, 1,
        "NORMAL: the database thread syncs the WAL per batch"
    );
    drop(db);
    assert_eq!(store.shared.wal.as_deref(), Some(&*wal_path(&path)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the database must not be readable by others"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_wait_for_a_sync_that_serves_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wxhub.db");
    let store = Arc::new(SqliteStore::open(&path).expect("open"));
    let syncs = || store.shared.syncs.load(Ordering::Relaxed);

    // Reads and leases are not worth a sync.
    let key = CredentialKey::access_token("wx_lease");
    let ttl = Duration::from_secs(5);
    assert!(store.acquire_lease(&key, "a", ttl).await.expect("acquire"));
    assert!(store.release_lease(&key, "a").await.expect("release"));
    assert!(store.get(&key).await.expect("get").is_none());
    assert_eq!(syncs(), 0);

    // A lone durable write is synced before it is answered.
    conformance::must_apply(&*store, &key, &conformance::token("one", 1)).await;
    assert_eq!(syncs(), 1);

    // Many at once share syncs: a cold start's writes do not pay one each.
    let writes: usize = 200;
    let all = futures_util::future::join_all((0..writes).map(|i| {
        let store = store.clone();
        async move {
            let key = CredentialKey::access_token(format!("wx_batch_{i:03}"));
            store
                .compare_and_set(&key, &conformance::token(&format!("t{i}"), 1))
                .await
        }
    }))
    .await;
    assert!(all
        .iter()
        .all(|outcome| matches!(outcome, Ok(CasOutcome::Applied))));
    let batch_syncs = syncs() - 1;
    assert!(
        (1..writes as u64).contains(&batch_syncs),
        "{writes} concurrent writes took {batch_syncs} syncs"
    );
    // And every one of them is in the file, for another connection.
    drop(store);
    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        reopened.load_all().await.expect("load_all").len(),
        writes + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_are_skipped_by_load_all_and_refused_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wxhub.db");
    let store = SqliteStore::open(&path).expect("open");
    let good_key = CredentialKey::access_token("wx_good");
    let good = conformance::token("good-1", 1);
    conformance::must_apply(&store, &good_key, &good).await;

    let conn = Connection::open(&path).expect("raw open");
    conn.execute_batch(
        "INSERT INTO credentials VALUES ('nonsense/wx_bad', 'SECRET-A', 2, 1, 1, 1);
         INSERT INTO credentials VALUES ('access_token/wx_blob', X'5345435245542D42', 2, 1, 1, 1);",
    )
    .expect("insert corrupt rows");
    drop(conn);

    assert_eq!(
        store.load_all().await.expect("load_all"),
        vec![(good_key.clone(), good)]
    );

    let blob_key = CredentialKey::access_token("wx_blob");
    let errors = [
        store.get(&blob_key).await.map(|_| ()),
        store
            .compare_and_set(&blob_key, &conformance::token("replacement", 2))
            .await
            .map(|_| ()),
    ];
    for error in errors {
        match error {
            Err(StoreError::Corrupt(message)) => {
                assert!(message.contains("access_token/wx_blob"), "{message}");
                assert!(!message.contains("SECRET"), "{message}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    // The damaged row is kept as it was, for an operator to inspect.
    drop(store);
    let conn = Connection::open(&path).expect("raw open");
    let kind: String = conn
        .query_row(
            "SELECT typeof(value) FROM credentials WHERE storage_key = 'access_token/wx_blob'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(kind, "blob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_fails_once_the_file_has_a_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wxhub.db");
    let store = SqliteStore::open(&path).expect("open");
    store.ping().await.expect("ping");
    let conn = Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("set version");
    drop(conn);
    assert!(matches!(store.ping().await, Err(StoreError::Corrupt(_))));
}
