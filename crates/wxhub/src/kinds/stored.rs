//! The formats runtime accounts are stored in: a runtime app, Work app or provider with its secret sealed
//! ([`StoredAccount`]), an authorizer ([`StoredAuthorizer`]), an installed corp
//! ([`StoredAuthCorp`]). Versioned, read back by every
//! instance and every restart, so they are kept apart from the orchestration that writes them, as
//! pure functions with their tests.

use std::time::Duration;

use super::auth_corp::AuthCorpSpec;
use super::authorizer::AuthorizerSpec;
use super::{AccountSpec, Kind, StoredAccount};
use crate::configuration::{RefreshOverrides, Secret, SuiteSettings, TokenMode};

/// An authorizer as stored: no secret (its refresh token is a credential in the token store),
/// only what WeChat told about its authorization. Versioned like [`StoredAccount`].
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StoredAuthorizer {
    /// Format version (1).
    pub version: u32,
    /// The platform.
    pub component_appid: String,
    /// The account.
    pub authorizer_appid: String,
    /// The permission sets granted.
    #[serde(default)]
    pub func_info: Vec<u32>,
    /// When it (last) authorized, in Unix seconds.
    #[serde(default)]
    pub authorized_at: i64,
    /// Whether it withdrew.
    #[serde(default)]
    pub revoked: bool,
}

/// The stored form of an authorizer.
pub fn stored_authorizer(spec: &AccountSpec) -> Option<String> {
    let authorizer = spec.as_authorizer()?;
    serde_json::to_string(&StoredAuthorizer {
        version: 1,
        component_appid: authorizer.component_appid.clone(),
        authorizer_appid: authorizer.authorizer_appid.clone(),
        func_info: authorizer.func_info.clone(),
        authorized_at: authorizer.authorized_at,
        revoked: authorizer.revoked,
    })
    .ok()
}

/// The account of a stored authorizer, with its platform's tickets and timing.
pub fn authorizer_spec(
    component: &crate::configuration::ComponentSettings,
    stored: StoredAuthorizer,
) -> AccountSpec {
    AccountSpec::Authorizer(AuthorizerSpec {
        component_appid: stored.component_appid,
        authorizer_appid: stored.authorizer_appid,
        tickets: component.authorizer_tickets.clone(),
        refresh: component.refresh,
        func_info: stored.func_info,
        authorized_at: stored.authorized_at,
        revoked: stored.revoked,
    })
}

/// A corp that installed a suite, as stored: no secret (its permanent code is a credential in
/// the token store, sealed), only what Work WeChat told about the installation. Versioned like
/// [`StoredAccount`].
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StoredAuthCorp {
    /// Format version (1).
    pub version: u32,
    /// The suite.
    pub suite_id: String,
    /// The corp.
    pub corpid: String,
    /// The corp's name.
    #[serde(default)]
    pub corp_name: String,
    /// The suite's agentid in that corp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agentid: Option<String>,
    /// When it (last) installed, in Unix seconds.
    #[serde(default)]
    pub installed_at: i64,
    /// Whether it uninstalled.
    #[serde(default)]
    pub revoked: bool,
}

/// The stored form of an account under a parent (an authorizer, an installed corp).
pub fn stored_child(spec: &AccountSpec) -> Option<String> {
    if let Some(corp) = spec.as_auth_corp() {
        return serde_json::to_string(&StoredAuthCorp {
            version: 1,
            suite_id: corp.suite_id.clone(),
            corpid: corp.corpid.clone(),
            corp_name: corp.corp_name.clone(),
            agentid: corp.agentid.clone(),
            installed_at: corp.installed_at,
            revoked: corp.revoked,
        })
        .ok();
    }
    stored_authorizer(spec)
}

