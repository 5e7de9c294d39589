//! The variants and their weights, and the two ways of landing in one: a bucket number from the
//! stable hash of a sticky key, or a fresh random draw.

use std::cell::Cell;

use switchyard_sdk::{SplitChoice, host};

use switchyard_sdk::stable_hash::{mix64, stable_hash};

/// Where a variant sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Only the route upstream's backends carrying this tag.
    Tag(String),
    /// Another `[[upstream]]`.
    Upstream(String),
}

impl Target {
    /// The config key this target was written under, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Tag(_) => "tag",
            Target::Upstream(_) => "upstream",
        }
    }

    /// The tag or upstream name.
    pub fn value(&self) -> &str {
        match self {
            Target::Tag(value) | Target::Upstream(value) => value,
        }
    }

    /// The answer the split role gives the host.
    pub fn choice(&self) -> SplitChoice {
        match self {
            Target::Tag(tag) => SplitChoice::Tag(tag.clone()),
            Target::Upstream(name) => SplitChoice::Upstream(name.clone()),
        }
    }
}

/// One arm of the split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Unique within the split; what cookies, overrides, metrics and the response header carry.
    pub name: String,
    /// Where its requests go.
    pub target: Target,
    /// Its share of new assignments; 0 keeps it reachable only through an override.
    pub weight: u32,
    /// The plugin counter its decisions count on: `variant_<name>`.
    pub counter: String,
    /// What `choose` leaves for the response side when a client gets this variant's cookie:
    /// the name and [`crate::ISSUE_COOKIE`].
    pub issue_cookie_note: String,
}

impl Variant {
    /// A variant called `name`.
    pub fn new(name: String, target: Target, weight: u32) -> Self {
        Variant {
            counter: format!("variant_{name}"),
            issue_cookie_note: format!("{name}{}", crate::ISSUE_COOKIE),
            name,
            target,
            weight,
        }
    }
}

/// The variants in configured order, with their total weight.
#[derive(Debug)]
pub struct VariantTable {
    variants: Vec<Variant>,
    /// Summed in `u64`, so it cannot overflow for fewer than 2^32 variants of at most `u32::MAX`.
    total_weight: u64,
}

impl VariantTable {
    /// Builds the table; callers check that the total weight is above 0 before using it.
    pub fn new(variants: Vec<Variant>) -> Self {
        let total_weight = variants.iter().map(|v| u64::from(v.weight)).sum();
        VariantTable { variants, total_weight }
    }

    /// The sum of all weights.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// Whether there are no variants at all.
    pub fn is_empty(&self) -> bool {
        self.variants.is_empty()
    }

    /// The variants in configured order.
    pub fn iter(&self) -> impl Iterator<Item = &Variant> {
        self.variants.iter()
    }

    /// The variant called `name`, whatever its weight.
    pub fn by_name(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The variant owning `bucket mod total weight` when the weights are laid end to end in
    /// configured order: with 90/10, buckets 0–89 are the first variant and 90–99 the second.
    /// A variant of weight 0 owns no bucket. `None` only when the total weight is 0, which the
    /// config rejects.
    pub fn by_bucket(&self, bucket: u64) -> Option<&Variant> {
        let mut rest = bucket.checked_rem(self.total_weight)?;
        for variant in &self.variants {
            let weight = u64::from(variant.weight);
            if rest < weight {
                return Some(variant);
            }
            rest -= weight;
        }
        None
    }

    /// The variant for a sticky `key` (a header value, a client IP): the same key under the
    /// same salt and weights always lands in the same variant.
    pub fn by_key(&self, salt: &str, key: &str) -> Option<&Variant> {
        self.by_bucket(stable_hash(salt, key))
    }

    /// A variant drawn at random by weight.
    pub fn random(&self, draws: &Draws) -> Option<&Variant> {
        self.by_bucket(draws.next())
    }
}

/// The split's random draws: splitmix64 seeded once per instance from the host's generator, so a
/// draw costs no call into the host (the host's generator is no better: also fast and not
/// cryptographic, seeded per instance).
#[derive(Debug)]
pub struct Draws(Cell<u64>);

impl Draws {
    /// A generator seeded from the host.
    pub fn seeded() -> Self {
        Draws(Cell::new(host::random_u64()))
    }

    /// The next draw: splitmix64's Weyl step, then its finalizer.
    pub fn next(&self) -> u64 {
        let state = self.0.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.0.set(state);
        mix64(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(weights: &[u32]) -> VariantTable {
        VariantTable::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| Variant::new(format!("v{i}"), Target::Tag(format!("t{i}")), weight))
                .collect(),
        )
    }

    #[test]
    fn buckets_follow_the_cumulative_weights() {
        let t = table(&[90, 0, 10]);
        assert_eq!(t.total_weight(), 100);
        let name = |bucket| t.by_bucket(bucket).map(|v| v.name.as_str());
        assert_eq!(name(0), Some("v0"));
        assert_eq!(name(89), Some("v0"));
        assert_eq!(name(90), Some("v2"));
        assert_eq!(name(99), Some("v2"));
        assert_eq!(name(100), Some("v0"));
        // u64::MAX = ...615, so bucket 15.
        assert_eq!(name(u64::MAX), Some("v0"));
    }

    #[test]
    fn a_zero_weight_variant_owns_no_bucket() {
        let t = table(&[0, 1]);
        assert!((0..1000).all(|bucket| t.by_bucket(bucket).is_some_and(|v| v.name == "v1")));
        assert_eq!(t.by_name("v0").map(|v| v.weight), Some(0));
    }

    #[test]
    fn no_weight_means_no_variant_instead_of_a_panic() {
        assert_eq!(table(&[0, 0]).by_bucket(7), None);
        assert_eq!(table(&[]).by_bucket(7), None);
    }

    #[test]
    fn targets_become_the_hosts_choices() {
        assert_eq!(Target::Tag("a".into()).choice(), SplitChoice::Tag("a".into()));
        assert_eq!(Target::Upstream("api-v2".into()).choice(), SplitChoice::Upstream("api-v2".into()));
    }
}
