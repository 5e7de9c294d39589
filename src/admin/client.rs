//! The other end of `switchyard reload` and `switchyard upgrade`: finds the running process from
//! its configuration file and asks it to reload or upgrade — through its admin listener when
//! `[admin] listen` is set (the outcome comes back), else with SIGHUP or SIGUSR2 to the pid in
//! `[server] pid_file` (a reload's outcome is in its log; an upgrade is seen in the pid file).
//!
//! The file is read leniently (just those two keys), because the usual reason to reload is a
//! changed file, and a broken one should be reported by the running process, which keeps
//! serving, rather than stop the command from reaching it. The request is written by hand: one
//! HTTP/1.1 POST to our own loopback listener does not justify an HTTP client in the binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a reload or an upgrade may take before the command gives up waiting (compiling
/// plugins is slow).
const RELOAD_WAIT: Duration = Duration::from_secs(300);

/// Where the running process can be reached.
#[derive(Debug, PartialEq)]
struct Location {
    admin: Option<SocketAddr>,
    pid_file: Option<PathBuf>,
    /// The admin API's bearer token, as the running process reads it.
    token: Option<String>,
}

fn locate(config: &Path) -> Result<Location, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: cannot read: {e}", config.display()))?;
    let table: Option<toml::Table> = toml::from_str(&text).ok();
    let key = |section: &str, key: &str| match &table {
        Some(table) => table.get(section)?.get(key)?.as_str().map(str::to_string),
        None => scan_for_key(&text, section, key),
    };
    let admin = match key("admin", "listen") {
        Some(a) => Some(a.parse().map_err(|_| format!("{}: admin.listen `{a}` is not ip:port", config.display()))?),
        None => None,
    };
    let base = config.parent().unwrap_or(Path::new("."));
    let token = match (key("admin", "token_file"), key("admin", "token_env")) {
        (Some(file), _) => std::fs::read_to_string(base.join(&file))
            .map_err(|e| format!("{}: cannot read the admin token file {file}: {e}", config.display()))
            .map(|text| super::auth::token_in_file(&text).map(str::to_string))?,
        (None, env) => std::env::var(env.as_deref().unwrap_or(crate::config::model::DEFAULT_ADMIN_TOKEN_ENV)).ok(),
    };
    let token = token.filter(|t| !t.is_empty());
    Ok(Location { admin, pid_file: key("server", "pid_file").map(|p| base.join(p)), token })
}

/// `key = "value"` under `[section]`, found line by line in a file that is not valid TOML
/// (an edit in progress elsewhere in the file must not hide where the process is).
fn scan_for_key(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            let v = v.split('#').next().unwrap_or("").trim();
            return v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).map(str::to_string);
        }
    }
    None
}

/// Asks the process running `config` to reload; returns what to print, or why it failed
/// (including a refused reload's problems).
pub fn reload_running(config: &Path) -> Result<String, String> {
    let location = locate(config)?;
    if let Some(addr) = location.admin {
        let json = post(addr, "/api/v1/reload", location.token.as_deref())?;
        return Ok(describe_outcome(&json["reload"]));
    }
    if let Some(pid_file) = location.pid_file {
        let pid = signal(&pid_file, libc::SIGHUP)?;
        return Ok(format!("sent SIGHUP to pid {pid}; the outcome is in its log"));
    }
    Err(format!(
        "{}: set [admin] listen (to get the outcome back) or [server] pid_file so `switchyard reload` can find the running process, or send it SIGHUP yourself",
        config.display()
    ))
}

/// Asks the process running `config` to upgrade (start its binary again and hand the new
/// process its sockets); returns what to print once the new process took over, or why not.
pub fn upgrade_running(config: &Path) -> Result<String, String> {
    let location = locate(config)?;
    let started = if let Some(addr) = location.admin {
        let json = post(addr, "/api/v1/upgrade", location.token.as_deref())?;
        (json["old_pid"].as_u64().unwrap_or(0), json["new_pid"].as_u64().unwrap_or(0))
    } else if let Some(pid_file) = location.pid_file {
        let old = signal(&pid_file, libc::SIGUSR2)?;
        (u64::try_from(old).unwrap_or(0), wait_for_new_pid(&pid_file, old)? as u64)
    } else {
        return Err(format!(
            "{}: set [admin] listen or [server] pid_file so `switchyard upgrade` can find the running process, or send it SIGUSR2 yourself",
            config.display()
        ));
    };
    Ok(format!(
        "upgraded: pid {} took over the listening sockets; pid {} finishes the requests it has and exits",
        started.1, started.0
    ))
}

