//! TLS on the real binary: manual certificates (ECDSA with a chain, RSA, wildcard) chosen by
//! SNI with a default host, self-signed dev mode, each strategy's redirects, HTTP/2 through
//! ALPN, a certificate file replaced and reloaded without a restart, and HTTPS upstreams.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::tls::{
    TestCa, client_config, handshake_any, https_client, no_redirect_client, served, start, tls_origin, wait_listening,
};

fn free_port() -> SocketAddr {
    common::closed_port()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("switchyard.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_certificates_are_chosen_by_sni_and_replaced_by_a_reload() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let origin = common::origin("origin").await;
    let ca = TestCa::new("manual test CA");
    let (ecdsa, ecdsa_key) = ca.issue(&["ecdsa.test"]);
    // A chain: the leaf, then the CA (as an intermediate would be).
    write(&dir.path().join("ecdsa.pem"), &format!("{ecdsa}{}", ca.pem));
    write(&dir.path().join("ecdsa.key"), &ecdsa_key);
    let (wild, wild_key) = ca.issue(&["*.wild.test"]);
    write(&dir.path().join("wild.pem"), &wild);
    write(&dir.path().join("wild.key"), &wild_key);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let (http, https) = (free_port(), free_port());
    let config = format!(
        r#"[server]
listen = ["{http}"]
tls_listen = ["{https}"]
threads = 1
[tls]
default_host = "ecdsa.test"
[[upstream]]
name = "app"
backends = [{{ address = "{origin}" }}]
[[site]]
hosts = ["ecdsa.test"]
tls = {{ cert = "ecdsa.pem", key = "ecdsa.key" }}
[[site.route]]
upstream = "app"
[[site]]
hosts = ["rsa.test"]
tls = {{ cert = "{rsa_cert}", key = "{rsa_key}" }}
[[site.route]]
upstream = "app"
[[site]]
hosts = ["*.wild.test"]
tls = {{ cert = "wild.pem", key = "wild.key" }}
[[site.route]]
upstream = "app"
"#,
        origin = origin.addr,
        rsa_cert = fixtures.join("rsa.pem").display(),
        rsa_key = fixtures.join("rsa.key").display(),
    );
    let _running = start(dir.path(), &config, &[], http, https).await;

    let (cert, alpn) = served(https, "ecdsa.test", &ca.pem).await.unwrap_or_else(|e| panic!("ecdsa.test: {e}"));
    assert_eq!(cert.names, vec!["ecdsa.test"]);
    assert_eq!(alpn.as_deref(), Some(b"h2".as_slice()), "HTTP/2 is offered through ALPN");
    let (cert, _) = served(https, "a.wild.test", &ca.pem).await.unwrap_or_else(|e| panic!("a.wild.test: {e}"));
    assert_eq!(cert.names, vec!["*.wild.test"]);
    let rsa_root = std::fs::read_to_string(fixtures.join("rsa.pem")).unwrap_or_else(|e| panic!("{e}"));
    let (cert, _) = served(https, "rsa.test", &rsa_root).await.unwrap_or_else(|e| panic!("rsa.test: {e}"));
    assert_eq!(cert.names, vec!["rsa.test"]);
    // A name no site serves gets the default host's certificate, not another site's.
    let unknown = handshake_any(https, "nobody.test").await.unwrap_or_else(|e| panic!("default host: {e}"));
    assert_eq!(unknown.names, vec!["ecdsa.test"]);

    // Requests over HTTP/2 and HTTP/1.1, proxied, with the scheme seen by the header policy.
    let client = https_client(&ca.pem, &["ecdsa.test", "a.wild.test"], https);
    for url in [format!("https://ecdsa.test:{}/x?y=1", https.port()), format!("https://a.wild.test:{}/", https.port())]
    {
        let answer = client.get(&url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(answer.version(), reqwest::Version::HTTP_2);
        assert_eq!(answer.status(), 200, "{url}");
        let body: serde_json::Value = answer.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");
    }
    let h1 = reqwest::Client::builder()
        .use_preconfigured_tls((*client_config(&ca.pem, &[b"http/1.1"])).clone())
        .http1_only()
        .resolve("ecdsa.test", https)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = h1.get(format!("https://ecdsa.test:{}/", https.port())).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((answer.version(), answer.status().as_u16()), (reqwest::Version::HTTP_11, 200));

    // Plain HTTP is redirected (https-only is the default with a TLS listener).
    let plain = no_redirect_client();
    let answer = plain
        .get(format!("http://{http}/p?q=1"))
        .header("host", "ecdsa.test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.status(), 301);
    assert_eq!(answer.headers()["location"], format!("https://ecdsa.test:{}/p?q=1", https.port()).as_str());

    // The certificate file is replaced and the process reloaded: new handshakes get it.
    let before = served(https, "ecdsa.test", &ca.pem).await.unwrap_or_else(|e| panic!("{e}")).0.serial;
    let (renewed, renewed_key) = ca.issue(&["ecdsa.test"]);
    write(&dir.path().join("ecdsa.pem"), &renewed);
    write(&dir.path().join("ecdsa.key"), &renewed_key);
    let pid = _running.pid().to_string();
    let status = std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = served(https, "ecdsa.test", &ca.pem).await.unwrap_or_else(|e| panic!("{e}")).0.serial;
        if now != before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced certificate was never served:\n{}",
            log(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A reload naming a key that does not match is refused, and the current one keeps serving.
    let (_, stranger_key) = ca.issue(&["ecdsa.test"]);
    write(&dir.path().join("ecdsa.key"), &stranger_key);
    std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !log(dir.path()).contains("does not belong to the certificate") {
        assert!(std::time::Instant::now() < deadline, "the bad reload was not reported:\n{}", log(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served(https, "ecdsa.test", &ca.pem).await.is_ok(), "the running certificate stopped serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_issues_from_one_local_ca_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let origin = common::origin("origin").await;
    let (http, https) = (free_port(), free_port());
    let config = format!(
        r#"[server]
listen = ["{http}"]
tls_listen = ["{https}"]
threads = 1
[[upstream]]
name = "app"
backends = [{{ address = "{origin}" }}]
[[site]]
hosts = ["one.test", "*.two.test"]
[[site.route]]
upstream = "app"
[[site]]
hosts = ["plain.test"]
tls = "none"
[[site.route]]
upstream = "app"
"#,
        origin = origin.addr
    );
    let running = start(dir.path(), &config, &["--dev"], http, https).await;
    let ca_path = dir.path().join("switchyard-data/local-ca/ca.pem");
    let ca = std::fs::read_to_string(&ca_path).unwrap_or_else(|e| panic!("{}: {e}", ca_path.display()));
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(ca_path.with_file_name("ca.key")).unwrap_or_else(|e| panic!("{e}")).permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    // Each host gets its own certificate from the CA (a wildcard site's names one by one).
    for name in ["one.test", "a.two.test", "b.c.two.test"] {
        let (cert, _) = served(https, name, &ca).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cert.names, vec![name.to_string()]);
    }
    // No default host: a name no site with a certificate serves fails the handshake.
    assert!(handshake_any(https, "nobody.test").await.is_err());
    assert!(handshake_any(https, "plain.test").await.is_err());
    // Dev mode without a strategy is `both`: plain HTTP still serves.
    let answer = common::get(http, "one.test", "/").await;
    assert_eq!(answer.status, 200);
    let printed = log(dir.path());
    let shown = std::fs::canonicalize(&ca_path).unwrap_or_else(|e| panic!("{e}"));
    assert!(printed.contains(&shown.display().to_string()), "the CA path is printed:\n{printed}");

    drop(running);
    let _again = start(dir.path(), &config, &["--dev"], http, https).await;
    assert_eq!(std::fs::read_to_string(&ca_path).unwrap_or_default(), ca, "the CA is created once");
    let (cert, _) = served(https, "one.test", &ca).await.unwrap_or_else(|e| panic!("after restart: {e}"));
    assert_eq!(cert.names, vec!["one.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_both_serves_plain_http_and_redirects_only_sites_that_ask() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let origin = common::origin("origin").await;
    let (http, https) = (free_port(), free_port());
    let config = format!(
        r#"[server]
listen = ["{http}"]
tls_listen = ["{https}"]
strategy = "both"
https_port = 443
threads = 1
[tls]
self_signed = true
[[upstream]]
name = "app"
backends = [{{ address = "{origin}" }}]
[[site]]
hosts = ["open.test"]
[[site.route]]
upstream = "app"
[[site]]
hosts = ["strict.test"]
http_to_https = true
[[site.route]]
upstream = "app"
"#,
        origin = origin.addr
    );
    let _running = start(dir.path(), &config, &[], http, https).await;
    assert_eq!(common::get(http, "open.test", "/").await.status, 200);
    let plain = no_redirect_client();
    let get = plain
        .get(format!("http://{http}/a?b=c"))
        .header("host", "strict.test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get.status(), 301);
    // https_port 443 is left out of the location.
    assert_eq!(get.headers()["location"], "https://strict.test/a?b=c");
    let post = plain
        .post(format!("http://{http}/form"))
        .header("host", "strict.test")
        .body("x=1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(post.status(), 308, "a POST keeps its method and body through a 308");
    // Both sites serve over HTTPS too.
    let ca =
        std::fs::read_to_string(dir.path().join("switchyard-data/local-ca/ca.pem")).unwrap_or_else(|e| panic!("{e}"));
    let client = https_client(&ca, &["open.test", "strict.test"], https);
    for host in ["open.test", "strict.test"] {
        let answer =
            client.get(format!("https://{host}:{}/", https.port())).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.status(), 200, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_their_ca_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = TestCa::new("origin CA");
    let (cert, key) = ca.issue(&["origin.internal"]);
    let origin = tls_origin("secure-origin", &cert, &key).await;
    write(&dir.path().join("origin-ca.pem"), &ca.pem);
    let http = free_port();
    let config = format!(
        r#"[server]
listen = ["{http}"]
threads = 1
[[upstream]]
name = "verified"
backends = [{{ address = "{origin}" }}]
tls = {{ sni = "origin.internal", ca = "origin-ca.pem" }}
[[upstream]]
name = "system-roots"
backends = [{{ address = "{origin}" }}]
tls = {{ sni = "origin.internal" }}
[[upstream]]
name = "unverified"
backends = [{{ address = "{origin}" }}]
tls = {{ verify = false }}
[[site]]
hosts = ["verified.test"]
[[site.route]]
upstream = "verified"
[[site]]
hosts = ["system.test"]
[[site.route]]
upstream = "system-roots"
[[site]]
hosts = ["unverified.test"]
[[site.route]]
upstream = "unverified"
"#
    );
    let path = dir.path().join("switchyard.toml");
    write(&path, &config);
    let _running = common::RunningBinary::start_with(&path, &[], "warn", &dir.path().join("switchyard.log"));
    wait_listening(http, Duration::from_secs(60)).await;
    let answer = common::get(http, "verified.test", "/").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, "secure-origin sni=origin.internal");
    // The origin's CA is not a system root: verification fails, nothing is proxied.
    let answer = common::get(http, "system.test", "/").await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    // An explicit opt-out connects anyway (no SNI: the backend is an IP address).
    let answer = common::get(http, "unverified.test", "/").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with("secure-origin"), "{}", answer.body);
}

#[test]
fn broken_tls_settings_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bad.toml");
    write(
        &path,
        r#"[server]
listen = ["127.0.0.1:1"]
tls_listen = ["127.0.0.1:1"]
strategy = "sometimes"
[tls]
acme_directory = "ftp://x"
default_host = "nowhere.test"
[[upstream]]
name = "u"
backends = [{ address = "127.0.0.1:2" }]
tls = { ca = "missing-ca.pem" }
[[site]]
hosts = ["*.wild.test"]
tls = "acme"
[[site.route]]
upstream = "u"
[[site]]
hosts = ["files.test"]
tls = { cert = "missing.pem", key = "missing.key" }
[[site.route]]
upstream = "u"
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for expected in [
        "bad.toml:3:",
        "both an HTTP and an HTTPS listener",
        "bad.toml:4:",
        "unknown strategy `sometimes`",
        "bad.toml:6:",
        "acme_directory `ftp://x`",
        "bad.toml:7:",
        "default_host `nowhere.test`",
        "bad.toml:11:",
        "missing-ca.pem",
        "bad.toml:13:",
        "wildcard needs the DNS-01 challenge",
        "bad.toml:19:",
        "missing.pem",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
