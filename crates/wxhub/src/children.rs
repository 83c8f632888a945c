//! What a platform's authorizers and a suite's installed corps have in common as accounts under
//! a parent: the state operators see them in, and the paged listing of a parent's children.
//! Each parent's module (`platform`, `suites`) says how its children are paged in the registry
//! and what a view of one holds.

use crate::engine::state::Status;
use crate::engine::Engine;
use crate::kinds::AccountId;
use crate::read::{Credential, ReadIndex};

/// Reads a child's state for operators: its access token's status in the engine and its slot.
pub struct Children<'a> {
    /// Whether a credential needs attention.
    pub engine: &'a Engine,
    /// The slot its token is served from.
    pub read_index: &'a ReadIndex,
}

impl Children<'_> {
    /// `active`, `revoked` (it withdrew or uninstalled) or `needs_attention` (its token cannot
    /// be refreshed without someone acting).
    pub fn state(&self, id: &AccountId, revoked: bool) -> &'static str {
        let credential = self.read_index.find(id, None).ok();
        self.state_of(credential.as_deref(), revoked)
    }

    /// Its state (as [`Children::state`]) and when the access token it serves expires (RFC
    /// 3339), from one look-up of its account: a listing page views hundreds of children.
    pub fn state_and_expiry(
        &self,
        id: &AccountId,
        revoked: bool,
    ) -> (&'static str, Option<String>) {
        let credential = self.read_index.find(id, None).ok();
        let expires_at = credential
            .as_ref()
            .and_then(|c| c.slot.peek().as_ref().map(|s| s.expires_at.to_rfc3339()));
        (self.state_of(credential.as_deref(), revoked), expires_at)
    }

    /// The state of a child whose access token is `credential`.
    fn state_of(&self, credential: Option<&Credential>, revoked: bool) -> &'static str {
        if revoked {
            return "revoked";
        }
        match credential.and_then(|c| self.engine.status_of(c)) {
            Some(Status::NeedsAttention) => "needs_attention",
            _ => "active",
        }
    }
}

/// How one parent's children are paged: a chunk of definitions from the registry after a key
/// (copied under its lock, which is then released: docs/architecture.md#locks), which ones to
/// list, each one's key (the cursor), and its view.
pub struct Pager<Chunk, Keep, Key, View> {
    /// `(after, limit)` → up to `limit` definitions after `after`, and whether more may follow.
    pub chunk: Chunk,
    /// Whether a definition is listed (the `state` asked for).
    pub keep: Keep,
    /// A definition's key within its parent: the appid, the corpid.
    pub key: Key,
    /// What the listing shows of it.
    pub view: View,
}

impl<S, V, Chunk, Keep, Key, View> Pager<Chunk, Keep, Key, View>
where
    Chunk: Fn(Option<&str>, usize) -> (Vec<S>, bool),
    Keep: Fn(&S) -> bool,
    Key: Fn(&S) -> String,
    View: Fn(&S) -> V,
{
    /// One page of at most `limit` views after `cursor`, and the cursor of the next page (the
    /// last key shown, when another kept child follows it).
    pub fn page(&self, cursor: Option<&str>, limit: usize) -> (Vec<V>, Option<String>) {
        let mut views = Vec::with_capacity(limit);
        let mut last_shown: Option<String> = None;
        let mut after = cursor.map(str::to_string);
        loop {
            let (chunk, more) = (self.chunk)(after.as_deref(), limit);
            for spec in &chunk {
                if !(self.keep)(spec) {
                    continue;
                }
                if views.len() == limit {
                    return (views, last_shown);
                }
                views.push((self.view)(spec));
                last_shown = Some((self.key)(spec));
            }
            match chunk.last().map(&self.key) {
                Some(last) if more => after = Some(last),
                _ => return (views, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pager over the keys `0..n` (zero-padded), keeping the even ones.
    fn page(n: usize, cursor: Option<&str>, limit: usize) -> (Vec<String>, Option<String>) {
        let all: Vec<String> = (0..n).map(|i| format!("{i:03}")).collect();
        let pager = Pager {
            chunk: |after: Option<&str>, limit: usize| {
                let rest: Vec<String> = all
                    .iter()
                    .filter(|k| after.is_none_or(|a| k.as_str() > a))
                    .cloned()
                    .collect();
                let more = rest.len() > limit;
                (rest.into_iter().take(limit).collect(), more)
            },
            keep: |k: &String| k.parse::<usize>().is_ok_and(|i| i % 2 == 0),
            key: |k: &String| k.clone(),
            view: |k: &String| k.clone(),
        };
        pager.page(cursor, limit)
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats_across_skipped_children() {
        let (first, next) = page(10, None, 2);
        assert_eq!(first, ["000", "002"]);
        assert_eq!(next.as_deref(), Some("002"));
        let (second, next) = page(10, next.as_deref(), 2);
        assert_eq!(second, ["004", "006"]);
        let (third, next) = page(10, next.as_deref(), 2);
        assert_eq!(third, ["008"]);
        assert_eq!(next, None, "nothing kept follows");
    }

    #[test]
    fn a_page_that_ends_exactly_at_the_last_kept_child_has_no_next_cursor() {
        let (all, next) = page(5, None, 3);
        assert_eq!(all, ["000", "002", "004"]);
        assert_eq!(next, None);
        assert_eq!(page(0, None, 3), (vec![], None));
    }
}
