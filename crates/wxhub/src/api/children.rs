//! What the listings of a parent's children share (a platform's authorizers, a suite's
//! installed corps): their query, checked the same way.

use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::ApiError;

/// Most children one listing page holds.
const MAX_PAGE: usize = 500;
/// Children per listing page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// The query of a children's listing: `?state=&cursor=&limit=`.
#[derive(Deserialize)]
pub struct ListQuery {
    /// `active`, `revoked` or `needs_attention`; all when absent.
    state: Option<String>,
    /// The last key of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (100 when absent).
    limit: Option<usize>,
}

impl ListQuery {
    /// The state asked for, the cursor and the page size, or why the state is not one.
    pub(super) fn checked(&self) -> Result<(Option<&str>, Option<&str>, usize), ApiError> {
        let state = self.state.as_deref();
        if state.is_some_and(|s| !matches!(s, "active" | "revoked" | "needs_attention")) {
            return Err(ApiError::bad_request(
                "invalid_state",
                "state must be \"active\", \"revoked\" or \"needs_attention\"",
            ));
        }
        let limit = self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        Ok((state, self.cursor.as_deref(), limit))
    }
}

/// A listing page's body, `{"<field>": [views…], "next_cursor": …}`, serialized straight from
/// the views: a page of 500 built as a `serde_json::Value` first cost a map and a copy of every
/// string of every view.
pub(super) fn page_body<V: Serialize>(
    field: &str,
    views: &[V],
    next_cursor: Option<&str>,
) -> Result<Bytes, ApiError> {
    /// The page, borrowed for serializing.
    struct Page<'a, V> {
        field: &'a str,
        views: &'a [V],
        next_cursor: Option<&'a str>,
    }
    impl<V: Serialize> Serialize for Page<'_, V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(2))?;
            map.serialize_entry(self.field, self.views)?;
            map.serialize_entry("next_cursor", &self.next_cursor)?;
            map.end()
        }
    }
    let page = Page {
        field,
        views,
        next_cursor,
    };
    serde_json::to_vec(&page)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("the page could not be written as JSON: {e}")))
}
