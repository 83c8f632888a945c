//! Work WeChat suites (第三方应用 and 代开发 templates): the `suite_ticket` Work WeChat pushes to
//! the command callback URL every ten minutes, and the `suite_access_token` fetched with it and
//! the suite's secret. The corps that install a suite are [`super::auth_corp`] accounts.

use super::{AccountId, AccountRoute, AccountSpec, CredentialKey, CredentialSpec};
use super::{Descriptor, Host, Role, RoleShape, Source, SpecOf};
use crate::configuration::{Secret, SuiteSettings};

/// The kind's data.
pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "suite",
    title: "Work WeChat suite",
    id_fields: &["suite_id"],
    keys: &[
        (RoleShape::PushedTicket, "suite_ticket"),
        (RoleShape::AccessToken, "suite_token"),
    ],
    host: Host::Work,
    token_param: "suite_access_token",
    v1_path: "/v1/suites/{suite_id}",
    admin_path: Some("/v1/admin/suites/{suite_id}"),
    parent: None,
    unknown_code: "unknown_suite",
    signs_with: &[],
    sign_refusal: "a suite has no JS-SDK ticket; sign with one of the corps that installed it",
    routes: &[AccountRoute::AccessToken],
};

/// Its suite token, then the suite ticket it is fetched with (pushed, never fetched, and kept
/// durably: a lost ticket means waiting up to ten minutes for the next push).
pub(super) fn credentials(
    suite_id: &str,
    secret: &Secret,
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    let account = AccountId::suite(suite_id);
    let ticket = CredentialKey::new(account.clone(), Role::PushedTicket);
    let token = CredentialKey::new(account, Role::AccessToken);
    let mut pushed = spec(
        Source::SuiteTicket {
            suite_id: suite_id.to_string(),
        },
        vec![],
    );
    pushed.pushed = true;
    pushed.durable = true;
    let source = Source::SuiteToken {
        suite_id: suite_id.to_string(),
        secret: secret.clone(),
    };
    vec![
        (token, spec(source, vec![ticket.clone()])),
        (ticket, pushed),
    ]
}

/// The account of a `[[suites]]` entry.
pub fn from_settings(suite: &SuiteSettings) -> AccountSpec {
    AccountSpec::Suite(Box::new(suite.clone()))
}
