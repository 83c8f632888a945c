//! Every kind in the registration table (`kinds::KINDS`), end to end: a consumer granted one
//! account of that kind reads its token at the kind's `/v1` path, watches it (its events arrive,
//! and no other account's), finds it in `/v1/credentials` (what the status page shows), and the
//! gateway recognises its token in the kind's token parameter. A kind added to the table is
//! checked here once it has a test account below.

use std::time::Duration;

use serde_json::{json, Value};
use wxhub::configuration::{consumer_key_digest, AppGrant, ConsumerSettings, Scope};
use wxhub::kinds::{AccountId, CredentialKey, Host, Kind, Role, KINDS};
use wxhub::token::{CorpTicketKind, TicketKind};

use crate::helpers::*;
use crate::platform_support::*;
use crate::suites_support::*;
use crate::watch::Stream;

const APP: &str = "wx00000000000000k1";
const CORP: &str = "ww00000000000000k1";
const AGENT: &str = "1000002";

/// The test's account of `kind`, the grant that covers it (as a consumer's file writes it), and
/// the consumer key granted it. No wildcard arm: a new kind must name its test account.
fn account_of(kind: Kind, children: &Children) -> (AccountId, AppGrant, String) {
    let (account, grant) = match kind {
        Kind::App => (AccountId::app(APP), AppGrant::App(APP.into())),
        Kind::Corp => (
            AccountId::corp(CORP, AGENT),
            AppGrant::CorpAgent {
                corpid: CORP.into(),
                agentid: AGENT.into(),
            },
        ),
        Kind::Component => (
            AccountId::component(COMPONENT),
            AppGrant::Component(COMPONENT.into()),
        ),
        // The children grant: every authorizer of the platform, this one among them.
        Kind::Authorizer => (
            AccountId::authorizer(COMPONENT, &children.authorizer),
            AppGrant::AllAuthorizers(COMPONENT.into()),
        ),
        Kind::Suite => (AccountId::suite(SUITE), AppGrant::Suite(SUITE.into())),
        // The children grant: every corp that installed the suite, this one among them.
        Kind::AuthCorp => (
            AccountId::auth_corp(SUITE, &children.auth_corp),
            AppGrant::AllAuthCorps(SUITE.into()),
        ),
        Kind::Provider => (
            AccountId::provider(PROVIDER),
            AppGrant::Provider(PROVIDER.into()),
        ),
    };
    let key = format!("kind-key-{}-0123456789", kind.descriptor().name);
    (account, grant, key)
}

/// The accounts WeChat creates (an authorizer, an installed corp), known once they exist.
#[derive(Default)]
struct Children {
    authorizer: String,
    auth_corp: String,
}

/// The kind's `/v1` path for `account`: its template with the id parts in order.
fn v1_path(account: &AccountId) -> String {
    let descriptor = account.kind().descriptor();
    let (first, second) = account.parts();
    let mut path = descriptor.v1_path.to_string();
    for (field, value) in descriptor.id_fields.iter().zip([Some(first), second]) {
        let placeholder = path[path.find('{').expect("a placeholder per id field")..]
            .split_once('}')
            .map(|(p, _)| format!("{p}}}"))
            .expect("a closed placeholder");
        assert!(!field.is_empty());
        path = path.replacen(&placeholder, value.expect("an id part per field"), 1);
    }
    path
}

/// How many calls of the business API reached the mock.
fn domain_ip_calls(mock: &wechat_mock::MockServer) -> u64 {
    stats(mock)
        .calls
        .get("/cgi-bin/get_api_domain_ip")
        .map_or(0, |by_account| by_account.values().sum())
}

