//! Per-plugin call counters, updated on every call and read by metrics and the admin API.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How often a plugin was called and how those calls ended.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory_breaches: AtomicU64,
    /// Time spent in calls, estimated from a 1-in-8 sample of calls.
    pub nanos: AtomicU64,
    pub instances_created: AtomicU64,
}

/// A point-in-time copy of [`PluginStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PluginStatsSnapshot {
    pub calls: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_breaches: u64,
    pub nanos: u64,
    pub instances_created: u64,
}

impl PluginStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> PluginStatsSnapshot {
        PluginStatsSnapshot {
            calls: self.calls.load(Relaxed),
            traps: self.traps.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            memory_breaches: self.memory_breaches.load(Relaxed),
            nanos: self.nanos.load(Relaxed),
            instances_created: self.instances_created.load(Relaxed),
        }
    }
}
