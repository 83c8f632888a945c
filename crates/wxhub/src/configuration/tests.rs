//! Tests of the configuration as a whole (the file, its overrides, its rendering, the errors of
//! several sections together) and the helpers that the tests of each section, under `tests/`,
//! share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::token::{CorpTicketKind, TicketKind};

mod accounts;
mod consumers;
mod process;
mod secrets;
mod store;
mod suites;

const ORDERS_KEY: &str = "orders-service-bearer-key";
const WX_SECRET: &str = "0123456789abcdef-main-secret";
const WW_SECRET: &str = "ww-corp-secret-value";

/// The README's configuration example, with a real key hash in place of the placeholder.
fn example() -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:8080"

[store]
kind = "sqlite"                 # memory | sqlite | redis
path = "wxhub.db"               # sqlite
# url = "redis://127.0.0.1:6379/0"   # redis
# namespace = "wxhub"                # redis key prefix

[wechat]
api_base = "https://api.weixin.qq.com"        # tests: the mock's address
work_api_base = "https://qyapi.weixin.qq.com"
timeout = "5s"

[refresh]
refresh_before_expired = "30m"
refresh_retry_interval = "60s"
min_refresh_interval = "30s"

[[apps]]                        # official accounts and mini programs
appid = "wx1234567890abcdef"
secret = "${{WX_SECRET_MAIN}}"
mode = "stable"                 # stable | legacy
tickets = ["jsapi"]             # optional: jsapi, wx_card

[[corps]]                       # Work WeChat apps
corpid = "ww1234567890abcdef"
agentid = "1000002"
secret = "${{WW_SECRET}}"
tickets = ["jsapi", "agent_config"]

[[consumers]]                   # who may read what
name = "orders-service"
key_sha256 = "{}"
apps = ["wx1234567890abcdef"]   # or ["*"]
scopes = ["read", "invalidate"] # read | invalidate | admin
"#,
        consumer_key_sha256(ORDERS_KEY)
    )
}

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn base_env() -> HashMap<String, String> {
    env_of(&[("WX_SECRET_MAIN", WX_SECRET), ("WW_SECRET", WW_SECRET)])
}

fn origin() -> &'static Path {
    Path::new("/etc/wxhub/wxhub.toml")
}

fn parse_with(text: &str, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    Settings::parse(text, origin(), &|name| env.get(name).cloned())
}

fn parse(text: &str) -> Result<Settings, ConfigError> {
    parse_with(text, &base_env())
}

/// Parses `text`, which must fail, and checks the message names the file, `line` and `key`, and
/// contains `what`.
#[track_caller]
fn fails_at(text: &str, line: usize, key: &str, what: &str) -> ConfigError {
    fails_at_with(text, &base_env(), line, key, what)
}

#[track_caller]
fn fails_at_with(
    text: &str,
    env: &HashMap<String, String>,
    line: usize,
    key: &str,
    what: &str,
) -> ConfigError {
    let err = parse_with(text, env).expect_err("configuration should be refused");
    let shown = err.to_string();
    let prefix = format!("/etc/wxhub/wxhub.toml:{line}: {key}: ");
    assert!(
        shown.starts_with(&prefix),
        "expected {prefix:?} at the start of {shown:?}"
    );
    assert!(shown.contains(what), "expected {what:?} in {shown:?}");
    assert_eq!(err.line(), Some(line));
    assert_eq!(err.key(), Some(key));
    err
}

/// Like [`fails_at_with`] for a value that came from environment variable `var`.
#[track_caller]
fn fails_from_env(
    text: &str,
    env: &HashMap<String, String>,
    var: &str,
    key: &str,
    what: &str,
) -> ConfigError {
    let err = parse_with(text, env).expect_err("configuration should be refused");
    let shown = err.to_string();
    let prefix = format!("/etc/wxhub/wxhub.toml: {key} (from environment variable {var}): ");
    assert!(
        shown.starts_with(&prefix),
        "expected {prefix:?} at the start of {shown:?}"
    );
    assert!(shown.contains(what), "expected {what:?} in {shown:?}");
    assert_eq!(err.env_var(), Some(var));
    assert_eq!(err.line(), None);
    err
}

