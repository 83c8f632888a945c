//! Redis as managed services run it: an ACL user with a password, and TLS with a private CA.
//! The right settings serve; wrong ones stop the hub at startup with a clear error that never
//! shows the password.

use std::time::Duration;

use wxhub::configuration::{RedisSettings, Secret, StoreSettings};
use wxhub::kinds::CredentialKey;
use wxhub::startup::{open_store, Application};

use crate::helpers::*;
use crate::redis_server::{unique_namespace, RedisServer, ServerOptions, TlsFiles};

/// The password of the ACL user in these tests.
const PASSWORD: &str = "acl-pw-7f3c91";

/// A server whose default user is disabled: only `hub` with [`PASSWORD`] may do anything.
fn server_with_acl_user() -> RedisServer {
    RedisServer::start_with(ServerOptions {
        args: [
            "--user",
            "default",
            "off",
            "--user",
            "hub",
            "on",
            ">acl-pw-7f3c91",
            "~*",
            "&*",
            "+@all",
        ]
        .map(String::from)
        .to_vec(),
        ..ServerOptions::default()
    })
}

/// Hub options for `apps` on the store `redis`.
fn options_on(apps: &[TestApp], redis: RedisSettings) -> HubOptions {
    let mut options = HubOptions::new(apps);
    options.store = StoreSettings::Redis(redis);
    options
}

/// Builds a hub that must not start, and returns its startup error as an operator reads it.
async fn startup_error(options: HubOptions) -> String {
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &options.apps,
        &[],
        |c| c,
    )
    .await;
    match Application::build(settings_for(&mock, &options)).await {
        Ok(_) => panic!("the hub started with settings that must be refused"),
        Err(e) => e.to_string(),
    }
}

/// Serves `appid` from a hub on `redis`, and returns the generation the store holds for it.
async fn served_and_stored(appid: &str, redis: RedisSettings) -> u64 {
    let apps = [TestApp::legacy(appid)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, options_on(&apps, redis.clone())).await;
    hub.wait_ready().await;
    let served = hub.token(appid).await;
    assert_eq!(
        business_call(&hub.client, &mock, &served.access_token).await,
        0
    );
    let store = open_store(&StoreSettings::Redis(redis))
        .await
        .expect("a second connection with the same settings");
    let stored = store
        .get(&CredentialKey::access_token(appid))
        .await
        .expect("reading the store")
        .expect("the token is stored");
    assert_eq!(stored.value, served.access_token);
    hub.stop().await;
    stored.generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_is_served_and_a_wrong_password_stops_the_start_without_showing_it() {
    let redis = server_with_acl_user();
    let namespace = unique_namespace("acl");

    // The user and password as keys, and the same in the URL.
    let mut with_keys = RedisSettings::url(redis.url()).with_namespace(&namespace);
    with_keys.username = Some("hub".into());
    with_keys.password = Some(Secret::new(PASSWORD.into()));
    assert_eq!(served_and_stored("wxcluster0acl1", with_keys).await, 1);
    let in_url = redis
        .url()
        .replacen("redis://", &format!("redis://hub:{PASSWORD}@"), 1);
    let in_url = RedisSettings::url(in_url).with_namespace(&namespace);
    assert_eq!(served_and_stored("wxcluster0acl2", in_url).await, 1);

    // A wrong password, either way: refused at startup, named, never shown.
    let wrong = "wrong-pw-51d0e2";
    let mut wrong_key = RedisSettings::url(redis.url()).with_namespace(&namespace);
    wrong_key.username = Some("hub".into());
    wrong_key.password = Some(Secret::new(wrong.into()));
    let wrong_url = RedisSettings::url(redis.url().replacen(
        "redis://",
        &format!("redis://hub:{wrong}@"),
        1,
    ));
    for redis_settings in [wrong_key, wrong_url] {
        let apps = [TestApp::legacy("wxcluster0acl3")];
        let message = startup_error(options_on(&apps, redis_settings)).await;
        assert!(message.starts_with("store: "), "{message}");
        assert!(
            message.contains("authentication failed"),
            "the error says the login was refused: {message}"
        );
        assert!(!message.contains(wrong), "{message}");
        assert!(!message.contains(PASSWORD), "{message}");
    }

    // No credentials at all: the server says so.
    let apps = [TestApp::legacy("wxcluster0acl4")];
    let message = startup_error(options_on(&apps, RedisSettings::url(redis.url()))).await;
    assert!(
        message.to_lowercase().contains("auth"),
        "the error says a login is needed: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_is_served_and_an_unknown_ca_is_refused() {
    let certificates = tempfile::tempdir().expect("a directory for the certificates");
    let tls = TlsFiles::generate(certificates.path());
    let redis = RedisServer::start_with(ServerOptions {
        tls: Some(tls.clone()),
        ..ServerOptions::default()
    });
    assert!(redis.url().starts_with("rediss://"));
    let namespace = unique_namespace("tls");

    let mut trusted = RedisSettings::url(redis.url()).with_namespace(&namespace);
    trusted.ca_file = Some(tls.ca.clone());
    assert_eq!(served_and_stored("wxcluster0tls1", trusted).await, 1);

    // The system's roots do not include the test CA: the certificate is refused.
    let apps = [TestApp::legacy("wxcluster0tls2")];
    let untrusted = RedisSettings::url(redis.url()).with_namespace(&namespace);
    let message = startup_error(options_on(&apps, untrusted)).await;
    assert!(
        message.to_lowercase().contains("certificate"),
        "the error names the certificate problem: {message}"
    );

    // A plain-text client against the TLS port does not get in either.
    let plain = redis.url().replacen("rediss://", "redis://", 1);
    let message = startup_error(options_on(&apps, RedisSettings::url(plain))).await;
    assert!(message.starts_with("store: "), "{message}");
}
