//! Stored runtime definitions, split into the consumers' and the accounts'. The accounts' formats
//! are their kinds' (`kinds::stored`).

use crate::consumers;

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
}
