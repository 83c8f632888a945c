//! The read side: what consumers are served, at memory speed.
//!
//! The set of credentials is fixed by the configuration, so the index (appid → slots) is built
//! once and never locked. Each credential has one [`Slot`] holding an `Arc<Served>` that the engine
//! swaps atomically when the token (or its refresh plan) changes. A read is: two hash lookups, one
//! atomic load, one small buffer for the body. It never waits on the store, the engine or WeChat.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::{BufMut, Bytes, BytesMut};

use crate::configuration::Settings;
use crate::credential::{CorpTicketKind, CredentialKey, TicketKind, Timestamp, Token};

/// Index of a credential in [`Hub::credentials`] and in the engine's state: both are built in the
/// same order from the same configuration, so a plain number names a credential everywhere.
pub type KeyId = usize;

/// A token as consumers receive it: the value plus the parts of the JSON body that do not change
/// between requests, rendered once per token generation and refresh plan.
pub struct Served {
    /// The token or ticket value (needed to sign JS-SDK configurations and compare reports).
    pub value: Arc<str>,
    /// Per-key generation of this value.
    pub generation: u64,
    /// When WeChat stops accepting it.
    pub expires_at: Timestamp,
    /// Until when a consumer may keep using it without asking again (DESIGN §3, "what consumers
    /// are told"): never after `expires_at`, and shortly after the hub's next planned refresh.
    pub serve_until: Timestamp,
    /// `{"access_token":"…","expires_in":` — everything before the one per-request number.
    body_prefix: Bytes,
    /// `,"expires_at":"…","generation":N}`.
    body_suffix: Bytes,
}

impl Served {
    /// Renders a token for serving under the JSON field `field` (`access_token` or `ticket`).
    pub fn new(field: &str, token: &Token, serve_until: Timestamp) -> Served {
        let value_json = serde_json::Value::String(token.value.clone()).to_string();
        let body_prefix = format!("{{\"{field}\":{value_json},\"expires_in\":");
        let body_suffix = format!(
            ",\"expires_at\":\"{}\",\"generation\":{}}}",
            token.expires_at.to_rfc3339(),
            token.generation
        );
        Served {
            value: Arc::from(token.value.as_str()),
            generation: token.generation,
            expires_at: token.expires_at,
            serve_until: serve_until.min(token.expires_at),
            body_prefix: Bytes::from(body_prefix),
            body_suffix: Bytes::from(body_suffix),
        }
    }

    /// Whole seconds a consumer may keep this token from `now`, rounded down (so never more than
    /// its true remaining life; 0 means "valid, but ask again before reusing it"), or `None` once
    /// it has expired.
    pub fn expires_in(&self, now: Timestamp) -> Option<u64> {
        if self.expires_at <= now {
            return None;
        }
        Some(self.serve_until.since(now).as_secs())
    }

    /// The JSON body for a request at `now`, or `None` once the token has expired.
    pub fn render(&self, now: Timestamp) -> Option<Bytes> {
        let expires_in = self.expires_in(now)?;
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(expires_in);
        let mut body =
            BytesMut::with_capacity(self.body_prefix.len() + digits.len() + self.body_suffix.len());
        body.put_slice(&self.body_prefix);
        body.put_slice(digits.as_bytes());
        body.put_slice(&self.body_suffix);
        Some(body.freeze())
    }
}

/// Where one credential's current [`Served`] lives.
#[derive(Default)]
pub struct Slot {
    current: ArcSwapOption<Served>,
}

impl Slot {
    /// The token being served now, if any.
    pub fn load(&self) -> Option<Arc<Served>> {
        self.current.load_full()
    }

    /// The token being served now, borrowed for the duration of one request: cheaper than
    /// [`Slot::load`] on the read path, since it does not touch the shared reference count that
    /// every core's readers would otherwise contend on.
    pub fn peek(&self) -> arc_swap::Guard<Option<Arc<Served>>> {
        self.current.load()
    }

    /// Replaces what is served (only the engine calls this).
    pub fn store(&self, served: Arc<Served>) {
        self.current.store(Some(served));
    }
}

/// One credential the hub serves: its key, its id and its slot.
pub struct Credential {
    /// Position in [`Hub::credentials`] and in the engine's state.
    pub id: KeyId,
    /// Which credential this is.
    pub key: CredentialKey,
    /// What is served for it now.
    pub slot: Slot,
}

/// The credentials of one official account or mini program.
pub struct AppEntry {
    /// Its access token.
    pub access_token: KeyId,
    /// Its configured JS-SDK tickets.
    pub tickets: Vec<(TicketKind, KeyId)>,
}

