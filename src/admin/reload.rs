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

use super::edit::EditError;
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
        let next = self.built_or_refused(built, started, trigger, *serving)?;
        Ok(self.install(next, &running, &mut serving, started, trigger))
    }

    /// Counts a build's outcome; the generation, or why it was refused.
    fn built_or_refused(
        &self,
        built: Result<Generation, Diagnostics>,
        started: Instant,
        trigger: &str,
        serving: u64,
    ) -> Result<Generation, ReloadRefused> {
        self.metrics.reload_seconds.observe(started.elapsed().as_secs_f64());
        built.map_err(|problems| {
            self.metrics.reloads.with_label_values(&["failure"]).inc();
            tracing::error!(
                "reload ({trigger}) refused; generation {serving} keeps serving. {} problem(s):\n{problems}",
                problems.0.len()
            );
            ReloadRefused(problems)
        })
    }

    /// Makes `next` the serving generation.
    fn install(
        &self,
        mut next: Generation,
        running: &Generation,
        serving: &mut u64,
        started: Instant,
        trigger: &str,
    ) -> ReloadOutcome {
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
        outcome
    }

    /// Changes the running configuration: `edit` changes the running text's TOML document, the
    /// result is built as a reload would build it and, only if all of it is valid, written to the
    /// configuration file (atomically: a crash leaves the old file or the new one) and swapped
    /// in. `if_match`, when given, must be the running configuration's [`etag`] (a guard against
    /// concurrent edits). Refused when the file was changed by hand since it was loaded, so an
    /// edit never overwrites what the operator wrote.
    pub fn apply_edit<T>(
        &self,
        trigger: &str,
        if_match: Option<&str>,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<T, EditError>,
    ) -> Result<(T, ReloadOutcome), EditFailure> {
        let started = Instant::now();
        let mut serving = self.serving.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let running = self.current.load_full();
        let current_tag = etag(&running.source_text);
        if let Some(expected) = if_match
            && expected.trim() != "*"
            && !expected.split(',').any(|t| t.trim().trim_start_matches("W/") == current_tag)
        {
            return Err(EditFailure::Stale(current_tag));
        }
        let on_disk = std::fs::read_to_string(&self.config_path)
            .map_err(|e| EditFailure::Write(format!("cannot read {}: {e}", self.config_path.display())))?;
        if on_disk != *running.source_text {
            return Err(EditFailure::FileChanged);
        }
        let mut document: toml_edit::DocumentMut = on_disk
            .parse()
            .map_err(|e| EditFailure::Write(format!("the running configuration does not parse: {e}")))?;
        let value = edit(&mut document).map_err(EditFailure::Edit)?;
        let text = document.to_string();
        systemd::reloading();
        let built = generation::load_text_next(&self.config_path, &text, &self.engine, Some(&running));
        let next = match self.built_or_refused(built, started, trigger, *serving) {
            Ok(next) => next,
            Err(refused) => {
                systemd::reloaded("serving (the last change was refused)");
                return Err(EditFailure::Refused(refused));
            }
        };
        if let Err(e) = write_atomically(&self.config_path, &text) {
            self.metrics.reloads.with_label_values(&["failure"]).inc();
            systemd::reloaded("serving (the last change could not be saved)");
            return Err(EditFailure::Write(format!("cannot save {}: {e}", self.config_path.display())));
        }
        let outcome = self.install(next, &running, &mut serving, started, trigger);
        systemd::reloaded("serving (changed through the admin API)");
        Ok((value, outcome))
    }
}

/// Why [`Reloader::apply_edit`] changed nothing.
#[derive(Debug)]
pub enum EditFailure {
    /// `If-Match` named another version; the running one's ETag.
    Stale(String),
    /// The file differs from the running configuration (edited by hand, not reloaded).
    FileChanged,
    /// The edit itself could not be made.
    Edit(EditError),
    /// The edited configuration is not valid.
    Refused(ReloadRefused),
    /// The file could not be read or written.
    Write(String),
}

/// The ETag of a configuration text: a quoted prefix of its sha256.
pub fn etag(text: &str) -> String {
    format!("\"{}\"", &crate::plugin::sha256_hex(text.as_bytes())[..16])
}

/// Replaces `path`'s contents with `text` atomically, keeping the file's permissions. A symbolic
/// link is followed, so the file it points to is replaced.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = std::fs::canonicalize(path)?;
    let mode = std::fs::metadata(&target)?.permissions().mode() & 0o7777;
    crate::files::replace_atomically(&target, text.as_bytes(), mode)
}

fn duration_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