fn read_pid(pid_file: &Path) -> Result<libc::pid_t, String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read the pid file {}: {e}", pid_file.display()))?;
    text.trim().parse().map_err(|_| format!("the pid file {} does not hold a pid", pid_file.display()))
}

/// Sends `signal` to the pid in `pid_file`; that pid.
fn signal(pid_file: &Path, signal: libc::c_int) -> Result<libc::pid_t, String> {
    let pid = read_pid(pid_file)?;
    // SAFETY: kill(2) with a pid read from the file and a valid signal number.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(format!("cannot signal pid {pid}: {}", std::io::Error::last_os_error()));
    }
    Ok(pid)
}

/// Waits for the pid file to name a process other than `old` (the new process writes it once
/// it holds the sockets).
fn wait_for_new_pid(pid_file: &Path, old: libc::pid_t) -> Result<libc::pid_t, String> {
    let started = std::time::Instant::now();
    while started.elapsed() < RELOAD_WAIT {
        if let Ok(pid) = read_pid(pid_file)
            && pid != old
        {
            return Ok(pid);
        }
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        if unsafe { libc::kill(old, 0) } != 0 {
            return Err(format!("pid {old} exited and no new process wrote {}", pid_file.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no new process took over within {} s (the pid file {} still names {old}); the log of pid {old} says why",
        RELOAD_WAIT.as_secs(),
        pid_file.display()
    ))
}

/// POSTs an empty body to the admin API at `addr`; the JSON answer when it is 200, else its
/// message.
fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    let unreachable = |e: std::io::Error| format!("cannot reach the admin API at {addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
    stream.set_read_timeout(Some(RELOAD_WAIT)).map_err(unreachable)?;
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unreachable)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match status {
        200 => Ok(json),
        _ => Err(json["message"]
            .as_str()
            .map_or_else(|| format!("the admin API at {addr} answered {status}: {body}"), |m| m.to_string())),
    }
}

fn names(list: &serde_json::Value) -> String {
    let names: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| match v {
                    serde_json::Value::Array(pair) => format!(
                        "{} ({})",
                        pair.first().and_then(|n| n.as_str()).unwrap_or("?"),
                        pair.get(1).and_then(|n| n.as_str()).unwrap_or("?")
                    ),
                    other => other.as_str().unwrap_or("?").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

fn describe_outcome(outcome: &serde_json::Value) -> String {
    let mut text = format!(
        "reloaded: generation {} serving after {} ms\n  plugins reused: {}\n  plugins loaded: {}",
        outcome["generation"],
        outcome["took_ms"],
        names(&outcome["reused"]),
        names(&outcome["loaded"])
    );
    let restart = names(&outcome["restart_needed"]);
    if restart != "none" {
        text.push_str(&format!("\n  needs a restart (or `run --upgrade`) to apply: {restart}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_located_from_a_file_that_does_not_validate() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("c.toml");
        let text =
            "[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_file = \"t\"\n[server]\npid_file = \"run/s.pid\"\nbogus = 1\n";
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("t"), "0123456789abcdef-token\n").unwrap_or_else(|e| panic!("{e}"));
        let found = locate(&file);
        let expected = Location {
            admin: Some("127.0.0.1:9901".parse().unwrap_or_else(|e| panic!("{e}"))),
            pid_file: Some(dir.path().join("run/s.pid")),
            token: Some("0123456789abcdef-token".to_string()),
        };
        assert_eq!(found, Ok(expected));
        // A syntax error elsewhere does not hide the admin listener.
        std::fs::write(&file, "[server]\nlisten = [\n[admin]\nlisten = \"127.0.0.1:9902\" # here\n[[upstream\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let found = locate(&file).map(|l| l.admin);
        assert_eq!(found, Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9902)))));
    }
}