/// The account of a stored installation, with its suite's tickets and timing.
pub fn auth_corp_spec(
    suite: &crate::configuration::SuiteSettings,
    stored: StoredAuthCorp,
) -> AccountSpec {
    AccountSpec::AuthCorp(AuthCorpSpec {
        suite_id: stored.suite_id,
        corpid: stored.corpid,
        corp_name: stored.corp_name,
        agentid: stored.agentid,
        tickets: suite.corp_tickets.clone(),
        refresh: suite.refresh,
        installed_at: stored.installed_at,
        revoked: stored.revoked,
    })
}

/// Why a stored child account could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildError {
    /// The record is not one this version reads.
    Unreadable,
    /// Its parent (platform, suite) is not configured.
    UnknownParent,
}

/// Where the settings of a child's parent are found: a platform's in the file, a suite's in the
/// file or put at runtime.
pub trait Parents {
    /// The platform `component_appid`'s settings, if it is configured.
    fn component(&self, component_appid: &str) -> Option<crate::configuration::ComponentSettings>;
    /// The suite `suite_id`'s settings, if it is configured or put.
    fn suite(&self, suite_id: &str) -> Option<SuiteSettings>;
}

/// The account a stored child record describes, read with its parent's settings.
pub fn child_spec(
    (parent, parent_id): (Kind, &str),
    definition: &str,
    parents: &dyn Parents,
) -> Result<AccountSpec, ChildError> {
    let unreadable = |_| ChildError::Unreadable;
    match parent {
        Kind::Component => {
            let stored: StoredAuthorizer = serde_json::from_str(definition).map_err(unreadable)?;
            let component = parents
                .component(parent_id)
                .ok_or(ChildError::UnknownParent)?;
            Ok(authorizer_spec(&component, stored))
        }
        Kind::Suite => {
            let stored: StoredAuthCorp = serde_json::from_str(definition).map_err(unreadable)?;
            let suite = parents.suite(parent_id).ok_or(ChildError::UnknownParent)?;
            Ok(auth_corp_spec(&suite, stored))
        }
        Kind::App | Kind::Corp | Kind::Authorizer | Kind::AuthCorp | Kind::Provider => {
            Err(ChildError::Unreadable)
        }
    }
}

/// The field name of an account's secret.
pub const SECRET_FIELD: &str = "secret";

/// What a sealed field of the runtime account stored as `name` is bound to (the sealing's
/// associated data): the secret to the account's storage name (as it always was), every other
/// field to `name#field`, so a sealed value copied into another field or account does not open.
pub fn seal_place(name: &str, field: &str) -> String {
    if field == SECRET_FIELD {
        name.to_string()
    } else {
        format!("{name}#{field}")
    }
}

/// The stored form of a runtime app, Work app, provider or suite; `seal` seals one secret given
/// its field name.
pub fn stored_account(
    spec: &AccountSpec,
    seal: impl Fn(&str, &Secret) -> String,
) -> Option<StoredAccount> {
    let millis = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    let record =
        |kind: &str, id: &str, secret: &Secret, refresh: &RefreshOverrides| StoredAccount {
            version: 1,
            kind: kind.into(),
            id: id.to_string(),
            agentid: None,
            mode: None,
            tickets: Vec::new(),
            refresh_before_expired_ms: millis(refresh.refresh_before_expired),
            refresh_retry_interval_ms: millis(refresh.refresh_retry_interval),
            check_interval_ms: millis(refresh.check_interval),
            sealed_secret: seal(SECRET_FIELD, secret),
            sealed: Default::default(),
        };
    Some(match spec {
        AccountSpec::App {
            appid,
            secret,
            mode,
            tickets,
            refresh,
        } => StoredAccount {
            mode: Some(mode.as_str().into()),
            tickets: tickets.iter().map(|t| t.as_str().to_string()).collect(),
            ..record("app", appid, secret, refresh)
        },
        AccountSpec::Corp {
            corpid,
            agentid,
            secret,
            tickets,
            refresh,
        } => StoredAccount {
            agentid: Some(agentid.clone()),
            tickets: tickets.iter().map(|t| t.as_str().to_string()).collect(),
            ..record("corp", corpid, secret, refresh)
        },
        AccountSpec::Provider {
            corpid,
            secret,
            refresh,
        } => record("provider", corpid, secret, refresh),
        AccountSpec::Suite(suite) => {
            let mut sealed = std::collections::BTreeMap::new();
            sealed.insert("token".to_string(), seal("token", &suite.token));
            sealed.insert(
                "encoding_aes_key".to_string(),
                seal("encoding_aes_key", &suite.encoding_aes_key),
            );
            if let Some(previous) = &suite.previous_encoding_aes_key {
                sealed.insert(
                    "previous_encoding_aes_key".to_string(),
                    seal("previous_encoding_aes_key", previous),
                );
            }
            StoredAccount {
                tickets: suite
                    .corp_tickets
                    .iter()
                    .map(|t| t.as_str().to_string())
                    .collect(),
                sealed,
                ..record("suite", &suite.suite_id, &suite.secret, &suite.refresh)
            }
        }
        AccountSpec::Component { .. } | AccountSpec::Authorizer(_) | AccountSpec::AuthCorp(_) => {
            return None
        }
    })
}

