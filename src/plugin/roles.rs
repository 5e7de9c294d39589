//! The five plugin roles as plain Rust traits: the proxy core depends on these, never on
//! wasmtime. [`WasmPlugin`] implements them over a loaded component; tests may implement them
//! natively.

use std::sync::Arc;

use pingora::http::ResponseHeader;
use wasmtime::component::Resource;

use super::bindings::types;
use super::error::PluginError;
use super::head::RequestView;
use super::instance::PluginInstance;
use super::instance::{LoadedPlugin, Role};
use super::memo::{CallTrace, Memo, Question};

/// Where a router sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    /// The route's name, for per-route settings, logs and metrics.
    pub name: String,
    /// The upstream to proxy to.
    pub upstream: String,
    /// A replacement path-and-query, if the route rewrites it.
    pub rewrite: Option<String>,
}

/// A reply the proxy sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A request filter's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterAction {
    /// Go on.
    Continue,
    /// Answer with this and stop.
    Respond(LocalResponse),
}

/// A split's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitChoice {
    /// Only backends with this tag.
    Tag(String),
    /// Another upstream.
    Upstream(String),
}

/// A backend offered to a balancer, with live figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: u64,
    pub weight: u32,
    pub in_flight: u32,
    pub latency_us: u32,
    pub failures: u32,
    /// Shared with the backend: offering a candidate does not copy its tags.
    pub tags: Arc<[String]>,
}

/// Maps a request to a route. Called once per request, after the global request filters.
pub trait RouterRole: Send + Sync {
    /// The route, or `None` when nothing matches (404).
    fn route(&self, req: &mut RequestView) -> Result<Option<RouteDecision>, PluginError>;
}

/// Sees a request before it is proxied; may change it or answer it.
pub trait RequestFilterRole: Send + Sync {
    /// `Continue`, or a reply that ends the request.
    fn on_request(&self, req: &mut RequestView) -> Result<FilterAction, PluginError>;
}

/// Sees the response head on its way to the client; may change it.
pub trait ResponseFilterRole: Send + Sync {
    /// Called once per response.
    fn on_response(&self, req: &mut RequestView, resp: &mut ResponseHeader) -> Result<(), PluginError>;
}

/// Puts a request into a variant.
pub trait SplitRole: Send + Sync {
    /// The variant, or `None` to leave the request as it is.
    fn choose(&self, req: &mut RequestView, upstream: &str) -> Result<Option<SplitChoice>, PluginError>;
}

/// Picks a backend among the candidates.
pub trait BalancerRole: Send + Sync {
    /// An index into `candidates` (never empty); always in range when `Ok`.
    fn pick(&self, req: &mut RequestView, upstream: &str, candidates: &[Candidate]) -> Result<usize, PluginError>;
}

/// A loaded component seen through the role traits.
#[derive(Debug, Clone)]
pub struct WasmPlugin(pub Arc<LoadedPlugin>);

fn missing_role(role: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!("the component does not export the {role} role"))
}

fn request_handle() -> Resource<types::Request> {
    Resource::new_borrow(0)
}

impl WasmPlugin {
    /// Answers a call from `memo` when the plugin's questions lead to a remembered outcome
    /// (making its changes to the heads again); otherwise calls the plugin, noting what it asks
    /// and changes, and remembers the outcome (see [`super::memo`]). `given` are the questions
    /// the call's arguments answer. Without a memo (or while it rests), just calls.
    fn remembered<O: Clone>(
        &self,
        role: Role,
        memo: Option<&Memo<O>>,
        req: &mut RequestView,
        resp: Option<&mut ResponseHeader>,
        given: &[Question],
        call: impl FnOnce(&mut PluginInstance) -> wasmtime::Result<O>,
    ) -> Result<O, PluginError> {
        let Some(memo) = memo.filter(|m| m.active()) else {
            return self.0.call(role, req, resp, call);
        };
        if let Some(found) = memo.recall(req, resp.as_deref()) {
            found.replay(req, resp);
            self.0.count_reused(role);
            return Ok(found.value.clone());
        }
        let mut trace = CallTrace::default();
        for question in given {
            trace.read(question.clone(), req, resp.as_deref());
        }
        let (value, trace) = self.0.call_traced(role, req, resp, Some(trace), call)?;
        if let Some(trace) = trace {
            memo.remember(trace, &value);
        }
        Ok(value)
    }
}

