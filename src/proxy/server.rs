//! Running the proxy: as a Pingora server on the configured listeners with reloads, the admin
//! listener, graceful shutdown, upgrades and systemd notifications (the `run` and `demo`
//! commands), or on a listener
//! the caller bound (embedding and tests, where binding `127.0.0.1:0` tells the caller the port).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::ServerApp;
use std::os::fd::AsRawFd;

use pingora::protocols::l4::stream::Stream as TcpStreamIo;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::ConnectionGuard;
use super::shutdown;
use super::systemd;
use super::upgrade::Upgrader;
use super::{RequestCount, SwitchyardProxy};
use crate::admin::{AdminApi, Metrics, Reloader, signals, watch as file_watch};
use crate::generation::Generation;
use crate::plugin::PluginEngine;
use crate::tls::alpn_challenge::ChallengeResponder;
use crate::tls::{SniResolver, TlsRuntime};
use pingora::listeners::tls::TlsSettings;

/// How `run` starts the process.
pub struct RunOptions {
    /// The configuration file reloads read again; `None` (the demo) for no reloads.
    pub config_path: Option<PathBuf>,
    pub engine: Arc<PluginEngine>,
    /// Take the listening sockets over from the running process (graceful upgrade): that
    /// process hands them over when it gets SIGQUIT.
    pub upgrade: bool,
}

/// How long Pingora itself would wait for requests in progress after a graceful shutdown
/// begins; [`super::shutdown`] exits much earlier, at the configured grace period.
const PINGORA_GRACE_BACKSTOP_S: u64 = 3600;

