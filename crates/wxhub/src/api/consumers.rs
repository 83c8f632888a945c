//! Admin routes for consumers added at runtime: `PUT`, `DELETE /v1/admin/consumers/{name}` and
//! `GET /v1/admin/consumers`. They need an admin granted `"*"` (an admin granted some apps could
//! otherwise mint itself a key for every app), read a body the way `[[consumers]]` is read, and go
//! through the control plane ([`crate::control::Control::put_consumer`]), which stores the
//! consumer for every instance and puts it in force at once.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::admin::{audited, control_error};
use super::{authorize_admin, finish, json_body, AdminTarget, ApiError, ApiState};
use crate::configuration::{parse_key_sha256, read_scopes, AppGrant};
use crate::consumers::{self, RuntimeConsumer};
use crate::kinds::Grant;
use crate::metrics::Route;

/// The body, for error messages.
const CONSUMER_SHAPE: &str =
    r#"{"key_sha256":"<64 hex digits>","apps":["wx…","corpid/agentid","*"],"scopes":["read"]}"#;

/// The fields of the body.
const FIELDS: &[&str] = &["key_sha256", "apps", "scopes"];

/// What the audit trail names a consumer by (the name escaped: it came from the path).
fn target(name: &str) -> String {
    format!("consumer/{}", name.escape_debug())
}

/// `PUT /v1/admin/consumers/{name}`: adds (201) or replaces (200) a runtime consumer.
pub async fn put_consumer(
    State(context): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let result = async {
        let admin = authorize_admin(&context, &headers, AdminTarget::Everything)?;
        let result = store_consumer(&context, &name, request).await;
        audited(&context, &admin, "put_consumer", &target(&name), result)
    }
    .await;
    finish(&context, Route::Admin, result)
}

/// `DELETE /v1/admin/consumers/{name}`: removes a runtime consumer (204).
pub async fn delete_consumer(
    State(context): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let admin = authorize_admin(&context, &headers, AdminTarget::Everything)?;
        let result = context
            .control
            .delete_consumer(&name)
            .await
            .map(|()| StatusCode::NO_CONTENT.into_response())
            .map_err(control_error);
        audited(&context, &admin, "delete_consumer", &target(&name), result)
    }
    .await;
    finish(&context, Route::Admin, result)
}

/// `GET /v1/admin/consumers`: every consumer in force, its grants, scopes and source (`file` or
/// `runtime`); never its key hash.
pub async fn list_consumers(State(context): State<ApiState>, headers: HeaderMap) -> Response {
    let result = authorize_admin(&context, &headers, AdminTarget::Everything).map(|_| {
        let consumers: Vec<Value> = context
            .control
            .consumers()
            .into_iter()
            .map(|(consumer, runtime)| {
                serde_json::json!({
                    "name": consumer.name,
                    "apps": consumer.apps.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "scopes": consumer.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "source": if runtime { "runtime" } else { "file" },
                })
            })
            .collect();
        let body = serde_json::json!({ "consumers": consumers });
        super::json_ok(Bytes::from(body.to_string()))
    });
    finish(&context, Route::Admin, result)
}

async fn store_consumer(
    context: &ApiState,
    name: &str,
    request: Request,
) -> Result<Response, ApiError> {
    // A consumer of the file is answered as such whatever its name looks like.
    if context.control.is_file_consumer(name) {
        return Err(control_error(
            crate::control::ControlError::ConsumerFromConfig(name.to_string()),
        ));
    }
    if !consumers::valid_name(name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a runtime consumer's name may contain only letters, digits, '_', '-' and '.' (1 to \
             64), and may not start with '.'",
        ));
    }
    if let Some(reserved) = crate::audit::reserved_actor(name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "{reserved:?} is reserved: the audit trail records reloads by signal under it, \
                 and a consumer of that name would pass for one; choose another name"
            ),
        ));
    }
    let body: Map<String, Value> = json_body(request, CONSUMER_SHAPE).await?;
    let (consumer, grants) = read_body(context, &body)?;
    let warnings = absent(context, &grants);
    let created = context
        .control
        .put_consumer(name, consumer.clone())
        .await
        .map_err(control_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "consumer": name,
        "created": created,
        "apps": consumer.apps,
        "scopes": consumer.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "warnings": warnings,
    });
    Ok((status, super::json_ok(Bytes::from(body.to_string()))).into_response())
}

