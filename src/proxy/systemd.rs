//! Service-manager notifications (`sd_notify`), for a systemd unit with `Type=notify` and
//! `NotifyAccess=all`. Nothing is sent when `NOTIFY_SOCKET` is unset.
//!
//! | when                                   | sent                                         |
//! |----------------------------------------|----------------------------------------------|
//! | the listeners serve                    | `MAINPID=<this pid>`, `READY=1`              |
//! | a reload starts / ends                 | `RELOADING=1` + `MONOTONIC_USEC` / `READY=1` |
//! | SIGTERM: draining                      | `STOPPING=1`                                 |
//! | SIGQUIT: sockets go to a new process   | a status line only                           |
//!
//! `MAINPID` is what lets an upgrade work under systemd: the new process (started by the old
//! one, in the same control group) names itself the main process before the old one exits, so
//! systemd does not take the old one's exit for the service stopping. For the same reason the
//! old process does not send `STOPPING=1` when it hands its sockets over.

use sd_notify::NotifyState;
use tokio::sync::broadcast;

use pingora::server::ExecutionPhase;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// Starts the thread that follows the server's phases and tells the service manager.
pub fn notify_lifecycle(mut phases: broadcast::Receiver<ExecutionPhase>) -> std::io::Result<()> {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Ok(());
    }
    std::thread::Builder::new().name("switchyard-notify".into()).spawn(move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::Running) => send(&[
                    NotifyState::MainPid(std::process::id()),
                    NotifyState::Ready,
                    NotifyState::Status("serving"),
                ]),
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                    send(&[NotifyState::Status("handing the listening sockets to a new process, then draining")])
                }
                Ok(ExecutionPhase::GracefulTerminate) => {
                    send(&[NotifyState::Stopping, NotifyState::Status("draining requests in progress")])
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })?;
    Ok(())
}

/// A reload is starting.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!("cannot read the monotonic clock for the service manager: {e}"),
    }
}

/// A reload ended (applied or refused: either way the process serves).
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}
