//! The [`Store`] contract as executable checks, shared by every backend's tests.
//!
//! Each check takes a store (or several handles on one shared store) and panics with a message
//! naming the broken rule. A backend runs the whole suite with one line,
//! `store_conformance_tests!(fixture)`, where `fixture` is a function returning a fresh
//! [`Fixture`] (or `store_conformance_tests!(async fixture)` for an `async fn`, when opening the
//! store needs I/O); backend-specific behaviour (persistence, several processes on one store) is tested
//! beside the backend, reusing these checks where they apply.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Barrier};

use super::{AccountChange, CasOutcome, Change, Store};
use crate::kinds::{AccountId, CredentialKey, Role};
use crate::token::{CorpTicketKind, TicketKind, Timestamp, Token};

/// How long a check waits for something that should happen promptly (a change to arrive, a lease
/// to run out) before it fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// A fresh store for one test, plus whatever must outlive it (a temporary directory, a server).
pub(crate) struct Fixture {
    /// The store under test.
    pub(crate) store: Arc<dyn Store>,
    /// Dropped after the store: keeps its backing resources alive for the test's duration.
    _guard: Option<Box<dyn Any + Send>>,
}

impl Fixture {
    /// A fixture for a store that needs nothing else kept alive.
    pub(crate) fn new(store: Arc<dyn Store>) -> Fixture {
        Fixture {
            store,
            _guard: None,
        }
    }

    /// A fixture whose store depends on `guard` (e.g. a `TempDir`) staying alive.
    pub(crate) fn with_guard(store: Arc<dyn Store>, guard: impl Any + Send) -> Fixture {
        Fixture {
            store,
            _guard: Some(Box::new(guard)),
        }
    }
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh store from `$fixture`.
macro_rules! store_conformance_tests {
    (async $fixture:path) => {
        $crate::store::conformance::store_conformance_tests!(@checks ($fixture().await));
    };
    ($fixture:path) => {
        $crate::store::conformance::store_conformance_tests!(@checks ($fixture()));
    };
    (@checks $make:expr) => {
        $crate::store::conformance::store_conformance_tests!(@tests $make;
            single:
                get_returns_what_was_written,
                cas_first_write_is_generation_one,
                cas_next_write_is_generation_two,
                cas_refuses_wrong_generations,
                restore_writes_only_above_the_stored_generation,
                change_feed_carries_applied_writes_only,
                load_all_returns_everything,
                lease_is_exclusive_between_owners,
                lease_reacquire_by_owner_extends,
                lease_reacquire_by_owner_replaces_expiry,
                lease_release_only_by_owner,
                expired_lease_can_be_taken_by_another_owner,
                leases_are_per_key,
                lease_and_read_in_one_call,
                ping_succeeds,
                delete_removes_the_token_and_its_lease,
                accounts_are_stored_published_and_removed,
                force_budget_stops_at_its_limit_per_name_and_day;
            shared:
                cas_race_has_exactly_one_winner,
                lease_race_has_exactly_one_winner,
                force_budget_race_never_overspends
        );
    };
    (@tests $make:expr; single: $($single:ident),*; shared: $($shared:ident),*) => {
        mod conformance_suite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $single() {
                    let fixture = $make;
                    $crate::store::conformance::$single(&*fixture.store).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared() {
                    let fixture = $make;
                    let handles = [fixture.store.clone(), fixture.store.clone()];
                    $crate::store::conformance::$shared(&handles).await;
                }
            )*
        }
    };
}
pub(crate) use store_conformance_tests;

/// A token with a recognisable value, realistic timestamps and the given generation.
pub(crate) fn token(value: &str, generation: u64) -> Token {
    let fetched_at = Timestamp(1_700_000_000_000 + generation as i64 * 1000);
    Token {
        value: value.to_owned(),
        expires_at: fetched_at.plus(Duration::from_secs(7200)),
        fetched_at,
        generation,
    }
}