/// The credentials of one Work WeChat app.
pub struct CorpEntry {
    /// Its access token.
    pub access_token: KeyId,
    /// Its configured JS-SDK tickets.
    pub tickets: Vec<(CorpTicketKind, KeyId)>,
}

/// The read-side index of every credential, built once from the configuration.
pub struct Hub {
    /// Every credential, in id order.
    credentials: Vec<Credential>,
    /// Official accounts and mini programs by appid.
    apps: HashMap<Box<str>, AppEntry>,
    /// Work WeChat apps by corpid, then agentid.
    corps: HashMap<Box<str>, HashMap<Box<str>, CorpEntry>>,
    /// Every credential by key, for the paths that start from a key (startup, the change feed).
    by_key: HashMap<CredentialKey, KeyId>,
}

impl Hub {
    /// Builds the index of every credential the configuration asks for: each app's access token
    /// followed by its tickets, then each corp app's token followed by its tickets.
    pub fn from_settings(settings: &Settings) -> Hub {
        let mut hub = Hub {
            credentials: Vec::new(),
            apps: HashMap::new(),
            corps: HashMap::new(),
            by_key: HashMap::new(),
        };
        for app in &settings.apps {
            let access_token = hub.push(CredentialKey::access_token(&app.appid));
            let tickets = app
                .tickets
                .iter()
                .map(|&kind| {
                    let key = CredentialKey::Ticket {
                        appid: app.appid.clone(),
                        kind,
                    };
                    (kind, hub.push(key))
                })
                .collect();
            hub.apps.insert(
                app.appid.as_str().into(),
                AppEntry {
                    access_token,
                    tickets,
                },
            );
        }
        for corp in &settings.corps {
            let access_token = hub.push(CredentialKey::CorpToken {
                corpid: corp.corpid.clone(),
                agentid: corp.agentid.clone(),
            });
            let tickets = corp
                .tickets
                .iter()
                .map(|&kind| {
                    let key = CredentialKey::CorpTicket {
                        corpid: corp.corpid.clone(),
                        agentid: corp.agentid.clone(),
                        kind,
                    };
                    (kind, hub.push(key))
                })
                .collect();
            hub.corps
                .entry(corp.corpid.as_str().into())
                .or_default()
                .insert(
                    corp.agentid.as_str().into(),
                    CorpEntry {
                        access_token,
                        tickets,
                    },
                );
        }
        hub
    }

    fn push(&mut self, key: CredentialKey) -> KeyId {
        let id = self.credentials.len();
        self.by_key.insert(key.clone(), id);
        self.credentials.push(Credential {
            id,
            key,
            slot: Slot::default(),
        });
        id
    }

    /// Every credential, in id order.
    pub fn credentials(&self) -> &[Credential] {
        &self.credentials
    }

    /// One credential by id.
    pub fn credential(&self, id: KeyId) -> &Credential {
        &self.credentials[id]
    }

    /// An official account or mini program by appid.
    pub fn app(&self, appid: &str) -> Option<&AppEntry> {
        self.apps.get(appid)
    }

    /// A Work WeChat app by corpid and agentid.
    pub fn corp(&self, corpid: &str, agentid: &str) -> Option<&CorpEntry> {
        self.corps.get(corpid)?.get(agentid)
    }

    /// The id of a credential by key.
    pub fn find(&self, key: &CredentialKey) -> Option<KeyId> {
        self.by_key.get(key).copied()
    }

    /// Whether every credential has a token that is still valid at `now` (for `/readyz`).
    pub fn all_usable(&self, now: Timestamp) -> bool {
        self.credentials
            .iter()
            .all(|c| c.slot.load().is_some_and(|served| served.expires_at > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str, expires_at: i64) -> Token {
        Token {
            value: value.into(),
            expires_at: Timestamp(expires_at),
            fetched_at: Timestamp(0),
            generation: 7,
        }
    }

    #[test]
    fn renders_the_contract_shape() {
        let served = Served::new(
            "access_token",
            &token("13_a\"b", 10_000_000),
            Timestamp(5_000_000),
        );
        let body = served.render(Timestamp(1_000_000)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["access_token"], "13_a\"b");
        assert_eq!(json["expires_in"], 4000);
        assert_eq!(json["expires_at"], "1970-01-01T02:46:40Z");
        assert_eq!(json["generation"], 7);
    }

    #[test]
    fn expires_in_never_exceeds_remaining_life_and_stops_at_expiry() {
        let served = Served::new("ticket", &token("t", 3_500), Timestamp(9_000));
        assert_eq!(served.expires_in(Timestamp(1_000)), Some(2));
        assert_eq!(served.expires_in(Timestamp(3_200)), Some(0));
        assert_eq!(served.expires_in(Timestamp(3_500)), None);
        assert!(served.render(Timestamp(4_000)).is_none());
    }
}
