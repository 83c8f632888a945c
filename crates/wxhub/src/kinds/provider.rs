//! Work WeChat service providers (企业微信服务商): the `provider_access_token` fetched with the
//! provider's corpid and `provider_secret`, for the provider's own APIs (licences, registration).

use super::{AccountId, AccountRoute, AccountSpec, CredentialKey, CredentialSpec};
use super::{Descriptor, Host, Role, RoleShape, Source, SpecOf};
use crate::configuration::{ProviderSettings, Secret};

/// The kind's data.
pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "provider",
    title: "Work WeChat service provider",
    id_fields: &["corpid"],
    keys: &[(RoleShape::AccessToken, "provider_token")],
    host: Host::Work,
    token_param: "provider_access_token",
    v1_path: "/v1/providers/{corpid}",
    admin_path: Some("/v1/admin/providers/{corpid}"),
    parent: None,
    unknown_code: "unknown_provider",
    signs_with: &[],
    sign_refusal: "a provider has no JS-SDK ticket",
    routes: &[AccountRoute::AccessToken],
};

/// Its provider token, the only credential it has.
pub(super) fn credentials(
    corpid: &str,
    secret: &Secret,
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    let source = Source::ProviderToken {
        corpid: corpid.to_string(),
        secret: secret.clone(),
    };
    let key = CredentialKey::new(AccountId::provider(corpid), Role::AccessToken);
    vec![(key, spec(source, vec![]))]
}

/// The account of a `[[providers]]` entry.
pub fn from_settings(provider: &ProviderSettings) -> AccountSpec {
    AccountSpec::Provider {
        corpid: provider.corpid.clone(),
        secret: provider.secret.clone(),
        refresh: provider.refresh,
    }
}