/// Writes `token` and fails the check unless the write was applied.
pub(crate) async fn must_apply(store: &dyn Store, key: &CredentialKey, token: &Token) {
    let outcome = store
        .compare_and_set(key, token)
        .await
        .unwrap_or_else(|e| panic!("compare_and_set({key}) failed: {e}"));
    assert_eq!(
        outcome,
        CasOutcome::Applied,
        "writing generation {} of {key} must be applied",
        token.generation
    );
}

/// Waits (up to [`DEADLINE`]) for the next change on `rx`.
pub(crate) async fn next_change(rx: &mut broadcast::Receiver<Change>) -> Change {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Ok(change)) => change,
        Ok(Err(e)) => panic!("change feed failed: {e}"),
        Err(_) => panic!("no change arrived within {DEADLINE:?}"),
    }
}

/// Polls `attempt` every 20 ms until it returns true; fails if [`DEADLINE`] passes first.
pub(crate) async fn eventually<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !attempt().await {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A missing key reads as nothing; a written token reads back field for field.
pub(crate) async fn get_returns_what_was_written(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_get");
    assert_eq!(store.get(&key).await.expect("get"), None);
    let written = token("value-get-1", 1);
    must_apply(store, &key, &written).await;
    assert_eq!(store.get(&key).await.expect("get"), Some(written));
    let other = CredentialKey::access_token("wx_get_other");
    assert_eq!(store.get(&other).await.expect("get"), None);
}

/// The first write of a key must carry generation 1.
pub(crate) async fn cas_first_write_is_generation_one(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_first");
    must_apply(store, &key, &token("value-first-1", 1)).await;
    assert_eq!(
        store.get(&key).await.expect("get").map(|t| t.generation),
        Some(1)
    );
}

/// After generation 1, generation 2 is accepted and replaces it.
pub(crate) async fn cas_next_write_is_generation_two(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_second");
    must_apply(store, &key, &token("value-second-1", 1)).await;
    let second = token("value-second-2", 2);
    must_apply(store, &key, &second).await;
    assert_eq!(store.get(&key).await.expect("get"), Some(second));
}

/// Equal, lower and skipping generations are refused with the stored token, which stays as it was.
pub(crate) async fn cas_refuses_wrong_generations(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_stale");

    for generation in [0, 2, 5] {
        let outcome = store
            .compare_and_set(&key, &token("value-stale-x", generation))
            .await
            .expect("compare_and_set");
        assert_eq!(
            outcome,
            CasOutcome::Stale { current: None },
            "generation {generation} on an empty key must be refused"
        );
    }
    assert_eq!(store.get(&key).await.expect("get"), None);

    let first = token("value-stale-1", 1);
    let second = token("value-stale-2", 2);
    must_apply(store, &key, &first).await;
    must_apply(store, &key, &second).await;

    for (generation, why) in [(2, "equal"), (1, "lower"), (0, "zero"), (4, "skipping")] {
        let outcome = store
            .compare_and_set(&key, &token("value-stale-y", generation))
            .await
            .expect("compare_and_set");
        assert_eq!(
            outcome,
            CasOutcome::Stale {
                current: Some(second.clone())
            },
            "{why} generation {generation} must be refused with the stored token"
        );
    }
    assert_eq!(store.get(&key).await.expect("get"), Some(second));
}

/// `restore` writes on an empty key or above the stored generation (skipping is fine: it puts
/// back what a node knows), refuses equal and lower generations with the stored token, and
/// publishes what it writes; afterwards compare-and-set continues from the restored generation.
pub(crate) async fn restore_writes_only_above_the_stored_generation(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_restore");
    let mut rx = store.subscribe();

    let restored = token("value-restore-7", 7);
    assert_eq!(
        store.restore(&key, &restored).await.expect("restore"),
        CasOutcome::Applied,
        "restoring onto an empty key must be applied"
    );
    assert_eq!(store.get(&key).await.expect("get"), Some(restored.clone()));
    assert_eq!(
        next_change(&mut rx).await,
        Change {
            key: key.clone(),
            token: restored.clone()
        }
    );

    for (generation, why) in [(7, "equal"), (3, "lower")] {
        let outcome = store
            .restore(&key, &token("value-restore-x", generation))
            .await
            .expect("restore");
        assert_eq!(
            outcome,
            CasOutcome::Stale {
                current: Some(restored.clone())
            },
            "restoring an {why} generation must be refused with the stored token"
        );
    }

    let higher = token("value-restore-9", 9);
    assert_eq!(
        store.restore(&key, &higher).await.expect("restore"),
        CasOutcome::Applied
    );
    let next = token("value-restore-10", 10);
    must_apply(store, &key, &next).await;
    assert_eq!(store.get(&key).await.expect("get"), Some(next.clone()));
    assert_eq!(next_change(&mut rx).await.token, higher);
    assert_eq!(next_change(&mut rx).await.token, next);
}

/// Writers racing with the same next generation (through any of `stores`, which share one
/// backing store): exactly one wins, every loser is handed the winner's token.
pub(crate) async fn cas_race_has_exactly_one_winner(stores: &[Arc<dyn Store>]) {
    const RACERS: usize = 20;
    let key = CredentialKey::access_token("wx_race");
    must_apply(&*stores[0], &key, &token("value-race-1", 1)).await;
    must_apply(&*stores[0], &key, &token("value-race-2", 2)).await;

    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let store = stores[i % stores.len()].clone();
        let barrier = barrier.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let offered = token(&format!("value-race-3-{i}"), 3);
            barrier.wait().await;
            let outcome = store.compare_and_set(&key, &offered).await;
            (offered, outcome)
        }));
    }

    let mut winners = Vec::new();
    let mut losers_saw = Vec::new();
    for task in tasks {
        let (offered, outcome) = task.await.expect("racer panicked");
        match outcome.expect("compare_and_set") {
            CasOutcome::Applied => winners.push(offered),
            CasOutcome::Stale { current } => losers_saw.push(current),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer must win generation 3");
    let winner = winners.pop();
    for seen in losers_saw {
        assert_eq!(seen, winner, "a loser must be handed the winner's token");
    }
    for store in stores {
        assert_eq!(store.get(&key).await.expect("get"), winner);
    }
}

/// Applied writes appear on the change feed, in order; refused ones do not.
pub(crate) async fn change_feed_carries_applied_writes_only(store: &dyn Store) {
    let key = CredentialKey::new(AccountId::app("wx_feed"), Role::Ticket(TicketKind::Jsapi));
    let mut rx = store.subscribe();

    let first = token("value-feed-1", 1);
    must_apply(store, &key, &first).await;
    // Refused: equal, skipping.
    for generation in [1, 3] {
        let outcome = store
            .compare_and_set(&key, &token("value-feed-refused", generation))
            .await
            .expect("compare_and_set");
        assert!(matches!(outcome, CasOutcome::Stale { .. }));
    }
    let second = token("value-feed-2", 2);
    must_apply(store, &key, &second).await;

    assert_eq!(
        next_change(&mut rx).await,
        Change {
            key: key.clone(),
            token: first
        }
    );
    assert_eq!(
        next_change(&mut rx).await,
        Change {
            key: key.clone(),
            token: second
        }
    );
    // A marker write on another key: had a refused write been published, it would come first.
    let marker_key = CredentialKey::access_token("wx_feed_marker");
    let marker = token("value-feed-marker", 1);
    must_apply(store, &marker_key, &marker).await;
    assert_eq!(
        next_change(&mut rx).await,
        Change {
            key: marker_key,
            token: marker
        }
    );
}

/// `load_all` returns every written key with its latest token, across key kinds.
pub(crate) async fn load_all_returns_everything(store: &dyn Store) {
    assert!(store.load_all().await.expect("load_all").is_empty());
    let keys = [
        CredentialKey::access_token("wx_all"),
        CredentialKey::new(AccountId::app("wx_all"), Role::Ticket(TicketKind::WxCard)),
        CredentialKey::new(
            AccountId::corp("ww_all", "1000002"),
            Role::CorpTicket(CorpTicketKind::AgentConfig),
        ),
        CredentialKey::new(
            AccountId::authorizer("wxc_all", "wxa_all"),
            Role::RefreshToken,
        ),
    ];
    let mut expected = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        must_apply(store, key, &token(&format!("value-all-{i}-1"), 1)).await;
        let latest = token(&format!("value-all-{i}-2"), 2);
        must_apply(store, key, &latest).await;
        expected.push((key.clone(), latest));
    }
    let mut all = store.load_all().await.expect("load_all");
    all.sort_by(|a, b| a.0.cmp(&b.0));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(all, expected);
}

