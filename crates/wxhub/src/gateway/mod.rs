//! The gateway: listeners shaped like api.weixin.qq.com and qyapi.weixin.qq.com, so that an
//! unmodified WeChat SDK uses the hub by changing its base URL. See
//! `docs/architecture.md#gateway`.
//!
//! The parts, one concern each:
//! - [`token`] — the token and ticket endpoints, answered by the hub in WeChat's shapes;
//! - [`component`] — the third-party platform's authorization endpoints (`api_query_auth`,
//!   `api_authorizer_token`), so that a platform SDK's authorizers are the hub's;
//! - [`service`] — Work WeChat's third-party token endpoints (suite, provider, installed corp);
//! - [`secret`] — the AppSecret put in place of a consumer key on the calls that carry it;
//! - everything else is forwarded to WeChat and back by [`crate::forward`], which heals a call
//!   refused for a dead hub-served token.
//!
//! A call with `access_token=T` goes to WeChat only if T is a token the hub serves (the current
//! one, or the previous one within WeChat's overlap); otherwise it is refused with 40014, as
//! WeChat would, without reaching WeChat.

pub mod component;
pub mod secret;
pub mod service;
pub mod token;

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use futures_util::FutureExt;

use crate::api::{ApiService, ApiState};
use crate::forward::heal::Heal;
pub use crate::forward::Host;
use crate::forward::{query, reply, Forwarded, Outgoing};
use crate::kinds::KINDS;
use crate::metrics::gateway::{Listener, Outcome, Refusal};
use token::TicketAnswer;

/// One gateway listener's state.
struct Gateway {
    /// The hub's shared state (the read side, the engine, consumers, the forwarder).
    context: ApiState,
    /// Which WeChat host this listener stands for.
    host: Host,
    /// The listener's label in the gateway's metrics.
    listener: Listener,
}

/// The label of the listener that stands for `host` (`[gateway] listen` or `work_listen`).
pub fn listener_of(host: Host) -> Listener {
    match host {
        Host::Official => Listener::Official,
        Host::Work => Listener::Work,
    }
}

/// What a gateway listener runs (served by [`crate::api::serve`], with the same limits as the
/// main listener). A call's deadline, its body included, is its connection's (`request_timeout`,
/// then the connection is closed): no timer per call, as the upstream call has its own timeout.
///
/// Every request goes to [`handle`] directly, without a router: the listener has one route, and
/// the router's per-request work (cloning it, matching, boxing the request, the response and the
/// route services, the panic layer's body wrapper) cost more than the gateway's own checks. A
/// panic is still caught per request and answered 500 in WeChat's shape.
///
/// Each call is counted once, here, by what became of it (`wxhub_gateway_calls_total`): every
/// way through [`handle`] ends in a [`Forwarded`] that says.
pub fn service(context: ApiState, host: Host) -> ApiService {
    let gateway = Arc::new(Gateway {
        context: context.clone(),
        host,
        listener: listener_of(host),
    });
    let handler: crate::api::Handler = Arc::new(move |request| {
        let gateway = gateway.clone();
        Box::pin(async move {
            let forwarded = AssertUnwindSafe(handle(&gateway, request))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!("gateway handler panicked");
                    refused(
                        Refusal::Internal,
                        reply::error_with_status(
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            reply::code::SYSTEM_ERROR,
                            gateway.host,
                        ),
                    )
                });
            forwarded.counted(&gateway.context.metrics, gateway.listener)
        })
    });
    ApiService::handler_only(context, handler)
}

/// One of the hub's own endpoints' answers.
fn answered(response: Response) -> Forwarded {
    Forwarded::new(response, Outcome::Answered)
}

/// The gateway's own refusal of a call, for `reason`.
fn refused(reason: Refusal, response: Response) -> Forwarded {
    Forwarded::new(response, Outcome::Refused(reason))
}

