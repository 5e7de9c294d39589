//! A loaded plugin: its compiled component, the roles it exports, and a pool of configured
//! instances reused across requests.
//!
//! Compilation and role detection happen once per load. Instances are created on demand (at
//! most one per concurrently calling thread, since calls are synchronous), configured once, and
//! returned to the pool after each successful call. An instance whose call trapped, timed out or
//! breached its memory cap is dropped; the next call gets a fresh one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use pingora::http::ResponseHeader;
use wasmtime::component::InstancePre;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{balancer, request_filter, response_filter, router, split};
use super::compile_cache::CompileSource;
use super::deadline::{DeadlineExceeded, thread_cpu_time};
use super::engine::{MAX_PLUGIN_MEMORY_BYTES, PluginEngine};
use super::error::{FailurePolicy, PluginError, PluginFailure};
use super::head::RequestView;
use super::host_state::{HostState, PluginShared};
use super::memo::{CallTrace, Memo};
use super::roles::{FilterAction, RouteDecision};

/// The roles a component can export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Router,
    RequestFilter,
    ResponseFilter,
    Split,
    Balancer,
}

impl Role {
    /// Every role, in pipeline order.
    pub const ALL: [Role; 5] = [Role::RequestFilter, Role::Router, Role::Split, Role::Balancer, Role::ResponseFilter];

    /// The role's name in configuration files and the WIT (`request-filter` is `request_filter`
    /// in TOML).
    pub fn config_name(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::RequestFilter => "request_filter",
            Role::ResponseFilter => "response_filter",
            Role::Split => "split",
            Role::Balancer => "balancer",
        }
    }

    /// Parses a configuration name.
    pub fn from_config_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.config_name() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.config_name())
    }
}

/// How a plugin is run.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// The plugin's name, used in logs, metrics and errors.
    pub name: String,
    /// The JSON handed to every exported role's `configure`.
    pub config_json: String,
    /// What a request gets when the plugin fails.
    pub failure: FailurePolicy,
    /// The deadline of one call.
    pub timeout: Duration,
    /// The cap on the instance's linear memory.
    pub memory_limit_bytes: usize,
    /// How many idle instances to keep.
    pub pool_size: usize,
}

/// Time spent in a plugin is measured on one call in this many (see [`LoadedPlugin::call`]).
const TIMING_SAMPLE: u64 = 8;

/// The deadline for instantiating and configuring an instance: configuration may build tables.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
struct RoleIndices {
    router: Option<router::GuestIndices>,
    request_filter: Option<request_filter::GuestIndices>,
    response_filter: Option<response_filter::GuestIndices>,
    split: Option<split::GuestIndices>,
    balancer: Option<balancer::GuestIndices>,
}

/// One configured instance and its store.
pub(crate) struct PluginInstance {
    pub(crate) store: Store<HostState>,
    pub(crate) router: Option<router::Guest>,
    pub(crate) request_filter: Option<request_filter::Guest>,
    pub(crate) response_filter: Option<response_filter::Guest>,
    pub(crate) split: Option<split::Guest>,
    pub(crate) balancer: Option<balancer::Guest>,
}

/// A compiled, validated and configured plugin.
pub struct LoadedPlugin {
    engine: Arc<PluginEngine>,
    shared: Arc<PluginShared>,
    pre: InstancePre<HostState>,
    indices: RoleIndices,
    roles: Vec<Role>,
    settings: PluginSettings,
    sha256: String,
    compiled: CompileSource,
    idle: ArrayQueue<PluginInstance>,
    seeds: AtomicU64,
    /// Remembered outcomes, for a deterministic plugin.
    memos: Memos,
}

/// The remembered outcomes of a deterministic plugin, for each role it exports whose calls may
/// be remembered (see [`super::memo`]). Splits and balancers are always called: they exist to
/// spread requests, which takes random numbers, counters or live figures.
#[derive(Debug, Default)]
pub(crate) struct Memos {
    pub(crate) router: Option<Memo<Option<RouteDecision>>>,
    pub(crate) request_filter: Option<Memo<FilterAction>>,
    pub(crate) response_filter: Option<Memo<()>>,
}