/// Runs the proxy with Pingora's server on the generation's listeners (and the admin listener,
/// if configured), reloading on SIGHUP, `POST /api/v1/reload` and watched file changes, until
/// the process is told to stop. Does not return.
pub fn run_server(generation: Generation, options: RunOptions) -> ! {
    let process = generation.process.clone();
    let threads = process.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let requests = Arc::new(RequestCount::default());
    let current = Arc::new(ArcSwap::from_pointee(generation));
    let metrics = match Metrics::new(requests.clone()) {
        Ok(m) => Arc::new(m),
        Err(e) => fail(&format!("cannot set up the metrics: {e}")),
    };
    let reloader = options
        .config_path
        .as_deref()
        .map(|path| Arc::new(Reloader::new(path, options.engine.clone(), current.clone(), metrics.clone())));
    let upgrader = match options.config_path.as_deref().map(Upgrader::new).transpose() {
        Ok(upgrader) => upgrader.map(Arc::new),
        Err(e) => fail(&format!("cannot find this program's path (for upgrades): {e}")),
    };

    let conf = ServerConf {
        threads,
        upgrade_sock: process.upgrade_socket.display().to_string(),
        grace_period_seconds: Some(PINGORA_GRACE_BACKSTOP_S),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt { upgrade: options.upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    if options.upgrade {
        tracing::info!("upgrade: taking the listening sockets over through {}", process.upgrade_socket.display());
    }
    server.bootstrap();

    // rustls needs one process-wide crypto provider (ring, as Pingora's listeners use).
    pingora::tls::install_default_crypto_provider();
    let tls_runtime = Arc::new(TlsRuntime::default());
    match tls_runtime.prepare(&current.load().tls) {
        Ok(Some(ca)) => eprintln!(
            "switchyard: self-signed certificates come from the local CA {} (add it to your trust store, or pass it to curl --cacert)",
            std::fs::canonicalize(&ca).unwrap_or(ca).display()
        ),
        Ok(None) => {}
        Err(e) => fail(&format!("cannot set up the local CA: {e}")),
    }
    let mut proxy = pingora::proxy::http_proxy(
        &server.configuration,
        SwitchyardProxy::new(current.clone(), requests.clone()).with_tls_runtime(tls_runtime.clone()),
    );
    proxy.h2_options = Some(current.load().limits.h2_options());
    let open_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Err(e) = metrics.watch_generation(current.clone(), open_connections.clone(), tls_runtime.clone()) {
        fail(&format!("cannot set up the metrics: {e}"));
    }
    let mut service = pingora::services::listening::Service::new(
        "switchyard proxy".to_string(),
        ConnectionGuard::new(Arc::new(proxy), current.clone(), open_connections),
    );
    for addr in &process.listen {
        service.add_tcp(&addr.to_string());
        tracing::info!("listening on http://{addr}");
    }
    if !process.tls_listen.is_empty() {
        let resolver = Arc::new(SniResolver { current: current.clone(), runtime: tls_runtime.clone() });
        for addr in &process.tls_listen {
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(s) => s,
                Err(e) => fail(&format!("cannot set up TLS on {addr}: {e}")),
            };
            settings.set_cert_resolver(resolver.clone());
            settings.enable_h2();
            service.add_tls_with_settings(&addr.to_string(), None, settings);
            tracing::info!("listening on https://{addr} (HTTP/2 and HTTP/1.1)");
        }
        service.endpoints().set_pre_tls_callback(Arc::new(ChallengeResponder { runtime: tls_runtime.clone() }));
    }
    if let Err(e) = crate::tls::acme::start(tls_runtime.clone(), current.clone()) {
        fail(&format!("cannot start the certificate manager: {e}"));
    }
    server.add_service(service);
    let tcp_routes = current.load().tcp_routes.clone();
    for route in tcp_routes {
        let app = super::tcp::TcpProxy {
            listen: route.listen,
            current: current.clone(),
            metrics: metrics.clone(),
            requests: requests.clone(),
        };
        let mut tcp = pingora::services::listening::Service::new(format!("switchyard tcp {}", route.name), app);
        tcp.add_tcp(&route.listen.to_string());
        server.add_service(tcp);
        tracing::info!("tcp route {} on {} → upstream {}", route.name, route.listen, route.upstream);
    }
    if let Some(addr) = process.admin_listen {
        let api = AdminApi {
            reloader: reloader.clone(),
            upgrader: upgrader.clone(),
            metrics,
            requests: requests.clone(),
            current: current.clone(),
            listen: addr,
            tls: tls_runtime.clone(),
        };
        let mut admin = pingora::services::listening::Service::new("switchyard admin".to_string(), api);
        admin.threads = Some(1);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
        tracing::info!("admin API on http://{addr}/api/v1 (metrics on /metrics)");
    }

    if let Err(e) = signals::handle_signals(reloader.clone(), upgrader) {
        fail(&format!("cannot handle SIGHUP and SIGUSR2: {e}"));
    }
    if let Some(reloader) = &reloader
        && let Err(e) = file_watch::reload_on_change(reloader.clone())
    {
        fail(&format!("cannot start the file watcher: {e}"));
    }
    if let Some(path) = &process.pid_file
        && let Err(e) = shutdown::write_pid_file(path)
    {
        fail(&format!("cannot write the pid file {}: {e}", path.display()));
    }
    if let Err(e) = start_health_checks(current.clone()) {
        fail(&format!("cannot start the health checker: {e}"));
    }
    if let Err(e) = shutdown::exit_when_drained(server.watch_execution_phase(), requests, current, process.pid_file) {
        fail(&format!("cannot start the shutdown thread: {e}"));
    }
    if let Err(e) = systemd::notify_lifecycle(server.watch_execution_phase()) {
        fail(&format!("cannot start the service-manager notifier: {e}"));
    }
    server.run_forever()
}

/// Runs the active health checks of whatever generation serves, on a thread of their own.
fn start_health_checks(current: Arc<ArcSwap<Generation>>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("switchyard-health".into())
        .spawn(move || runtime.block_on(crate::upstream::health::run_prober(current)))?;
    Ok(())
}

fn fail(message: &str) -> ! {
    eprintln!("switchyard: {message}");
    std::process::exit(1)
}

/// A proxy serving on a listener the caller bound, in the caller's tokio runtime.
pub struct EmbeddedProxy {
    pub current: Arc<ArcSwap<Generation>>,
    pub local_addr: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
    health_checks: tokio::task::JoinHandle<()>,
}

impl EmbeddedProxy {
    /// Starts accepting on `listener`, serving `generation`.
    pub fn start(listener: TcpListener, generation: Generation) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let current = Arc::new(ArcSwap::from_pointee(generation));
        let conf = Arc::new(ServerConf::default());
        let requests = Arc::new(RequestCount::default());
        let proxy = Arc::new(pingora::proxy::http_proxy(&conf, SwitchyardProxy::new(current.clone(), requests)));
        let app = Arc::new(ConnectionGuard::new(proxy, current.clone(), Arc::default()));
        let (shutdown, watch) = watch::channel(false);
        let mut stop = watch.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.changed() => break,
                };
                let Ok((tcp, peer)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let mut io = TcpStreamIo::from(tcp);
                // What Pingora's own listener records, so the client's address is known.
                let digest = SocketDigest::from_raw_fd(io.as_raw_fd());
                let _ = digest.peer_addr.set(Some(peer.into()));
                let _ = digest.local_addr.set(Some(local_addr.into()));
                io.set_socket_digest(digest);
                let app = app.clone();
                let watch = watch.clone();
                tokio::spawn(async move {
                    let mut stream: Option<Stream> = Some(Box::new(io));
                    while let Some(s) = stream.take() {
                        stream = app.process_new(s, &watch).await;
                    }
                });
            }
        });
        let health_checks = tokio::spawn(crate::upstream::health::run_prober(current.clone()));
        Ok(EmbeddedProxy { current, local_addr, shutdown, health_checks })
    }

    /// Replaces the running generation; requests already started keep theirs.
    pub fn swap(&self, generation: Generation) {
        self.current.store(Arc::new(generation));
    }
}

impl Drop for EmbeddedProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.health_checks.abort();
    }
}
