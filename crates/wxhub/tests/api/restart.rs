//! Restart: tokens in SQLite that are still valid are served at once and not fetched again.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn a_restart_with_valid_tokens_in_sqlite_fetches_nothing() {
    let stable = "wxrestart00000001";
    let legacy = "wxrestart00000002";
    let apps = [TestApp::stable(stable), TestApp::legacy(legacy)];
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("wxhub.db");

    let first = spawn_app(&mock, HubOptions::new(&apps).with_sqlite(database.clone())).await;
    first.wait_ready().await;
    let before = (first.token(stable).await, first.token(legacy).await);
    first.stop().await;
    let stats_before = stats(&mock);

    let second = spawn_app(&mock, HubOptions::new(&apps).with_sqlite(database)).await;
    // Served at once, before any refresh could have happened.
    let after = (second.token(stable).await, second.token(legacy).await);
    second.wait_ready().await;

    assert_eq!(after.0.access_token, before.0.access_token);
    assert_eq!(after.0.generation, before.0.generation);
    assert_eq!(after.1.access_token, before.1.access_token);
    assert_eq!(
        stats(&mock).calls,
        stats_before.calls,
        "no upstream call after restart"
    );
    assert_eq!(
        business_call(&second.client, &mock, &after.1.access_token).await,
        0
    );
}
