//! The sections of the hub process itself: `[server]` (listeners, timeouts, connection limits),
//! `[wechat]` (base URLs, masked and warned about), `[refresh]` and `[gateway]`.

use super::*;

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
