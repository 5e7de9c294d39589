//! An example custom balancer, written with the SDK as a user would: it keeps each request in
//! the zone (region, data centre, rack) the request asks for, and within that zone sends it to
//! the least loaded backend.
//!
//! # What it does
//!
//! A balancer is asked to pick one backend of an upstream for every attempt to reach it. The
//! proxy hands it the healthy backends as [`Candidate`]s: their weight, requests in flight,
//! smoothed latency and the `tags` configured on the backend. This plugin reads the zone from
//! the tags:
//!
//! 1. The request's zone is the value of the `zone_header` header (an edge or CDN in front of
//!    the proxy, or a request filter, sets it), or `default_zone` when the header is absent or
//!    empty.
//! 2. The candidates tagged `<tag_prefix><zone>` (`zone=eu-west`) are preferred. Zone names
//!    compare ignoring ASCII case. When no candidate is in the zone, or the request has no zone,
//!    every candidate is eligible: keeping traffic local is a preference, never a reason to fail.
//! 3. Among the eligible candidates the least loaded wins: in-flight requests per unit of
//!    weight, so a backend of weight 2 is given twice the requests of a backend of weight 1.
//!    Equal loads go to the clearly faster backend: latencies are compared by power of two
//!    (300 µs and 450 µs are alike, 300 µs and 700 µs are not), because smoothed latencies
//!    almost never match to the microsecond and an exact comparison would send all light
//!    traffic to whichever backend measured a few microseconds faster. Candidates alike on both
//!    take turns, through a counter in the proxy's key-value store that every instance of the
//!    plugin shares, so an idle upstream is spread evenly instead of always using one backend.
//!
//! Each pick adds 1 to one of the plugin's counters: `in_zone` (a backend of the request's zone
//! was chosen), `zone_fallback` (the request named a zone no candidate is in) or `no_zone` (the
//! request had no zone and no `default_zone` is configured).
//!
//! # Configuring it
//!
//! Tag the backends with their zone, declare the plugin and name it as the upstream's balancer.
//! Every key is optional: `zone_header` defaults to `"x-zone"`, `default_zone` to none and
//! `tag_prefix` to `"zone="`.
//!
//! ```toml
//! [[upstream]]
//! name = "api"
//! balancer = "zones"
//! backends = [
//!   { address = "10.0.1.10:8080", tags = ["zone=eu-west"] },
//!   { address = "10.0.1.11:8080", tags = ["zone=eu-west"], weight = 2 },
//!   { address = "10.8.1.10:8080", tags = ["zone=us-east"] },
//! ]
//!
//! [[plugin]]
//! name = "zones"
//! path = "tests/fixtures/dist/zone-balancer.wasm"   # relative to this file
//! failure = "open"    # if the plugin fails, fall back to the least busy backend
//! config = { zone_header = "x-zone", default_zone = "eu-west", tag_prefix = "zone=" }
//! ```
//!
//! A backend may carry other tags too (a split narrows the candidates to one tag before the
//! balancer is asked, so `["zone=eu-west", "canary"]` works with both). The configuration is
//! checked when it is loaded; an invalid header name or an empty `default_zone` fails the load
//! with a message naming each problem.
//!
//! # Building it
//!
//! `plugins/build.sh` builds every plugin crate under `examples/` for `wasm32-unknown-unknown`,
//! turns it into a component and writes it to `tests/fixtures/dist/<directory name>.wasm`,
//! here `tests/fixtures/dist/zone-balancer.wasm`. `cargo test -p example-zone-balancer` runs the
//! unit tests natively against the SDK's test kit, whose key-value store stands in for the
//! proxy's.

use std::cmp::Ordering;

use serde::Deserialize;
use switchyard_sdk::{Balancer, Candidate, RequestHead, export_plugin, host};

/// The configuration as written in the `[[plugin]]` table's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ZoneFile {
    /// The request header naming the zone.
    zone_header: String,
    /// The zone of requests without the header.
    default_zone: Option<String>,
    /// What a backend's zone tag starts with; the rest of the tag is the zone.
    tag_prefix: String,
}

impl Default for ZoneFile {
    fn default() -> Self {
        ZoneFile { zone_header: "x-zone".to_string(), default_zone: None, tag_prefix: "zone=".to_string() }
    }
}

