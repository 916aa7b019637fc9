//! A forward action's target groups, prepared for a choice by weight: one
//! random number and a binary search over cumulative weights per request.

use trellis_config::ForwardAction;

/// A forward action prepared for weighted choice.
///
/// Weights are relative; a group of weight 0 stays listed (so it shows in
/// [`WeightedGroups::iter`]) but is never picked.
#[derive(Debug)]
pub struct WeightedGroups {
    /// Target group ids, in the action's order.
    ids: Box<[Box<str>]>,
    /// `cumulative[i]` = sum of the weights of groups `0..=i`.
    cumulative: Box<[u64]>,
}

impl WeightedGroups {
    /// Prepare `action`; `None` when no group has a weight above 0 (the
    /// control plane rejects such an action, so the table build fails
    /// rather than route to nothing).
    pub(super) fn new(action: &ForwardAction) -> Option<Self> {
        let mut total = 0u64;
        let mut ids = Vec::with_capacity(action.target_groups.len());
        let mut cumulative = Vec::with_capacity(action.target_groups.len());
        for tg in &action.target_groups {
            total += u64::from(tg.weight);
            ids.push(Box::from(tg.target_group.as_str()));
            cumulative.push(total);
        }
        (total > 0).then(|| Self {
            ids: ids.into(),
            cumulative: cumulative.into(),
        })
    }

    /// Pick a target group id by weight (weight 0 never chosen).
    pub fn pick(&self) -> &str {
        let [.., total] = *self.cumulative else {
            // Not reachable: `new` refuses an action without weight.
            return "";
        };
        // A single group (the common case) needs no random number.
        let i = if self.ids.len() == 1 {
            0
        } else {
            let r = fastrand::u64(0..total);
            // First group whose cumulative weight exceeds r: groups of
            // weight 0 repeat the previous sum and are skipped.
            self.cumulative.partition_point(|&c| c <= r)
        };
        self.ids.get(i).map_or("", |id| id)
    }

    /// Every target group id with its weight, in the action's order; for
    /// admin pages and for choosing a different group on retry.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        let mut prev = 0u64;
        self.ids
            .iter()
            .zip(self.cumulative.iter())
            .map(move |(id, &c)| {
                // Each step is one configured u32 weight, so it fits.
                let w = u32::try_from(c - prev).unwrap_or(u32::MAX);
                prev = c;
                (&**id, w)
            })
    }

    /// Number of target groups, including those of weight 0.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false for a table-built value; here for API completeness.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn groups(weights: &[(&str, u32)]) -> Option<WeightedGroups> {
        let json = serde_json::json!({
            "targetGroups": weights
                .iter()
                .map(|(id, w)| serde_json::json!({"targetGroup": id, "weight": w}))
                .collect::<Vec<_>>()
        });
        WeightedGroups::new(&serde_json::from_value(json).unwrap())
    }

    fn counts(g: &WeightedGroups, n: usize) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for _ in 0..n {
            *out.entry(g.pick().to_string()).or_default() += 1;
        }
        out
    }

    #[test]
    fn single_group_is_always_picked() {
        let g = groups(&[("tg-a", 1)]).unwrap();
        assert!((0..100).all(|_| g.pick() == "tg-a"));
    }

    #[test]
    fn weight_zero_is_never_picked() {
        let g = groups(&[("zero-a", 0), ("tg-b", 5), ("zero-c", 0), ("tg-d", 5)]).unwrap();
        let c = counts(&g, 10_000);
        assert_eq!(c.get("zero-a"), None);
        assert_eq!(c.get("zero-c"), None);
        assert!(c["tg-b"] > 0 && c["tg-d"] > 0);
        assert_eq!(
            g.iter().collect::<Vec<_>>(),
            vec![("zero-a", 0), ("tg-b", 5), ("zero-c", 0), ("tg-d", 5)]
        );
    }

    #[test]
    fn all_zero_is_refused() {
        assert!(groups(&[("a", 0), ("b", 0)]).is_none());
        assert!(groups(&[]).is_none());
    }

    #[test]
    fn picks_follow_weights_70_30() {
        let g = groups(&[("blue", 70), ("green", 30)]).unwrap();
        let n = 10_000;
        let c = counts(&g, n);
        // ±3 points is more than 6 standard deviations (0.46 points) away:
        // this fails by chance far less than once in a million runs.
        let blue = c["blue"] as f64 * 100.0 / n as f64;
        assert!((67.0..=73.0).contains(&blue), "blue got {blue}%");
        assert_eq!(c["blue"] + c["green"], n);
    }

    #[test]
    fn picks_follow_weights_three_way() {
        let g = groups(&[("a", 1), ("b", 2), ("c", 997)]).unwrap();
        let c = counts(&g, 10_000);
        let share = |k: &str| c.get(k).copied().unwrap_or(0) as f64 / 100.0;
        assert!(share("c") > 99.0, "c got {}%", share("c"));
        assert!(share("a") + share("b") < 1.0);
    }
}
