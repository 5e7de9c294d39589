//! The process's one `wasmtime::Engine` (epoch interruption, pooling allocator) with its linker,
//! its cache of compiled components, and the ticker thread that advances the epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::HostView;
use super::compile_cache::CompileCache;
use super::deadline::EpochTicker;
use super::host_state::HostState;

/// The largest linear memory any plugin may be configured with.
pub const MAX_PLUGIN_MEMORY_BYTES: usize = 256 << 20;

/// How many instances (of all plugins together) may be alive at once.
const MAX_LIVE_INSTANCES: u32 = 512;

/// The engine, linker and epoch ticker shared by every plugin in the process.
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    /// Compiled components by sha256, in memory and on disk.
    pub cache: CompileCache,
    /// How often the epoch advances (see [`super::deadline`]).
    pub(crate) epoch: EpochTicker,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// Builds the engine with the default compiled-component cache directory (see
    /// [`CompileCache::default_dir`]) and starts the epoch ticker.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Self::with_cache_dir(CompileCache::default_dir())
    }

    /// Builds the engine, keeping compiled components under `cache_dir` (`None`: in memory
    /// only), and starts the epoch ticker.
    pub fn with_cache_dir(cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        // For profiling plugins with `perf` (see the README): name the compiled code.
        if std::env::var_os("SWITCHYARD_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = match Engine::new(config.clone().allocation_strategy(pooled())) {
            Ok(engine) => engine,
            Err(pool_error) => {
                // The pool reserves its address space up front (terabytes of it, never touched);
                // a process limited by `ulimit -v`, or run under valgrind, cannot have it.
                tracing::warn!(
                    error = %format!("{pool_error:#}"),
                    "the plugin instance pool cannot reserve its address space; instances are allocated one by one instead (slower to create, same limits)"
                );
                Engine::new(&on_demand(config))
                    .map_err(|e| anyhow::anyhow!("{e:#} (after the instance pool failed: {pool_error:#})"))?
            }
        };
        let mut linker = Linker::new(&engine);
        HostView::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        let epoch = EpochTicker::default();
        let ticker_epoch = epoch.clone();
        let handle = std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || ticker_epoch.run(&ticker_stop, || ticker_engine.increment_epoch()))?;
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            cache: CompileCache::new(cache_dir),
            epoch,
            ticker: Some((stop, handle)),
        }))
    }
}

/// The pooling allocator: every instance's memory and tables are reserved once, at start, and
/// reused, which makes creating an instance cheap.
fn pooled() -> InstanceAllocationStrategy {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(MAX_LIVE_INSTANCES)
        .total_core_instances(MAX_LIVE_INSTANCES * 2)
        .total_memories(MAX_LIVE_INSTANCES)
        .total_tables(MAX_LIVE_INSTANCES * 2)
        .max_memory_size(MAX_PLUGIN_MEMORY_BYTES)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_core_instances_per_component(32);
    InstanceAllocationStrategy::Pooling(pooling)
}

/// `config` allocating each instance on its own, reserving no more address space for a linear
/// memory than the largest plugin memory allowed (compiled code then checks bounds itself
/// instead of relying on guard pages).
fn on_demand(mut config: Config) -> Config {
    config
        .allocation_strategy(InstanceAllocationStrategy::OnDemand)
        .memory_reservation(MAX_PLUGIN_MEMORY_BYTES as u64)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0);
    config
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            self.epoch.wake_to_stop();
            let _ = handle.join();
        }
    }
}