const APP: &str = "[[apps]]\nappid = \"wx1\"\nsecret = \"s1\"\n";

fn consumer(name: &str, key_sha256: &str, apps: &str, scopes: &str) -> String {
    format!(
        "[[consumers]]\nname = \"{name}\"\nkey_sha256 = \"{key_sha256}\"\napps = {apps}\nscopes = {scopes}\n"
    )
}

const COMPONENT: &str = "[[components]]\ncomponent_appid = \"wxc1\"\nsecret = \"cs\"\ntoken = \"tk\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n";

#[test]
fn the_design_example_parses() {
    let settings = parse(&example()).unwrap();
    assert_eq!(settings.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(settings.server.request_timeout, Duration::from_secs(10));
    assert_eq!(
        settings.store,
        StoreSettings::Sqlite {
            path: PathBuf::from("/etc/wxhub/wxhub.db")
        }
    );
    assert_eq!(settings.wechat, WechatSettings::default());
    assert_eq!(
        settings.refresh,
        RefreshSettings {
            refresh_before_expired: Duration::from_secs(1800),
            refresh_retry_interval: Duration::from_secs(60),
            min_refresh_interval: Duration::from_secs(30),
            concurrency: 16,
            force_reserve: 5,
            check_interval: None,
        }
    );
    assert_eq!(settings.apps.len(), 1);
    let app = &settings.apps[0];
    assert_eq!(app.appid, "wx1234567890abcdef");
    assert_eq!(app.secret.expose(), WX_SECRET);
    assert_eq!(
        app.secret.source(),
        &SecretSource::Env("WX_SECRET_MAIN".into())
    );
    assert_eq!(app.mode, TokenMode::Stable);
    assert_eq!(app.tickets, vec![TicketKind::Jsapi]);
    let corp = &settings.corps[0];
    assert_eq!(
        (corp.corpid.as_str(), corp.agentid.as_str()),
        ("ww1234567890abcdef", "1000002")
    );
    assert_eq!(corp.secret.expose(), WW_SECRET);
    assert_eq!(
        corp.tickets,
        vec![CorpTicketKind::Jsapi, CorpTicketKind::AgentConfig]
    );
    let consumer = &settings.consumers[0];
    assert_eq!(consumer.name, "orders-service");
    assert_eq!(consumer.key_sha256, consumer_key_digest(ORDERS_KEY));
    assert_eq!(
        consumer.apps,
        vec![AppGrant::App("wx1234567890abcdef".into())]
    );
    assert_eq!(consumer.scopes, vec![Scope::Read, Scope::Invalidate]);
    assert!(consumer.has_scope(Scope::Read) && !consumer.has_scope(Scope::Admin));
    assert_eq!(
        settings.find_consumer(ORDERS_KEY).map(|c| c.name.as_str()),
        Some("orders-service")
    );
    assert!(settings.find_consumer("wrong key").is_none());
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let settings = parse("").unwrap();
    assert_eq!(settings.server, ServerSettings::default());
    assert_eq!(
        settings.server.listen,
        "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(
        settings.store,
        StoreSettings::Sqlite {
            path: PathBuf::from("/etc/wxhub/wxhub.db")
        }
    );
    assert_eq!(settings.wechat.api_base, "https://api.weixin.qq.com");
    assert_eq!(settings.wechat.work_api_base, "https://qyapi.weixin.qq.com");
    assert_eq!(settings.wechat.timeout, Duration::from_secs(5));
    assert_eq!(settings.refresh, RefreshSettings::default());
    assert!(settings.apps.is_empty() && settings.corps.is_empty());
    assert!(settings.consumers.is_empty());
}

#[test]
fn a_missing_file_names_the_path_and_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Settings::load(&path).unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with(&path.display().to_string()), "{shown}");
    assert!(shown.contains("os error"), "{shown}");
}

