//! The accounts whose tokens the hub keeps: `[[apps]]`, `[[corps]]` and `[[components]]`.

use super::*;

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