/// A live lease excludes every other owner; its holder may take it again.
pub(crate) async fn lease_is_exclusive_between_owners(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_lease");
    let ttl = Duration::from_secs(30);
    assert!(store
        .acquire_lease(&key, "node-a", ttl)
        .await
        .expect("acquire"));
    assert!(!store
        .acquire_lease(&key, "node-b", ttl)
        .await
        .expect("acquire"));
    assert!(store
        .acquire_lease(&key, "node-a", ttl)
        .await
        .expect("acquire"));
    assert!(!store
        .acquire_lease(&key, "node-b", ttl)
        .await
        .expect("acquire"));
}

/// Re-acquiring one's own lease with a longer TTL keeps it beyond its first expiry.
///
/// Proving that nobody else can take it needs a wait past the first TTL: the one fixed sleep of
/// the suite, since absence cannot be polled for.
pub(crate) async fn lease_reacquire_by_owner_extends(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_lease_extend");
    let short = Duration::from_millis(200);
    assert!(store
        .acquire_lease(&key, "node-a", short)
        .await
        .expect("acquire"));
    assert!(store
        .acquire_lease(&key, "node-a", Duration::from_secs(30))
        .await
        .expect("acquire"));
    tokio::time::sleep(short * 2).await;
    assert!(
        !store
            .acquire_lease(&key, "node-b", short)
            .await
            .expect("acquire"),
        "an extended lease must outlive its first TTL"
    );
}

