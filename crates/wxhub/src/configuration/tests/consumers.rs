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
