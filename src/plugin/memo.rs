//! Remembered router decisions of deterministic plugins.
//!
//! A plugin that declares itself deterministic (the SDK's `declare_deterministic!`, a
//! `switchyard:deterministic` custom section) promises that a call's result depends only on its
//! configuration and on what it reads from the request through the host. So while a router
//! call runs, the host notes every read the plugin makes ([`Read`]: the method, a header, the
//! query…) with the value it got. The decision is remembered under the request's host and path
//! together with those reads. A later request with the same host and path, for which every
//! noted read gives the same value, gets the same decision without a call: the plugin, run on
//! it, would have read the same and answered the same.
//!
//! A call that does anything besides reading (changes the request, logs, counts, uses the clock,
//! random numbers or the key-value store) is never remembered. The memo is bounded: at most
//! [`MAX_VARIANTS`] remembered read sets per host and path, and [`MAX_ENTRIES`] in all; when
//! full, it starts over. Remembering costs a little (about 1 µs a call on a hot cache), so when
//! the memo filled up while most lookups missed (paths that rarely repeat, such as ones with an
//! id in them), it rests for [`REST_CALLS`] calls: the plugin is simply called. It belongs to
//! one loaded plugin, so a reload that changes the plugin or its configuration starts with an
//! empty one.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::head::RequestView;
use super::roles::RouteDecision;

/// The most decisions remembered per plugin; a full memo is emptied and starts over.
pub const MAX_ENTRIES: usize = 8192;

/// The most read sets remembered for one host and path (a router keyed on a header with many
/// values is called for the values beyond these).
pub const MAX_VARIANTS: usize = 16;

/// How many decisions are made by calls alone after the memo filled up while mostly missing.
pub const REST_CALLS: u64 = 1 << 16;

/// One thing a plugin read from the request during a call, and what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Method(String),
    Scheme(bool),
    Query(Option<String>),
    Header(String, Option<String>),
    HeaderAll(String, Vec<String>),
    HeaderNames(Vec<String>),
    ClientIp(Option<IpAddr>),
    ServerPort(u16),
    Context(String, Option<String>),
}

impl Read {
    /// Whether `request` gives the same answer now.
    fn holds_for(&self, request: &RequestView) -> bool {
        match self {
            Read::Method(m) => request.method() == m,
            Read::Scheme(https) => request.https == *https,
            Read::Query(q) => request.query() == q.as_deref(),
            Read::Header(name, value) => request.header_is(name, value.as_deref()),
            Read::HeaderAll(name, values) => request.header_all_are(name, values),
            Read::HeaderNames(names) => request.header_names_are(names),
            Read::ClientIp(ip) => request.client_ip == *ip,
            Read::ServerPort(port) => request.server_port == *port,
            Read::Context(key, value) => request.context(key) == value.as_deref(),
        }
    }
}

/// What the host noted during one call.
#[derive(Debug, Default)]
pub struct CallTrace {
    /// The reads, in order.
    pub reads: Vec<Read>,
    /// Whether the call did anything besides reading the request.
    pub acted: bool,
}

#[derive(Debug)]
struct Entry {
    host: Box<str>,
    path: Box<str>,
    reads: Box<[Read]>,
    decision: Option<RouteDecision>,
}

/// The remembered decisions of one router plugin.
#[derive(Debug, Default)]
pub struct DecisionMemo {
    entries: RwLock<HashMap<u64, Vec<Entry>>>,
    len: AtomicUsize,
    hasher: std::hash::RandomState,
    /// Lookups that found a decision, and decisions remembered, since the memo last started over.
    hits: AtomicU64,
    misses: AtomicU64,
    /// Decisions still to be left to calls alone before remembering again.
    resting: AtomicU64,
}

impl DecisionMemo {
    fn key(&self, host: &str, path: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        host.hash(&mut h);
        path.hash(&mut h);
        h.finish()
    }