#[test]
fn load_reads_the_file_and_resolves_relative_paths_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.secret"), "file-secret\n").unwrap();
    let path = dir.path().join("wxhub.toml");
    std::fs::write(
        &path,
        "[store]\nkind = \"sqlite\"\npath = \"data/hub.db\"\n\n[[apps]]\nappid = \"wx1\"\nsecret_file = \"app.secret\"\n",
    )
    .unwrap();
    let settings = Settings::load(&path).unwrap();
    assert_eq!(
        settings.store,
        StoreSettings::Sqlite {
            path: dir.path().join("data/hub.db")
        }
    );
    assert_eq!(settings.apps[0].secret.expose(), "file-secret");
    assert_eq!(
        settings.apps[0].secret.source(),
        &SecretSource::File(dir.path().join("app.secret"))
    );
}

#[test]
fn malformed_toml_names_the_line() {
    let err = parse("[server]\nlisten = \"127.0.0.1:8080\n").unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert!(
        err.to_string()
            .starts_with("/etc/wxhub/wxhub.toml:2: invalid TOML"),
        "{err}"
    );
    let err = parse("[[apps]]\nappid = \"a\"\nappid = \"b\"\n").unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    fails_at("[servr]\nlisten = \"x\"\n", 1, "servr", "unknown key");
    fails_at(
        "[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n",
        3,
        "server.listn",
        "expected one of: listen, request_timeout, header_read_timeout, idle_timeout, max_connections",
    );
    fails_at(
        "[refresh]\nconcurency = 4\n",
        2,
        "refresh.concurency",
        "unknown key",
    );
    fails_at(
        &format!("{APP}\n[[apps]]\nappid = \"wx2\"\nsecret = \"s\"\nsecrte = \"x\"\n"),
        8,
        "apps[1].secrte",
        "unknown key",
    );
    fails_at(
        "[[corps]]\ncorpid = \"ww\"\nagentid = 1\nsecret = \"s\"\nmode = \"stable\"\n",
        5,
        "corps[0].mode",
        "unknown key",
    );
    fails_at(
        "[[consumers]]\nname = \"a\"\nkey_sha256 = \"\"\nscope = [\"read\"]\n",
        4,
        "consumers[0].scope",
        "unknown key",
    );
    // Dotted keys and implicit tables are still placed at their line.
    fails_at(
        "\nwechat.apibase = \"http://x\"\n",
        2,
        "wechat.apibase",
        "unknown key",
    );
}

#[test]
fn wrong_types_are_refused() {
    fails_at(
        "[server]\nlisten = 8080\n",
        2,
        "server.listen",
        "expected a string, found an integer",
    );
    fails_at("server = 1\n", 1, "server", "expected a table");
    fails_at(
        "apps = \"wx1\"\n",
        1,
        "apps",
        "expected an array of tables ([[apps]])",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\ntickets = \"jsapi\"\n",
        4,
        "apps[0].tickets",
        "expected an array, found a string",
    );
    fails_at(
        "[refresh]\nconcurrency = \"4\"\n",
        2,
        "refresh.concurrency",
        "expected an integer",
    );
    fails_at(
        "[wechat]\ntimeout = true\n",
        2,
        "wechat.timeout",
        "found a boolean",
    );
}

#[test]
fn durations_need_units() {
    let settings = parse(
        "[refresh]\nrefresh_before_expired = \"1h30m\"\nrefresh_retry_interval = \"500ms\"\nmin_refresh_interval = \"0s\"\n[server]\nrequest_timeout = \"2m\"\n",
    )
    .unwrap();
    assert_eq!(
        settings.refresh.refresh_before_expired,
        Duration::from_secs(5400)
    );
    assert_eq!(
        settings.refresh.refresh_retry_interval,
        Duration::from_millis(500)
    );
    assert_eq!(settings.refresh.min_refresh_interval, Duration::ZERO);
    assert_eq!(settings.server.request_timeout, Duration::from_secs(120));

    fails_at(
        "[refresh]\n\nmin_refresh_interval = 30\n",
        3,
        "refresh.min_refresh_interval",
        "use a unit, e.g. \"30s\"",
    );
    fails_at(
        "[refresh]\nmin_refresh_interval = \"30\"\n",
        2,
        "refresh.min_refresh_interval",
        "invalid duration \"30\"",
    );
    fails_at(
        "[wechat]\ntimeout = \"5 sec\"\n",
        2,
        "wechat.timeout",
        "invalid duration \"5 sec\"",
    );
    fails_at(
        "[wechat]\ntimeout = \"0s\"\n",
        2,
        "wechat.timeout",
        "longer than zero",
    );
}

