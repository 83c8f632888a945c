//! `GET /status`: the operators' status page, one self-contained HTML file built into the binary.
//!
//! The page holds no data, so it is served without authentication: it asks for an admin key, keeps
//! it in the tab's session storage and reads `/v1/credentials` itself. It loads nothing from
//! elsewhere (no CDN: it works on an offline network), and its Content-Security-Policy lets it run
//! only its own inline script and style (pinned by hash) and talk only to this hub.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The page: HTML with inline CSS and JavaScript.
const PAGE: &str = include_str!("status.html");

/// The Content-Security-Policy of [`PAGE`], computed once from its inline blocks.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = content_security_policy(PAGE);
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// `GET /status`
pub async fn status_page() -> Response {
    let mut response = PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, POLICY.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A policy that allows exactly the page's inline `<script>` and `<style>` blocks, requests to
/// this origin only, and nothing else (no frames, no forms posted elsewhere, no plugins).
fn content_security_policy(page: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' \
         data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        block_hashes(page, "script"),
        block_hashes(page, "style"),
    )
}

/// CSP source expressions (`'sha256-…'`) for the content of every `<tag>…</tag>` block of `page`;
/// `'none'` if there is none.
fn block_hashes(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut hashes = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else {
            break;
        };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        hashes.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end + close.len()..];
    }
    if hashes.is_empty() {
        "'none'".to_string()
    } else {
        hashes.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_pins_each_inline_block_by_hash() {
        let page = "<style>a{}</style><script>x()</script><script>y()</script>";
        let policy = content_security_policy(page);
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
        };
        assert!(
            policy.contains(&format!(
                "script-src 'sha256-{}' 'sha256-{}';",
                hash("x()"),
                hash("y()")
            )),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src 'sha256-{}';", hash("a{}"))),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';"));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "//cdn", "src=", "@import", "url("] {
            let hits: Vec<_> = PAGE
                .lines()
                .filter(|line| line.contains(outside))
                .filter(|line| !line.contains("http://www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{outside}: {hits:?}");
        }
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
        // Server data goes in with textContent, never as HTML.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE.contains(sink), "{sink}");
        }
    }
}