    /// Whether the memo is in use for this decision; `false` while it rests (see the module's
    /// documentation), which counts one decision of the rest.
    pub fn active(&self) -> bool {
        let rest = self.resting.load(Relaxed);
        if rest == 0 {
            return true;
        }
        // Racing threads may count the same decision twice; the rest is only a rough length.
        self.resting.store(rest - 1, Relaxed);
        false
    }

    /// The remembered decision for `request` (whose host is `host`), if one holds: `Some(None)`
    /// is a remembered "no route".
    pub fn recall(&self, host: &str, request: &RequestView) -> Option<Option<RouteDecision>> {
        let path = request.path();
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let found = entries.get(&self.key(host, path)).and_then(|candidates| {
            candidates
                .iter()
                .find(|e| *e.host == *host && *e.path == *path && e.reads.iter().all(|r| r.holds_for(request)))
        });
        let decision = found.map(|e| e.decision.clone());
        if decision.is_some() {
            self.hits.fetch_add(1, Relaxed);
        }
        decision
    }

    /// Remembers `decision` for requests to `host` and `path` that read as `trace` says, unless
    /// the call did more than read.
    pub fn remember(&self, host: &str, path: &str, trace: CallTrace, decision: &Option<RouteDecision>) {
        if trace.acted {
            return;
        }
        self.misses.fetch_add(1, Relaxed);
        let key = self.key(host, path);
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.len.load(Relaxed) >= MAX_ENTRIES {
            entries.clear();
            self.len.store(0, Relaxed);
            let mostly_missed = self.hits.swap(0, Relaxed) < self.misses.swap(0, Relaxed);
            if mostly_missed {
                self.resting.store(REST_CALLS, Relaxed);
                return;
            }
        }
        let variants = entries.entry(key).or_default();
        if variants.len() >= MAX_VARIANTS {
            return;
        }
        let reads = trace.reads.into_boxed_slice();
        // Another thread may have remembered the same meanwhile.
        if variants.iter().any(|e| *e.host == *host && *e.path == *path && e.reads == reads) {
            return;
        }
        variants.push(Entry { host: host.into(), path: path.into(), reads, decision: decision.clone() });
        self.len.fetch_add(1, Relaxed);
    }