/// The account a stored record describes, with its opened secret and its other opened secrets
/// by field name.
pub fn spec_of(
    stored: StoredAccount,
    secret: Secret,
    mut others: std::collections::BTreeMap<String, Secret>,
) -> Option<AccountSpec> {
    let duration = |ms: Option<u64>| ms.map(Duration::from_millis);
    let refresh = RefreshOverrides {
        refresh_before_expired: duration(stored.refresh_before_expired_ms),
        refresh_retry_interval: duration(stored.refresh_retry_interval_ms),
        check_interval: duration(stored.check_interval_ms),
    };
    if stored.version != 1 {
        return None;
    }
    match stored.kind.as_str() {
        "app" => Some(AccountSpec::App {
            appid: stored.id,
            secret,
            mode: stored
                .mode
                .as_deref()
                .map_or(Ok(TokenMode::default()), str::parse)
                .ok()?,
            tickets: parse_all(&stored.tickets)?,
            refresh,
        }),
        "corp" => Some(AccountSpec::Corp {
            corpid: stored.id,
            agentid: stored.agentid?,
            secret,
            tickets: parse_all(&stored.tickets)?,
            refresh,
        }),
        "provider" => Some(AccountSpec::Provider {
            corpid: stored.id,
            secret,
            refresh,
        }),
        "suite" => Some(AccountSpec::Suite(Box::new(SuiteSettings {
            suite_id: stored.id,
            secret,
            token: others.remove("token")?,
            encoding_aes_key: others.remove("encoding_aes_key")?,
            previous_encoding_aes_key: others.remove("previous_encoding_aes_key"),
            corp_tickets: parse_all(&stored.tickets)?,
            refresh,
        }))),
        _ => None,
    }
}