impl Memos {
    fn for_roles(roles: &[Role]) -> Self {
        Memos {
            router: roles.contains(&Role::Router).then(Memo::default),
            request_filter: roles.contains(&Role::RequestFilter).then(Memo::default),
            response_filter: roles.contains(&Role::ResponseFilter).then(Memo::default),
        }
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.settings.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// The sha256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl LoadedPlugin {
    /// Compiles `bytes` (a component), detects its roles, and creates and configures a first
    /// instance, so that a plugin rejecting its configuration fails here and not on a request.
    pub fn load(engine: &Arc<PluginEngine>, bytes: &[u8], settings: PluginSettings) -> anyhow::Result<Arc<Self>> {
        Self::load_hashed(engine, bytes, sha256_hex(bytes), settings)
    }

    /// [`LoadedPlugin::load`] for a caller that already has the sha256 of `bytes`.
    pub fn load_hashed(
        engine: &Arc<PluginEngine>,
        bytes: &[u8],
        sha256: String,
        settings: PluginSettings,
    ) -> anyhow::Result<Arc<Self>> {
        if settings.memory_limit_bytes > MAX_PLUGIN_MEMORY_BYTES {
            anyhow::bail!("memory limit above the maximum of {} MiB", MAX_PLUGIN_MEMORY_BYTES >> 20);
        }
        if wasmparser_is_core_module(bytes) {
            anyhow::bail!("this is a core wasm module, not a component; convert it with switchyard-componentize");
        }
        engine.epoch.allow_for(settings.timeout);
        let (component, source) = engine
            .cache
            .component(&engine.engine, bytes, &sha256)
            .map_err(|e| anyhow::anyhow!("not a loadable component: {e}"))?;
        let pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("cannot link against switchyard:plugin: {e:#}"))?;
        let indices = RoleIndices {
            router: router::GuestIndices::new(&pre).ok(),
            request_filter: request_filter::GuestIndices::new(&pre).ok(),
            response_filter: response_filter::GuestIndices::new(&pre).ok(),
            split: split::GuestIndices::new(&pre).ok(),
            balancer: balancer::GuestIndices::new(&pre).ok(),
        };
        let roles: Vec<Role> = [
            (Role::Router, indices.router.is_some()),
            (Role::RequestFilter, indices.request_filter.is_some()),
            (Role::ResponseFilter, indices.response_filter.is_some()),
            (Role::Split, indices.split.is_some()),
            (Role::Balancer, indices.balancer.is_some()),
        ]
        .into_iter()
        .filter_map(|(role, present)| present.then_some(role))
        .collect();
        if roles.is_empty() {
            anyhow::bail!(
                "the component exports no switchyard:plugin role (router, request-filter, response-filter, split, balancer)"
            );
        }
        let memos = if declares_deterministic(bytes) { Memos::for_roles(&roles) } else { Memos::default() };
        let plugin = Arc::new(LoadedPlugin {
            engine: engine.clone(),
            shared: Arc::new(PluginShared::new(&settings.name)),
            pre,
            indices,
            roles,
            idle: ArrayQueue::new(settings.pool_size.max(1)),
            settings,
            sha256,
            compiled: source,
            seeds: AtomicU64::new(0x5EED),
            memos,
        });
        let first = plugin.instantiate()?;
        let _ = plugin.idle.push(first);
        Ok(plugin)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The roles the component exports.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// The sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Where its compiled code came from when it was loaded.
    pub fn compiled_from(&self) -> CompileSource {
        self.compiled
    }

    /// Whether this plugin runs the component `sha256` with `settings` exactly, so a new
    /// generation can keep it (with its instances and shared state) instead of loading it again.
    pub fn runs(&self, sha256: &str, settings: &PluginSettings) -> bool {
        self.sha256 == sha256 && self.settings == *settings
    }

    /// Whether the plugin's calls in `role` may be answered from memory: it declares itself
    /// deterministic and the role is a router or a filter.
    pub fn remembers(&self, role: Role) -> bool {
        match role {
            Role::Router => self.memos.router.is_some(),
            Role::RequestFilter => self.memos.request_filter.is_some(),
            Role::ResponseFilter => self.memos.response_filter.is_some(),
            Role::Split | Role::Balancer => false,
        }
    }

    /// The remembered outcomes, per role.
    pub(crate) fn memos(&self) -> &Memos {
        &self.memos
    }

    /// Counts an outcome given from the memo instead of a call.
    pub(crate) fn count_reused(&self, role: Role) {
        self.shared.stats.role(role).reused.fetch_add(1, Relaxed);
    }

    /// The plugin's failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.settings.failure
    }

    /// State shared by all instances (stats, metrics, key-value store).
    pub fn shared(&self) -> &Arc<PluginShared> {
        &self.shared
    }

    /// Creates and configures a new instance.
    fn instantiate(&self) -> anyhow::Result<PluginInstance> {
        let seed = self.seeds.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        let mut store = Store::new(
            &self.engine.engine,
            HostState::new(self.shared.clone(), self.settings.memory_limit_bytes, seed),
        );
        store.limiter(|state| &mut state.memory);
        let epoch = self.engine.epoch.clone();
        store.epoch_deadline_callback(move |mut store| {
            // Looked at every tick while it runs, so the ticker must not park under it.
            epoch.keep_ticking();
            if store.data_mut().budget.on_tick(thread_cpu_time(), epoch.tick()) {
                Ok(UpdateDeadline::Continue(1))
            } else {
                Err(DeadlineExceeded.into())
            }
        });
        store.data_mut().budget.start(CONFIGURE_TIMEOUT);
        store.set_epoch_deadline(1);
        self.engine.epoch.keep_ticking();
        self.shared.stats.instances_created.fetch_add(1, Relaxed);
        let instance = self.pre.instantiate(&mut store).map_err(|e| anyhow::anyhow!("instantiation failed: {e:#}"))?;
        let config = self.settings.config_json.as_str();
        let mut loaded = PluginInstance {
            router: None,
            request_filter: None,
            response_filter: None,
            split: None,
            balancer: None,
            store,
        };
        // Each exported role is configured with the same JSON; the first refusal wins.
        macro_rules! configure_role {
            ($field:ident, $role:expr) => {
                if let Some(indices) = &self.indices.$field {
                    let guest = indices.load(&mut loaded.store, &instance)?;
                    match guest.call_configure(&mut loaded.store, config) {
                        Ok(Ok(())) => {}
                        Ok(Err(message)) => {
                            anyhow::bail!("rejected its configuration ({}): {message}", $role)
                        }
                        Err(trap) => {
                            anyhow::bail!("trapped while configuring ({}): {trap:#}", $role)
                        }
                    }
                    loaded.$field = Some(guest);
                }
            };
        }
        configure_role!(router, Role::Router);
        configure_role!(request_filter, Role::RequestFilter);
        configure_role!(response_filter, Role::ResponseFilter);
        configure_role!(split, Role::Split);
        configure_role!(balancer, Role::Balancer);
        Ok(loaded)
    }

