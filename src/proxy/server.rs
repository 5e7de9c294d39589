//! Running the proxy: as a Pingora server on the configured listeners (the `run` and `demo`
//! commands), or on a listener the caller bound (embedding and tests, where binding
//! `127.0.0.1:0` tells the caller the port).

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::ServerApp;
use std::os::fd::AsRawFd;

use pingora::protocols::l4::stream::Stream as TcpStreamIo;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::SwitchyardProxy;
use crate::generation::Generation;

/// Runs the proxy with Pingora's server on the generation's listeners, until the process is
/// told to stop. Does not return.
pub fn run_server(generation: Generation) -> ! {
    let threads = generation.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listen = generation.listen.clone();
    let current = Arc::new(ArcSwap::from_pointee(generation));
    let conf = ServerConf { threads, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, SwitchyardProxy::new(current));
    for addr in &listen {
        service.add_tcp(&addr.to_string());
        tracing::info!("listening on http://{addr}");
    }
    server.add_service(service);
    server.run_forever()
}

/// A proxy serving on a listener the caller bound, in the caller's tokio runtime.
pub struct EmbeddedProxy {
    pub current: Arc<ArcSwap<Generation>>,
    pub local_addr: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl EmbeddedProxy {
    /// Starts accepting on `listener`, serving `generation`.
    pub fn start(listener: TcpListener, generation: Generation) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let current = Arc::new(ArcSwap::from_pointee(generation));
        let conf = Arc::new(ServerConf::default());
        let app = Arc::new(pingora::proxy::http_proxy(&conf, SwitchyardProxy::new(current.clone())));
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
        Ok(EmbeddedProxy { current, local_addr, shutdown })
    }

    /// Replaces the running generation; requests already started keep theirs.
    pub fn swap(&self, generation: Generation) {
        self.current.store(Arc::new(generation));
    }
}

impl Drop for EmbeddedProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