/// Re-acquiring sets the expiry to now + the new TTL, even when that is sooner.
pub(crate) async fn lease_reacquire_by_owner_replaces_expiry(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_lease_shorten");
    assert!(store
        .acquire_lease(&key, "node-a", Duration::from_secs(30))
        .await
        .expect("acquire"));
    assert!(store
        .acquire_lease(&key, "node-a", Duration::from_millis(100))
        .await
        .expect("acquire"));
    let shared_key = &key;
    eventually("node-b takes the shortened lease", move || async move {
        store
            .acquire_lease(shared_key, "node-b", Duration::from_secs(30))
            .await
            .expect("acquire")
    })
    .await;
}

/// Taking the lease with a read answers what is stored only to the owner that took it, and
/// holds the lease as [`Store::acquire_lease`] would.
pub(crate) async fn lease_and_read_in_one_call(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_lease_read");
    let ttl = Duration::from_secs(30);
    assert_eq!(
        store
            .acquire_lease_and_get(&key, "node-a", ttl)
            .await
            .expect("acquire and read"),
        Some(None),
        "taken, nothing stored yet"
    );
    assert!(!store
        .acquire_lease(&key, "node-b", ttl)
        .await
        .expect("acquire"));
    assert_eq!(
        store
            .acquire_lease_and_get(&key, "node-b", ttl)
            .await
            .expect("acquire and read"),
        None,
        "another owner's live lease: not taken, nothing read"
    );
    let written = token("t1", 1);
    store
        .compare_and_set(&key, &written)
        .await
        .expect("compare_and_set");
    assert!(store.release_lease(&key, "node-a").await.expect("release"));
    assert_eq!(
        store
            .acquire_lease_and_get(&key, "node-b", ttl)
            .await
            .expect("acquire and read"),
        Some(Some(written))
    );
}

