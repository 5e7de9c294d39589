//! What a plugin instance's store holds, and the host side of the WIT imports: the request and
//! response resources, and the `host` interface (log, metrics, clocks, random, key-value store).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pingora::http::ResponseHeader;
use wasmtime::component::Resource;

use super::bindings::{host, types};
use super::deadline::CallBudget;
use super::head::{self, RequestView};
use super::kv::KvStore;
use super::memo::{CallTrace, Edit, Question};
use super::stats::PluginStats;

/// The `request` resource. The store holds one current request, so every handle has rep 0.
pub struct RequestResource;
/// The `response` resource; like [`RequestResource`], always the store's current response.
pub struct ResponseResource;

/// State one plugin shares across all its instances: identity, stats, the key-value store and
/// the metrics the plugin reports through `host`.
#[derive(Debug)]
pub struct PluginShared {
    /// The plugin's name from the configuration (or the built-in's name).
    pub name: Arc<str>,
    /// Calls, traps, timeouts and time spent.
    pub stats: PluginStats,
    kv: KvStore,
    /// Counters the plugin reported with `counter-add`.
    pub counters: Mutex<HashMap<String, u64>>,
    /// (count, sum) of the observations the plugin reported with `histogram-record`.
    pub histograms: Mutex<HashMap<String, (u64, f64)>>,
}

impl PluginShared {
    /// Fresh shared state for the plugin `name`.
    pub fn new(name: &str) -> Self {
        PluginShared {
            name: Arc::from(name),
            stats: PluginStats::default(),
            kv: KvStore::default(),
            counters: Mutex::new(HashMap::new()),
            histograms: Mutex::new(HashMap::new()),
        }
    }
}

/// Caps an instance's linear memory and tables; remembers a refusal so the resulting trap is
/// reported as a memory breach rather than a generic trap.
#[derive(Debug)]
pub struct MemoryCap {
    pub max_bytes: usize,
    pub breached: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.breached = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one instance's store.
pub struct HostState {
    pub shared: Arc<PluginShared>,
    /// The request of the call in progress (a placeholder between calls).
    pub request: RequestView,
    /// The response of the call in progress (a placeholder between calls).
    pub response: ResponseHeader,
    pub memory: MemoryCap,
    /// The deadline of the call in progress.
    pub budget: CallBudget,
    /// What the call in progress read, when its decision may be remembered (see
    /// [`super::memo`]).
    pub trace: Option<CallTrace>,
    random_state: u64,
    started: Instant,
}

impl HostState {
    /// State for a new instance of the plugin described by `shared`.
    pub fn new(shared: Arc<PluginShared>, max_memory_bytes: usize, seed: u64) -> Self {
        HostState {
            shared,
            request: RequestView::default(),
            response: head::placeholder_response_head(),
            memory: MemoryCap { max_bytes: max_memory_bytes, breached: false },
            budget: CallBudget::new(std::time::Duration::ZERO),
            trace: None,
            random_state: seed,
            started: Instant::now(),
        }
    }

    /// Notes a question the plugin asked, when the call is traced.
    fn note(&mut self, question: impl FnOnce() -> Question) {
        if let Some(trace) = &mut self.trace {
            trace.read(question(), &self.request, Some(&self.response));
        }
    }

    /// Notes a change the plugin made, when the call is traced.
    fn note_edit(&mut self, edit: impl FnOnce() -> Edit) {
        if let Some(trace) = &mut self.trace {
            trace.edit(edit());
        }
    }

