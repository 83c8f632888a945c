use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

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
    assert!(consumer.may_use_app("wx1234567890abcdef"));
    assert!(!consumer.may_use_app("wx0"));
    assert!(!consumer.may_use_corp("ww1234567890abcdef", "1000002"));
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
fn store_kinds_and_their_keys() {
    assert_eq!(
        parse("[store]\nkind = \"memory\"\n").unwrap().store,
        StoreSettings::Memory
    );
    assert_eq!(
        parse("[store]\nkind = \"sqlite\"\npath = \"/var/lib/wxhub.db\"\n")
            .unwrap()
            .store,
        StoreSettings::Sqlite {
            path: PathBuf::from("/var/lib/wxhub.db")
        }
    );
    assert_eq!(
        parse("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n")
            .unwrap()
            .store,
        StoreSettings::Redis(RedisSettings::url("redis://127.0.0.1:6379/0"))
    );
    fails_at(
        "[store]\nkind = \"redis\"\nnamespace = \"hub\"\n",
        2,
        "store.url",
        "required with kind = \"redis\"",
    );
    fails_at(
        "[store]\nkind = \"redis\"\nurl = \"redis://h\"\nnamespace = \"{hub}\"\n",
        4,
        "store.namespace",
        "must not contain braces",
    );
    fails_at(
        "[store]\nkind = \"sqlite\"\nurl = \"redis://h\"\n",
        3,
        "store.url",
        "belongs to kind \"redis\"",
    );
    fails_at(
        "[store]\npath = \"a.db\"\nnamespace = \"x\"\n",
        3,
        "store.namespace",
        "(the default)",
    );
    fails_at(
        "[store]\nkind = \"redis\"\nurl = \"redis://h\"\npath = \"x.db\"\n",
        4,
        "store.path",
        "belongs to kind \"sqlite\"",
    );
    fails_at(
        "[store]\nkind = \"postgres\"\n",
        2,
        "store.kind",
        "unknown store kind \"postgres\"",
    );
    let err = fails_at(
        "[store]\nkind = \"redis\"\nurl = \"http://:hunter2@h\"\n",
        3,
        "store.url",
        "redis://",
    );
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn server_and_wechat_values_are_checked() {
    fails_at(
        "[server]\nlisten = \"localhost:8080\"\n",
        2,
        "server.listen",
        "invalid address \"localhost:8080\"",
    );
    fails_at(
        "[wechat]\n\napi_base = \"ftp://mock\"\n",
        3,
        "wechat.api_base",
        "http:// or https://",
    );
    fails_at(
        "[wechat]\nwork_api_base = \"qyapi.weixin.qq.com\"\n",
        2,
        "wechat.work_api_base",
        "http:// or https://",
    );
    fails_at(
        "[refresh]\nconcurrency = 0\n",
        2,
        "refresh.concurrency",
        "at least 1",
    );
    let settings = parse("[wechat]\napi_base = \"http://127.0.0.1:9000/\"\n").unwrap();
    assert_eq!(settings.wechat.api_base, "http://127.0.0.1:9000");
}

#[test]
fn apps_need_a_unique_appid() {
    fails_at(
        "[[apps]]\nsecret = \"s\"\n",
        1,
        "apps[0].appid",
        "required key is missing",
    );
    fails_at(
        "[[apps]]\nappid = \"\"\nsecret = \"s\"\n",
        2,
        "apps[0].appid",
        "must not be empty",
    );
    fails_at(
        "[[apps]]\nappid = \"wx/1\"\nsecret = \"s\"\n",
        2,
        "apps[0].appid",
        "may contain only",
    );
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n# main\n\n\n[[apps]]\nappid = \"wx12\"\nsecret = \"a\"\n\n[[apps]]\nappid = \"wx13\"\nsecret = \"b\"\nappid2 = 1\n";
    fails_at(text, 14, "apps[1].appid2", "unknown key");
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n# main\n\n\n[[apps]]\nappid = \"wx12\"\nsecret = \"a\"\n\n[[apps]]\nmode = \"legacy\"\nsecret = \"b\"\nappid = \"wx12\"\n";
    let err = fails_at(
        text,
        14,
        "apps[1].appid",
        "duplicate appid \"wx12\" (first defined at line 8)",
    );
    assert_eq!(
        err.to_string(),
        "/etc/wxhub/wxhub.toml:14: apps[1].appid: duplicate appid \"wx12\" (first defined at line 8)"
    );
}

#[test]
fn app_mode_and_tickets() {
    let settings = parse(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\nmode = \"legacy\"\ntickets = [\"wx_card\", \"jsapi\"]\n",
    )
    .unwrap();
    assert_eq!(settings.apps[0].mode, TokenMode::Legacy);
    assert_eq!(
        settings.apps[0].tickets,
        vec![TicketKind::WxCard, TicketKind::Jsapi]
    );
    fails_at(
        &format!("{APP}mode = \"fast\"\n"),
        4,
        "apps[0].mode",
        "unknown mode \"fast\"",
    );
    fails_at(
        &format!("{APP}tickets = [\n  \"jsapi\",\n  \"agent_config\",\n]\n"),
        6,
        "apps[0].tickets[1]",
        "unknown ticket \"agent_config\"",
    );
    fails_at(
        &format!("{APP}tickets = [\"jsapi\", \"jsapi\"]\n"),
        4,
        "apps[0].tickets[1]",
        "listed twice",
    );
}

#[test]
fn secrets_come_exactly_one_way() {
    let env = env_of(&[("APP_SECRET", "from-env\n"), ("EMPTY", "")]);
    let settings = parse_with(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${APP_SECRET}\"\n[[apps]]\nappid = \"wx2\"\nsecret = \"inline-secret\"\n",
        &env,
    )
    .unwrap();
    assert_eq!(settings.apps[0].secret.expose(), "from-env");
    assert_eq!(settings.apps[1].secret.expose(), "inline-secret");
    assert_eq!(settings.apps[1].secret.source(), &SecretSource::Inline);

    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${NOT_SET}\"\n",
        3,
        "apps[0].secret",
        "environment variable NOT_SET is not set",
    );
    fails_at_with(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${EMPTY}\"\n",
        &env,
        3,
        "apps[0].secret",
        "environment variable EMPTY is empty",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"${BAD NAME}\"\n",
        3,
        "apps[0].secret",
        "malformed environment reference",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\n",
        1,
        "apps[0].secret",
        "required key is missing",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\nsecret_file = \"f\"\n",
        4,
        "apps[0].secret_file",
        "not both",
    );
    fails_at(
        "[[apps]]\nappid = \"wx1\"\nsecret = \"  \"\n",
        3,
        "apps[0].secret",
        "must not be empty",
    );
}