/// Every request: the hub's own endpoints first, then the pass-through.
async fn handle(gateway: &Gateway, request: Request) -> Forwarded {
    let context = &gateway.context;
    let (host, listener) = (gateway.host, gateway.listener);
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query();
    if !is_canonical(path) {
        // `//sns/jscode2session`, `/sns/./jscode2session`, `/SNS/…`, `%6A…` may be the same
        // API to WeChat but not to the hub's matching: refused, so that no consumer key or
        // unchecked token goes to WeChat through a path the hub did not recognise.
        return refused(
            Refusal::PathNotCanonical,
            reply::error_with_status(
                axum::http::StatusCode::BAD_REQUEST,
                reply::code::INVALID_ARGS,
                host,
            ),
        );
    }
    match (host, path) {
        (Host::Official, "/cgi-bin/token") => return answered(token::legacy(context, query)),
        (Host::Official, "/cgi-bin/stable_token") => {
            return answered(token::stable(context, &parts.method, body).await)
        }
        (Host::Work, "/cgi-bin/gettoken") => return answered(token::corp(context, query)),
        (Host::Official, "/cgi-bin/component/api_component_token") => {
            return answered(token::component(context, &parts.method, body).await)
        }
        (Host::Official, "/cgi-bin/component/api_query_auth") => {
            return answered(component::query_auth(context, &parts.method, path, query, body).await)
        }
        (Host::Official, "/cgi-bin/component/api_authorizer_token") => {
            return answered(
                component::authorizer_token(context, &parts.method, path, query, body).await,
            )
        }
        (Host::Work, "/cgi-bin/service/get_suite_token") => {
            return answered(service::suite_token(context, &parts.method, body).await)
        }
        (Host::Work, "/cgi-bin/service/get_provider_token") => {
            return answered(service::provider_token(context, &parts.method, body).await)
        }
        (Host::Work, "/cgi-bin/service/get_corp_token") => {
            return answered(service::corp_token(context, &parts.method, query, body).await)
        }
        _ => {}
    }
    let ticket_kind = match (host, path) {
        (Host::Official, "/cgi-bin/ticket/getticket") => {
            Some(query::param(query, "type").map_or_else(|| "jsapi".to_string(), |t| t.into()))
        }
        (Host::Work, "/cgi-bin/get_jsapi_ticket") => Some("jsapi".to_string()),
        (Host::Work, "/cgi-bin/ticket/get") => query::param(query, "type").map(|t| t.into()),
        _ => None,
    };
    if let Some(kind) = ticket_kind {
        match token::ticket(context, host, query, &kind) {
            TicketAnswer::Answered(response) => return answered(response),
            TicketAnswer::Unserved(response) => return refused(Refusal::TokenUnknown, response),
            TicketAnswer::PassOn => {}
        }
    }
    let method = parts.method.clone();
    let outgoing = match parts.uri.path_and_query() {
        Some(target) => Outgoing::from_client(listener, host, method, target, parts.headers),
        None => Outgoing::new(listener, host, method, path, query, parts.headers),
    };
    if host == Host::Official && secret::SECRET_PATHS.contains(&path) {
        return secret::substitute(context, outgoing, body).await;
    }
    let Ok(token) = token_param(host, path, query) else {
        return refused(
            Refusal::TokenAmbiguous,
            reply::error_with_status(
                axum::http::StatusCode::BAD_REQUEST,
                reply::code::INVALID_ARGS,
                host,
            ),
        );
    };
    let token = token.map(|(param, token)| (param, Arc::<str>::from(&*token)));
    pass_through(context, outgoing, body, token).await
}

/// Whether `path` is written the one way the hub matches it: `/`-separated segments of letters,
/// digits, `_`, `-` and `.`, none empty, `.` or `..`, no percent-encoding, and in lowercase
/// wherever its lowercase form is a path the hub answers or rewrites itself (the token and
/// ticket endpoints, `/sns/…`).
fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let segments_ok = rest.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    });
    if !segments_ok {
        return false;
    }
    if !path.bytes().any(|b| b.is_ascii_uppercase()) {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    !(lower.starts_with("/sns/") || HUB_PATHS.contains(&lower.as_str()))
}

