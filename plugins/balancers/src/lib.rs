//! The built-in load balancers in one component: `round-robin`, `weighted`, `least-connections`,
//! `random`, `p2c` and `hash`, chosen by the `strategy` key of the plugin's JSON configuration.
//!
//! The host registers each built-in name with `{"strategy": "<name>"}` merged with the user's
//! keys (`[package.metadata.switchyard.builtins]` in Cargo.toml). This file checks that
//! configuration into a `Strategy` and hands each `pick` to the strategy's module.

mod hash;
mod least_connections;
mod p2c;
mod random;
mod request_key;
mod round_robin;
mod shared_turn;
#[cfg(test)]
mod test_support;
mod weighted;

use serde::Deserialize;
use switchyard_sdk::{Balancer, Candidate, RequestHead, export_plugin};

use crate::hash::RendezvousHash;
use crate::request_key::RequestKey;
use crate::weighted::SmoothWeighted;

/// The configuration as written; [`Strategy::from_config`] checks it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// One of [`StrategyName::ALL`], by name.
    strategy: String,
    /// What the hash strategy hashes; see [`RequestKey::parse`].
    #[serde(default)]
    key: Option<String>,
}

/// The strategies by name: the single list the names, the config check and the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrategyName {
    RoundRobin,
    Weighted,
    LeastConnections,
    Random,
    P2c,
    Hash,
}

impl StrategyName {
    const ALL: [StrategyName; 6] = [
        StrategyName::RoundRobin,
        StrategyName::Weighted,
        StrategyName::LeastConnections,
        StrategyName::Random,
        StrategyName::P2c,
        StrategyName::Hash,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StrategyName::RoundRobin => "round-robin",
            StrategyName::Weighted => "weighted",
            StrategyName::LeastConnections => "least-connections",
            StrategyName::Random => "random",
            StrategyName::P2c => "p2c",
            StrategyName::Hash => "hash",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|name| name.as_str() == text)
    }
}

/// A configured strategy, with whatever state it keeps in the instance.
#[derive(Debug)]
enum Strategy {
    /// Exact rotation; see [`round_robin`].
    RoundRobin,
    /// Smooth weighted round-robin; see [`weighted`].
    Weighted(SmoothWeighted),
    /// Fewest in flight per unit of weight; see [`least_connections`].
    LeastConnections,
    /// Weighted random; see [`random`].
    Random,
    /// Power of two choices; see [`p2c`].
    PowerOfTwoChoices,
    /// Weighted rendezvous hashing; see [`hash`].
    Hash(RendezvousHash),
}

impl Strategy {
    /// Checks the configuration, reporting every problem at once: an unknown strategy, a
    /// malformed `key`, a `key` given to a strategy other than `hash`.
    fn from_config(config: ConfigFile) -> Result<Self, String> {
        let mut problems = Vec::new();
        let name = StrategyName::parse(&config.strategy);
        if name.is_none() {
            let known: Vec<_> = StrategyName::ALL.iter().map(|n| n.as_str()).collect();
            problems.push(format!("unknown strategy {:?}; expected one of {}", config.strategy, known.join(", ")));
        }
        let key = match config.key.as_deref().map(RequestKey::parse) {
            Some(Ok(key)) => Some(key),
            Some(Err(problem)) => {
                problems.push(problem);
                None
            }
            None => None,
        };
        if let Some(name) = name
            && name != StrategyName::Hash
            && config.key.is_some()
        {
            // Most often an inline balancer table without `plugin`, which is round-robin: say
            // how to get the balancer that reads `key`.
            problems.push(format!(
                "`key` is a key of the hash balancer, not of {:?}: add plugin = \"hash\" to the balancer table",
                name.as_str()
            ));
        }
        if !problems.is_empty() {
            return Err(format!("invalid plugin config: {}", problems.join("; ")));
        }
        Ok(match name {
            Some(StrategyName::RoundRobin) | None => Strategy::RoundRobin,
            Some(StrategyName::Weighted) => Strategy::Weighted(SmoothWeighted::new()),
            Some(StrategyName::LeastConnections) => Strategy::LeastConnections,
            Some(StrategyName::Random) => Strategy::Random,
            Some(StrategyName::P2c) => Strategy::PowerOfTwoChoices,
            Some(StrategyName::Hash) => Strategy::Hash(RendezvousHash::new(key.unwrap_or_default())),
        })
    }
}

