//! `[server] watch = true`: reload when the configuration file or a plugin file it names
//! changes.
//!
//! The files are polled (size, modification time, inode) once a second rather than watched with
//! inotify: there are only a few, polling sees a file replaced by a rename (how editors and
//! deployment tools write) or a symlink swapped (how Kubernetes updates a ConfigMap) the same way
//! as an edit, and it needs no platform-specific code. A change is reloaded once it has been
//! stable for one poll, so a file caught mid-write is not read; a refused reload is not retried
//! until the files change again.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::reload::Reloader;

/// How often the files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a version of a file; `None` when it cannot be read.
type Stamp = Option<(u64, i64, i64, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<(PathBuf, Stamp)> {
    files
        .iter()
        .map(|f| {
            let stamp = std::fs::metadata(f).ok().map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()));
            (f.clone(), stamp)
        })
        .collect()
}

/// Starts the thread that polls the serving generation's files while its `watch` is on.
pub fn reload_on_change(reloader: Arc<Reloader>) -> std::io::Result<()> {
    // The version last loaded (or refused), taken before returning: the thread may first run
    // after the listeners serve, and a change made by then must not become the starting point.
    let mut settled = stamps(&reloader.current().watched_files);
    std::thread::Builder::new().name("switchyard-watch".into()).spawn(move || {
        // A candidate waiting to be stable.
        let mut pending: Option<Vec<(PathBuf, Stamp)>> = None;
        loop {
            std::thread::sleep(POLL_INTERVAL);
            let generation = reloader.current();
            if !generation.process.watch {
                settled = stamps(&generation.watched_files);
                pending = None;
                continue;
            }
            let now = stamps(&generation.watched_files);
            if now == settled {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            let changed: Vec<String> = now
                .iter()
                .filter(|(file, stamp)| !settled.iter().any(|(f, s)| f == file && s == stamp))
                .map(|(file, _)| file.display().to_string())
                .collect();
            tracing::info!("watch: {} changed", changed.join(", "));
            // The outcome is logged by the reloader. Either way this version of the files is
            // settled: a refused one is not retried until the files change again.
            let _ = reloader.reload("file change");
            let files = reloader.current().watched_files.clone();
            settled = if files == generation.watched_files { now } else { stamps(&files) };
            pending = None;
        }
    })?;
    Ok(())
}