/// The zone-aware, least-loaded balancer.
#[derive(Debug)]
pub struct ZoneBalancer {
    zone_header: String,
    default_zone: Option<String>,
    tag_prefix: String,
}

impl ZoneBalancer {
    /// The zone `req` asks for: the header's value, else the default zone.
    fn request_zone(&self, req: &dyn RequestHead) -> Option<String> {
        req.header(&self.zone_header)
            .map(|value| value.trim().to_string())
            .filter(|zone| !zone.is_empty())
            .or_else(|| self.default_zone.clone())
    }

    fn is_in_zone(&self, candidate: &Candidate, zone: &str) -> bool {
        candidate
            .tags
            .iter()
            .any(|tag| tag.strip_prefix(&self.tag_prefix).is_some_and(|z| z.eq_ignore_ascii_case(zone)))
    }
}

/// Orders two candidates by load (in-flight requests per unit of weight), then latency class.
///
/// `a.in_flight / a.weight` against `b.in_flight / b.weight` is compared as
/// `a.in_flight * b.weight` against `b.in_flight * a.weight`: exact, no floating point, and the
/// products of two `u32` always fit a `u64`. A weight of 0 (the proxy never sends one) would
/// make every backend look idle, so it counts as 1.
fn compare_load(a: &Candidate, b: &Candidate) -> Ordering {
    let a_load = u64::from(a.in_flight) * u64::from(b.weight.max(1));
    let b_load = u64::from(b.in_flight) * u64::from(a.weight.max(1));
    a_load.cmp(&b_load).then(latency_class(a.latency_us).cmp(&latency_class(b.latency_us)))
}

/// Latencies by power of two: 0 (not measured yet) is class 0, 1 µs class 1, 2–3 µs class 2,
/// 256–511 µs class 9, and so on. A backend only wins a tie on latency when it is about twice
/// as fast, so measurement noise does not decide where requests go.
fn latency_class(latency_us: u32) -> u32 {
    latency_us.checked_ilog2().map_or(0, |log| log + 1)
}

impl Balancer for ZoneBalancer {
    /// Runs once per instance when the configuration is loaded; an error fails that load.
    fn configure(config: &str) -> Result<Self, String> {
        let file: ZoneFile = switchyard_sdk::parse_config(config)?;
        let mut problems = Vec::new();
        let is_token_byte = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if file.zone_header.is_empty() || !file.zone_header.bytes().all(is_token_byte) {
            problems.push(format!("zone_header {:?} is not a valid header name", file.zone_header));
        }
        let default_zone = match file.default_zone {
            Some(zone) if zone.trim().is_empty() => {
                problems.push("default_zone is empty; leave it out for no default".to_string());
                None
            }
            other => other.map(|zone| zone.trim().to_string()),
        };
        if !problems.is_empty() {
            return Err(format!("invalid zone-balancer config: {}", problems.join("; ")));
        }
        Ok(ZoneBalancer { zone_header: file.zone_header, default_zone, tag_prefix: file.tag_prefix })
    }

    /// Runs for every attempt to reach an upstream using this balancer, with at least two
    /// healthy candidates. Returns the chosen index; `None` only for an empty list, which the
    /// proxy never sends.
    fn pick(&self, req: &dyn RequestHead, upstream: &str, candidates: &[Candidate]) -> Option<u32> {
        let zone = self.request_zone(req);
        let in_zone = |c: &Candidate| zone.as_deref().is_some_and(|z| self.is_in_zone(c, z));
        let zone_has_backends = candidates.iter().any(in_zone);
        host::counter_add(
            match (&zone, zone_has_backends) {
                (None, _) => "no_zone",
                (Some(_), false) => "zone_fallback",
                (Some(_), true) => "in_zone",
            },
            1,
        );

        // One pass: the indices of the eligible candidates that tie for least loaded.
        let mut best: Vec<usize> = Vec::new();
        for (i, candidate) in candidates.iter().enumerate() {
            if zone_has_backends && !in_zone(candidate) {
                continue;
            }
            match best.first().map(|&b| compare_load(candidate, &candidates[b])) {
                None | Some(Ordering::Equal) => best.push(i),
                Some(Ordering::Less) => {
                    best.clear();
                    best.push(i);
                }
                Some(Ordering::Greater) => {}
            }
        }

        let chosen = match best.as_slice() {
            [] => return None,
            [only] => *only,
            tied => {
                // Only ties cost a call into the host. The counter is per upstream and shared by
                // every instance, so concurrent requests take consecutive turns.
                let turn = host::kv_increment(&format!("ties:{upstream}"), 1).wrapping_sub(1);
                let len = i64::try_from(tied.len()).ok()?;
                tied[usize::try_from(turn.rem_euclid(len)).ok()?]
            }
        };
        u32::try_from(chosen).ok()
    }
}

