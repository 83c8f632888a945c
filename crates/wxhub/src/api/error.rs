//! The API's error answers: `{"error":{"code":"…","message":"…"}}` with a fitting status
//! (docs/architecture.md#error-model). Messages name what is wrong and never carry a secret or a token value.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`unauthorized`, `unknown_app`, …).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// Whether this is the "no usable value right now" answer, which a read may wait out.
    pub fn is_not_ready(&self) -> bool {
        self.code == "not_ready"
    }
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: no bearer key, or not one of a configured consumer.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the consumer lacks the scope or the account.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for an appid the hub does not manage.
    pub fn unknown_app(appid: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_app",
            format!("appid {appid:?} is not configured on this hub"),
        )
    }

    /// 404 for a Work WeChat app the hub does not manage.
    pub fn unknown_corp_app(corpid: &str, agentid: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_app",
            format!("corp app {corpid:?}/{agentid:?} is not configured on this hub"),
        )
    }

    /// 400 for a malformed request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500: the hub itself failed (what it holds cannot be read or written).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503: no usable credential right now (startup, or WeChat refusing).
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

/// Escapes `s` as a JSON string literal (with quotes).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = format!(
            "{{\"error\":{{\"code\":{},\"message\":{}}}}}\n",
            json_string(self.code),
            json_string(&self.message)
        );
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wxhub\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