/// Every name parsed, or `None` if one is not a name of `T`.
fn parse_all<T: std::str::FromStr>(names: &[String]) -> Option<Vec<T>> {
    names.iter().map(|name| name.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::ComponentSettings;
    use crate::token::{CorpTicketKind, TicketKind};

    fn overrides() -> RefreshOverrides {
        RefreshOverrides {
            refresh_before_expired: Some(Duration::from_secs(600)),
            refresh_retry_interval: None,
            check_interval: Some(Duration::from_millis(90_500)),
        }
    }

    /// What `spec` reads back as after it was stored (through its JSON text, as the store keeps
    /// it) and its secret opened.
    /// (Sealing here only marks the field: the tests of `seal` cover the cipher.)
    fn read_back(spec: &AccountSpec) -> Option<AccountSpec> {
        let stored = stored_account(spec, |field, secret| {
            format!("sealed {field} {}", secret.expose())
        })?;
        let text = serde_json::to_string(&stored).unwrap();
        let stored: StoredAccount = serde_json::from_str(&text).unwrap();
        let open = |field: &str, sealed: &str| {
            let value = sealed.strip_prefix(&format!("sealed {field} ")).unwrap();
            Secret::new(value.to_string())
        };
        let others = stored
            .sealed
            .iter()
            .map(|(field, sealed)| (field.clone(), open(field, sealed)))
            .collect();
        let secret = open(SECRET_FIELD, &stored.sealed_secret);
        spec_of(stored, secret, others)
    }

    #[test]
    fn a_suite_reads_back_with_every_key_sealed_apart() {
        let mut settings = crate::configuration::SuiteSettings {
            suite_id: "wwsuite1".into(),
            secret: Secret::new("ss".to_string()),
            token: Secret::new("tk".to_string()),
            encoding_aes_key: Secret::new("k1".to_string()),
            previous_encoding_aes_key: Some(Secret::new("k0".to_string())),
            corp_tickets: vec![CorpTicketKind::Jsapi, CorpTicketKind::AgentConfig],
            refresh: overrides(),
        };
        let suite = AccountSpec::Suite(Box::new(settings.clone()));
        assert_eq!(read_back(&suite), Some(suite));
        let stored = stored_account(&AccountSpec::Suite(Box::new(settings.clone())), |f, _| {
            format!("<{f}>")
        })
        .unwrap();
        let text = serde_json::to_string(&stored).unwrap();
        for secret in ["ss", "tk", "k1", "k0"] {
            assert!(!text.contains(&format!("\"{secret}\"")), "{text}");
        }
        settings.previous_encoding_aes_key = None;
        let suite = AccountSpec::Suite(Box::new(settings));
        assert_eq!(read_back(&suite), Some(suite));
    }

    #[test]
    fn each_sealed_field_is_bound_to_its_account_and_field() {
        assert_eq!(seal_place("suite/wws", SECRET_FIELD), "suite/wws");
        assert_eq!(seal_place("suite/wws", "token"), "suite/wws#token");
        assert_ne!(
            seal_place("suite/wws", "token"),
            seal_place("suite/wws", "encoding_aes_key")
        );
    }

    #[test]
    fn an_app_and_a_work_app_read_back_as_they_were_stored() {
        let app = AccountSpec::App {
            appid: "wx1".into(),
            secret: Secret::new("s".to_string()),
            mode: TokenMode::Legacy,
            tickets: vec![TicketKind::Jsapi, TicketKind::WxCard],
            refresh: overrides(),
        };
        assert_eq!(read_back(&app), Some(app));
        let corp = AccountSpec::Corp {
            corpid: "ww1".into(),
            agentid: "1000002".into(),
            secret: Secret::new("s".to_string()),
            tickets: vec![CorpTicketKind::AgentConfig],
            refresh: RefreshOverrides::default(),
        };
        assert_eq!(read_back(&corp), Some(corp));
        let provider = AccountSpec::Provider {
            corpid: "wwprovider1".into(),
            secret: Secret::new("s".to_string()),
            refresh: overrides(),
        };
        assert_eq!(read_back(&provider), Some(provider));
    }

    #[test]
    fn a_record_of_another_version_or_kind_is_not_read() {
        let record = |text: &str| -> StoredAccount { serde_json::from_str(text).unwrap() };
        let secret = || Secret::new("s".to_string());
        let read = |text: &str| spec_of(record(text), secret(), Default::default());
        let app = r#"{"version":1,"kind":"app","id":"wx1","sealed_secret":"x"}"#;
        assert!(read(app).is_some());
        let newer = r#"{"version":2,"kind":"app","id":"wx1","sealed_secret":"x"}"#;
        assert_eq!(read(newer), None);
        let unknown = r#"{"version":1,"kind":"component","id":"wx1","sealed_secret":"x"}"#;
        assert_eq!(read(unknown), None);
        let no_agent = r#"{"version":1,"kind":"corp","id":"ww1","sealed_secret":"x"}"#;
        assert_eq!(read(no_agent), None);
        let bad_ticket =
            r#"{"version":1,"kind":"app","id":"wx1","tickets":["nope"],"sealed_secret":"x"}"#;
        assert_eq!(read(bad_ticket), None);
        let bad_mode = r#"{"version":1,"kind":"app","id":"wx1","mode":"fast","sealed_secret":"x"}"#;
        assert_eq!(read(bad_mode), None);
        // A suite without the keys that open its pushes is not read.
        let keyless = r#"{"version":1,"kind":"suite","id":"wws","sealed_secret":"x"}"#;
        assert_eq!(read(keyless), None);
    }

    #[test]
    fn an_installed_corp_reads_back_with_its_suites_tickets_and_timing() {
        let suite = crate::configuration::SuiteSettings {
            suite_id: "wwsuite1".into(),
            secret: Secret::new("ss".to_string()),
            token: Secret::new("tk".to_string()),
            encoding_aes_key: Secret::new("k".to_string()),
            previous_encoding_aes_key: None,
            corp_tickets: vec![CorpTicketKind::Jsapi],
            refresh: overrides(),
        };
        let corp = AccountSpec::AuthCorp(AuthCorpSpec {
            suite_id: "wwsuite1".into(),
            corpid: "wwcorp1".into(),
            corp_name: "A corp".into(),
            agentid: Some("1000005".into()),
            tickets: vec![CorpTicketKind::Jsapi],
            refresh: overrides(),
            installed_at: 1_700_000_000,
            revoked: true,
        });
        let text = stored_child(&corp).unwrap();
        assert!(!text.contains("permanent"), "{text}");
        let stored: StoredAuthCorp = serde_json::from_str(&text).unwrap();
        assert_eq!(auth_corp_spec(&suite, stored), corp);
    }

    #[test]
    fn an_authorizer_reads_back_with_its_platforms_tickets_and_timing() {
        let component = ComponentSettings {
            component_appid: "wxc1".into(),
            secret: Secret::new("cs".to_string()),
            token: Secret::new("tk".to_string()),
            encoding_aes_key: Secret::new("k".to_string()),
            previous_encoding_aes_key: None,
            authorizer_tickets: vec![TicketKind::Jsapi],
            refresh: overrides(),
        };
        let authorizer = AccountSpec::Authorizer(AuthorizerSpec {
            component_appid: "wxc1".into(),
            authorizer_appid: "wxa1".into(),
            tickets: vec![TicketKind::Jsapi],
            refresh: overrides(),
            func_info: vec![1, 15],
            authorized_at: 1_700_000_000,
            revoked: true,
        });
        let text = stored_authorizer(&authorizer).unwrap();
        let stored: StoredAuthorizer = serde_json::from_str(&text).unwrap();
        assert_eq!(stored.version, 1);
        assert_eq!(authorizer_spec(&component, stored), authorizer);
        // A record written before the optional fields existed still reads.
        let old: StoredAuthorizer = serde_json::from_str(
            r#"{"version":1,"component_appid":"wxc1","authorizer_appid":"wxa2"}"#,
        )
        .unwrap();
        assert_eq!(
            authorizer_spec(&component, old),
            AccountSpec::Authorizer(AuthorizerSpec {
                component_appid: "wxc1".into(),
                authorizer_appid: "wxa2".into(),
                tickets: vec![TicketKind::Jsapi],
                refresh: overrides(),
                func_info: vec![],
                authorized_at: 0,
                revoked: false,
            })
        );
    }

    #[test]
    fn only_apps_and_work_apps_have_a_sealed_record_and_only_authorizers_the_other() {
        let app = AccountSpec::App {
            appid: "wx1".into(),
            secret: Secret::new("s".to_string()),
            mode: TokenMode::Stable,
            tickets: vec![],
            refresh: RefreshOverrides::default(),
        };
        assert!(stored_authorizer(&app).is_none());
        let component = AccountSpec::Component {
            component_appid: "wxc1".into(),
            secret: Secret::new("cs".to_string()),
            refresh: RefreshOverrides::default(),
        };
        assert!(stored_account(&component, |_, _| "sealed".to_string()).is_none());
        assert!(stored_authorizer(&component).is_none());
    }
}