    fn failure(&self, kind: PluginFailure) -> PluginError {
        PluginError { plugin: self.shared.name.clone(), kind, policy: self.settings.failure }
    }

    /// Runs `call` on a pooled instance with `request` (and `response`, if given) moved into the
    /// instance's store for the duration, under the plugin's deadline. Both heads are moved back
    /// whatever happens. A failed call discards the instance and is counted.
    pub(crate) fn call<R>(
        &self,
        role: Role,
        request: &mut RequestView,
        response: Option<&mut ResponseHeader>,
        call: impl FnOnce(&mut PluginInstance) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.call_traced(role, request, response, None, call).map(|(value, _)| value)
    }

    /// [`LoadedPlugin::call`], noting what the call asks and changes in `trace` (when given),
    /// which is handed back with the answer.
    pub(crate) fn call_traced<R>(
        &self,
        role: Role,
        request: &mut RequestView,
        response: Option<&mut ResponseHeader>,
        trace: Option<CallTrace>,
        call: impl FnOnce(&mut PluginInstance) -> wasmtime::Result<R>,
    ) -> Result<(R, Option<CallTrace>), PluginError> {
        let mut instance = match self.idle.pop() {
            Some(instance) => instance,
            None => self.instantiate().map_err(|e| {
                self.shared.stats.role(role).traps.fetch_add(1, Relaxed);
                self.failure(PluginFailure::Unavailable(format!("{e:#}")))
            })?,
        };
        let stats = self.shared.stats.role(role);
        // Reading the clock costs as much as a tenth of a small call, so time spent is measured
        // on one call in TIMING_SAMPLE and scaled: exact in the long run, cheap per call.
        let timed = stats.calls.fetch_add(1, Relaxed).is_multiple_of(TIMING_SAMPLE);
        let started = timed.then(Instant::now);

        instance.store.data_mut().budget.start(self.settings.timeout);
        instance.store.set_epoch_deadline(1);
        self.engine.epoch.keep_ticking();
        std::mem::swap(&mut instance.store.data_mut().request, request);
        let mut response = response;
        if let Some(r) = response.as_deref_mut() {
            std::mem::swap(&mut instance.store.data_mut().response, r);
        }
        instance.store.data_mut().trace = trace;
        let result = call(&mut instance);
        let trace = instance.store.data_mut().trace.take();
        std::mem::swap(&mut instance.store.data_mut().request, request);
        if let Some(r) = response {
            std::mem::swap(&mut instance.store.data_mut().response, r);
        }
        if let Some(started) = started {
            stats.nanos.fetch_add(started.elapsed().as_nanos() as u64 * TIMING_SAMPLE, Relaxed);
        }

        match result {
            Ok(value) => {
                // A full pool means enough idle instances already; this one is dropped.
                let _ = self.idle.push(instance);
                Ok((value, trace))
            }
            Err(error) => {
                let kind = if instance.store.data().memory.breached {
                    stats.memory_breaches.fetch_add(1, Relaxed);
                    PluginFailure::MemoryLimit
                } else if error.downcast_ref::<DeadlineExceeded>().is_some() {
                    stats.timeouts.fetch_add(1, Relaxed);
                    PluginFailure::Timeout(self.settings.timeout)
                } else {
                    stats.traps.fetch_add(1, Relaxed);
                    PluginFailure::Trap(format!("{error:#}"))
                };
                Err(self.failure(kind))
            }
        }
    }

    /// Counts a call that returned an answer the host cannot use, as a trap.
    pub(crate) fn invalid_answer(&self, role: Role, message: String) -> PluginError {
        self.shared.stats.role(role).traps.fetch_add(1, Relaxed);
        self.failure(PluginFailure::InvalidAnswer(message))
    }
}

/// Whether the component (or a module inside it) carries the custom section by which a plugin
/// declares its decisions deterministic (the SDK's `declare_deterministic!`).
fn declares_deterministic(bytes: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(bytes).any(|payload| {
        matches!(payload, Ok(wasmparser::Payload::CustomSection(section))
            if section.name() == switchyard_sdk::DETERMINISTIC_SECTION)
    })
}

/// A core module's preamble has layer 0 in bytes 6..8; a component has layer 1.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0, 0]
}
