//! The `Authorization` scheme is case-insensitive (RFC 7235), on the read fast path and on the
//! router alike.

use crate::helpers::*;

const APP: &str = "wxscheme000000001";

#[tokio::test]
async fn the_bearer_scheme_is_matched_without_regard_to_case() {
    let (_mock, hub) = start_ready(&[TestApp::legacy(APP)]).await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let header = format!("{scheme} {ADMIN_KEY}");
        // A token read: answered by the fast path.
        let read = hub
            .client
            .get(hub.url(&format!("/v1/apps/{APP}/access_token")))
            .header("Authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "read with {scheme:?}");
        // The credentials listing: answered by the router.
        let listing = hub
            .client
            .get(hub.url("/v1/credentials"))
            .header("Authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(listing.status(), 200, "listing with {scheme:?}");
    }
    // Other schemes, a scheme glued to the key and a scheme alone stay unauthorized.
    for header in [
        format!("Basic {ADMIN_KEY}"),
        format!("Bearer{ADMIN_KEY}"),
        format!("bearerx {ADMIN_KEY}"),
        "bearer".to_string(),
        "bearer   ".to_string(),
    ] {
        let read = hub
            .client
            .get(hub.url(&format!("/v1/apps/{APP}/access_token")))
            .header("Authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 401, "{header:?}");
    }
}