#[test]
fn secret_files_are_read_relative_to_the_config_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good"), "s3cr3t-from-file\r\n").unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let config = dir.path().join("wxhub.toml");
    let run = |text: &str| Settings::parse(text, &config, &|_| None);

    let settings =
        run("[[corps]]\ncorpid = \"ww1\"\nagentid = 1000002\nsecret_file = \"good\"\n").unwrap();
    assert_eq!(settings.corps[0].secret.expose(), "s3cr3t-from-file");
    assert_eq!(settings.corps[0].agentid, "1000002");

    let err = run("[[apps]]\nappid = \"wx1\"\nsecret_file = \"missing\"\n").unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.line(), Some(3));
    assert!(
        shown.contains("apps[0].secret_file: cannot read secret file"),
        "{shown}"
    );
    assert!(
        shown.contains(&dir.path().join("missing").display().to_string()),
        "{shown}"
    );
    assert!(shown.contains("os error"), "{shown}");

    let err = run("[[apps]]\nappid = \"wx1\"\nsecret_file = \"empty\"\n").unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn corps_are_unique_by_corpid_and_agentid() {
    let settings = parse(
        "[[corps]]\ncorpid = \"ww1\"\nagentid = 1000002\nsecret = \"a\"\n[[corps]]\ncorpid = \"ww1\"\nagentid = \"1000003\"\nsecret = \"b\"\ntickets = [\"agent_config\"]\n",
    )
    .unwrap();
    assert_eq!(settings.corps[1].agentid, "1000003");
    assert_eq!(settings.corps[1].tickets, vec![CorpTicketKind::AgentConfig]);
    fails_at(
        "[[corps]]\ncorpid = \"ww1\"\nagentid = 1000002\nsecret = \"a\"\n[[corps]]\ncorpid = \"ww1\"\nagentid = \"1000002\"\nsecret = \"b\"\n",
        7,
        "corps[1].agentid",
        "duplicate corp app \"ww1/1000002\" (first defined at line 3)",
    );
    fails_at(
        "[[corps]]\ncorpid = \"ww1\"\nsecret = \"a\"\n",
        1,
        "corps[0].agentid",
        "required key is missing",
    );
    fails_at(
        "[[corps]]\ncorpid = \"ww1\"\nagentid = 1\nsecret = \"a\"\ntickets = [\"wx_card\"]\n",
        5,
        "corps[0].tickets[0]",
        "unknown ticket \"wx_card\"",
    );
    fails_at(
        "[[corps]]\ncorpid = \"ww1\"\nagentid = 1.5\nsecret = \"a\"\n",
        3,
        "corps[0].agentid",
        "expected a string or an integer",
    );
}

