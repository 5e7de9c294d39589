//! Self-upgrade: the running process starts its successor and hands it the listening sockets.
//!
//! Pingora's hand-off needs two processes: a new one started with `--upgrade`, which waits for
//! the sockets, and the running one, which sends them when it gets SIGQUIT. Started by hand,
//! the new process lives outside a service manager's control group, and systemd would kill it
//! with the old one. So the running process starts it itself (on SIGUSR2, `POST
//! /api/v1/upgrade` or `switchyard upgrade`):
//!
//! 1. it runs the binary found at the path it was started from (a replaced binary is the new
//!    version) as `run --config <same file> --upgrade`, with a pipe on fd 3;
//! 2. the new process loads its configuration (a broken one ends the upgrade here, and the
//!    running process keeps serving) and writes `ready` to the pipe;
//! 3. the running process sends itself SIGQUIT: Pingora hands the sockets over and the process
//!    drains as on SIGTERM. The new process tells systemd it is the main process now
//!    ([`super::systemd`]).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variable naming the fd on which a process started by [`Upgrader`] reports
/// that it loaded its configuration.
pub const READY_FD_ENV: &str = "SWITCHYARD_UPGRADE_READY_FD";

/// The fd the new process gets the pipe on.
const READY_FD: i32 = 3;

/// How long the new process may take to load its configuration (compiling plugins is slow).
const READY_WAIT: Duration = Duration::from_secs(300);

/// What a started upgrade did.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct UpgradeStarted {
    /// This process, which is handing its sockets over and will exit once drained.
    pub old_pid: u32,
    /// The process taking over.
    pub new_pid: u32,
}

/// Starts successors of this process (one at a time).
#[derive(Debug)]
pub struct Upgrader {
    exe: PathBuf,
    config: PathBuf,
    busy: Mutex<()>,
    handed_over: AtomicBool,
}

impl Upgrader {
    /// An upgrader that runs the binary at the path this process was started from, with the
    /// configuration file `config`.
    pub fn new(config: &Path) -> std::io::Result<Upgrader> {
        let exe = std::env::current_exe()?;
        let config = std::path::absolute(config)?;
        Ok(Upgrader { exe, config, busy: Mutex::new(()), handed_over: AtomicBool::new(false) })
    }

    /// Starts the new process and, once it has loaded its configuration, hands it the sockets.
    /// Blocks until then; `Err` (and this process serving on) when the new process fails.
    pub fn upgrade(&self, trigger: &str) -> Result<UpgradeStarted, String> {
        let Ok(_busy) = self.busy.try_lock() else {
            return Err("an upgrade is already in progress".to_string());
        };
        if self.handed_over.load(Ordering::Acquire) {
            return Err("this process has already handed its sockets to a new one".to_string());
        }
        tracing::info!(
            "upgrade ({trigger}): starting {} --config {} --upgrade",
            self.exe.display(),
            self.config.display()
        );
        let (mut reader, writer) = std::io::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let writer_fd = writer.as_raw_fd();
        let mut command = Command::new(&self.exe);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--upgrade")
            .args(crate::tls::plan::dev_mode().then_some("--dev"))
            .env(READY_FD_ENV, READY_FD.to_string())
            .stdin(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) are made.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                // dup2 gives fd 3 without close-on-exec; if the pipe already is fd 3, clear it.
                let result = if writer_fd == READY_FD {
                    libc::fcntl(READY_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(writer_fd, READY_FD)
                };
                if result < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
            });
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        // Only the child holds the write end now, so its exit reads as end of file.
        drop(writer);
        let new_pid = child.id();

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let _ = tx.send(reader.read(&mut buf).map(|n| buf[..n].starts_with(b"ready")));
        });
        let failure = match rx.recv_timeout(READY_WAIT) {
            Ok(Ok(true)) => None,
            Ok(Ok(false)) | Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                Some(format!("the new process (pid {new_pid}) exited before it was ready ({status}); its log says why"))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Some(format!(
                    "the new process (pid {new_pid}) was not ready after {} s; stopped it",
                    READY_WAIT.as_secs()
                ))
            }
        };
        if let Some(failure) = failure {
            tracing::error!("upgrade ({trigger}) failed, this process keeps serving: {failure}");
            return Err(failure);
        }
        // Reap the new process if it dies while this one still drains, and say so.
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                tracing::error!("the new process (pid {new_pid}) exited: {status}");
            }
        });
        self.handed_over.store(true, Ordering::Release);
        tracing::info!("upgrade ({trigger}): pid {new_pid} is ready; handing the listening sockets over");
        // SAFETY: kill(2) on this process with a valid signal; Pingora's main loop handles it.
        unsafe { libc::kill(libc::getpid(), libc::SIGQUIT) };
        Ok(UpgradeStarted { old_pid: std::process::id(), new_pid })
    }
}

/// In a process started by an [`Upgrader`]: tells it the configuration loaded, so it can hand
/// the sockets over. Does nothing in a process started otherwise.
pub fn tell_starter_ready() {
    let Some(fd) = std::env::var(READY_FD_ENV).ok().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    // The fd must be the pipe the starter left open: check it is a pipe before taking it over.
    // SAFETY: fstat on an integer fd only reads its metadata.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || (stat.st_mode & libc::S_IFMT) != libc::S_IFIFO {
        tracing::warn!("{READY_FD_ENV}={fd} is not an open pipe; not reporting readiness");
        return;
    }
    // SAFETY: the fd is an open pipe this process inherited for this purpose and nothing else
    // uses; the File owns and closes it.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = std::io::Write::write_all(&mut pipe, b"ready\n") {
        tracing::warn!("could not tell the starting process that this one is ready: {e}");
    }
}