#[tokio::test]
async fn every_kind_is_read_watched_listed_and_recognised_by_the_gateway() {
    let relay = Relay::start().await;
    let suite_relay = relay.clone();
    let app = TestApp::legacy(APP).with_tickets(&[TicketKind::Jsapi]);
    let corp = TestCorp {
        corpid: CORP.into(),
        agentid: AGENT.into(),
        tickets: vec![CorpTicketKind::Jsapi],
    };
    let mock = platform_mock(
        &relay,
        Duration::from_secs(60),
        Duration::from_secs(600),
        |c| {
            let c = c.with_app(APP, secret_of(APP)).with_corp(
                CORP,
                AGENT,
                secret_of(&format!("{CORP}/{AGENT}")),
            );
            with_suite(c, &suite_relay, Duration::from_secs(600))
        },
    )
    .await;
    let mut options = platform_options(&[TicketKind::Jsapi]);
    options.apps = vec![app];
    options.corps = vec![corp];
    options.suites = vec![suite_settings(&[])];
    options.providers = vec![provider_settings()];
    // One consumer per kind, granted that kind's account only.
    for kind in KINDS {
        let (_, grant, key) = account_of(kind, &Children::default());
        options.more_consumers.push(ConsumerSettings {
            name: format!("kind-{}", kind.descriptor().name),
            key_sha256: consumer_key_digest(&key),
            apps: vec![grant],
            scopes: vec![Scope::Read],
        });
    }
    let hub = spawn_app(&mock, options).await;
    relay.point_at(&[&hub]);
    wait_for_component_token(&hub).await;
    wait_for_suite_token(&hub).await;
    let children = Children {
        authorizer: authorize(&mock).await,
        auth_corp: install(&mock).await,
    };

    for kind in KINDS {
        let (account, _, key) = account_of(kind, &children);
        let name = kind.descriptor().name;
        let token_key = CredentialKey::new(account.clone(), Role::AccessToken).to_string();

        // Read at the kind's path, with the kind's consumer; another kind's consumer is refused.
        let path = format!("{}/access_token", v1_path(&account));
        wait_until(Duration::from_secs(15), &format!("{name}: a token"), || {
            let request = hub.client.get(hub.url(&path)).bearer_auth(&key).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        let read = hub.client.get(hub.url(&path)).bearer_auth(&key).send();
        let body: Value = read.await.unwrap().json().await.unwrap();
        let token = body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!token.is_empty(), "{name}: {body}");
        let stranger = KINDS.into_iter().find(|k| *k != kind).expect("two kinds");
        let (_, _, stranger_key) = account_of(stranger, &children);
        let refused = hub
            .client
            .get(hub.url(&path))
            .bearer_auth(&stranger_key)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{name}: another kind's consumer");

        // Watched: the initial state carries its token, and nothing of another account.
        let mut stream = Stream::open(&hub, &key, None).await;
        let (_, first) = stream.next().await;
        let mut seen = vec![first];
        while !seen.iter().any(|event| event["key"] == token_key.as_str()) {
            seen.push(stream.next().await.1);
        }
        for event in &seen {
            let event_key: CredentialKey = event["key"].as_str().unwrap().parse().unwrap();
            assert_eq!(event_key.account, account, "{name}: {event}");
        }
        let event = seen
            .iter()
            .find(|e| e["key"] == token_key.as_str())
            .unwrap();
        assert_eq!(event["value"], token.as_str(), "{name}");

        // Listed for operators, as the status page shows it.
        let listed = hub.credential(&token_key).await;
        assert_eq!(listed["key"], token_key.as_str(), "{name}");
        assert_eq!(listed["state"], "fresh", "{name}: {listed}");

        // The gateway recognises the token in the kind's parameter (the call reaches WeChat),
        // and refuses a value the hub does not serve with WeChat's 40014 before any call.
        let gateway = match kind.descriptor().host {
            Host::Official => &hub.gateway,
            Host::Work => &hub.work_gateway,
        };
        let param = kind.descriptor().token_param;
        let call = |value: String| {
            hub.client
                .get(format!("{gateway}/cgi-bin/get_api_domain_ip"))
                .query(&[(param, value)])
                .send()
        };
        let before = domain_ip_calls(&mock);
        let recognised: Value = call(token.clone()).await.unwrap().json().await.unwrap();
        assert_ne!(recognised["errcode"], json!(40014), "{name}: {recognised}");
        assert!(
            domain_ip_calls(&mock) > before,
            "{name}: the call reached WeChat"
        );
        let forged: Value = call(format!("{token}x"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(forged["errcode"], json!(40014), "{name}: {forged}");
    }
    hub.stop().await;
}