/// The consumer a body describes, with its grants as read; a 400 naming the field otherwise.
fn read_body(
    context: &ApiState,
    body: &Map<String, Value>,
) -> Result<(RuntimeConsumer, Vec<AppGrant>), ApiError> {
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        // A field's name is shown only if it looks like one (it could be a pasted key).
        let shown = if unknown.len() <= 32
            && unknown
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        {
            format!("unknown field {unknown:?}")
        } else {
            "an unknown field".to_string()
        };
        return Err(ApiError::bad_request(
            "invalid_json",
            format!("{shown}; expected {CONSUMER_SHAPE}"),
        ));
    }
    let key_sha256 =
        match body.get("key_sha256") {
            Some(Value::String(text)) => parse_key_sha256(text.trim()).map_err(|what| {
                ApiError::bad_request("invalid_key_sha256", format!("key_sha256 {what}"))
            })?,
            Some(_) => return Err(ApiError::bad_request(
                "invalid_key_sha256",
                "key_sha256 must be a string of 64 hex digits (`wxhub hash-key <KEY>` prints it)",
            )),
            None => return Err(ApiError::bad_request(
                "invalid_key_sha256",
                "key_sha256 is required: the SHA-256 of the consumer's key, never the key itself \
                 (`wxhub hash-key <KEY>` prints it)",
            )),
        };
    // The rules are the file's `[[consumers]]` rules, shared: only the JSON shape is read here.
    let apps = match body.get("apps") {
        None => Vec::new(),
        Some(value) => strings(value, "apps", "invalid_grant")?,
    };
    let grants = context
        .control
        .read_grants(&apps)
        .map_err(|e| ApiError::bad_request("invalid_grant", e.naming("apps")))?;
    let scope_names = match body.get("scopes") {
        Some(value) => strings(value, "scopes", "invalid_scope")?,
        None => Vec::new(),
    };
    let scopes = read_scopes(&scope_names)
        .map_err(|e| ApiError::bad_request("invalid_scope", e.naming("scopes")))?;
    Ok((
        RuntimeConsumer {
            key_sha256,
            apps,
            scopes,
        },
        grants,
    ))
}

/// An array of strings named `field`; a 400 with `code` naming the element otherwise.
fn strings(value: &Value, field: &str, code: &'static str) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request(
            code,
            format!("{field} must be an array of strings"),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => Ok(text.clone()),
            _ => Err(ApiError::bad_request(
                code,
                format!("{field}[{i}] must be a string"),
            )),
        })
        .collect()
}

/// Grants of accounts this hub does not have now: valid (they may be added later), but worth
/// telling, as `check-config` does for the file.
fn absent(context: &ApiState, grants: &[AppGrant]) -> Vec<String> {
    let read_index = &context.read_index;
    let no_platform = |c: &str| context.control.component_settings(c).is_none();
    grants
        .iter()
        .enumerate()
        .filter_map(|(i, grant)| {
            let account = match Grant::of(grant) {
                Grant::All => return None,
                Grant::Children(_, parent) => {
                    return no_platform(&parent).then(|| platform_absent(i, &parent))
                }
                Grant::Account(account) => account,
            };
            let what = match account.parent() {
                // A platform's accounts come and go with WeChat's pushes: only the platform
                // itself must be known.
                Some((_, parent)) if no_platform(parent) => {
                    return Some(platform_absent(i, parent))
                }
                Some(_) => return None,
                // Platforms exist only in the file: a grant may name one a reload will add.
                None if account.kind().descriptor().admin_path.is_none() => return None,
                None if read_index.contains(&account) => return None,
                None => format!(
                    "no {} {account} exists now; the grant applies once it is added",
                    account.kind().descriptor().title
                ),
            };
            Some(format!("apps[{i}]: {what}"))
        })
        .collect()
}

/// The warning for grant number `i`, naming a platform the file does not configure.
fn platform_absent(i: usize, component_appid: &str) -> String {
    format!(
        "apps[{i}]: no [[components]] entry has component_appid {component_appid:?}; the grant \
         applies once the file configures it"
    )
}