impl RouterRole for WasmPlugin {
    /// A deterministic plugin's decision is first looked for in its memo; a call's decision is
    /// remembered with what the call read (see [`super::memo`]).
    fn route(&self, req: &mut RequestView) -> Result<Option<RouteDecision>, PluginError> {
        let memo = self.0.memos().router.as_ref();
        // The call is given the host and the path: both are answers it depends on.
        self.remembered(Role::Router, memo, req, None, &[Question::Host, Question::Path], |i| {
            let guest = i.router.as_ref().ok_or_else(|| missing_role("router"))?;
            let state = i.store.data_mut();
            let (host, path) = (state.request.host(), state.request.path().to_string());
            let decision = guest.call_route(&mut i.store, request_handle(), &host, &path)?;
            Ok(decision.map(|d| RouteDecision { name: d.name, upstream: d.upstream, rewrite: d.rewrite }))
        })
    }
}

impl RequestFilterRole for WasmPlugin {
    fn on_request(&self, req: &mut RequestView) -> Result<FilterAction, PluginError> {
        let memo = self.0.memos().request_filter.as_ref();
        self.remembered(Role::RequestFilter, memo, req, None, &[], |i| {
            let guest = i.request_filter.as_ref().ok_or_else(|| missing_role("request-filter"))?;
            Ok(match guest.call_on_request(&mut i.store, request_handle())? {
                types::FilterAction::Continue => FilterAction::Continue,
                types::FilterAction::Respond(r) => FilterAction::Respond(LocalResponse {
                    status: r.status,
                    headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                    body: r.body,
                }),
            })
        })
    }
}

impl ResponseFilterRole for WasmPlugin {
    fn on_response(&self, req: &mut RequestView, resp: &mut ResponseHeader) -> Result<(), PluginError> {
        let memo = self.0.memos().response_filter.as_ref();
        self.remembered(Role::ResponseFilter, memo, req, Some(resp), &[], |i| {
            let guest = i.response_filter.as_ref().ok_or_else(|| missing_role("response-filter"))?;
            guest.call_on_response(&mut i.store, request_handle(), Resource::new_borrow(0))
        })
    }
}

impl SplitRole for WasmPlugin {
    fn choose(&self, req: &mut RequestView, upstream: &str) -> Result<Option<SplitChoice>, PluginError> {
        let choice = self.0.call(Role::Split, req, None, |i| {
            let guest = i.split.as_ref().ok_or_else(|| missing_role("split"))?;
            guest.call_choose(&mut i.store, request_handle(), upstream)
        })?;
        Ok(choice.map(|c| match c {
            types::SplitChoice::Tag(t) => SplitChoice::Tag(t),
            types::SplitChoice::Upstream(u) => SplitChoice::Upstream(u),
        }))
    }
}

impl BalancerRole for WasmPlugin {
    fn pick(&self, req: &mut RequestView, upstream: &str, candidates: &[Candidate]) -> Result<usize, PluginError> {
        let offered: Vec<types::Candidate> = candidates
            .iter()
            .map(|c| types::Candidate {
                key: c.key,
                weight: c.weight,
                in_flight: c.in_flight,
                latency_us: c.latency_us,
                failures: c.failures,
                tags: c.tags.to_vec(),
            })
            .collect();
        let pick = self.0.call(Role::Balancer, req, None, |i| {
            let guest = i.balancer.as_ref().ok_or_else(|| missing_role("balancer"))?;
            guest.call_pick(&mut i.store, request_handle(), upstream, &offered)
        })?;
        match pick {
            Some(index) if (index as usize) < candidates.len() => Ok(index as usize),
            Some(index) => Err(self
                .0
                .invalid_answer(Role::Balancer, format!("picked index {index} of {} candidates", candidates.len()))),
            None => Err(self.0.invalid_answer(Role::Balancer, "picked no backend".to_string())),
        }
    }
}
