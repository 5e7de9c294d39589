//! SIGHUP reloads the configuration, on a thread of its own (Pingora's server loop owns
//! SIGTERM, SIGQUIT and SIGINT). Signals that arrive during a reload are coalesced into one more.
//! A process without a configuration file (the demo) logs that it has nothing to reload rather
//! than dying of the signal's default action.

use std::sync::Arc;

use super::reload::Reloader;

/// Starts the thread that reloads on SIGHUP.
pub fn reload_on_sighup(reloader: Option<Arc<Reloader>>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    // Registered before returning, so a SIGHUP sent right after start is not lost (or fatal).
    let mut hangup = {
        let _entered = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?
    };
    std::thread::Builder::new().name("switchyard-sighup".into()).spawn(move || {
        runtime.block_on(async move {
            while hangup.recv().await.is_some() {
                match &reloader {
                    // The outcome is logged (and counted) by the reloader.
                    Some(reloader) => drop(reloader.reload("SIGHUP")),
                    None => tracing::warn!("SIGHUP: this process has no configuration file to reload"),
                }
            }
        })
    })?;
    Ok(())
}
