//! Stored runtime definitions, split into the consumers' and the accounts'. The accounts' formats
//! are their kinds' (`kinds::stored`).

use crate::consumers;
use crate::kinds::AccountId;

/// Stored runtime definitions: (name, definition).
pub(super) type Definitions = Vec<(String, String)>;

/// Splits the stored runtime definitions into the consumers' (by consumer name) and the
/// accounts'.
pub(super) fn split_consumers(stored: Definitions) -> (Definitions, Definitions) {
    let mut consumers = Vec::new();
    let mut accounts = Vec::new();
    for (name, definition) in stored {
        match consumers::name_of(&name) {
            Some(consumer) => consumers.push((consumer.to_string(), definition)),
            None => accounts.push((name, definition)),
        }
    }
    (consumers, accounts)
}

/// The definitions with the accounts that have no parent first: a child (an installed corp) is
/// read with its parent's (a runtime suite's) settings, so the parent must be known by then.
/// Otherwise in the store's order.
pub(super) fn parents_first(accounts: Definitions) -> Definitions {
    // One parse per name (a sort would parse two per comparison: 100,000 authorizers are all
    // children, so it compares every neighbour).
    let (mut parents, children): (Definitions, Definitions) = accounts
        .into_iter()
        .partition(|(name, _)| AccountId::parse(name).is_none_or(|id| id.parent().is_none()));
    parents.extend(children);
    parents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_consumers_are_told_apart_from_accounts_by_name() {
        let stored = vec![
            ("app/wx1".to_string(), "a".to_string()),
            (consumers::storage_name("ops"), "c".to_string()),
            ("corp/ww1/1".to_string(), "b".to_string()),
        ];
        let (found, accounts) = split_consumers(stored);
        assert_eq!(found, vec![("ops".to_string(), "c".to_string())]);
        assert_eq!(
            accounts,
            vec![
                ("app/wx1".to_string(), "a".to_string()),
                ("corp/ww1/1".to_string(), "b".to_string()),
            ]
        );
    }

    #[test]
    fn runtime_suites_come_before_the_corps_that_installed_them() {
        let stored = vec![
            ("auth_corp/wws/wwc".to_string(), "corp".to_string()),
            ("app/wx1".to_string(), "app".to_string()),
            ("suite/wws".to_string(), "suite".to_string()),
        ];
        let order: Vec<String> = parents_first(stored)
            .into_iter()
            .map(|(_, definition)| definition)
            .collect();
        assert_eq!(order, ["app", "suite", "corp"]);
    }
}