fn consumer(name: &str, key_sha256: &str, apps: &str, scopes: &str) -> String {
    format!(
        "[[consumers]]\nname = \"{name}\"\nkey_sha256 = \"{key_sha256}\"\napps = {apps}\nscopes = {scopes}\n"
    )
}

#[test]
fn consumers_are_checked() {
    let corp = "[[corps]]\ncorpid = \"ww1\"\nagentid = 7\nsecret = \"c\"\n";
    let k1 = consumer_key_sha256("k1");
    let k2 = consumer_key_sha256("k2").to_uppercase();
    let text = format!(
        "{APP}{corp}{}{}",
        consumer("a", &k1, "[\"*\"]", "[\"admin\"]"),
        consumer("b", &k2, "[\"wx1\", \"ww1/7\"]", "[\"read\"]")
    );
    let settings = parse(&text).unwrap();
    assert_eq!(settings.consumers[0].apps, vec![AppGrant::All]);
    assert_eq!(settings.consumers[0].key_sha256, consumer_key_digest("k1"));
    assert_eq!(
        settings.consumers[1].apps,
        vec![
            AppGrant::App("wx1".into()),
            AppGrant::CorpAgent {
                corpid: "ww1".into(),
                agentid: "7".into()
            }
        ]
    );
    assert!(settings.consumers[1].may_use_corp("ww1", "7"));
    assert_eq!(
        settings.find_consumer("k2").map(|c| c.name.as_str()),
        Some("b")
    );

    // Lines: APP is 3 lines, corp 4, each consumer 5.
    let with = |second: String| {
        format!(
            "{APP}{corp}{}{second}",
            consumer("a", &k1, "[\"*\"]", "[\"read\"]")
        )
    };
    fails_at(
        &with(consumer("a", &k2, "[]", "[\"read\"]")),
        14,
        "consumers[1].name",
        "duplicate consumer name \"a\" (first defined at line 9)",
    );
    fails_at(
        &with(consumer("b", &k1, "[]", "[\"read\"]")),
        15,
        "consumers[1].key_sha256",
        "same key as consumer \"a\" (line 10)",
    );
    fails_at(
        &with(consumer("b", &k2, "[\"wx1\", \"wx 9\"]", "[\"read\"]")),
        16,
        "consumers[1].apps[1]",
        "unknown app \"wx 9\": an appid has only letters",
    );
    fails_at(
        &with(consumer("b", &k2, "[\"ww1/8/9\"]", "[\"read\"]")),
        16,
        "consumers[1].apps[0]",
        "write an appid, \"corpid/agentid\"",
    );
    fails_at(
        &with(consumer("b", &k2, "[\"ww1\"]", "[\"read\"]")),
        16,
        "consumers[1].apps[0]",
        "it is a corpid",
    );
    fails_at(
        &with(consumer("b", &k2, "[\"wx1\"]", "[\"read\", \"write\"]")),
        17,
        "consumers[1].scopes[1]",
        "unknown scope \"write\"",
    );
    fails_at(
        &with(consumer("b", &k2, "[\"wx1\"]", "[]")),
        17,
        "consumers[1].scopes",
        "at least one",
    );
    fails_at(
        &with(format!(
            "[[consumers]]\nname = \"b\"\nkey_sha256 = \"{k2}\"\n"
        )),
        13,
        "consumers[1].scopes",
        "required key is missing",
    );
}

#[test]
fn a_raw_key_in_key_sha256_gets_a_hint_and_is_not_echoed() {
    let err = fails_at(
        &consumer("a", "my-super-secret-bearer-key", "[]", "[\"read\"]"),
        3,
        "consumers[0].key_sha256",
        "wxhub hash-key",
    );
    assert!(!err.to_string().contains("my-super-secret-bearer-key"));
    fails_at(
        &consumer("a", "abcdef", "[]", "[\"read\"]"),
        3,
        "consumers[0].key_sha256",
        "a SHA-256 has 64",
    );
}

