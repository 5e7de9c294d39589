//! A minimal Pingora reverse proxy with no plugins: every request goes to one upstream. It is the
//! baseline `benches/load.sh` compares Switchyard against, built from the same Pingora version.
//!
//! `cargo run --release --example bare_pingora -- --listen 127.0.0.1:8081 --upstream 127.0.0.1:9000`

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// Where every request goes.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf { threads: args.threads, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream: args.upstream });
    service.add_tcp(&args.listen.to_string());
    server.add_service(service);
    server.run_forever()
}
