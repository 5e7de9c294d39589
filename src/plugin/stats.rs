//! Per-plugin call counters, by role, updated on every call and read by metrics and the admin
//! API.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Role;

/// How often a plugin was called in one role and how those calls ended.
#[derive(Debug, Default)]
pub struct RoleStats {
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory_breaches: AtomicU64,
    /// Time spent in calls, estimated from a 1-in-8 sample of calls.
    pub nanos: AtomicU64,
    /// Decisions given again from the plugin's memo instead of calling it (see
    /// [`super::memo`]); not counted in `calls`.
    pub reused: AtomicU64,
}

/// A plugin's counters: per role (in [`Role::ALL`] order), and its instances.
#[derive(Debug, Default)]
pub struct PluginStats {
    roles: [RoleStats; Role::ALL.len()],
    pub instances_created: AtomicU64,
}

/// A point-in-time copy of [`RoleStats`] (or of their sum over roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PluginStatsSnapshot {
    pub calls: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_breaches: u64,
    pub nanos: u64,
    pub reused: u64,
    pub instances_created: u64,
}

impl PluginStats {
    /// The counters of calls in `role`.
    pub fn role(&self, role: Role) -> &RoleStats {
        let index = Role::ALL.iter().position(|r| *r == role).unwrap_or(0);
        &self.roles[index]
    }

    /// The counters of calls in `role`, read now.
    pub fn role_snapshot(&self, role: Role) -> PluginStatsSnapshot {
        let r = self.role(role);
        PluginStatsSnapshot {
            calls: r.calls.load(Relaxed),
            traps: r.traps.load(Relaxed),
            timeouts: r.timeouts.load(Relaxed),
            memory_breaches: r.memory_breaches.load(Relaxed),
            nanos: r.nanos.load(Relaxed),
            reused: r.reused.load(Relaxed),
            instances_created: 0,
        }
    }

    /// Every counter, summed over the roles.
    pub fn snapshot(&self) -> PluginStatsSnapshot {
        let mut total =
            PluginStatsSnapshot { instances_created: self.instances_created.load(Relaxed), ..Default::default() };
        for role in Role::ALL {
            let r = self.role_snapshot(role);
            total.calls += r.calls;
            total.traps += r.traps;
            total.timeouts += r.timeouts;
            total.memory_breaches += r.memory_breaches;
            total.nanos += r.nanos;
            total.reused += r.reused;
        }
        total
    }
}
