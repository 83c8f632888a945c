//! What the listings of a parent's children share (a platform's authorizers, a suite's
//! installed corps): their query, checked the same way.

use serde::Deserialize;

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