/// The paths the gateway answers or rewrites itself, besides `/sns/…`.
const HUB_PATHS: [&str; 12] = [
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/cgi-bin/gettoken",
    "/cgi-bin/component/api_component_token",
    "/cgi-bin/component/api_query_auth",
    "/cgi-bin/component/api_authorizer_token",
    "/cgi-bin/ticket/getticket",
    "/cgi-bin/get_jsapi_ticket",
    "/cgi-bin/ticket/get",
    "/cgi-bin/service/get_suite_token",
    "/cgi-bin/service/get_provider_token",
    "/cgi-bin/service/get_corp_token",
];

/// A call with more than one token parameter: which one WeChat reads, and so which token a
/// refusal is about, cannot be told. It is refused before it is forwarded.
#[derive(Debug, PartialEq, Eq)]
struct AmbiguousToken;

/// The query parameter that carries the call's hub token, if any, and the token: the token
/// parameter of a kind served on `host` (`access_token`; a platform's `component_access_token`; a
/// suite's `suite_access_token`; a provider's `provider_access_token`). Web-OAuth calls (`/sns/…`)
/// carry a user's `access_token`, not the hub's; only the platform's `/sns/component/…` forms
/// carry its token. A hub token parameter given twice, or two given, is [`AmbiguousToken`].
fn token_param<'q>(
    host: Host,
    path: &str,
    query: Option<&'q str>,
) -> Result<Option<(&'static str, Cow<'q, str>)>, AmbiguousToken> {
    let sns_component = path.starts_with("/sns/component/");
    if path.starts_with("/sns/") && !sns_component {
        return Ok(None);
    }
    let hub_param = |key: &str| {
        KINDS
            .iter()
            .map(|kind| kind.descriptor())
            .find(|d| d.host == host && d.token_param == key)
            .map(|d| d.token_param)
            .filter(|name| !sns_component || *name == "component_access_token")
    };
    // One pass over the query: the first hub token parameter, and no second one. Only its value
    // is decoded.
    let mut found = None;
    let mut seen = false;
    for pair in query::pairs(query.unwrap_or_default()) {
        let Some(name) = hub_param(&pair.key()) else {
            continue;
        };
        if seen {
            return Err(AmbiguousToken);
        }
        seen = true;
        // An empty parameter is a missing one, as WeChat reads it.
        let value = pair.value();
        found = (!value.is_empty()).then_some((name, value));
    }
    Ok(found)
}