/// Only the holder can release a lease; once released, another owner can take it.
pub(crate) async fn lease_release_only_by_owner(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_lease_release");
    let ttl = Duration::from_secs(30);
    assert!(
        !store.release_lease(&key, "node-a").await.expect("release"),
        "releasing a lease nobody holds must report false"
    );
    assert!(store
        .acquire_lease(&key, "node-a", ttl)
        .await
        .expect("acquire"));
    assert!(
        !store.release_lease(&key, "node-b").await.expect("release"),
        "a non-owner must not release the lease"
    );
    assert!(!store
        .acquire_lease(&key, "node-b", ttl)
        .await
        .expect("acquire"));
    assert!(store.release_lease(&key, "node-a").await.expect("release"));
    assert!(!store.release_lease(&key, "node-a").await.expect("release"));
    assert!(store
        .acquire_lease(&key, "node-b", ttl)
        .await
        .expect("acquire"));
    assert!(!store.release_lease(&key, "node-a").await.expect("release"));
    assert!(!store
        .acquire_lease(&key, "node-a", ttl)
        .await
        .expect("acquire"));
}

/// A lease whose owner went silent runs out after its TTL, and not before; the old owner then
/// neither holds nor can release it.
pub(crate) async fn expired_lease_can_be_taken_by_another_owner(store: &dyn Store) {
    let key = CredentialKey::access_token("wx_lease_expire");
    let ttl = Duration::from_millis(200);
    let started = Instant::now();
    assert!(store
        .acquire_lease(&key, "node-a", ttl)
        .await
        .expect("acquire"));
    assert!(!store
        .acquire_lease(&key, "node-b", ttl)
        .await
        .expect("acquire"));
    let shared_key = &key;
    eventually("node-b takes the expired lease", move || async move {
        store
            .acquire_lease(shared_key, "node-b", Duration::from_secs(30))
            .await
            .expect("acquire")
    })
    .await;
    // Millisecond timestamps may round the TTL down by up to a millisecond; allow a little more.
    assert!(
        started.elapsed() >= ttl - Duration::from_millis(10),
        "the lease was taken after {:?}, before its TTL of {ttl:?}",
        started.elapsed()
    );
    assert!(!store.release_lease(&key, "node-a").await.expect("release"));
    assert!(!store
        .acquire_lease(&key, "node-a", ttl)
        .await
        .expect("acquire"));
    assert!(store.release_lease(&key, "node-b").await.expect("release"));
}

/// Holding one key's lease says nothing about another key's.
pub(crate) async fn leases_are_per_key(store: &dyn Store) {
    let ttl = Duration::from_secs(30);
    let one = CredentialKey::access_token("wx_lease_one");
    let two = CredentialKey::access_token("wx_lease_two");
    assert!(store
        .acquire_lease(&one, "node-a", ttl)
        .await
        .expect("acquire"));
    assert!(store
        .acquire_lease(&two, "node-b", ttl)
        .await
        .expect("acquire"));
    assert!(!store.release_lease(&two, "node-a").await.expect("release"));
    assert!(store.release_lease(&one, "node-a").await.expect("release"));
}