#[test]
fn nothing_to_do_is_fine() {
    let settings = parse(&consumer(
        "ops",
        &consumer_key_sha256("ops"),
        "[]",
        "[\"admin\"]",
    ))
    .unwrap();
    assert!(settings.apps.is_empty());
    assert!(settings.consumers[0].apps.is_empty());
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
fn secrets_never_show() {
    let corp = "[[corps]]\ncorpid = \"ww1\"\nagentid = 7\nsecret = \"inline-corp-secret\"\n";
    let text = example().replace(
        "kind = \"sqlite\"                 # memory | sqlite | redis\npath = \"wxhub.db\"",
        "kind = \"redis\"\nurl = \"redis://user:redis-password@10.0.0.1:6379/0\"\n#",
    ) + corp;
    assert!(text.contains("redis-password"));
    let settings = parse(&text).unwrap();
    let secrets = [WX_SECRET, WW_SECRET, "inline-corp-secret", "redis-password"];

    let rendered = settings.render_masked();
    let debug = format!("{settings:?}");
    let pretty = format!("{settings:#?}");
    for secret in secrets {
        assert!(!rendered.contains(secret), "{secret} in {rendered}");
        assert!(!debug.contains(secret), "{secret} in {debug}");
        assert!(!pretty.contains(secret), "{secret} in {pretty}");
    }
    assert_eq!(format!("{}", settings.apps[0].secret), "***");
    assert_eq!(format!("{:?}", settings.apps[0].secret), "***");
    assert!(rendered.contains("secret = \"***\"  # from environment variable WX_SECRET_MAIN"));
    assert!(
        rendered.contains("redis://user:***@10.0.0.1:6379/0"),
        "{rendered}"
    );
    let full_hash = consumer_key_sha256(ORDERS_KEY);
    assert!(!rendered.contains(&full_hash));
    assert!(rendered.contains(&full_hash[..8]));

    // A secret that fails validation later is not echoed either.
    let err = parse("[[apps]]\nappid = \"wx1\"\nsecret = \"${half-open\"\n").unwrap_err();
    assert!(!err.to_string().contains("half-open"), "{err}");
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
fn url_passwords_are_masked() {
    assert_eq!(mask_url_password("redis://h:6379/0"), "redis://h:6379/0");
    assert_eq!(
        mask_url_password("redis://:pw@h:6379/0"),
        "redis://:***@h:6379/0"
    );
    assert_eq!(
        mask_url_password("rediss://u:p@ss@h/0"),
        "rediss://u:***@h/0"
    );
    assert_eq!(mask_url_password("redis://pw@h"), "redis://***@h");
}

const COMPONENT: &str = "[[components]]\ncomponent_appid = \"wxc1\"\nsecret = \"cs\"\ntoken = \"tk\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n";

#[test]
fn a_component_parses_with_its_keys_tickets_and_timing() {
    let text = format!(
        "[server]\nevents_listen = \"0.0.0.0:8443\"\n{COMPONENT}previous_encoding_aes_key = \"${{OLD_KEY}}\"\nauthorizer_tickets = [\"jsapi\"]\nrefresh_before_expired = \"20m\"\n\n[[consumers]]\nname = \"platform\"\nkey_sha256 = \"{}\"\napps = [\"wxc1\", \"wxc1/*\", \"wxc1/wxa1\"]\nscopes = [\"read\", \"authorize\"]\n",
        consumer_key_sha256(ORDERS_KEY)
    );
    let env = env_of(&[("OLD_KEY", "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut")]);
    let settings = parse_with(&text, &env).unwrap();
    assert_eq!(
        settings.server.events_listen,
        Some("0.0.0.0:8443".parse().unwrap())
    );
    let component = &settings.components[0];
    assert_eq!(component.component_appid, "wxc1");
    assert_eq!(component.token.expose(), "tk");
    assert!(component.previous_encoding_aes_key.is_some());
    assert_eq!(component.authorizer_tickets, vec![TicketKind::Jsapi]);
    assert_eq!(
        component.refresh.refresh_before_expired,
        Some(Duration::from_secs(1200))
    );
    let consumer = &settings.consumers[0];
    assert_eq!(
        consumer.apps,
        vec![
            AppGrant::Component("wxc1".into()),
            AppGrant::AllAuthorizers("wxc1".into()),
            AppGrant::Authorizer {
                component_appid: "wxc1".into(),
                authorizer_appid: "wxa1".into()
            }
        ]
    );
    assert!(consumer.has_scope(Scope::Authorize));
    let shown = settings.render_masked();
    assert!(shown.contains("[[components]]") && shown.contains("token = \"***\""));
    assert!(!shown.contains("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"));
    assert!(!shown.contains("\"tk\""));
}

#[test]
fn component_mistakes_name_their_line() {
    fails_at(
        "[[components]]\ncomponent_appid = \"wxc1\"\nsecret = \"cs\"\ntoken = \"tk\"\nencoding_aes_key = \"short\"\n",
        5,
        "components[0].encoding_aes_key",
        "43-character EncodingAESKey",
    );
    fails_at(
        "[[components]]\ncomponent_appid = \"wxc1\"\nsecret = \"cs\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n",
        1,
        "components[0].token",
        "required key is missing",
    );
    fails_at(
        &format!("{COMPONENT}{COMPONENT}"),
        7,
        "components[1].component_appid",
        "duplicate component_appid",
    );
    fails_at(
        &format!("{COMPONENT}authorizer_tickets = [\"sms\"]\n"),
        6,
        "components[0].authorizer_tickets[0]",
        "unknown ticket",
    );
    fails_at(
        "[server]\nevents_listen = \"nowhere\"\n",
        2,
        "server.events_listen",
        "invalid address",
    );
    fails_at(
        &format!(
            "{COMPONENT}\n[[consumers]]\nname = \"c\"\nkey_sha256 = \"{}\"\napps = [\"wxc1/a b\"]\nscopes = [\"authorize\"]\n",
            consumer_key_sha256(ORDERS_KEY)
        ),
        10,
        "consumers[0].apps[0]",
        "write \"wxc1/*\" or \"wxc1/<authorizer appid>\"",
    );
}

#[test]
fn grants_of_accounts_the_file_lacks_are_warned_about_not_refused() {
    // An app, a Work app and a platform's authorizers the file does not define: each may be
    // added at runtime (the platform only in the file), so the file is valid and each is named.
    let corp = "[[corps]]\ncorpid = \"ww1\"\nagentid = 7\nsecret = \"c\"\n";
    let text = format!(
        "{APP}{corp}{COMPONENT}{}",
        consumer(
            "shop",
            &consumer_key_sha256("k1"),
            "[\"wx1\", \"wxlater\", \"ww1/7\", \"ww1/8\", \"wxc1/*\", \"wxc1/wxa1\", \"wxc2/*\"]",
            "[\"read\"]"
        )
    );
    let settings = parse(&text).expect("grants of accounts the file lacks are valid");
    assert_eq!(
        settings.consumers[0].apps[1],
        AppGrant::App("wxlater".into())
    );
    assert_eq!(
        settings.consumers[0].apps[3],
        AppGrant::CorpAgent {
            corpid: "ww1".into(),
            agentid: "8".into()
        }
    );
    assert_eq!(
        settings.consumers[0].apps[6],
        AppGrant::AllAuthorizers("wxc2".into())
    );
    let warnings = settings.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(
            "consumers[0].apps[1] (\"shop\"): no [[apps]] entry has appid \"wxlater\""
        ),
        "{warnings:#?}"
    );
    assert!(
        warnings[0].contains("PUT /v1/admin/apps/wxlater"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].starts_with("consumers[0].apps[3] (\"shop\"): no [[corps]] entry"),
        "{warnings:#?}"
    );
    assert!(
        warnings[2].starts_with(
            "consumers[0].apps[6] (\"shop\"): no [[components]] entry has component_appid \"wxc2\""
        ),
        "{warnings:#?}"
    );
    // Granting only what the file defines warns of nothing.
    let quiet = format!(
        "{APP}{corp}{COMPONENT}{}",
        consumer(
            "shop",
            &consumer_key_sha256("k1"),
            "[\"wx1\", \"ww1/7\", \"wxc1\", \"wxc1/*\", \"wxc1/wxa1\", \"*\"]",
            "[\"read\"]"
        )
    );
    assert_eq!(parse(&quiet).unwrap().warnings(), Vec::<String>::new());
}

#[test]
fn credentials_in_a_wechat_base_url_are_masked() {
    let settings = parse(
        "[wechat]\napi_base = \"https://user:pass@proxy.example.com/wx\"\nwork_api_base = \"https://token@qy.example.com\"\n",
    )
    .unwrap();
    let rendered = settings.render_masked();
    assert!(!rendered.contains("pass"), "{rendered}");
    assert!(!rendered.contains("user"), "{rendered}");
    assert!(!rendered.contains("token@"), "{rendered}");
    assert!(
        rendered.contains("api_base = \"https://***@proxy.example.com/wx\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("work_api_base = \"https://***@qy.example.com\""),
        "{rendered}"
    );
    assert!(!format!("{settings:?}").contains("pass"));
    // Nor does an invalid one echo them.
    let err = parse("[wechat]\napi_base = \"https://user:pass@h/x?q=1\"\n").unwrap_err();
    assert!(!err.to_string().contains("pass"), "{err}");
    assert_eq!(mask_url_userinfo("https://h/a@b"), "https://h/a@b");
}

#[test]
fn plain_http_beyond_loopback_is_warned_about() {
    let warnings = |api_base: &str| {
        parse(&format!("[wechat]\napi_base = \"{api_base}\"\n"))
            .unwrap()
            .warnings()
    };
    for quiet in [
        "https://api.weixin.qq.com",
        "http://127.0.0.1:9000",
        "http://127.0.0.2:9000",
        "http://[::1]:9000",
        "http://localhost:9000",
    ] {
        assert_eq!(warnings(quiet), Vec::<String>::new(), "{quiet}");
    }
    let found = warnings("http://u:secretpw@10.0.0.5:9000");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("wechat.api_base: "), "{found:?}");
    assert!(found[0].contains("https://"), "{found:?}");
    assert!(!found[0].contains("secretpw"), "{found:?}");
    assert_eq!(warnings("http://api.weixin.qq.com").len(), 1);
}