/// The exported balancer: one configured strategy per instance.
#[derive(Debug)]
pub struct BuiltinBalancer {
    strategy: Strategy,
}

impl Balancer for BuiltinBalancer {
    /// Fails on malformed JSON, a missing or unknown `strategy`, an unknown field, a malformed
    /// `key`, or a `key` on a strategy other than `hash`; the message names each problem.
    fn configure(config: &str) -> Result<Self, String> {
        let config: ConfigFile = switchyard_sdk::parse_config(config)?;
        Ok(BuiltinBalancer { strategy: Strategy::from_config(config)? })
    }

    /// Returns an index into `candidates`: `None` only when there are none, 0 when there is one
    /// (the host does not call then, but nothing breaks if it does).
    fn pick(&self, req: &dyn RequestHead, upstream: &str, candidates: &[Candidate]) -> Option<u32> {
        match candidates.len() {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        match &self.strategy {
            Strategy::RoundRobin => round_robin::pick(upstream, candidates),
            Strategy::Weighted(weighted) => weighted.pick(upstream, candidates),
            Strategy::LeastConnections => least_connections::pick(upstream, candidates),
            Strategy::Random => random::pick(candidates),
            Strategy::PowerOfTwoChoices => p2c::pick(candidates),
            Strategy::Hash(hash) => hash.pick(req, candidates),
        }
    }
}

export_plugin!(BuiltinBalancer: balancer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{equal_backends, loaded_backends, weighted_backends};
    use switchyard_sdk::testkit::{TestRequest, reset_test_host};

    fn configure(config: &str) -> BuiltinBalancer {
        BuiltinBalancer::configure(config).unwrap_or_else(|e| panic!("{config}: {e}"))
    }

    fn rejection(config: &str) -> String {
        match BuiltinBalancer::configure(config) {
            Ok(balancer) => panic!("{config} was accepted as {:?}", balancer.strategy),
            Err(message) => message,
        }
    }

    #[test]
    fn every_strategy_is_configured_by_name() {
        let configured = |config: &str| std::mem::discriminant(&configure(config).strategy);
        let expected = [
            ("round-robin", std::mem::discriminant(&Strategy::RoundRobin)),
            ("weighted", std::mem::discriminant(&Strategy::Weighted(SmoothWeighted::new()))),
            ("least-connections", std::mem::discriminant(&Strategy::LeastConnections)),
            ("random", std::mem::discriminant(&Strategy::Random)),
            ("p2c", std::mem::discriminant(&Strategy::PowerOfTwoChoices)),
            ("hash", std::mem::discriminant(&Strategy::Hash(RendezvousHash::new(RequestKey::ClientIp)))),
        ];
        assert_eq!(expected.len(), StrategyName::ALL.len());
        for (name, discriminant) in expected {
            assert_eq!(configured(&format!(r#"{{"strategy": "{name}"}}"#)), discriminant, "{name}");
        }
    }

    #[test]
    fn hash_takes_a_key_and_defaults_to_the_client_ip() {
        for (config, key) in [
            (r#"{"strategy": "hash"}"#, RequestKey::ClientIp),
            (r#"{"strategy": "hash", "key": "cookie:sid"}"#, RequestKey::Cookie("sid".into())),
            (r#"{"strategy": "hash", "key": "query:u"}"#, RequestKey::Query("u".into())),
        ] {
            match configure(config).strategy {
                Strategy::Hash(hash) => assert_eq!(hash, RendezvousHash::new(key)),
                other => panic!("{config} gave {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_an_unknown_strategy_listing_the_known_ones() {
        let message = rejection(r#"{"strategy": "fastest"}"#);
        assert!(message.contains("unknown strategy \"fastest\""), "{message}");
        assert!(StrategyName::ALL.iter().all(|n| message.contains(n.as_str())), "{message}");
    }

    #[test]
    fn rejects_an_unknown_field_by_name() {
        let message = rejection(r#"{"strategy": "hash", "kye": "path"}"#);
        assert!(message.contains("unknown field `kye`"), "{message}");
    }

    #[test]
    fn rejects_a_missing_strategy() {
        let message = rejection(r#"{"key": "path"}"#);
        assert!(message.contains("missing field `strategy`"), "{message}");
    }

    #[test]
    fn rejects_a_key_on_other_strategies() {
        for name in ["round-robin", "weighted", "least-connections", "random", "p2c"] {
            let message = rejection(&format!(r#"{{"strategy": "{name}", "key": "path"}}"#));
            assert!(message.contains(&format!("`key` is a key of the hash balancer, not of \"{name}\"")), "{message}");
            assert!(message.contains(r#"add plugin = "hash""#), "{message}");
        }
    }

    #[test]
    fn rejects_a_malformed_key() {
        let message = rejection(r#"{"strategy": "hash", "key": "header:"}"#);
        assert!(message.contains("`key` \"header:\" needs a header name"), "{message}");
        let message = rejection(r#"{"strategy": "hash", "key": "ip"}"#);
        assert!(message.contains("unknown `key` \"ip\""), "{message}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let message = rejection(r#"{"strategy": "random", "key": "cookie:"}"#);
        assert!(message.contains("needs a cookie name") && message.contains("not of \"random\""), "{message}");
        let message = rejection(r#"{"strategy": "nope", "key": "nope"}"#);
        assert!(message.contains("unknown strategy") && message.contains("unknown `key`"), "{message}");
    }

    #[test]
    fn the_builtins_in_cargo_toml_are_exactly_the_strategies() {
        // The host reads the built-in list from Cargo.toml; it must name each strategy once, with
        // a configuration this crate accepts.
        let manifest = include_str!("../Cargo.toml");
        let section = manifest.split("[package.metadata.switchyard.builtins]").nth(1).unwrap_or_default();
        let mut listed = Vec::new();
        for line in section.lines().map(str::trim).take_while(|l| !l.starts_with('[')) {
            let Some((name, table)) = line.split_once(" = ") else { continue };
            let strategy = table.trim_start_matches("{ strategy = \"").trim_end_matches("\" }");
            assert_eq!(name, strategy, "built-in {name} starts from strategy {strategy}");
            configure(&format!(r#"{{"strategy": "{strategy}"}}"#));
            listed.push(name.to_string());
        }
        let all: Vec<_> = StrategyName::ALL.iter().map(|n| n.as_str().to_string()).collect();
        assert_eq!(listed, all);
    }

    #[test]
    fn every_strategy_handles_zero_and_one_candidate() {
        reset_test_host();
        let req = TestRequest::get("/");
        for name in StrategyName::ALL {
            let balancer = configure(&format!(r#"{{"strategy": "{}"}}"#, name.as_str()));
            assert_eq!(balancer.pick(&req, "u", &[]), None, "{name:?}");
            assert_eq!(balancer.pick(&req, "u", &equal_backends(1)), Some(0), "{name:?}");
        }
        // Neither case needs a shared counter.
        assert!(reset_test_host().kv.is_empty());
    }

    #[test]
    fn dispatch_reaches_each_strategy() {
        reset_test_host();
        let req = TestRequest::get("/").with_client_ip("192.0.2.1");
        let picks = |config: &str, candidates: &[Candidate]| -> Vec<Option<u32>> {
            let balancer = configure(config);
            (0..4).map(|_| balancer.pick(&req, "u", candidates)).collect()
        };
        assert_eq!(picks(r#"{"strategy": "round-robin"}"#, &equal_backends(3)), [Some(0), Some(1), Some(2), Some(0)]);
        // Its own counter: weighted starts from the beginning of its cycle.
        assert_eq!(
            picks(r#"{"strategy": "weighted"}"#, &weighted_backends(&[3, 1])),
            [Some(0), Some(0), Some(1), Some(0)]
        );
        assert_eq!(picks(r#"{"strategy": "least-connections"}"#, &loaded_backends(&[3, 1, 2])), [Some(1); 4]);
        assert_eq!(picks(r#"{"strategy": "p2c"}"#, &loaded_backends(&[3, 1])), [Some(1); 4]);
        let random = picks(r#"{"strategy": "random"}"#, &weighted_backends(&[1, 1_000_000]));
        assert_eq!(random, [Some(1); 4]);
        let hashed = picks(r#"{"strategy": "hash"}"#, &equal_backends(5));
        assert!(hashed[0].is_some() && hashed.iter().all(|p| *p == hashed[0]), "{hashed:?}");
    }
}