/// Owners racing for a free lease (through any of `stores`): exactly one gets it.
pub(crate) async fn lease_race_has_exactly_one_winner(stores: &[Arc<dyn Store>]) {
    const RACERS: usize = 20;
    let key = CredentialKey::access_token("wx_lease_race");
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let store = stores[i % stores.len()].clone();
        let barrier = barrier.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .acquire_lease(&key, &format!("node-{i}"), Duration::from_secs(30))
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        if task.await.expect("racer panicked").expect("acquire") {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one owner must win the lease");
}

/// A healthy store answers `ping` and names its kind.
pub(crate) async fn ping_succeeds(store: &dyn Store) {
    store.ping().await.expect("ping");
    assert!(!store.kind().is_empty());
}

pub(crate) async fn delete_removes_the_token_and_its_lease(store: &dyn Store) {
    let key = CredentialKey::access_token("wxdelete");
    let other = CredentialKey::access_token("wxkept");
    must_apply(store, &key, &token("a", 1)).await;
    must_apply(store, &other, &token("b", 1)).await;
    assert!(store
        .acquire_lease(&key, "node-a", Duration::from_secs(30))
        .await
        .unwrap());
    store.delete(&key).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert!(store
        .load_all()
        .await
        .unwrap()
        .iter()
        .all(|(k, _)| *k != key));
    assert!(
        store
            .acquire_lease(&key, "node-b", Duration::from_secs(30))
            .await
            .unwrap(),
        "the deleted key's lease is gone"
    );
    assert_eq!(store.get(&other).await.unwrap(), Some(token("b", 1)));
    // A deleted key starts again at generation 1.
    must_apply(store, &key, &token("c", 1)).await;
    // Deleting what does not exist is not an error.
    store
        .delete(&CredentialKey::access_token("wxnever"))
        .await
        .unwrap();
}

pub(crate) async fn accounts_are_stored_published_and_removed(store: &dyn Store) {
    let mut feed = store.subscribe_accounts();
    store.put_account("app/wx1", "{\"v\":1}").await.unwrap();
    store.put_account("app/wx2", "{\"v\":2}").await.unwrap();
    store.put_account("app/wx1", "{\"v\":3}").await.unwrap();
    let mut all = store.load_accounts().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("app/wx1".to_string(), "{\"v\":3}".to_string()),
            ("app/wx2".to_string(), "{\"v\":2}".to_string())
        ]
    );
    assert_eq!(
        store.get_account("app/wx1").await.unwrap().as_deref(),
        Some("{\"v\":3}")
    );
    assert!(store.remove_account("app/wx2").await.unwrap());
    assert!(!store.remove_account("app/wx2").await.unwrap());
    assert_eq!(store.load_accounts().await.unwrap().len(), 1);
    assert_eq!(store.get_account("app/wx2").await.unwrap(), None);
    assert_eq!(store.get_account("app/wx").await.unwrap(), None);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(DEADLINE, feed.recv()).await {
            Ok(Ok(AccountChange::Resync)) => {}
            Ok(Ok(change)) => seen.push(change),
            other => panic!("account feed: {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            AccountChange::Put {
                name: "app/wx1".into(),
                definition: "{\"v\":1}".into()
            },
            AccountChange::Put {
                name: "app/wx2".into(),
                definition: "{\"v\":2}".into()
            },
            AccountChange::Put {
                name: "app/wx1".into(),
                definition: "{\"v\":3}".into()
            },
            AccountChange::Removed {
                name: "app/wx2".into()
            },
        ]
    );
}

pub(crate) async fn force_budget_stops_at_its_limit_per_name_and_day(store: &dyn Store) {
    for expected in 1..=3 {
        assert_eq!(
            store.spend_force("access_token/wx1", 100, 3).await.unwrap(),
            Some(expected)
        );
    }
    assert_eq!(
        store.spend_force("access_token/wx1", 100, 3).await.unwrap(),
        None
    );
    // A higher limit (the reserve for verified invalidations) allows more on the same count.
    assert_eq!(
        store.spend_force("access_token/wx1", 100, 5).await.unwrap(),
        Some(4)
    );
    // Another name and another day are counted apart.
    assert_eq!(
        store.spend_force("access_token/wx2", 100, 3).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store.spend_force("access_token/wx1", 101, 3).await.unwrap(),
        Some(1)
    );
}

pub(crate) async fn force_budget_race_never_overspends(stores: &[Arc<dyn Store>]) {
    let spends = (0..40).map(|i| {
        let store = stores[i % stores.len()].clone();
        async move {
            store
                .spend_force("access_token/wxrace", 7, 20)
                .await
                .unwrap()
        }
    });
    let results = futures_util::future::join_all(spends).await;
    let granted: Vec<u32> = results.into_iter().flatten().collect();
    assert_eq!(granted.len(), 20, "exactly the limit is granted");
    let mut sorted = granted.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=20).collect::<Vec<u32>>());
}
