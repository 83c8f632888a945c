//! Answers in WeChat's wire shape: HTTP 200, `application/json; encoding=utf-8`, and the JSON bodies
//! of docs/wechat.md#wire-conventions (no errcode on token successes, `errcode: 0` elsewhere).

use std::net::IpAddr;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::endpoint::{Endpoint, Flavor};
use crate::errors;

/// The content type WeChat sends with every JSON answer.
const WECHAT_JSON: &str = "application/json; encoding=utf-8";

/// Marks a response whose connection must be cut instead of answered; the connection layer
/// turns it into a dropped connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// One answer, with the errcode it carries for the counters.
pub(crate) struct Reply {
    status: StatusCode,
    /// The errcode of a WeChat-shaped answer (0 for success); `None` for non-WeChat answers.
    pub errcode: Option<i64>,
    body: Vec<u8>,
    content_type: &'static str,
    drop_connection: bool,
}

/// `{"errcode","errmsg"}`, the shape of every error and of bare successes.
#[derive(Serialize)]
pub(crate) struct Status<'a> {
    pub errcode: i64,
    pub errmsg: &'a str,
}

impl Status<'static> {
    pub const OK: Status<'static> = Status {
        errcode: 0,
        errmsg: "ok",
    };
}

impl Reply {
    /// A success; `body` carries `errcode: 0` itself where the endpoint's success shape has one.
    pub fn success<T: Serialize>(body: &T) -> Reply {
        Reply::json(StatusCode::OK, 0, body)
    }

    /// A business error with WeChat's text for `code` on `endpoint`.
    pub fn error(code: i64, endpoint: Endpoint, flavor: Flavor, peer: Option<IpAddr>) -> Reply {
        let base = errors::base_text(code, flavor, endpoint);
        Reply::error_text(
            StatusCode::OK,
            code,
            &errors::errmsg(base, code, flavor, peer),
        )
    }

    /// An error with a caller-chosen status and errmsg (fault injection).
    pub fn error_text(status: StatusCode, code: i64, errmsg: &str) -> Reply {
        Reply::json(
            status,
            code,
            &Status {
                errcode: code,
                errmsg,
            },
        )
    }

    /// A gateway-style non-JSON answer with `status`, as a proxy in front of WeChat sends.
    pub fn http_status(status: StatusCode) -> Reply {
        let text = format!(
            "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center></body></html>",
            status
        );
        Reply {
            status,
            errcode: None,
            body: text.into_bytes(),
            content_type: "text/html",
            drop_connection: false,
        }
    }

    /// No answer at all: the connection is closed.
    pub fn dropped() -> Reply {
        Reply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            errcode: None,
            body: Vec::new(),
            content_type: "text/plain",
            drop_connection: true,
        }
    }

    fn json<T: Serialize>(status: StatusCode, errcode: i64, body: &T) -> Reply {
        Reply {
            status,
            errcode: Some(errcode),
            // Serializing these plain structs cannot fail.
            body: serde_json::to_vec(body).unwrap_or_default(),
            content_type: WECHAT_JSON,
            drop_connection: false,
        }
    }

    pub fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if self.drop_connection {
            response.extensions_mut().insert(DropConnection);
        }
        response
    }
}
