//! Reloading: build the next generation from the configuration file, off the request path, and
//! swap it in whole — or refuse it and leave the running one untouched.
//!
//! Every trigger (SIGHUP, `POST /api/v1/reload`, a watched file changing) goes through
//! [`Reloader::reload`], one reload at a time. Plugins the new configuration runs unchanged are
//! taken over from the running generation; changed ones are compiled (or found in the compiled
//! cache). Requests keep the generation they started with, so a request is never served by half
//! of one configuration and half of another.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::metrics::{Metrics, unix_now};
use crate::config::Diagnostics;
use crate::generation::{self, Generation};
use crate::plugin::PluginEngine;
use crate::proxy::systemd;

/// What an applied reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadOutcome {
    /// The number of the generation now serving.
    pub generation: u64,
    /// Trigger to swap.
    pub took_ms: f64,
    /// Plugins taken over unchanged.
    pub reused: Vec<String>,
    /// Plugins loaded, each with where its compiled code came from (`compiled`, `disk`, `memory`).
    pub loaded: Vec<(String, String)>,
    /// Changed settings that only a restart applies (they keep their running values).
    pub restart_needed: Vec<String>,
}

/// Why a reload was refused: every problem found, at file:line:col where it has one.
#[derive(Debug, Clone)]
pub struct ReloadRefused(pub Diagnostics);

impl std::fmt::Display for ReloadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Builds and swaps generations for one configuration file.
pub struct Reloader {
    config_path: PathBuf,
    engine: Arc<PluginEngine>,
    current: Arc<ArcSwap<Generation>>,
    metrics: Arc<Metrics>,
    /// Held for a whole reload, and holds the number of the serving generation.
    serving: Mutex<u64>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").field("config_path", &self.config_path).finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the process serving `current` (generation 1) from `config_path`.
    pub fn new(
        config_path: &Path,
        engine: Arc<PluginEngine>,
        current: Arc<ArcSwap<Generation>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.generation.set(1);
        metrics.last_reload_success.set(unix_now());
        Reloader { config_path: config_path.to_path_buf(), engine, current, metrics, serving: Mutex::new(1) }
    }

    /// The configuration file reloads read.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The generation serving now.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The number of the generation serving now.
    pub fn generation_number(&self) -> u64 {
        self.serving.lock().map_or(0, |n| *n)
    }

    /// Reads the configuration file again and, if all of it is valid and every plugin loads and
    /// accepts its configuration, makes it the serving generation. `trigger` names the cause in
    /// the log. Blocks while plugins compile; call it off the request path.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ReloadRefused> {
        systemd::reloading();
        let result = self.build_and_swap(trigger);
        systemd::reloaded(if result.is_ok() { "serving (reloaded)" } else { "serving (the last reload was refused)" });
        result
    }

    fn build_and_swap(&self, trigger: &str) -> Result<ReloadOutcome, ReloadRefused> {
        let started = Instant::now();
        let mut serving = self.serving.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let running = self.current.load_full();
        let built = generation::load_next(&self.config_path, &self.engine, Some(&running));
        let took = started.elapsed();
        self.metrics.reload_seconds.observe(took.as_secs_f64());
        let mut next = match built {
            Ok(next) => next,
            Err(problems) => {
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                tracing::error!(
                    "reload ({trigger}) refused; generation {} keeps serving. {} problem(s):\n{problems}",
                    *serving,
                    problems.0.len()
                );
                return Err(ReloadRefused(problems));
            }
        };
        let restart_needed: Vec<String> =
            running.process.restart_needed(&next.process).into_iter().map(String::from).collect();
        running.process.carry_restart_only(&mut next.process);
        // Only the compiled code the new generation runs stays in memory (the disk keeps all).
        let keep: std::collections::HashSet<&str> = next.plugins.iter().map(|p| p.sha256()).collect();
        self.engine.cache.retain(&keep);
        let report = next.report.clone();
        self.current.store(Arc::new(next));
        *serving += 1;
        self.metrics.reloads.with_label_values(&["success"]).inc();
        self.metrics.generation.set(i64::try_from(*serving).unwrap_or(i64::MAX));
        self.metrics.last_reload_success.set(unix_now());
        let outcome = ReloadOutcome {
            generation: *serving,
            took_ms: duration_ms(started.elapsed()),
            reused: report.reused,
            loaded: report.loaded.into_iter().map(|(name, from)| (name, format!("{from:?}").to_lowercase())).collect(),
            restart_needed,
        };
        tracing::info!(
            "reload ({trigger}): generation {} serving after {:.1} ms; plugins reused: {}, loaded: {}",
            outcome.generation,
            outcome.took_ms,
            outcome.reused.len(),
            outcome.loaded.len()
        );
        if !outcome.restart_needed.is_empty() {
            tracing::warn!(
                "reload ({trigger}): {} changed but only take effect after a restart or an upgrade (`switchyard run --upgrade`); the rest of the reload applied",
                outcome.restart_needed.join(", ")
            );
        }
        Ok(outcome)
    }
}

fn duration_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