#[test]
fn connection_limits_are_read_checked_and_overridable() {
    let settings = parse(
        "[server]\nheader_read_timeout = \"2s\"\nidle_timeout = \"90s\"\nmax_connections = 500\n",
    )
    .unwrap();
    assert_eq!(settings.server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(settings.server.idle_timeout, Duration::from_secs(90));
    assert_eq!(settings.server.max_connections, Some(500));
    let defaults = parse("").unwrap().server;
    assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
    assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
    assert_eq!(defaults.max_connections, None);

    fails_at(
        "[server]\n\nheader_read_timeout = \"0s\"\n",
        3,
        "server.header_read_timeout",
        "longer than zero",
    );
    fails_at(
        "[server]\nidle_timeout = 60\n",
        2,
        "server.idle_timeout",
        "use a unit",
    );
    fails_at(
        "[server]\nmax_connections = 0\n",
        2,
        "server.max_connections",
        "at least 1",
    );
    fails_at(
        "[server]\nmax_connections = \"many\"\n",
        2,
        "server.max_connections",
        "expected an integer",
    );

    let env = env_of(&[
        ("WXHUB_SERVER_IDLE_TIMEOUT", "5s"),
        ("WXHUB_SERVER_MAX_CONNECTIONS", "64"),
    ]);
    let settings = parse_with("", &env).unwrap();
    assert_eq!(settings.server.idle_timeout, Duration::from_secs(5));
    assert_eq!(settings.server.max_connections, Some(64));

    let rendered = parse("[server]\nmax_connections = 7\n")
        .unwrap()
        .render_masked();
    let value: toml::Table = rendered.parse().unwrap();
    assert_eq!(value["server"]["max_connections"].as_integer(), Some(7));
    assert_eq!(value["server"]["idle_timeout"].as_str(), Some("1m"));
    assert_eq!(value["server"]["header_read_timeout"].as_str(), Some("10s"));
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

#[test]
fn redis_sentinel_target_is_read_from_the_file_or_an_override() {
    let text = "[store]\nkind = \"redis\"\nsentinel_master = \"mymaster\"\n\
                sentinels = [\"redis://10.0.0.1:26379\", \"redis://:sentinel-pw@10.0.0.2:26379\"]\n\
                namespace = \"hub\"\n";
    let StoreSettings::Redis(redis) = parse(text).unwrap().store else {
        panic!("not a redis store");
    };
    assert_eq!(
        redis.target,
        RedisTarget::Sentinel {
            master: "mymaster".into(),
            sentinels: vec![
                "redis://10.0.0.1:26379".into(),
                "redis://:sentinel-pw@10.0.0.2:26379".into()
            ],
        }
    );
    assert_eq!(redis.namespace, "hub");
    let settings = parse(text).unwrap();
    let rendered = settings.render_masked();
    let debug = format!("{settings:?}");
    for shown in [&rendered, &debug] {
        assert!(!shown.contains("sentinel-pw"), "{shown}");
    }
    assert!(
        rendered.contains("sentinel_master = \"mymaster\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("redis://:***@10.0.0.2:26379"),
        "{rendered}"
    );
    rendered.parse::<toml::Table>().expect("TOML");

    // An override gives the list as one comma-separated string.
    let env = env_of(&[
        ("WXHUB_STORE_KIND", "redis"),
        ("WXHUB_STORE_SENTINEL_MASTER", "m"),
        ("WXHUB_STORE_SENTINELS", "redis://a:26379, redis://b:26379"),
    ]);
    let StoreSettings::Redis(redis) = parse_with("", &env).unwrap().store else {
        panic!("not a redis store");
    };
    assert_eq!(
        redis.target,
        RedisTarget::Sentinel {
            master: "m".into(),
            sentinels: vec!["redis://a:26379".into(), "redis://b:26379".into()],
        }
    );
}

#[test]
fn redis_sentinel_settings_are_checked() {
    let head = "[store]\nkind = \"redis\"\n";
    fails_at(
        &format!("{head}url = \"redis://h\"\nsentinel_master = \"m\"\nsentinels = [\"redis://s:26379\"]\n"),
        4,
        "store.url",
        "not both",
    );
    fails_at(
        &format!("{head}sentinel_master = \"m\"\n"),
        3,
        "store.sentinels",
        "required with `sentinel_master`",
    );
    fails_at(
        &format!("{head}sentinels = [\"redis://s:26379\"]\n"),
        3,
        "store.sentinel_master",
        "required with `sentinels`",
    );
    fails_at(
        &format!("{head}sentinel_master = \"m\"\nsentinels = []\n"),
        4,
        "store.sentinels",
        "at least one",
    );
    fails_at(
        &format!("{head}sentinel_master = \"m\"\nsentinels = [\"s:26379\"]\n"),
        4,
        "store.sentinels[0]",
        "expected a redis:// or rediss:// URL",
    );
    fails_at(
        &format!(
            "{head}sentinel_master = \"m\"\nsentinels = [\"rediss://a:26379\", \"redis://b:26379\"]\n"
        ),
        4,
        "store.sentinels[1]",
        "mixes redis:// and rediss://",
    );
    fails_at(
        &format!("{head}sentinel_master = \"m m\"\nsentinels = [\"redis://s:26379\"]\n"),
        3,
        "store.sentinel_master",
        "without spaces",
    );
    fails_at(
        "[store]\nkind = \"sqlite\"\nsentinels = [\"redis://s:26379\"]\n",
        3,
        "store.sentinels",
        "belongs to kind \"redis\"",
    );
}

#[test]
fn redis_credentials_are_secrets_and_the_ca_file_needs_tls() {
    let env = env_of(&[("REDIS_PASSWORD", "redis-acl-password")]);
    let text = "[store]\nkind = \"redis\"\nurl = \"rediss://10.0.0.1:6380/0\"\n\
                username = \"wxhub\"\npassword = \"${REDIS_PASSWORD}\"\n";
    let settings = parse_with(text, &env).unwrap();
    let StoreSettings::Redis(redis) = &settings.store else {
        panic!("not a redis store");
    };
    assert_eq!(redis.username.as_deref(), Some("wxhub"));
    let password = redis.password.as_ref().expect("a password");
    assert_eq!(password.expose(), "redis-acl-password");
    assert_eq!(
        password.source(),
        &SecretSource::Env("REDIS_PASSWORD".into())
    );
    let rendered = settings.render_masked();
    let debug = format!("{settings:?}");
    for shown in [&rendered, &debug] {
        assert!(!shown.contains("redis-acl-password"), "{shown}");
    }
    assert!(
        rendered.contains("password = \"***\"  # from environment variable REDIS_PASSWORD"),
        "{rendered}"
    );
    assert!(rendered.contains("username = \"wxhub\""), "{rendered}");

    fails_at(
        "[store]\nkind = \"redis\"\nurl = \"redis://u:pw@h/0\"\npassword = \"other\"\n",
        4,
        "store.password",
        "give it in one place only",
    );
    // A user in the URL and the password as a key is fine.
    assert!(
        parse("[store]\nkind = \"redis\"\nurl = \"redis://u@h/0\"\npassword = \"pw\"\n").is_ok()
    );
    fails_at(
        "[store]\nkind = \"redis\"\nurl = \"redis://h/0\"\npassword = \"${MISSING_PW}\"\n",
        4,
        "store.password",
        "MISSING_PW is not set",
    );
    fails_at(
        "[store]\nkind = \"redis\"\nurl = \"redis://h/0\"\nca_file = \"ca.pem\"\n",
        4,
        "store.ca_file",
        "only used with TLS",
    );
    fails_at(
        "[store]\nkind = \"redis\"\nurl = \"rediss://h/0\"\nca_file = \"no-such-ca.pem\"\n",
        4,
        "store.ca_file",
        "/etc/wxhub/no-such-ca.pem is not a readable file",
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let text = format!(
        "[store]\nkind = \"redis\"\nurl = \"rediss://h/0\"\nca_file = \"{}\"\n",
        ca.display()
    );
    let StoreSettings::Redis(redis) = parse(&text).unwrap().store else {
        panic!("not a redis store");
    };
    assert_eq!(redis.ca_file, Some(ca));
}

#[test]
fn the_gateway_section_parses_sizes_and_addresses_and_names_mistakes() {
    let settings = parse(&format!(
        "{}\n[gateway]\nlisten = \"127.0.0.1:8081\"\nwork_listen = \"127.0.0.1:8082\"\nmax_body = \"512KiB\"\nreplay_memory = \"8MiB\"\n",
        example()
    ))
    .unwrap();
    assert_eq!(settings.gateway.replay_memory, 8 * 1024 * 1024);
    assert_eq!(
        settings.gateway.listen,
        Some("127.0.0.1:8081".parse().unwrap())
    );
    assert_eq!(
        settings.gateway.work_listen,
        Some("127.0.0.1:8082".parse().unwrap())
    );
    assert_eq!(settings.gateway.max_body, 512 * 1024);
    let rendered: toml::Table = settings.render_masked().parse().unwrap();
    assert_eq!(
        rendered["gateway"]["listen"].as_str(),
        Some("127.0.0.1:8081")
    );
    assert_eq!(
        rendered["gateway"]["max_body"].as_integer(),
        Some(512 * 1024)
    );
    assert_eq!(
        rendered["gateway"]["replay_memory"].as_integer(),
        Some(8 * 1024 * 1024)
    );
    assert_eq!(
        parse(&example()).unwrap().gateway,
        GatewaySettings::default()
    );
    assert_eq!(GatewaySettings::default().max_body, 10 * 1024 * 1024);
    fails_at(
        "[gateway]\nmax_body = \"10MB\"\n",
        2,
        "gateway.max_body",
        "positive size",
    );
    fails_at(
        "[gateway]\nmax_body = 0\n",
        2,
        "gateway.max_body",
        "positive size",
    );
    fails_at(
        "[gateway]\nreplay_memory = \"lots\"\n",
        2,
        "gateway.replay_memory",
        "positive size",
    );
    fails_at(
        "[gateway]\nlisten = \"8081\"\n",
        2,
        "gateway.listen",
        "invalid address",
    );
    fails_at("[gateway]\nport = 1\n", 2, "gateway.port", "unknown key");
    let scopes = parse(&example().replace(
        "scopes = [\"read\", \"invalidate\"]",
        "scopes = [\"read\", \"call\"]",
    ))
    .unwrap();
    assert!(scopes.consumers[0].has_scope(Scope::Call));
}

#[test]
fn check_interval_is_read_globally_and_per_account() {
    let text = example().replace(
        "min_refresh_interval = \"30s\"",
        "min_refresh_interval = \"30s\"\ncheck_interval = \"5m\"",
    );
    let settings = parse(&text).unwrap();
    assert_eq!(
        settings.refresh.check_interval,
        Some(Duration::from_secs(300))
    );
    let rendered: toml::Table = settings.render_masked().parse().unwrap();
    assert_eq!(rendered["refresh"]["check_interval"].as_str(), Some("5m"));
    fails_at(
        "[refresh]\ncheck_interval = \"soon\"\n",
        2,
        "refresh.check_interval",
        "",
    );
}
