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
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        // For profiling plugins with `perf` (see the README): name the compiled code.
        if std::env::var_os("SWITCHYARD_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
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

impl Drop for PluginEngine {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            self.epoch.wake_to_stop();
            let _ = handle.join();
        }
    }
}