#[test]
fn a_spelled_out_unit_is_reported_with_what_to_write_instead() {
    let error = fails_at(
        "[wechat]\ntimeout = \"5 secs\"\n",
        2,
        "wechat.timeout",
        "write \"5s\"",
    );
    assert_eq!(
        error.to_string(),
        "/etc/wxhub/wxhub.toml:2: wechat.timeout: invalid duration \"5 secs\": \"secs\" is not a \
         unit; write \"5s\" (units: h, m, s, ms, right after the number)"
    );
    let error = fails_at(
        "[refresh]\n\nrefresh_retry_interval = \"5 s\"\n",
        3,
        "refresh.refresh_retry_interval",
        "write \"5s\"",
    );
    assert_eq!(
        error.to_string(),
        "/etc/wxhub/wxhub.toml:3: refresh.refresh_retry_interval: invalid duration \"5 s\": spaces \
         are not allowed; write \"5s\""
    );
}

#[test]
fn environment_overrides_apply() {
    let mut env = base_env();
    for (k, v) in [
        ("WXHUB_SERVER_LISTEN", "0.0.0.0:9090"),
        ("WXHUB_STORE_KIND", "memory"),
        ("WXHUB_WECHAT_API_BASE", "http://127.0.0.1:4000"),
        ("WXHUB_REFRESH_MIN_REFRESH_INTERVAL", "5s"),
        ("WXHUB_REFRESH_CONCURRENCY", "4"),
        ("WXHUB_LOG", "debug"),
    ] {
        env.insert(k.into(), v.into());
    }
    let text = example().replace("path = \"wxhub.db\"", "");
    let settings = parse_with(&text, &env).unwrap();
    assert_eq!(settings.server.listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(settings.store, StoreSettings::Memory);
    assert_eq!(settings.wechat.api_base, "http://127.0.0.1:4000");
    assert_eq!(
        settings.refresh.min_refresh_interval,
        Duration::from_secs(5)
    );
    assert_eq!(settings.refresh.concurrency, 4);
    assert_eq!(
        settings.refresh.refresh_before_expired,
        Duration::from_secs(1800)
    );

    // Sections absent from the file are supplied.
    let env = env_of(&[
        ("WXHUB_STORE_KIND", "redis"),
        ("WXHUB_STORE_URL", "redis://:pw@10.0.0.1/1"),
        ("WXHUB_STORE_NAMESPACE", "hub-a"),
    ]);
    let settings = parse_with("", &env).unwrap();
    assert_eq!(
        settings.store,
        StoreSettings::Redis(RedisSettings::url("redis://:pw@10.0.0.1/1").with_namespace("hub-a"))
    );
    let env = env_of(&[("WXHUB_STORE_PATH", "state/hub.db")]);
    assert_eq!(
        parse_with("", &env).unwrap().store,
        StoreSettings::Sqlite {
            path: PathBuf::from("/etc/wxhub/state/hub.db")
        }
    );
}

#[test]
fn environment_overrides_are_validated_and_named() {
    let env = env_of(&[("WXHUB_SERVER_LISTEN", "nowhere")]);
    fails_from_env(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        &env,
        "WXHUB_SERVER_LISTEN",
        "server.listen",
        "invalid address \"nowhere\"",
    );
    let env = env_of(&[("WXHUB_REFRESH_MIN_REFRESH_INTERVAL", "30")]);
    fails_from_env(
        "",
        &env,
        "WXHUB_REFRESH_MIN_REFRESH_INTERVAL",
        "refresh.min_refresh_interval",
        "use a unit, e.g. \"30s\"",
    );
    let env = env_of(&[("WXHUB_REFRESH_CONCURRENCY", "many")]);
    fails_from_env(
        "",
        &env,
        "WXHUB_REFRESH_CONCURRENCY",
        "refresh.concurrency",
        "expected an integer",
    );
    let env = env_of(&[("WXHUB_REFRESH_CONCURRENCY", "0")]);
    fails_from_env(
        "",
        &env,
        "WXHUB_REFRESH_CONCURRENCY",
        "refresh.concurrency",
        "at least 1",
    );
    let env = env_of(&[("WXHUB_WECHAT_API_BASE", "mock:4000")]);
    fails_from_env(
        "",
        &env,
        "WXHUB_WECHAT_API_BASE",
        "wechat.api_base",
        "http:// or https://",
    );
    let env = env_of(&[("WXHUB_STORE_KIND", "redis")]);
    fails_from_env(
        "",
        &env,
        "WXHUB_STORE_KIND",
        "store.url",
        "required with kind = \"redis\" (set by WXHUB_STORE_KIND)",
    );
    // The file's sqlite path does not belong to a kind switched by the environment.
    fails_at_with(
        "[store]\nkind = \"sqlite\"\npath = \"a.db\"\n",
        &env_of(&[("WXHUB_STORE_KIND", "memory")]),
        3,
        "store.path",
        "(set by WXHUB_STORE_KIND)",
    );
}

#[test]
fn unknown_override_names_are_refused() {
    let file = Path::new("wxhub.toml");
    let err = check_override_names(file, ["PATH", "WXHUB_SERVER_LISTN"]).unwrap_err();
    assert_eq!(err.env_var(), Some("WXHUB_SERVER_LISTN"));
    let shown = err.to_string();
    assert!(
        shown.starts_with("wxhub.toml: server.listn (from environment variable WXHUB_SERVER_LISTN): unknown setting"),
        "{shown}"
    );
    assert!(shown.contains("WXHUB_SERVER_LISTEN"), "{shown}");
    assert!(check_override_names(file, ["WXHUB_STORE_DATABASE"]).is_err());
    check_override_names(
        file,
        [
            "WXHUB_LOG",
            "WXHUB_LOG_FORMAT",
            "WXHUB_CONFIG",
            "WXHUB_SERVERS",
            "WXHUB_SERVER_LISTEN",
            "WXHUB_REFRESH_REFRESH_BEFORE_EXPIRED",
            "WXHUB_STORE_URL",
        ],
    )
    .unwrap();
}

#[test]
fn the_masked_rendering_is_toml_with_the_effective_values() {
    let settings = parse(&example()).unwrap();
    let rendered = settings.render_masked();
    let value: toml::Table = rendered
        .parse()
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(value["server"]["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(value["server"]["request_timeout"].as_str(), Some("10s"));
    assert_eq!(value["store"]["kind"].as_str(), Some("sqlite"));
    assert_eq!(value["store"]["path"].as_str(), Some("/etc/wxhub/wxhub.db"));
    assert_eq!(
        value["refresh"]["refresh_retry_interval"].as_str(),
        Some("1m")
    );
    assert_eq!(value["refresh"]["concurrency"].as_integer(), Some(16));
    assert_eq!(value["apps"][0]["secret"].as_str(), Some("***"));
    assert_eq!(value["corps"][0]["agentid"].as_str(), Some("1000002"));
    assert_eq!(
        value["consumers"][0]["scopes"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn a_mistake_in_each_section_is_reported_together() {
    let text = "[server]\nlisten = \"nowhere\"\n\n[refresh]\nconcurrency = 0\n\n[[apps]]\nappid = \"wx1\"\n";
    let error = Settings::parse(text, Path::new("wxhub.toml"), &|_| None).unwrap_err();
    let shown = error.to_string();
    assert_eq!(shown.lines().count(), 3, "{shown}");
    assert!(
        shown
            .lines()
            .next()
            .unwrap()
            .starts_with("wxhub.toml:2: server.listen"),
        "{shown}"
    );
    assert!(
        shown.contains("wxhub.toml:5: refresh.concurrency"),
        "{shown}"
    );
    assert!(shown.contains("wxhub.toml:7: apps[0].secret"), "{shown}");
    assert_eq!(error.others().len(), 2);
}
