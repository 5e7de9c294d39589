//! The WebAssembly plugin runtime: one engine, components compiled once per load, pooled
//! instances under a deadline and a memory cap, and the role traits the proxy calls.

mod bindings;
mod builtin;
mod compile_cache;
mod deadline;
mod engine;
mod error;
mod head;
mod host_state;
mod instance;
mod kv;
mod memo;
mod roles;
mod stats;

pub use builtin::{BUILTIN_COMPONENTS, BUILTIN_PLUGINS, Builtin, builtin_names, builtin_plugin};
pub use compile_cache::{CACHE_DIR_ENV, CompileCache, CompileSource};
pub use engine::{MAX_PLUGIN_MEMORY_BYTES, PluginEngine};
pub use error::{FailurePolicy, PluginError, PluginFailure};
pub use head::{RequestView, checked_response_header};
pub use host_state::PluginShared;
pub use instance::{LoadedPlugin, PluginSettings, Role, sha256_hex};
pub use memo::Memo;
pub use roles::{
    BalancerRole, Candidate, FilterAction, LocalResponse, RequestFilterRole, ResponseFilterRole, RouteDecision,
    RouterRole, SplitChoice, SplitRole, WasmPlugin,
};
pub use stats::{PluginStats, PluginStatsSnapshot};
