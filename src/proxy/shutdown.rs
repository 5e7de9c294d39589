//! Graceful shutdown. On SIGTERM (or SIGQUIT, after handing the listening sockets to a new
//! process) Pingora stops accepting, closes idle keep-alive connections and answers requests in
//! progress with `Connection: close`; it would then sleep for a fixed grace period. This exits
//! instead as soon as no request is in progress (WebSockets included), or when the serving
//! generation's `grace_period_s` has passed, whichever comes first.
//! Connections accepted just before the listener closed get [`HEAD_WAIT`] to deliver their
//! request first (see [`super::connection`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::server::ExecutionPhase;
use tokio::sync::broadcast;

use super::RequestCount;
use super::connection::HEAD_WAIT;
use crate::generation::Generation;

/// How often the requests in progress are counted while draining.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Writes this process's pid to `path` (atomically, so a reader never sees half of it).
pub fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&temp, path)
}

/// Removes the pid file if it still names this process (after an upgrade it names the new one).
fn remove_own_pid_file(path: &Path) {
    let ours = std::fs::read_to_string(path).is_ok_and(|s| s.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Starts the thread that ends the process once a graceful shutdown has drained.
pub fn exit_when_drained(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    requests: Arc<RequestCount>,
    current: Arc<ArcSwap<Generation>>,
    pid_file: Option<PathBuf>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("switchyard-drain".into()).spawn(move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        let grace = current.load().process.grace_period;
        let started = Instant::now();
        tracing::info!(
            "draining: {} request(s) in progress, waiting up to {} s for them to finish",
            requests.get(),
            grace.as_secs()
        );
        // Connections accepted last get their chance to send a request first (see HEAD_WAIT);
        // then two idle readings in a row, so a request between accept and count is seen.
        std::thread::sleep(HEAD_WAIT.min(grace));
        let mut idle_readings = 0;
        while idle_readings < 2 && started.elapsed() < grace {
            idle_readings = if requests.get() == 0 { idle_readings + 1 } else { 0 };
            std::thread::sleep(DRAIN_POLL);
        }
        let left = requests.get();
        if left == 0 {
            tracing::info!("drained after {:.1} s; exiting", started.elapsed().as_secs_f64());
        } else {
            tracing::warn!("grace period over with {left} request(s) still in progress; closing them and exiting");
        }
        if let Some(path) = &pid_file {
            remove_own_pid_file(path);
        }
        std::process::exit(0);
    })?;
    Ok(())
}
