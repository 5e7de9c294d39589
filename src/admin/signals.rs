//! The signals the management side handles, on a thread of its own (Pingora's server loop owns
//! SIGTERM, SIGQUIT and SIGINT):
//!
//! - SIGHUP reloads the configuration;
//! - SIGUSR2 upgrades: starts the binary again and hands it the listening sockets
//!   ([`crate::proxy::upgrade`]).
//!
//! Signals that arrive while one is being handled are coalesced into one more. A process
//! without a configuration file (the demo) logs that it has nothing to reload or upgrade rather
//! than dying of the signal's default action.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use super::reload::Reloader;
use crate::proxy::upgrade::Upgrader;

/// Starts the thread that reloads on SIGHUP and upgrades on SIGUSR2.
pub fn handle_signals(reloader: Option<Arc<Reloader>>, upgrader: Option<Arc<Upgrader>>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    // Registered before returning, so a signal sent right after start is not lost (or fatal).
    let (mut hangup, mut user2) = {
        let _entered = runtime.enter();
        (signal(SignalKind::hangup())?, signal(SignalKind::user_defined2())?)
    };
    std::thread::Builder::new().name("switchyard-signals".into()).spawn(move || {
        runtime.block_on(async move {
            loop {
                tokio::select! {
                    Some(()) = hangup.recv() => match &reloader {
                        // The outcome is logged (and counted) by the reloader.
                        Some(reloader) => drop(reloader.reload("SIGHUP")),
                        None => tracing::warn!("SIGHUP: this process has no configuration file to reload"),
                    },
                    Some(()) = user2.recv() => match &upgrader {
                        // The outcome is logged by the upgrader.
                        Some(upgrader) => drop(upgrader.upgrade("SIGUSR2")),
                        None => tracing::warn!("SIGUSR2: this process has no configuration file to upgrade with"),
                    },
                    else => break,
                }
            }
        })
    })?;
    Ok(())
}