    /// Notes that the call did more than read and change the heads: its outcome is not
    /// remembered.
    fn acted(&mut self) {
        if let Some(trace) = &mut self.trace {
            trace.acted();
        }
    }
}

impl types::Host for HostState {}

impl types::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestResource>) -> String {
        self.note(|| Question::Method);
        self.request.method().to_string()
    }
    fn scheme(&mut self, _: Resource<RequestResource>) -> String {
        self.note(|| Question::Scheme);
        if self.request.https { "https" } else { "http" }.to_string()
    }
    fn host(&mut self, _: Resource<RequestResource>) -> String {
        self.note(|| Question::Host);
        self.request.host()
    }
    fn path(&mut self, _: Resource<RequestResource>) -> String {
        self.note(|| Question::Path);
        self.request.path().to_string()
    }
    fn query(&mut self, _: Resource<RequestResource>) -> Option<String> {
        self.note(|| Question::Query);
        self.request.query().map(str::to_string)
    }
    fn header(&mut self, _: Resource<RequestResource>, name: String) -> Option<String> {
        self.note(|| Question::Header(name.as_str().into()));
        self.request.header(&name)
    }
    fn header_all(&mut self, _: Resource<RequestResource>, name: String) -> Vec<String> {
        self.note(|| Question::HeaderAll(name.as_str().into()));
        self.request.header_all(&name)
    }
    fn header_names(&mut self, _: Resource<RequestResource>) -> Vec<String> {
        self.note(|| Question::HeaderNames);
        self.request.header_names()
    }
    fn client_ip(&mut self, _: Resource<RequestResource>) -> String {
        self.note(|| Question::ClientIp);
        self.request.client_ip.map(|ip| ip.to_string()).unwrap_or_default()
    }
    fn server_port(&mut self, _: Resource<RequestResource>) -> u16 {
        self.note(|| Question::ServerPort);
        self.request.server_port
    }
    fn set_header(&mut self, _: Resource<RequestResource>, name: String, value: String) -> Result<(), String> {
        self.note_edit(|| Edit::SetHeader(name.as_str().into(), value.as_str().into()));
        self.request.set_header(&name, &value)
    }
    fn append_header(&mut self, _: Resource<RequestResource>, name: String, value: String) -> Result<(), String> {
        self.note_edit(|| Edit::AppendHeader(name.as_str().into(), value.as_str().into()));
        self.request.append_header(&name, &value)
    }
    fn remove_header(&mut self, _: Resource<RequestResource>, name: String) -> Result<(), String> {
        self.note_edit(|| Edit::RemoveHeader(name.as_str().into()));
        self.request.remove_header(&name)
    }
    fn set_path_and_query(&mut self, _: Resource<RequestResource>, path_and_query: String) -> Result<(), String> {
        self.note_edit(|| Edit::SetPathAndQuery(path_and_query.as_str().into()));
        self.request.set_path_and_query(&path_and_query)
    }
    fn context(&mut self, _: Resource<RequestResource>, key: String) -> Option<String> {
        self.note(|| Question::Context(key.as_str().into()));
        self.request.context(&key).map(str::to_string)
    }
    fn set_context(&mut self, _: Resource<RequestResource>, key: String, value: String) {
        self.note_edit(|| Edit::SetContext(key.as_str().into(), value.as_str().into()));
        self.request.set_context(&key, &value)
    }
    fn drop(&mut self, _: Resource<RequestResource>) -> wasmtime::Result<()> {
        // Handles are borrows of the store's current request; nothing to free.
        Ok(())
    }
}

