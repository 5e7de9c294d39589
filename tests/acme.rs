//! ACME against a real Pebble (and pebble-challtestsrv resolving every name to 127.0.0.1): the
//! proxy orders certificates for two sites through HTTP-01 on its own HTTP listener, serves them
//! by SNI, renews on request and by age without a restart, keeps serving when the CA is gone,
//! and reuses its stored certificates after a restart without asking the CA. TLS-ALPN-01 is
//! answered on the HTTPS listener.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pebble::Pebble;
use common::tls::{https_client, served, wait_listening};
use serde_json::Value;

fn free_port() -> SocketAddr {
    common::closed_port()
}

struct Setup {
    dir: tempfile::TempDir,
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    config: std::path::PathBuf,
}

/// Ports for the proxy and a configuration ordering from `pebble` for `a.test` and `b.test`.
fn setup(challenge: &str) -> (Setup, impl FnOnce(&Pebble, &str) -> std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let config = dir.path().join("switchyard.toml");
    let path = config.clone();
    let challenge = challenge.to_string();
    let write = move |pebble: &Pebble, origin: &str| {
        let text = format!(
            r#"[server]
listen = ["{http}"]
tls_listen = ["{https}"]
threads = 1
[admin]
listen = "{admin}"
[tls]
acme_email = "ops@example.org"
acme_directory = "{directory}"
acme_ca_root = "{root}"
acme_challenge = "{challenge}"
[[upstream]]
name = "app"
backends = [{{ address = "{origin}" }}]
[[site]]
name = "a"
hosts = ["a.test", "www.a.test"]
[[site.route]]
upstream = "app"
[[site]]
name = "b"
hosts = ["b.test"]
[[site.route]]
upstream = "app"
"#,
            directory = pebble.directory_url(),
            root = pebble.api_root_pem_path().display(),
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path.clone()
    };
    (Setup { dir, http, https, admin, config }, write)
}

fn start(setup: &Setup, log: &str) -> common::RunningBinary {
    common::RunningBinary::start_with(&setup.config, &[], "info", &setup.dir.path().join(log))
}

fn log(setup: &Setup, name: &str) -> String {
    std::fs::read_to_string(setup.dir.path().join(name)).unwrap_or_default()
}

async fn certs(admin: SocketAddr) -> Value {
    let url = format!("http://{admin}/api/v1/certs");
    let answer = common::client().get(&url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    answer.json().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `POST /api/v1/certs/{host}/renew`: its status.
async fn renew(admin: SocketAddr, host: &str) -> u16 {
    let url = format!("http://{admin}/api/v1/certs/{host}/renew");
    let answer = common::client().post(&url).json(&serde_json::json!({})).send().await;
    answer.unwrap_or_else(|e| panic!("{url}: {e}")).status().as_u16()
}

/// The Prometheus text of `/metrics`.
async fn scrape(admin: SocketAddr) -> String {
    let url = format!("http://{admin}/metrics");
    let answer = common::client().get(&url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    answer.text().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// The serial `https` serves for `host`, verified against `root`, once it has one.
async fn wait_serial(
    https: SocketAddr,
    host: &str,
    root: &str,
    not: Option<&str>,
    limit: Duration,
    context: impl Fn() -> String,
) -> String {
    let started = Instant::now();
    loop {
        if let Ok((cert, _)) = served(https, host, root).await
            && not != Some(cert.serial.as_str())
        {
            assert!(cert.covers(host), "{host} got {:?}", cert.names);
            return cert.serial;
        }
        assert!(started.elapsed() < limit, "{host} got no (new) certificate in {limit:?}:\n{}", context());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_ordered_renewed_kept_and_reused() {
    let origin = common::origin("origin").await;
    let (setup, write_config) = setup("http-01");
    let mut pebble = Pebble::start(&setup.dir.path().join("pebble"), setup.http.port(), setup.https.port(), None);
    write_config(&pebble, &origin.addr.to_string());
    let root = pebble.issuer_root_pem();
    let running = start(&setup, "first.log");
    wait_listening(setup.https, Duration::from_secs(60)).await;
    let context = || format!("{}\n{}", log(&setup, "first.log"), pebble.output());

    // Both sites get their own certificate through HTTP-01 on the proxy's HTTP listener.
    let a = wait_serial(setup.https, "a.test", &root, None, Duration::from_secs(60), &context).await;
    let b = wait_serial(setup.https, "b.test", &root, None, Duration::from_secs(60), &context).await;
    assert_ne!(a, b);
    let (www, _) = served(setup.https, "www.a.test", &root).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(www.serial, a, "one certificate covers every host of a site");
    let client = https_client(&root, &["a.test", "b.test"], setup.https);
    for host in ["a.test", "b.test"] {
        let answer = client
            .get(format!("https://{host}:{}/hello", setup.https.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.status(), 200, "{host}");
        let body: Value = answer.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body["host"], format!("{host}:{}", setup.https.port()).as_str());
    }
    // Stored: the keys and the account credentials are private.
    let storage = setup.dir.path().join("switchyard-data/acme");
    let mut private = Vec::new();
    for entry in walk(&storage) {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == "key.pem" || name == "account.json" {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&entry).unwrap_or_else(|e| panic!("{e}")).permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{}", entry.display());
            private.push(name);
        }
    }
    private.sort();
    assert_eq!(private, ["account.json", "key.pem", "key.pem"]);
    let listed = certs(setup.admin).await;
    let listed = listed["certificates"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|c| c["source"] == "acme" && c["certificate"]["seconds_left"].as_i64() > Some(86_400)),
        "{listed:?}"
    );

    // A renewal on request: a new certificate is served by the same process.
    assert_eq!(renew(setup.admin, "a.test").await, 202);
    let renewed = wait_serial(setup.https, "a.test", &root, Some(&a), Duration::from_secs(60), &context).await;
    let metrics = scrape(setup.admin).await;
    assert!(
        metrics.contains("switchyard_tls_certificate_expiry_timestamp_seconds{site=\"a\",source=\"acme\"}"),
        "{metrics}"
    );

    // The CA goes away: a renewal fails, is logged and counted, and the current certificate
    // keeps serving.
    pebble.stop_ca();
    assert_eq!(renew(setup.admin, "b.test").await, 202);
    let started = Instant::now();
    loop {
        let listed = certs(setup.admin).await;
        let b_status = listed["certificates"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["site"] == "b").cloned())
            .unwrap_or_default();
        if b_status["acme"]["status"]["failures"].as_u64() >= Some(1) {
            assert!(b_status["acme"]["status"]["last_error"].is_string(), "{b_status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the failed renewal was never reported: {b_status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log(&setup, "first.log").contains("the current certificate keeps serving"), "{}", log(&setup, "first.log"));
    let (still, _) =
        served(setup.https, "b.test", &root).await.unwrap_or_else(|e| panic!("b.test after a failed renewal: {e}"));
    assert_eq!(still.serial, b);
    let metrics = scrape(setup.admin).await;
    assert!(metrics.contains("switchyard_acme_failures{site=\"b\"} 1"), "{metrics}");

    // A restart with the CA still gone serves the stored certificates at once.
    drop(running);
    let _again = start(&setup, "second.log");
    wait_listening(setup.https, Duration::from_secs(60)).await;
    let (a_again, _) =
        served(setup.https, "a.test", &root).await.unwrap_or_else(|e| panic!("a.test after restart: {e}"));
    let (b_again, _) =
        served(setup.https, "b.test", &root).await.unwrap_or_else(|e| panic!("b.test after restart: {e}"));
    assert_eq!((a_again.serial, b_again.serial), (renewed, b));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = log(&setup, "second.log");
    assert!(!second.contains("ordering a certificate"), "the restart asked the CA:\n{second}");
    assert!(second.contains("loaded a stored ACME certificate"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_renew_by_age_through_tls_alpn_01() {
    let origin = common::origin("origin").await;
    let (setup, write_config) = setup("tls-alpn-01");
    // 20-second certificates: renewed when 10 seconds are left.
    let pebble = Pebble::start(&setup.dir.path().join("pebble"), setup.http.port(), setup.https.port(), Some(20));
    write_config(&pebble, &origin.addr.to_string());
    let root = pebble.issuer_root_pem();
    let _running = start(&setup, "proxy.log");
    wait_listening(setup.https, Duration::from_secs(60)).await;
    let context = || format!("{}\n{}", log(&setup, "proxy.log"), pebble.output());
    let first = wait_serial(setup.https, "b.test", &root, None, Duration::from_secs(60), &context).await;
    let second = wait_serial(setup.https, "b.test", &root, Some(&first), Duration::from_secs(40), &context).await;
    assert_ne!(first, second);
    assert!(log(&setup, "proxy.log").contains("answered a TLS-ALPN-01 validation"), "{}", context());
    // No HTTP-01 token was ever asked for: the HTTP listener redirects everything.
    let plain = common::tls::no_redirect_client();
    let url = format!("http://{}/.well-known/acme-challenge/anything", setup.http);
    let answer = plain.get(&url).header("host", "b.test").send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.status(), 301);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
