//! Work WeChat's third-party side: `[[suites]]`, `[[providers]]` and the grants that name them.

use super::*;
use crate::token::CorpTicketKind;

const SUITE: &str = "[[suites]]\nsuite_id = \"ww4asffe99e54c0f00\"\nsecret = \"ss\"\ntoken = \"tk\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\ncorp_tickets = [\"jsapi\", \"agent_config\"]\n";
const PROVIDER: &str = "[[providers]]\ncorpid = \"wwprovider000000001\"\nsecret = \"ps\"\n";

#[test]
fn a_suite_and_a_provider_parse_with_their_secrets_masked() {
    let settings = parse(&format!("{SUITE}{PROVIDER}")).unwrap();
    let suite = &settings.suites[0];
    assert_eq!(suite.suite_id, "ww4asffe99e54c0f00");
    assert_eq!(suite.secret.expose(), "ss");
    assert_eq!(
        suite.corp_tickets,
        vec![CorpTicketKind::Jsapi, CorpTicketKind::AgentConfig]
    );
    assert_eq!(settings.providers[0].corpid, "wwprovider000000001");
    let shown = settings.render_masked();
    assert!(shown.contains("[[suites]]") && shown.contains("[[providers]]"));
    for secret in ["\"ss\"", "\"tk\"", "\"ps\"", "abcdefghijklmnop"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    parse(&shown.replace("\"***\"", "\"x\"").replace(
        "encoding_aes_key = \"x\"",
        "encoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"",
    ))
    .expect("the masked rendering is itself a valid configuration once secrets are filled in");
}

#[test]
fn suites_and_providers_are_checked_like_the_other_accounts() {
    fails_at(
        &format!("{SUITE}{SUITE}"),
        8,
        "suites[1].suite_id",
        "duplicate suite_id",
    );
    fails_at(
        "[[suites]]\nsuite_id = \"ww1\"\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"short\"\n",
        5,
        "suites[0].encoding_aes_key",
        "43-character",
    );
    fails_at(
        &SUITE.replace("[\"jsapi\", \"agent_config\"]", "[\"wx_card\"]"),
        6,
        "suites[0].corp_tickets[0]",
        "unknown ticket",
    );
    fails_at(
        "[[suites]]\nsuite_id = \"ww1\"\nsecret = \"s\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n",
        1,
        "suites[0].token",
        "required",
    );
    fails_at(
        &format!("{PROVIDER}{PROVIDER}"),
        5,
        "providers[1].corpid",
        "duplicate provider corpid",
    );
    fails_at(
        "[[providers]]\ncorpid = \"wwp\"\nsecret = \"s\"\nrefresh = 1\n",
        4,
        "providers[0].refresh",
        "unknown key",
    );
}

#[test]
fn suite_and_provider_grants_are_prefixed_and_named_when_unknown() {
    let key = "a".repeat(64);
    let text = format!(
        "{SUITE}{PROVIDER}{}",
        consumer(
            "svc",
            &key,
            "[\"suite:ww4asffe99e54c0f00\", \"suite:ww4asffe99e54c0f00/*\", \"suite:ww4asffe99e54c0f00/wwcorp1\", \"provider:wwprovider000000001\", \"suite:wwlater\"]",
            "[\"read\"]"
        )
    );
    let settings = parse(&text).unwrap();
    assert_eq!(
        settings.consumers[0].apps,
        vec![
            AppGrant::Suite("ww4asffe99e54c0f00".into()),
            AppGrant::AllAuthCorps("ww4asffe99e54c0f00".into()),
            AppGrant::AuthCorp {
                suite_id: "ww4asffe99e54c0f00".into(),
                corpid: "wwcorp1".into()
            },
            AppGrant::Provider("wwprovider000000001".into()),
            AppGrant::Suite("wwlater".into()),
        ]
    );
    for (grant, written) in settings.consumers[0].apps.iter().zip([
        "suite:ww4asffe99e54c0f00",
        "suite:ww4asffe99e54c0f00/*",
        "suite:ww4asffe99e54c0f00/wwcorp1",
        "provider:wwprovider000000001",
        "suite:wwlater",
    ]) {
        assert_eq!(grant.to_string(), written);
    }
    let warnings = settings.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("wwlater"), "{warnings:?}");
    for bad in [
        "suite:",
        "suite:a/b/c",
        "suite:/x",
        "provider:",
        "provider:a/b",
    ] {
        let text = consumer("svc", &key, &format!("[\"{bad}\"]"), "[\"read\"]");
        let err = parse(&text).expect_err(bad);
        assert!(err.to_string().contains("unknown app"), "{bad}: {err}");
    }
}
