//! `[store]` and its redis keys: the kinds, the keys each takes, Sentinel targets, credentials
//! and the masking of every password.

use super::*;

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