impl types::HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseResource>) -> u16 {
        self.note(|| Question::Status);
        self.response.status.as_u16()
    }
    fn set_status(&mut self, _: Resource<ResponseResource>, status: u16) -> Result<(), String> {
        self.note_edit(|| Edit::SetStatus(status));
        head::response::set_status(&mut self.response, status)
    }
    fn header(&mut self, _: Resource<ResponseResource>, name: String) -> Option<String> {
        self.note(|| Question::ResponseHeader(name.as_str().into()));
        head::response::header(&self.response, &name)
    }
    fn header_all(&mut self, _: Resource<ResponseResource>, name: String) -> Vec<String> {
        self.note(|| Question::ResponseHeaderAll(name.as_str().into()));
        head::response::header_all(&self.response, &name)
    }
    fn set_header(&mut self, _: Resource<ResponseResource>, name: String, value: String) -> Result<(), String> {
        self.note_edit(|| Edit::SetResponseHeader(name.as_str().into(), value.as_str().into()));
        head::response::set_header(&mut self.response, &name, &value)
    }
    fn append_header(&mut self, _: Resource<ResponseResource>, name: String, value: String) -> Result<(), String> {
        self.note_edit(|| Edit::AppendResponseHeader(name.as_str().into(), value.as_str().into()));
        head::response::append_header(&mut self.response, &name, &value)
    }
    fn remove_header(&mut self, _: Resource<ResponseResource>, name: String) -> Result<(), String> {
        self.note_edit(|| Edit::RemoveResponseHeader(name.as_str().into()));
        head::response::remove_header(&mut self.response, &name)
    }
    fn drop(&mut self, _: Resource<ResponseResource>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        self.acted();
        let plugin = &*self.shared.name;
        match level {
            types::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            types::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            types::LogLevel::Info => tracing::info!(plugin, "{message}"),
            types::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            types::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.acted();
        if let Ok(mut counters) = self.shared.counters.lock() {
            let slot = counters.entry(name).or_default();
            *slot = slot.saturating_add(delta);
        }
    }

    fn histogram_record(&mut self, name: String, value: f64) {
        self.acted();
        if let Ok(mut histograms) = self.shared.histograms.lock() {
            let slot = histograms.entry(name).or_default();
            slot.0 += 1;
            slot.1 += value;
        }
    }

    fn now_unix_ms(&mut self) -> u64 {
        self.acted();
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn monotonic_ns(&mut self) -> u64 {
        self.acted();
        self.started.elapsed().as_nanos() as u64
    }

    fn random_u64(&mut self) -> u64 {
        self.acted();
        // splitmix64: fast and good enough for balancing and sampling decisions.
        self.random_state = self.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn kv_get(&mut self, key: String) -> Option<String> {
        self.acted();
        self.shared.kv.get(&key)
    }

    fn kv_set(&mut self, key: String, value: String) -> Result<(), String> {
        self.acted();
        self.shared.kv.set(key, value)
    }

    fn kv_delete(&mut self, key: String) {
        self.acted();
        self.shared.kv.delete(&key)
    }

    fn kv_increment(&mut self, key: String, delta: i64) -> i64 {
        self.acted();
        self.shared.kv.increment(&key, delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::HostRequest;

    fn traced_state() -> HostState {
        let mut head = pingora::http::RequestHeader::build("GET", b"/a?b=1", None).unwrap_or_else(|e| panic!("{e}"));
        head.append_header("x-tenant", "acme").unwrap_or_else(|e| panic!("{e}"));
        let mut state = HostState::new(Arc::new(PluginShared::new("t")), 1 << 20, 1);
        state.request.head = Box::new(head);
        state.trace = Some(CallTrace::default());
        state
    }

    fn handle() -> Resource<RequestResource> {
        Resource::new_borrow(0)
    }

    #[test]
    fn questions_and_changes_are_noted_in_order_and_each_question_once() {
        let mut state = traced_state();
        assert_eq!(state.method(handle()), "GET");
        assert_eq!(state.header(handle(), "X-Tenant".into()).as_deref(), Some("acme"));
        assert_eq!(state.query(handle()).as_deref(), Some("b=1"));
        assert_eq!(state.method(handle()), "GET");
        assert_eq!(state.set_header(handle(), "x-b".into(), "2".into()), Ok(()));
        state.set_context(handle(), "k".into(), "v".into());
        let trace = state.trace.take().unwrap_or_default();
        assert!(!trace.has_acted());
        assert_eq!(trace.questions(), [&Question::Method, &Question::Header("X-Tenant".into()), &Question::Query]);
        assert_eq!(
            trace.edits(),
            [Edit::SetHeader("x-b".into(), "2".into()), Edit::SetContext("k".into(), "v".into())]
        );
    }

    #[test]
    fn host_services_mark_the_call_as_acting() {
        let acts: [fn(&mut HostState); 5] = [
            |s| {
                host::Host::now_unix_ms(s);
            },
            |s| host::Host::counter_add(s, "c".into(), 1),
            |s| {
                host::Host::random_u64(s);
            },
            |s| drop(host::Host::kv_get(s, "k".into())),
            |s| host::Host::log(s, types::LogLevel::Debug, "m".into()),
        ];
        for (i, act) in acts.iter().enumerate() {
            let mut state = traced_state();
            act(&mut state);
            assert!(state.trace.as_ref().is_some_and(|t| t.has_acted()), "act {i}");
        }
    }
}
