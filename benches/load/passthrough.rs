//! The "no work" reference for the load benchmark (`benches/load.sh`): a minimal Pingora
//! reverse proxy that forwards every request to one upstream through the normal
//! `ProxyHttp` phases. `upstream_peer` returns the upstream's `HttpPeer` and nothing else
//! is overridden, so request and response bodies stream through untouched (any size).
//!
//! `cargo run --release --example passthrough -- LISTEN_IP:PORT UPSTREAM_IP:PORT [THREADS]`
//!
//! THREADS defaults to 2, the gateway's `threads` in conf/gateway.yaml. It uses the same
//! allocator as the gateway (mimalloc), so the comparison is between what the two do.

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{http_proxy_service_with_name, ProxyHttp, Session};
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: passthrough LISTEN_IP:PORT UPSTREAM_IP:PORT [THREADS]";
    let listen: SocketAddr = args.next().expect(usage).parse().expect(usage);
    let upstream: SocketAddr = args.next().expect(usage).parse().expect(usage);
    let threads: usize = args.next().map_or(2, |t| t.parse().expect(usage));

    let tmp = std::env::temp_dir();
    let port = listen.port();
    let conf = ServerConf {
        threads,
        pid_file: tmp
            .join(format!("bench-passthrough-{port}.pid"))
            .display()
            .to_string(),
        upgrade_sock: tmp
            .join(format!("bench-passthrough-{port}.sock"))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = http_proxy_service_with_name(
        &server.configuration,
        Passthrough { upstream },
        "passthrough",
    );
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    println!("passthrough listening on {listen}, upstream {upstream}, {threads} threads");
    server.run_forever()
}