/// Forwards a call: with healing if it carries a token the hub serves (`token`: its parameter
/// and value), refused with 40014 if it carries another token, streamed as is if it carries none.
async fn pass_through(
    context: &ApiState,
    outgoing: Outgoing,
    body: axum::body::Body,
    token: Option<(&'static str, Arc<str>)>,
) -> Forwarded {
    let host = outgoing.host;
    let Some((param, token)) = token else {
        return context.forwarder.pass(&outgoing, body).await;
    };
    let Some(credential) = context.read_index.serving(&token, context.clock.now()) else {
        return refused(
            Refusal::TokenUnknown,
            reply::error(reply::code::INVALID_ACCESS_TOKEN, host),
        );
    };
    if credential.key.call_param() != Some(param) {
        // A hub value in the wrong parameter (a ticket as `access_token`, say): WeChat's refusal
        // would say nothing about the credential, so the call goes as it is, without healing.
        return context.forwarder.pass(&outgoing, body).await;
    }
    crate::forward::heal::forward(
        &context.forwarder,
        &context.engine,
        outgoing,
        body,
        Heal {
            credential,
            token,
            param,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::{token_param, AmbiguousToken, Host};

    /// The parameter `token_param` finds, without its value.
    fn param_of(
        host: Host,
        path: &str,
        query: Option<&str>,
    ) -> Result<Option<&'static str>, AmbiguousToken> {
        token_param(host, path, query).map(|found| found.map(|(name, _)| name))
    }

    #[test]
    fn the_token_is_read_decoded_with_its_parameter() {
        let found = token_param(
            Host::Official,
            "/cgi-bin/menu/get",
            Some("x=1&access_token=A%2BB&y=2"),
        );
        assert_eq!(
            found.map(|f| f.map(|(name, token)| (name, token.into_owned()))),
            Ok(Some(("access_token", "A+B".to_string())))
        );
    }

    #[test]
    fn the_hub_token_is_looked_for_where_each_kind_of_call_carries_it() {
        let q = Some("access_token=A&component_access_token=C");
        assert_eq!(
            param_of(Host::Official, "/cgi-bin/menu/get", Some("access_token=A")),
            Ok(Some("access_token"))
        );
        assert_eq!(
            param_of(
                Host::Official,
                "/cgi-bin/component/api_get_authorizer_list",
                Some("component_access_token=C")
            ),
            Ok(Some("component_access_token"))
        );
        // Web OAuth: a user's token, not the hub's.
        assert_eq!(param_of(Host::Official, "/sns/userinfo", q), Ok(None));
        // The platform's forms carry the component token.
        assert_eq!(
            param_of(Host::Official, "/sns/component/jscode2session", q),
            Ok(Some("component_access_token"))
        );
        assert_eq!(
            param_of(
                Host::Official,
                "/sns/component/jscode2session",
                Some("appid=x")
            ),
            Ok(None)
        );
        assert_eq!(
            param_of(Host::Official, "/cgi-bin/getcallbackip", None),
            Ok(None)
        );
        // Work WeChat's third-party tokens are looked for on its host only.
        assert_eq!(
            param_of(
                Host::Work,
                "/cgi-bin/service/get_admin_list",
                Some("suite_access_token=S")
            ),
            Ok(Some("suite_access_token"))
        );
        assert_eq!(
            param_of(
                Host::Official,
                "/cgi-bin/menu/get",
                Some("suite_access_token=S")
            ),
            Ok(None)
        );
        assert_eq!(
            param_of(
                Host::Work,
                "/cgi-bin/user/get",
                Some("access_token=A&provider_access_token=P")
            ),
            Err(AmbiguousToken)
        );
        // An empty parameter is a missing one, as WeChat reads it.
        assert_eq!(
            param_of(Host::Official, "/cgi-bin/menu/get", Some("access_token=")),
            Ok(None)
        );
    }

    #[test]
    fn only_paths_written_as_wechat_writes_them_are_canonical() {
        for path in [
            "/cgi-bin/token",
            "/sns/jscode2session",
            "/cgi-bin/component/api_component_token",
            "/wxa/business/getuserphonenumber",
            "/cgi-bin/media/upload",
            "/cgi-bin/agent/getWorkbenchData",
        ] {
            assert!(super::is_canonical(path), "{path}");
        }
        for path in [
            "//sns/jscode2session",
            "/sns/./jscode2session",
            "/sns/../sns/jscode2session",
            "/SNS/jscode2session",
            "/sns/JSCODE2SESSION",
            "/cgi-bin/Token",
            "/sns/%6Ascode2session",
            "/sns/jscode2session/",
            "sns/jscode2session",
            "/",
            "",
        ] {
            assert!(!super::is_canonical(path), "{path}");
        }
    }

    #[test]
    fn two_token_parameters_are_ambiguous() {
        for query in [
            "access_token=A&component_access_token=C",
            "access_token=A&access_token=B",
            "access_token=&access_token=B",
            "component_access_token=C&access_token=A",
        ] {
            assert_eq!(
                param_of(Host::Official, "/cgi-bin/menu/get", Some(query)),
                Err(AmbiguousToken),
                "{query}"
            );
        }
        assert_eq!(
            param_of(
                Host::Official,
                "/sns/component/jscode2session",
                Some("component_access_token=C&component_access_token=D")
            ),
            Err(AmbiguousToken)
        );
    }
}
