//! The active fault rules and how a request picks the one that fires.

use rand::Rng;

use crate::FaultRule;

/// Active rules in the order they were added.
#[derive(Default)]
pub(crate) struct Faults {
    rules: Vec<FaultRule>,
}

impl Faults {
    /// Adds a rule; a rule with `count: Some(0)` could never fire and is ignored.
    pub fn add(&mut self, rule: FaultRule) {
        if rule.count != Some(0) {
            self.rules.push(rule);
        }
    }

    /// Removes every rule and says how many there were.
    pub fn clear(&mut self) -> usize {
        std::mem::take(&mut self.rules).len()
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    /// The first rule for `path` and `account` that wins its probability roll, if any. A rule
    /// with a count is spent by firing and removed when the count reaches zero.
    pub fn fire(&mut self, path: &str, account: &str) -> Option<FaultRule> {
        if self.rules.is_empty() {
            return None;
        }
        let mut rng = rand::thread_rng();
        let index = self.rules.iter().position(|rule| {
            rule.path == path
                && rule.account.as_deref().is_none_or(|a| a == account)
                && rule.probability.is_none_or(|p| rng.gen::<f64>() < p)
        })?;
        let rule = &mut self.rules[index];
        let fired = rule.clone();
        if let Some(left) = rule.count.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.rules.remove(index);
            }
        }
        Some(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str) -> FaultRule {
        FaultRule {
            path: path.into(),
            errcode: Some(-1),
            ..FaultRule::default()
        }
    }

    #[test]
    fn counted_rules_expire_and_accounts_filter() {
        let mut f = Faults::default();
        f.add(FaultRule {
            account: Some("wxa".into()),
            count: Some(2),
            ..rule("/p")
        });
        f.add(FaultRule {
            count: Some(0),
            ..rule("/p")
        });
        assert!(f.fire("/p", "wxb").is_none());
        assert!(f.fire("/q", "wxa").is_none());
        assert!(f.fire("/p", "wxa").is_some());
        assert!(f.fire("/p", "wxa").is_some());
        assert!(f.fire("/p", "wxa").is_none());
        assert!(f.list().is_empty());
    }

    #[test]
    fn probability_zero_never_fires_and_one_always_does() {
        let mut f = Faults::default();
        f.add(FaultRule {
            probability: Some(0.0),
            ..rule("/p")
        });
        assert!((0..100).all(|_| f.fire("/p", "-").is_none()));
        f.add(FaultRule {
            probability: Some(1.0),
            errcode: Some(45009),
            ..rule("/p")
        });
        assert!((0..100).all(|_| f.fire("/p", "-").is_some_and(|r| r.errcode == Some(45009))));
    }
}
