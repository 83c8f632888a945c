//! The audit trail: every admin action and authorization change, as one structured log line
//! (`audit=true`) and in a bounded in-memory list that `GET /v1/admin/audit` shows.
//!
//! *Why:* "who forced that refresh, who removed that app" must have an answer that does not
//! depend on log shipping being set up; the log line is for the long-term record.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::token::Timestamp;

/// How many entries the in-memory list keeps (the oldest go first).
pub const AUDIT_CAPACITY: usize = 1000;

/// Who a reload by signal is recorded as.
pub const SIGNAL_RELOAD: &str = "SIGHUP";

/// Who an authorizer registered through the gateway's `api_query_auth` is recorded as: that call
/// carries the platform's component token, which names no consumer. A runtime consumer cannot
/// take the name (`:` is not allowed in one).
pub const GATEWAY_COMPONENT_TOKEN: &str = "gateway:component_access_token";

/// The names the trail records actions of others than consumers by. A consumer may not take one
/// (in any case): its actions would read as those of the signal.
pub const RESERVED_ACTORS: &[&str] = &[SIGNAL_RELOAD];

/// The reserved name `name` would pass for, if any (compared without regard to case).
pub fn reserved_actor(name: &str) -> Option<&'static str> {
    RESERVED_ACTORS
        .iter()
        .find(|reserved| reserved.eq_ignore_ascii_case(name))
        .copied()
}

/// One audited action. Never a secret or token value.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// When it happened (RFC 3339).
    pub at: String,
    /// Who: the consumer's name, or `SIGHUP` ([`SIGNAL_RELOAD`]) for a reload by signal.
    pub consumer: String,
    /// What: `put_account`, `delete_account`, `import_token`, `refresh`, `reload`, …
    pub action: &'static str,
    /// On what: an account (`app/wx…`) or a credential key (`access_token/wx…`).
    pub target: String,
    /// How it ended: `ok`, or the error code answered.
    pub outcome: String,
}

/// The bounded list of recent audit entries.
#[derive(Default)]
pub struct AuditLog {
    entries: Mutex<VecDeque<AuditEntry>>,
}

impl AuditLog {
    /// Records one action: a log line with `audit=true`, and an entry in the list.
    pub fn record(&self, consumer: &str, action: &'static str, target: &str, outcome: &str) {
        tracing::info!(audit = true, consumer, action, target, outcome, "audit");
        let entry = AuditEntry {
            at: Timestamp::now().to_rfc3339(),
            consumer: consumer.to_string(),
            action,
            target: target.to_string(),
            outcome: outcome.to_string(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == AUDIT_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The entries kept, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_the_last_thousand_in_order() {
        let log = AuditLog::default();
        for i in 0..(AUDIT_CAPACITY + 5) {
            log.record("ops", "refresh", &format!("access_token/wx{i}"), "ok");
        }
        let entries = log.entries();
        assert_eq!(entries.len(), AUDIT_CAPACITY);
        assert_eq!(entries[0].target, "access_token/wx5");
        assert_eq!(
            entries.last().map(|e| e.target.as_str()),
            Some(format!("access_token/wx{}", AUDIT_CAPACITY + 4).as_str())
        );
    }

    #[test]
    fn the_signal_is_reserved_in_any_case_and_only_as_a_whole_name() {
        for name in ["SIGHUP", "sighup", "SigHup"] {
            assert_eq!(reserved_actor(name), Some(SIGNAL_RELOAD), "{name}");
        }
        for name in ["SIGHUP-relay", "SIGHUP ", "ops", ""] {
            assert_eq!(reserved_actor(name), None, "{name:?}");
        }
    }
}
