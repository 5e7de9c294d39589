//! The process lifecycle, tested on the real binary: reloads under load (plugin hot-swap and
//! route changes), refused reloads, SIGHUP, file watching, settings that need a restart,
//! graceful shutdown on SIGTERM, graceful upgrade by socket hand-off, and self-upgrade under a
//! service manager (systemd's notification protocol, played by the test).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{fixture, origin, slow_origin};

/// A port that was free a moment ago (for listeners that must keep their address across
/// processes; everything else binds port 0).
fn free_port() -> SocketAddr {
    common::closed_port()
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let temp = path.with_extension("writing");
    std::fs::write(&temp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", temp.display()));
    std::fs::rename(&temp, path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A `switchyard run` child process, killed when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(config: &Path, extra: &[&str]) -> Running {
        Running::start_with_env(config, extra, &[])
    }

    fn start_with_env(config: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Running {
        let dir = config.parent().unwrap_or(Path::new("."));
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!("switchyard-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("SWITCHYARD_PLUGIN_CACHE", Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"))
            .env("SWITCHYARD_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        Running { child, log }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child with a valid signal number.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill: {}", std::io::Error::last_os_error());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `addr` answers `GET path` with 200 (the process is up), for up to a minute:
/// a first start compiles the built-in plugins.
async fn wait_ready(addr: SocketAddr, path: &str, running: &Running) {
    let client = common::client();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(format!("http://{addr}{path}")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("switchyard did not come up on {addr}; its log:\n{}", running.log());
}

/// `POST /api/v1/reload`: the status and the JSON answer.
async fn reload_via_api(admin: SocketAddr) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap_or_else(|e| panic!("{e}"));
    let resp = client
        .post(format!("http://{admin}/api/v1/reload"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("reload request: {e}"));
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or_else(|e| panic!("reload answer: {e}"));
    (status, body)
}

/// `switchyard reload --config <config>`: success, stdout, stderr.
fn reload_via_cli(config: &Path) -> (bool, String, String) {
    command_via_cli("reload", config)
}

/// `switchyard upgrade --config <config>`: success, stdout, stderr.
fn upgrade_via_cli(config: &Path) -> (bool, String, String) {
    command_via_cli("upgrade", config)
}

/// `switchyard <command> --config <config>`: success, stdout, stderr.
fn command_via_cli(command: &str, config: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg(command)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("switchyard {command}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What one request under load got.
#[derive(Debug, Clone)]
struct Seen {
    versions: Vec<String>,
    backend: String,
}

/// Clients sending `GET /` to `addr` in a loop until stopped, recording every answer and every
/// failure (an error or a status other than 200).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<(Vec<Seen>, Vec<String>)>,
}

impl Load {
    /// `clients` loops; `fresh_connections` opens a new connection per request (otherwise each
    /// client keeps its connections alive).
    fn start(addr: SocketAddr, clients: usize, fresh_connections: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let stop = stop.clone();
            let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
            if fresh_connections {
                builder = builder.pool_max_idle_per_host(0);
            }
            let client = builder.build().unwrap_or_else(|e| panic!("{e}"));
            tasks.spawn(async move {
                let (mut seen, mut failed) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.get(format!("http://{addr}/")).send().await {
                        Ok(r) if r.status() == 200 => {
                            let versions = r
                                .headers()
                                .get_all("x-plugin-version")
                                .iter()
                                .map(|v| v.to_str().unwrap_or("?").to_string())
                                .collect();
                            let backend =
                                r.headers().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                            match r.bytes().await {
                                Ok(_) => seen.push(Seen { versions, backend }),
                                Err(e) => failed.push(format!("body: {e}")),
                            }
                        }
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (seen, failed)
            });
        }
        Load { stop, tasks }
    }

    async fn finish(mut self) -> (Vec<Seen>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut seen, mut failed) = (Vec::new(), Vec::new());
        while let Some(r) = self.tasks.join_next().await {
            let (s, f) = r.unwrap_or_else(|e| panic!("{e}"));
            seen.extend(s);
            failed.extend(f);
        }
        (seen, failed)
    }
}

/// A configuration: a proxy on `listen`, `/` routed to upstream `route_to` (`one` or `two`), the
/// `tagger` plugin (tagger.wasm next to the file) on every response, plus `extra` TOML.
fn config(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    one: SocketAddr,
    two: SocketAddr,
    route_to: &str,
    extra: &str,
) -> String {
    let admin = admin.map_or_else(String::new, |a| format!("[admin]\nlisten = \"{a}\"\n"));
    format!(
        r#"[server]
listen = ["{listen}"]
threads = 2
response_filters = ["tagger"]
{extra}
{admin}
[[upstream]]
name = "one"
backends = [{{ address = "{one}" }}]

[[upstream]]
name = "two"
backends = [{{ address = "{two}" }}]

[[site]]
hosts = ["*"]
[[site.route]]
path_prefix = "/"
upstream = "{route_to}"

[[plugin]]
name = "tagger"
path = "tagger.wasm"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_reloads_under_load_swap_plugins_and_routes_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (origin("backend-a").await, origin("backend-b").await);
    let (listen, admin) = (free_port(), free_port());
    let path = dir.path().join("switchyard.toml");
    let (v1, v2) = (read(&fixture("tagger-v1")), read(&fixture("tagger-v2")));
    // Version 1 of the plugin goes with the route to backend-a, version 2 with backend-b: a
    // response mixing the two would have been served by half of one configuration.
    let version_a = config(listen, Some(admin), a.addr, b.addr, "one", "");
    let version_b = config(listen, Some(admin), a.addr, b.addr, "two", "");
    write_atomically(&dir.path().join("tagger.wasm"), &v1);
    write_atomically(&path, version_a.as_bytes());
    let running = Running::start(&path, &[]);
    wait_ready(listen, "/", &running).await;

    let load = Load::start(listen, 4, false);
    let mut reused_tagger = 0;
    for i in 0..100 {
        let (plugin, text) = if i % 2 == 0 { (&v2, &version_b) } else { (&v1, &version_a) };
        write_atomically(&dir.path().join("tagger.wasm"), plugin);
        write_atomically(&path, text.as_bytes());
        let (status, answer) = reload_via_api(admin).await;
        assert_eq!(status, 200, "reload {i}: {answer}");
        assert_eq!(answer["reload"]["generation"], i + 2, "{answer}");
        let reused: Vec<&str> = answer["reload"]["reused"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        // The plugin file changed, so the tagger is loaded again; the built-ins are taken over.
        assert!(reused.contains(&"headers") && reused.contains(&"round-robin"), "{answer}");
        reused_tagger += usize::from(reused.contains(&"tagger"));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (seen, failed) = load.finish().await;

    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}; log:\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        running.log()
    );
    assert_eq!(reused_tagger, 0, "a changed plugin file must be loaded again");
    let mut by_version = std::collections::HashMap::new();
    for s in &seen {
        assert_eq!(s.versions.len(), 1, "every response is tagged by exactly one version: {s:?}");
        let expected_backend = if s.versions[0] == "v1" { "backend-a" } else { "backend-b" };
        assert_eq!(s.backend, expected_backend, "plugin and routes from different generations: {s:?}");
        *by_version.entry(s.versions[0].clone()).or_insert(0) += 1;
    }
    assert!(
        by_version.get("v1").copied().unwrap_or(0) > 0 && by_version.get("v2").copied().unwrap_or(0) > 0,
        "{by_version:?}"
    );
    assert!(seen.len() >= 200, "only {} requests completed under load", seen.len());
    println!("{} requests, 0 failed, by version: {by_version:?}", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_reloads_name_their_problem_and_leave_the_running_generation_serving() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (origin("backend-a").await, origin("backend-b").await);
    let (listen, admin) = (free_port(), free_port());
    let path = dir.path().join("switchyard.toml");
    let (v1, v2) = (read(&fixture("tagger-v1")), read(&fixture("tagger-v2")));
    let pinned = format!("sha256 = \"{}\"\n", switchyard::plugin::sha256_hex(&v1));
    let good = config(listen, Some(admin), a.addr, b.addr, "one", "") + &pinned;
    write_atomically(&dir.path().join("tagger.wasm"), &v1);
    write_atomically(&path, good.as_bytes());
    std::fs::copy(fixture("chaos"), dir.path().join("chaos.wasm")).unwrap_or_else(|e| panic!("{e}"));
    let running = Running::start(&path, &[]);
    wait_ready(listen, "/", &running).await;
    let load = Load::start(listen, 3, false);

    // 1. A syntax error: refused with its place, by the API and by `switchyard reload`.
    let broken = config(listen, Some(admin), a.addr, b.addr, "two", "") + &pinned + "[[upstream\n";
    write_atomically(&path, broken.as_bytes());
    let (status, answer) = reload_via_api(admin).await;
    assert_eq!(status, 422, "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(message.contains("switchyard.toml:") && answer["problems"][0]["line"].as_u64() > Some(0), "{answer}");
    let (ok, _, stderr) = reload_via_cli(&path);
    assert!(!ok && stderr.contains("switchyard.toml:") && stderr.contains("refused"), "{stderr}");

    // 2. A plugin whose sha256 is not the pinned one.
    write_atomically(&path, (config(listen, Some(admin), a.addr, b.addr, "two", "") + &pinned).as_bytes());
    write_atomically(&dir.path().join("tagger.wasm"), &v2);
    let (status, answer) = reload_via_api(admin).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["message"].as_str().unwrap_or_default().contains("sha256 mismatch"), "{answer}");

    // 3. A plugin that rejects its configuration.
    write_atomically(&dir.path().join("tagger.wasm"), &v1);
    let picky =
        "\n[[plugin]]\nname = \"picky\"\npath = \"chaos.wasm\"\nconfig = { reject = \"not with this config\" }\n";
    let text = config(listen, Some(admin), a.addr, b.addr, "two", "") + &pinned + picky;
    write_atomically(&path, text.as_bytes());
    let (status, answer) = reload_via_api(admin).await;
    assert_eq!(status, 422, "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(message.contains("picky") && message.contains("not with this config"), "{answer}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (seen, failed) = load.finish().await;
    assert!(failed.is_empty(), "{} failed requests: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!((s.versions.as_slice(), s.backend.as_str()), (&["v1".to_string()][..], "backend-a"), "{s:?}");
    }
    let metrics = common::client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(metrics.contains("switchyard_reloads_total{result=\"failure\"} 4"), "{metrics}");
    assert!(metrics.contains("switchyard_reloads_total{result=\"success\"} 0"), "{metrics}");
    assert!(metrics.contains("switchyard_generation 1"), "{metrics}");
}

/// Polls `GET /` on `addr` until `x-backend` is `backend` (true) or `limit` passes (false).
async fn answers_from(addr: SocketAddr, backend: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if common::get(addr, "x", "/").await.backend.as_deref() == Some(backend) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watching_sighup_and_settings_that_need_a_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (origin("backend-a").await, origin("backend-b").await);
    let listen = free_port();
    let path = dir.path().join("switchyard.toml");
    write_atomically(&dir.path().join("tagger.wasm"), &read(&fixture("tagger-v1")));
    let lifecycle = "pid_file = \"switchyard.pid\"\n";
    let watched = |route: &str, extra: &str| {
        config(listen, None, a.addr, b.addr, route, &format!("{lifecycle}watch = true\n{extra}"))
    };
    write_atomically(&path, watched("one", "").as_bytes());
    let running = Running::start(&path, &[]);
    wait_ready(listen, "/", &running).await;
    let pid_file = dir.path().join("switchyard.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
    assert_eq!(pid.trim(), running.pid().to_string());

    // A watched change applies by itself. (Each failure message ends with the step, after the
    // log, so a truncated report still says which one failed.)
    write_atomically(&path, watched("two", "").as_bytes());
    assert!(
        answers_from(listen, "backend-b", Duration::from_secs(10)).await,
        "{}\nthe watched change was not reloaded",
        running.log()
    );

    // A new plugin file is a change too.
    write_atomically(&dir.path().join("tagger.wasm"), &read(&fixture("tagger-v2")));
    let start = Instant::now();
    while common::get(listen, "x", "/").await.headers.get("x-plugin-version").is_none_or(|v| v != "v2") {
        assert!(start.elapsed() < Duration::from_secs(10), "{}\nthe plugin change was not reloaded", running.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The listener cannot move without a restart: the reload applies the rest and says so (the
    // warning follows the swap, so it may land just after the first answer from backend-a).
    let moved = config(free_port(), None, a.addr, b.addr, "one", &format!("{lifecycle}watch = false\n"));
    write_atomically(&path, moved.as_bytes());
    assert!(
        answers_from(listen, "backend-a", Duration::from_secs(10)).await,
        "{}\nthe moved listener's reload did not apply the rest",
        running.log()
    );
    let warning = "server.listen changed but only take effect after a restart";
    let start = Instant::now();
    while !running.log().contains(warning) {
        assert!(start.elapsed() < Duration::from_secs(5), "{}\nno restart warning", running.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Watching is now off: a change waits for SIGHUP, sent by `switchyard reload` via the pid file.
    let unwatched = config(free_port(), None, a.addr, b.addr, "two", &format!("{lifecycle}watch = false\n"));
    write_atomically(&path, unwatched.as_bytes());
    assert!(
        !answers_from(listen, "backend-b", Duration::from_millis(2500)).await,
        "{}\nreloaded with watch off",
        running.log()
    );
    let (ok, stdout, stderr) = reload_via_cli(&path);
    assert!(ok && stdout.contains("sent SIGHUP"), "{stdout}{stderr}");
    assert!(
        answers_from(listen, "backend-b", Duration::from_secs(10)).await,
        "{}\nSIGHUP did not reload",
        running.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_twenty_slow_requests_finish_and_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let slow = slow_origin("slow", Duration::from_millis(2500)).await;
    let (listen, admin) = (free_port(), free_port());
    let path = dir.path().join("switchyard.toml");
    write_atomically(&dir.path().join("tagger.wasm"), &read(&fixture("tagger-v1")));
    write_atomically(&path, config(listen, Some(admin), slow, slow, "one", "grace_period_s = 20\n").as_bytes());
    let mut running = Running::start(&path, &[]);
    wait_ready(admin, "/api/v1/health", &running).await;

    let client = common::client();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let req = client.get(format!("http://{listen}/"));
        requests.spawn(async move {
            let status = req.send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
            (status, Instant::now())
        });
    }
    // All twenty reached the proxy.
    let start = Instant::now();
    loop {
        let health: serde_json::Value = common::client()
            .get(format!("http://{admin}/api/v1/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        if health["requests_in_progress"] == 20 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    running.signal(libc::SIGTERM);
    // New connections are refused (while the twenty are still in progress, checked below).
    let mut refused_at = None;
    while signalled.elapsed() < Duration::from_secs(2) {
        if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
            refused_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_at = refused_at.unwrap_or_else(|| panic!("a new connection was accepted 2 s after SIGTERM"));
    while let Some(r) = requests.join_next().await {
        let (status, finished) = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, Ok(200), "{}", running.log());
        assert!(finished > refused_at, "a request finished before new connections were refused");
    }
    // The process leaves once they are done, long before the 20 s grace period.
    let status = running.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}", running.log());
    assert!(signalled.elapsed() < Duration::from_secs(8), "took {:?}", signalled.elapsed());
}

/// What the upgrade tests start from: tagger v1 and a configuration (admin listener, upgrade
/// socket and pid file in the directory) routing to `one`.
struct UpgradeSetup {
    dir: tempfile::TempDir,
    _origins: (switchyard::demo::EchoOrigin, switchyard::demo::EchoOrigin),
    listen: SocketAddr,
    admin: SocketAddr,
    path: PathBuf,
    text: String,
}

impl UpgradeSetup {
    async fn new() -> UpgradeSetup {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (origin("backend-a").await, origin("backend-b").await);
        let (listen, admin) = (free_port(), free_port());
        let path = dir.path().join("switchyard.toml");
        write_atomically(&dir.path().join("tagger.wasm"), &read(&fixture("tagger-v1")));
        let extra = "upgrade_socket = \"upgrade.sock\"\npid_file = \"switchyard.pid\"\n";
        let text = config(listen, Some(admin), a.addr, b.addr, "one", extra);
        write_atomically(&path, text.as_bytes());
        UpgradeSetup { dir, _origins: (a, b), listen, admin, path, text }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_upgrade_under_load_refuses_no_connection_and_fails_no_request() {
    let setup = UpgradeSetup::new().await;
    let (dir, listen, admin, path) = (&setup.dir, setup.listen, setup.admin, &setup.path);
    let mut old = Running::start(path, &[]);
    wait_ready(listen, "/", &old).await;

    // A new connection per request, so every request needs the listening socket.
    let load = Load::start(listen, 3, true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = Running::start(path, &["--upgrade"]);
    // The new process waits for the sockets; the old one hands them over on SIGQUIT.
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal(libc::SIGQUIT);
    let status = old.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "old process: {status:?}\n{}", old.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (seen, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}\nold:\n{}\nnew:\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        old.log(),
        new.log()
    );
    assert!(seen.len() > 100, "only {} requests", seen.len());
    // The new process serves, through the same sockets (the admin listener too), and owns the pid file.
    assert_eq!(common::get(listen, "x", "/").await.status, 200);
    let health = common::client().get(format!("http://{admin}/api/v1/health")).send().await;
    assert!(health.is_ok_and(|r| r.status() == 200));
    let pid = std::fs::read_to_string(dir.path().join("switchyard.pid")).unwrap_or_default();
    assert_eq!(pid.trim(), new.pid().to_string());
    println!("{} requests across the upgrade, 0 failed", seen.len());
}

/// The service manager's side of `sd_notify`: a datagram socket collecting what the service
/// says (one string per datagram).
struct NotifySocket {
    path: PathBuf,
    received: Arc<std::sync::Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let socket =
            std::os::unix::net::UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(text);
            }
        });
        NotifySocket { path, received }
    }

    fn messages(&self) -> Vec<String> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to `limit` for a message containing every line in `lines`; the index of it.
    fn wait_for(&self, lines: &[&str], limit: Duration) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let found = self.messages().iter().position(|m| lines.iter().all(|l| m.lines().any(|x| x == *l)));
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A process this test did not start itself (the one an upgrade started), killed when dropped.
struct Adopted(i32);

impl Drop for Adopted {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a valid signal; the pid is the upgraded process.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists (a zombie still does: read its state).
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_self_upgrade_under_a_service_manager_hands_over_the_main_pid_and_fails_no_request() {
    let setup = UpgradeSetup::new().await;
    let (dir, listen, path, good) = (&setup.dir, setup.listen, &setup.path, &setup.text);
    let notify = NotifySocket::bind(dir.path().join("notify.sock"));
    let mut old = Running::start_with_env(path, &[], &[("NOTIFY_SOCKET", &notify.path)]);
    wait_ready(listen, "/", &old).await;
    let main_pid = format!("MAINPID={}", old.pid());
    assert!(notify.wait_for(&[&main_pid, "READY=1"], Duration::from_secs(10)).is_some(), "{:?}", notify.messages());
    let load = Load::start(listen, 3, true);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. The new process cannot load its configuration: the upgrade fails, saying so, and the
    //    running process keeps serving (and stays the main process).
    write_atomically(path, (good.clone() + "[[upstream\n").as_bytes());
    let (ok, _, stderr) = upgrade_via_cli(path);
    assert!(!ok && stderr.contains("keeps serving") && stderr.contains("exited before it was ready"), "{stderr}");
    assert!(old.log().contains("switchyard.toml:"), "the new process's error is in the log:\n{}", old.log());
    assert!(pid_alive(old.pid()));

    // 2. SIGUSR2 (what `systemctl kill -s USR2 --kill-whom=main` sends), with a new plugin
    //    version to tell the processes apart: the new process names itself the main process
    //    before the old one exits, and the old one never says it is stopping.
    write_atomically(path, good.as_bytes());
    write_atomically(&dir.path().join("tagger.wasm"), &read(&fixture("tagger-v2")));
    let before = notify.messages().len();
    old.signal(libc::SIGUSR2);
    let status = old.wait_exit(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "old process: {status:?}\n{}", old.log());
    let new_pid: i32 = std::fs::read_to_string(dir.path().join("switchyard.pid"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("pid file: {e}\n{}", old.log()));
    let _new = Adopted(new_pid);
    assert_ne!(new_pid, old.pid());
    let new_main = format!("MAINPID={new_pid}");
    let at = notify.wait_for(&[&new_main, "READY=1"], Duration::from_secs(5));
    assert!(at.is_some_and(|i| i >= before), "{:?}", notify.messages());
    assert!(!notify.messages().iter().any(|m| m.lines().any(|l| l == "STOPPING=1")), "{:?}", notify.messages());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (seen, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        old.log()
    );
    assert!(seen.iter().any(|s| s.versions == ["v1"]) && seen.iter().any(|s| s.versions == ["v2"]));
    assert!(seen.iter().all(|s| s.versions == ["v1"] || s.versions == ["v2"]));
    assert_eq!(common::get(listen, "x", "/").await.status, 200);

    // 3. The upgraded process upgrades again through the admin API (`switchyard upgrade`).
    let (ok, stdout, stderr) = upgrade_via_cli(path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("pid {new_pid} finishes")), "{stdout}");
    let third: i32 = stdout
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no new pid in {stdout:?}"));
    let _third = Adopted(third);
    let third_main = format!("MAINPID={third}");
    assert!(notify.wait_for(&[&third_main, "READY=1"], Duration::from_secs(10)).is_some(), "{:?}", notify.messages());
    let start = Instant::now();
    while pid_alive(new_pid) && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!pid_alive(new_pid), "the second process did not exit after handing over");
    assert_eq!(common::get(listen, "x", "/").await.status, 200);

    // 4. SIGTERM to the last one: it tells the service manager it is stopping.
    // SAFETY: kill(2) on the process the upgrade started, with a valid signal.
    unsafe { libc::kill(third, libc::SIGTERM) };
    assert!(notify.wait_for(&["STOPPING=1"], Duration::from_secs(10)).is_some(), "{:?}", notify.messages());
    println!("{} requests across the upgrade, 0 failed; notifications: {:?}", seen.len(), notify.messages());
}

#[test]
fn a_rebuilt_generation_takes_over_unchanged_plugins_and_reloads_changed_ones() {
    let text = |prefix: &str| {
        format!(
            "[[upstream]]\nname = \"u\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\nbalancer = {{ plugin = \"hash\", key = \"path\" }}\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\npath_prefix = \"{prefix}\"\nupstream = \"u\"\n"
        )
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dist/test.toml");
    let engine = common::engine();
    let build = |text: &str, previous| {
        let source = switchyard::config::SourceFile::new(&path, text);
        let config = switchyard::config::load_source(&source).unwrap_or_else(|d| panic!("{d}"));
        switchyard::generation::build(&source, &config, &engine, previous).unwrap_or_else(|d| panic!("{d}"))
    };
    let first = build(&text("/"), None);
    let same = build(&text("/"), Some(&first));
    let mut reused = same.report.reused.clone();
    reused.sort();
    assert_eq!(reused, ["hash@upstream:u", "headers", "router"]);
    assert!(same.report.loaded.is_empty());
    for (a, b) in first.plugins.iter().zip(&same.plugins) {
        assert!(Arc::ptr_eq(a, b), "{} was not taken over", a.name());
    }
    // A route change reconfigures the router only; its compiled code comes from memory.
    let routes_changed = build(&text("/api"), Some(&same));
    assert_eq!(routes_changed.report.loaded, [("router".to_string(), switchyard::plugin::CompileSource::Memory)]);
    assert_eq!(routes_changed.report.reused.len(), 2);
    // Unchanged backends keep their live figures across the rebuild.
    assert!(Arc::ptr_eq(&first.upstreams["u"].backends[0], &routes_changed.upstreams["u"].backends[0]));
}