    /// How many decisions are remembered now.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestView {
        let mut head = RequestHeader::build(method, target.as_bytes(), None).unwrap_or_else(|e| panic!("{e}"));
        for (n, v) in headers {
            head.append_header(n.to_string(), *v).unwrap_or_else(|e| panic!("{e}"));
        }
        RequestView { head: Box::new(head), ..RequestView::default() }
    }

    fn decision(name: &str) -> Option<RouteDecision> {
        Some(RouteDecision { name: name.into(), upstream: "u".into(), rewrite: None })
    }

    fn reads(reads: Vec<Read>) -> CallTrace {
        CallTrace { reads, acted: false }
    }

    #[test]
    fn a_decision_is_given_again_only_when_every_read_holds() {
        let memo = DecisionMemo::default();
        let tenant = Read::Header("x-tenant".into(), Some("acme".into()));
        memo.remember("a.test", "/api", reads(vec![Read::Method("GET".into()), tenant]), &decision("acme"));

        let same = request("GET", "/api", &[("X-Tenant", "acme"), ("accept", "*/*")]);
        assert_eq!(memo.recall("a.test", &same), Some(decision("acme")));
        assert_eq!(memo.recall("b.test", &same), None, "another host");
        assert_eq!(memo.recall("a.test", &request("GET", "/api/x", &[("x-tenant", "acme")])), None, "another path");
        assert_eq!(memo.recall("a.test", &request("POST", "/api", &[("x-tenant", "acme")])), None, "another method");
        assert_eq!(memo.recall("a.test", &request("GET", "/api", &[("x-tenant", "other")])), None, "another tenant");
        assert_eq!(memo.recall("a.test", &request("GET", "/api", &[])), None, "no tenant");
    }

    #[test]
    fn no_route_is_remembered_too_and_the_query_is_a_read_like_any_other() {
        let memo = DecisionMemo::default();
        memo.remember("a.test", "/", reads(vec![Read::Query(Some("v=2".into()))]), &None);
        assert_eq!(memo.recall("a.test", &request("GET", "/?v=2", &[])), Some(None));
        assert_eq!(memo.recall("a.test", &request("GET", "/?v=3", &[])), None);
        assert_eq!(memo.recall("a.test", &request("GET", "/", &[])), None);
    }

    #[test]
    fn every_value_and_every_name_must_match_for_list_reads() {
        let req = request("GET", "/", &[("x-a", "1"), ("X-A", "2"), ("x-b", "3")]);
        let all = |values: &[&str]| Read::HeaderAll("x-a".into(), values.iter().map(|v| v.to_string()).collect());
        assert!(all(&["1", "2"]).holds_for(&req));
        assert!(!all(&["1"]).holds_for(&req));
        assert!(!all(&["1", "2", "3"]).holds_for(&req));
        assert!(!all(&["2", "1"]).holds_for(&req));
        assert!(Read::HeaderAll("x-none".into(), Vec::new()).holds_for(&req));
        let names = |names: &[&str]| Read::HeaderNames(names.iter().map(|n| n.to_string()).collect());
        assert!(names(&["x-a", "x-b"]).holds_for(&req));
        assert!(!names(&["x-a"]).holds_for(&req));
        assert!(!names(&["x-b", "x-a"]).holds_for(&req));
    }

    #[test]
    fn a_call_that_acted_is_not_remembered() {
        let memo = DecisionMemo::default();
        memo.remember("a.test", "/", CallTrace { reads: Vec::new(), acted: true }, &decision("x"));
        assert!(memo.is_empty());
        assert_eq!(memo.recall("a.test", &request("GET", "/", &[])), None);
    }

    #[test]
    fn variants_per_path_are_bounded_and_a_full_memo_starts_over() {
        let memo = DecisionMemo::default();
        for i in 0..MAX_VARIANTS + 5 {
            let read = Read::Header("x-tenant".into(), Some(format!("t{i}")));
            memo.remember("a.test", "/", reads(vec![read]), &decision(&format!("t{i}")));
        }
        assert_eq!(memo.len(), MAX_VARIANTS);
        for i in 0..MAX_ENTRIES {
            memo.remember("a.test", &format!("/{i}"), reads(Vec::new()), &decision("p"));
        }
        assert!(memo.len() < MAX_ENTRIES, "emptied when full: {}", memo.len());
    }

    #[test]
    fn a_memo_that_fills_up_while_mostly_missing_rests_then_tries_again() {
        let memo = DecisionMemo::default();
        assert!(memo.active());
        for i in 0..=MAX_ENTRIES {
            memo.remember("a.test", &format!("/{i}"), reads(Vec::new()), &decision("p"));
        }
        assert!(memo.is_empty(), "started over");
        let resting = (0..REST_CALLS).filter(|_| !memo.active()).count() as u64;
        assert_eq!(resting, REST_CALLS);
        assert!(memo.active(), "remembering again after the rest");
    }

    #[test]
    fn a_memo_that_fills_up_while_mostly_hitting_starts_over_without_resting() {
        let memo = DecisionMemo::default();
        for i in 0..MAX_ENTRIES {
            let path = format!("/{i}");
            memo.remember("a.test", &path, reads(Vec::new()), &decision("p"));
            for _ in 0..2 {
                assert_eq!(memo.recall("a.test", &request("GET", &path, &[])), Some(decision("p")));
            }
        }
        memo.remember("a.test", "/last", reads(Vec::new()), &decision("q"));
        assert!(memo.active());
        assert_eq!(memo.recall("a.test", &request("GET", "/last", &[])), Some(decision("q")));
    }
}
