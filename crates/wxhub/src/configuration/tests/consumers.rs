//! `[[consumers]]`: names, key hashes, grants and scopes.

use super::*;

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
        "must name at least one of \"read\", \"invalidate\", \"admin\", \"authorize\", \"call\"",
    );
    fails_at(
        &with(consumer(
            "b",
            &k2,
            "[\"wx1\"]",
            "[\"call\", \"read\", \"call\"]",
        )),
        17,
        "consumers[1].scopes[2]",
        "\"call\" is listed twice",
    );
    fails_at(
        &with(consumer(
            "b",
            &k2,
            "[\"ww1/7\", \"wx1\", \"ww1/7\"]",
            "[\"read\"]",
        )),
        16,
        "consumers[1].apps[2]",
        "\"ww1/7\" is listed twice",
    );
    fails_at(
        &with(consumer("b", &k2, "[\"wx1\", 7]", "[\"read\"]")),
        16,
        "consumers[1].apps[1]",
        "expected a string, found",
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
fn the_shared_rules_name_the_entry_at_fault_or_the_field() {
    let texts = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let settings = parse(APP).unwrap();
    let reader = settings.grants();
    assert_eq!(
        read_grants(&texts(&["wx1", "ww1/7", "*"]), &reader),
        Ok(vec![
            AppGrant::App("wx1".into()),
            AppGrant::CorpAgent {
                corpid: "ww1".into(),
                agentid: "7".into()
            },
            AppGrant::All,
        ])
    );
    let twice = read_grants(&texts(&["wx1", "ww1/7", "ww1/7"]), &reader).unwrap_err();
    assert_eq!(twice.index, Some(2));
    assert_eq!(twice.naming("apps"), "apps[2]: \"ww1/7\" is listed twice");
    let bad = read_grants(&texts(&["wx 1"]), &reader).unwrap_err();
    assert_eq!(bad.index, Some(0));
    assert!(bad.message.starts_with("unknown app \"wx 1\""), "{bad:?}");
    assert_eq!(read_grants(&[], &reader), Ok(vec![]));

    assert_eq!(
        read_scopes(&texts(&["call", "read"])),
        Ok(vec![Scope::Call, Scope::Read])
    );
    let none = read_scopes(&[]).unwrap_err();
    assert_eq!(none.index, None);
    // Every scope is offered, as `Scope` knows them.
    for scope in Scope::ALL {
        assert!(
            none.message.contains(&format!("{:?}", scope.as_str())),
            "{none:?}"
        );
    }
    assert!(none.naming("scopes").starts_with("scopes: must name"));
    let unknown = read_scopes(&texts(&["read", "write"])).unwrap_err();
    assert_eq!(
        unknown.naming("scopes"),
        format!("scopes[1]: {}", "write".parse::<Scope>().unwrap_err())
    );
}