export_plugin!(ZoneBalancer: balancer);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::{TestRequest, reset_test_host, with_test_host};

    /// A candidate in `zone` (no tag when empty) with the given load figures.
    fn backend(zone: &str, weight: u32, in_flight: u32, latency_us: u32) -> Candidate {
        let tags = if zone.is_empty() { Vec::new() } else { vec![format!("zone={zone}"), "pool=main".to_string()] };
        Candidate { key: 0, weight, in_flight, latency_us, failures: 0, tags }
    }

    fn balancer(config: &str) -> ZoneBalancer {
        ZoneBalancer::configure(config).unwrap_or_else(|e| panic!("{config}: {e}"))
    }

    fn in_zone(zone: &str) -> TestRequest {
        TestRequest::get("/").with_header("x-zone", zone)
    }

    fn counter(name: &str) -> u64 {
        with_test_host(|h| h.counters.get(name).copied().unwrap_or(0))
    }

    #[test]
    fn the_requested_zone_wins_over_a_less_loaded_backend_elsewhere() {
        reset_test_host();
        let b = balancer("{}");
        let candidates = [backend("us-east", 1, 0, 100), backend("eu-west", 1, 5, 900), backend("us-east", 1, 0, 50)];
        assert_eq!(b.pick(&in_zone("eu-west"), "api", &candidates), Some(1));
        assert_eq!(b.pick(&in_zone("us-east"), "api", &candidates), Some(2));
        assert_eq!(counter("in_zone"), 2);
    }

    #[test]
    fn zone_names_ignore_case_and_surrounding_space() {
        let b = balancer("{}");
        let candidates = [backend("us-east", 1, 0, 0), backend("eu-west", 1, 9, 0)];
        assert_eq!(b.pick(&in_zone(" EU-West "), "api", &candidates), Some(1));
    }

    #[test]
    fn a_zone_without_backends_falls_back_to_every_candidate() {
        reset_test_host();
        let b = balancer("{}");
        let candidates = [backend("us-east", 1, 3, 0), backend("eu-west", 1, 1, 0), backend("", 1, 2, 0)];
        assert_eq!(b.pick(&in_zone("ap-south"), "api", &candidates), Some(1));
        assert_eq!(counter("zone_fallback"), 1);
        assert_eq!(counter("in_zone"), 0);
    }

    #[test]
    fn requests_without_a_zone_use_every_candidate() {
        reset_test_host();
        let b = balancer("{}");
        let candidates = [backend("us-east", 1, 3, 0), backend("eu-west", 1, 2, 0), backend("", 1, 1, 0)];
        assert_eq!(b.pick(&TestRequest::get("/"), "api", &candidates), Some(2));
        assert_eq!(b.pick(&in_zone(""), "api", &candidates), Some(2), "an empty header names no zone");
        assert_eq!(counter("no_zone"), 2);
    }

    #[test]
    fn the_least_loaded_backend_of_the_zone_is_chosen_by_weight() {
        let b = balancer("{}");
        let candidates = [
            backend("eu-west", 1, 3, 0),  // 3 per unit of weight
            backend("eu-west", 2, 4, 0),  // 2 per unit: least loaded of the zone
            backend("us-east", 1, 0, 0),  // idle, but in another zone
            backend("eu-west", 4, 12, 0), // 3 per unit
        ];
        assert_eq!(b.pick(&in_zone("eu-west"), "api", &candidates), Some(1));
    }

    #[test]
    fn a_weight_of_zero_counts_as_one() {
        let b = balancer("{}");
        let candidates = [backend("eu-west", 1, 2, 0), backend("eu-west", 0, 1, 0)];
        assert_eq!(b.pick(&in_zone("eu-west"), "api", &candidates), Some(1));
        let candidates = [backend("eu-west", 0, 2, 0), backend("eu-west", 1, 1, 0)];
        assert_eq!(b.pick(&in_zone("eu-west"), "api", &candidates), Some(1));
    }

    #[test]
    fn equal_loads_go_to_a_clearly_faster_backend() {
        reset_test_host();
        let b = balancer("{}");
        let candidates = [backend("eu-west", 1, 2, 800), backend("eu-west", 2, 4, 300), backend("eu-west", 1, 2, 1700)];
        assert_eq!(b.pick(&in_zone("eu-west"), "api", &candidates), Some(1));
        assert!(with_test_host(|h| h.kv.is_empty()), "a clear winner needs no turn counter");
    }

    #[test]
    fn similar_latencies_take_turns() {
        reset_test_host();
        let b = balancer("{}");
        let candidates = [backend("eu-west", 1, 1, 300), backend("eu-west", 1, 1, 450), backend("eu-west", 1, 1, 700)];
        let picks: Vec<_> = (0..4).filter_map(|_| b.pick(&in_zone("eu-west"), "api", &candidates)).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn latency_classes_are_powers_of_two() {
        let classes: Vec<_> = [0, 1, 2, 3, 4, 255, 256, 511, 512, u32::MAX].map(latency_class).into();
        assert_eq!(classes, [0, 1, 2, 2, 3, 8, 9, 9, 10, 32]);
    }

    #[test]
    fn exact_ties_take_turns() {
        reset_test_host();
        let b = balancer("{}");
        let candidates = [
            backend("eu-west", 1, 0, 0),
            backend("us-east", 1, 0, 0),
            backend("eu-west", 1, 0, 0),
            backend("eu-west", 1, 1, 0),
            backend("eu-west", 1, 0, 0),
        ];
        let picks: Vec<_> = (0..6).filter_map(|_| b.pick(&in_zone("eu-west"), "api", &candidates)).collect();
        assert_eq!(picks, [0, 2, 4, 0, 2, 4]);
        // Each upstream keeps its own turn.
        assert_eq!(b.pick(&in_zone("eu-west"), "web", &candidates), Some(0));
        assert_eq!(with_test_host(|h| h.kv.get("ties:api").cloned()).as_deref(), Some("6"));
    }

    #[test]
    fn the_default_zone_applies_only_without_the_header() {
        let b = balancer(r#"{"default_zone": "us-east"}"#);
        let candidates = [backend("eu-west", 1, 0, 0), backend("us-east", 1, 7, 0)];
        assert_eq!(b.pick(&TestRequest::get("/"), "api", &candidates), Some(1));
        assert_eq!(b.pick(&in_zone("eu-west"), "api", &candidates), Some(0));
    }

    #[test]
    fn header_and_tag_prefix_are_configurable() {
        let b = balancer(r#"{"zone_header": "X-Region", "tag_prefix": ""}"#);
        let tagged = |tag: &str, in_flight| Candidate {
            key: 0,
            weight: 1,
            in_flight,
            latency_us: 0,
            failures: 0,
            tags: vec![tag.to_string()],
        };
        let candidates = [tagged("eu-west-2", 0), tagged("eu-west", 9), tagged("zone=eu-west", 1)];
        let req = TestRequest::get("/").with_header("x-region", "eu-west");
        assert_eq!(b.pick(&req, "api", &candidates), Some(1), "the whole rest of the tag must be the zone");
        assert_eq!(b.pick(&in_zone("eu-west"), "api", &candidates), Some(0), "x-zone is no longer read");
    }

    #[test]
    fn no_candidates_is_no_pick() {
        assert_eq!(balancer("{}").pick(&in_zone("eu-west"), "api", &[]), None);
    }

    #[test]
    fn config_errors_are_reported_together() {
        let e = ZoneBalancer::configure(r#"{"zone_header": "x zone", "default_zone": " "}"#).err().unwrap_or_default();
        assert!(e.contains(r#"zone_header "x zone" is not a valid header name"#), "{e}");
        assert!(e.contains("default_zone is empty"), "{e}");
        assert!(ZoneBalancer::configure(r#"{"zone_header": ""}"#).is_err());
        let e = ZoneBalancer::configure(r#"{"zone": "eu-west"}"#).err().unwrap_or_default();
        assert!(e.contains("unknown field `zone`"), "{e}");
        assert!(ZoneBalancer::configure(r#"{"default_zone": 3}"#).is_err());
        assert!(ZoneBalancer::configure(r#"{"default_zone": null}"#).is_ok());
    }
}
