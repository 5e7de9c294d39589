//! The `switchyard` command as a user runs it: `check` lists every problem with file:line:col,
//! `run` refuses a plugin that rejects its configuration and serves a valid one, also in a
//! process whose address space is limited.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("switchyard.toml");
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    f.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn version_and_help() {
    let out = switchyard().arg("--version").output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("switchyard 0."));
    let out = switchyard().arg("--help").output().unwrap_or_else(|e| panic!("{e}"));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "check", "demo"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn check_lists_every_mistake_with_its_place() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_config(
        &dir,
        r#"[server]
listen = ["127.0.0.1:8080"]
colour = "blue"

[[upstream]]
name = "web"
backends = [{ address = "not-an-address" }]

[[site]]
hosts = ["example.test"]

[[site.route]]
path_prefix = "/"
upstream = "wbe"
"#,
    );
    let out = switchyard().arg("check").arg("--config").arg(&path).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:3:1: unknown key `colour` in [server]"),
        format!("{file}:7:25: backend address: `not-an-address` is not a valid host:port"),
        format!("{file}:14:12: unknown upstream `wbe`"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
}

#[test]
fn check_reports_several_syntax_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_config(&dir, "[server\nthreads = = 2\n[[site]]\nhosts = [\"a\"\n");
    let out = switchyard().arg("check").arg("--config").arg(&path).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let located = stderr.lines().filter(|l| l.starts_with(&format!("{}:", path.display()))).count();
    assert!(located >= 2, "expected several located errors:\n{stderr}");
}

#[test]
fn check_accepts_a_valid_file_and_run_refuses_a_plugin_rejecting_its_config() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = write_config(
        &dir,
        "[[upstream]]\nname = \"u\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"u\"\n",
    );
    let out = switchyard().arg("check").arg("--config").arg(&good).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let picky = format!(
        "[[plugin]]\nname = \"picky\"\npath = \"{}\"\nconfig = {{ reject = \"needs a colour\" }}\n",
        fixture("chaos").display()
    );
    let bad = write_config(&dir, &picky);
    let out = switchyard().arg("run").arg("--config").arg(&bad).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("plugin `picky`") && stderr.contains("needs a colour"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_a_configuration() {
    let a = origin("a").await;
    let listen = closed_port();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = write_config(
        &dir,
        &format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\n[[upstream]]\nname = \"u\"\nbackends = [{{ address = \"{}\" }}]\n[[site]]\nhosts = [\"*\"]\n[[site.route]]\nupstream = \"u\"\n",
            a.addr
        ),
    );
    let mut child = switchyard()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Ok(resp) = client().get(format!("http://{listen}/")).send().await {
            answer = resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_string);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.as_deref(), Some("a"));
}

/// Under `ulimit -v` the plugin instance pool cannot reserve its address space: the proxy says so,
/// allocates instances one by one, and still serves through its plugins with the same limits (a
/// plugin eating memory is cut off at its cap and the next request is served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_limited_address_space_allocates_instances_one_by_one() {
    let a = origin("a").await;
    let listen = closed_port();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let chaos = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dist/chaos.wasm");
    let path = write_config(
        &dir,
        &format!(
            r#"
[server]
listen = ["{listen}"]
threads = 1
request_filters = ["chaos"]

[[plugin]]
name = "chaos"
path = "{chaos}"
memory_limit_mb = 8

[[upstream]]
name = "u"
backends = [{{ address = "{backend}" }}]

[[site]]
hosts = ["*"]
[[site.route]]
upstream = "u"
"#,
            chaos = chaos.display(),
            backend = a.addr
        ),
    );
    let log = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    // 16 GiB: far more than the proxy uses, far less than the pool reserves.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 16777216 && exec "$0" run --config "$1""#)
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first = None;
    while Instant::now() < deadline && first.is_none() {
        if let Ok(resp) = client().get(format!("http://{listen}/")).send().await {
            first = Some(resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_string));
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let hog = send(listen, "GET", "x.test", "/", &[("x-misbehave", "grow")]).await;
    let after = send(listen, "GET", "x.test", "/", &[]).await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(first, Some(Some("a".to_string())), "served through the plugin chain; stderr:\n{log}");
    assert!(log.contains("instances are allocated one by one"), "{log}");
    assert_eq!(hog.status, 500, "the memory hog gets its policy's answer: {}", hog.body);
    assert_eq!(after.status, 200, "served after the memory breach: {}", after.body);
}
