//! A team's own Pingora proxy with GEPA added: the proxy keeps its own routes (here
//! everything under `/own/`, proxied to its own upstream) and hands GEPA's routes (the
//! session API and the prompt-optimizing proxy) to [`Gepa`].
//!
//! ```text
//! cargo run --example embed -- GEPA_CONFIG LISTEN OWN_UPSTREAM
//! ```
//!
//! - `GEPA_CONFIG`: a YAML file with a `gateway:` section, as `conf/gateway.yaml`
//!   (its `listen` and `metrics` keys are the standalone gateway's and are not used here);
//! - `LISTEN`: `IP:PORT`, or `unix:PATH` for a Unix socket;
//! - `OWN_UPSTREAM`: `HOST:PORT` of the proxy's own (plain HTTP) upstream.
//!
//! The lines marked `GEPA` are all it takes.

use async_trait::async_trait;
use gepa_gateway::{Gepa, RequestCtx};
use pingora_core::server::{RunArgs, Server};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};

/// The team's proxy.
struct TeamProxy {
    gepa: Gepa, // GEPA
    own_upstream: String,
}

/// The team's per-request state, with room for GEPA's.
struct TeamCtx {
    gepa: RequestCtx, // GEPA
}

#[async_trait]
impl ProxyHttp for TeamProxy {
    type CTX = TeamCtx;

    fn new_ctx(&self) -> TeamCtx {
        TeamCtx {
            gepa: RequestCtx::new(), // GEPA
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut TeamCtx) -> Result<bool> {
        // GEPA answers its own paths and leaves the rest alone.
        if self.gepa.request_filter(session, &mut ctx.gepa).await? {
            return Ok(true);
        }
        // The team's routes: `/own/...` goes to its upstream, anything else is a 404.
        if session.req_header().uri.path().starts_with("/own/") {
            return Ok(false);
        }
        session.respond_error(404).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut TeamCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.own_upstream.as_str(),
            false,
            String::new(),
        )))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut TeamCtx) {
        self.gepa.logging(session, e, &ctx.gepa); // GEPA: its access log and metrics
    }
}

fn main() {
    env_logger::init();
    let args: Vec<String> = std::env::args().collect();
    let [_, config, listen, own_upstream] = &args[..] else {
        eprintln!("usage: embed GEPA_CONFIG LISTEN OWN_UPSTREAM");
        std::process::exit(2);
    };
    let yaml = std::fs::read_to_string(config).unwrap_or_else(|e| fail(&format!("{config}: {e}")));
    let gepa = Gepa::from_yaml(&yaml).unwrap_or_else(|e| fail(&e)); // GEPA

    let mut server = Server::new(None).unwrap_or_else(|e| fail(&e.to_string()));
    server.bootstrap();
    let team = TeamProxy {
        gepa: gepa.clone(),
        own_upstream: own_upstream.clone(),
    };
    let mut proxy = http_proxy_service(&server.configuration, team);
    match listen.strip_prefix("unix:") {
        Some(path) => proxy.add_uds(path, None),
        None => proxy.add_tcp(listen),
    }
    server.add_service(proxy);
    gepa.add_services(&mut server, false); // GEPA: proposer, store restore, hand-over

    // GEPA: its shutdown signal also stops the server if GEPA's store cannot be opened.
    server.run(RunArgs {
        shutdown_signal: Box::new(gepa.shutdown_signal()),
    });
    gepa.flush_at_exit(); // GEPA: write out what is queued
    if let Some(e) = gepa.fatal_error() {
        fail(e);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("embed: {message}");
    std::process::exit(1);
}
