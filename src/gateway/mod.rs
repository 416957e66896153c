//! GEPA as part of a Pingora proxy, and the standalone gateway built on it.
//!
//! [`Gepa`] is what a team adds to the Pingora proxy it already runs: it is built from a
//! `gateway` config section, answers GEPA's routes (the session API and the proxy) from
//! the host's `ProxyHttp::request_filter` and leaves every other path to the host, and
//! adds GEPA's background services to the host's `Server`. `examples/embed.rs` is such a
//! proxy. The standalone gateway ([`standalone::Gateway`]) is GEPA in an otherwise empty
//! proxy, wired the same way by [`crate::server`].
//!
//! ```no_run
//! use gepa_gateway::{Gepa, RequestCtx};
//!
//! let gepa = Gepa::from_yaml("gateway:\n  public_url: http://localhost:8080\n").unwrap();
//! // In the host's ProxyHttp (CTX holds a RequestCtx for GEPA):
//! //   if gepa.request_filter(session, &mut ctx.gepa).await? { return Ok(true); }
//! // and in its logging phase:
//! //   gepa.logging(session, e, &ctx.gepa);
//! let mut server = pingora_core::server::Server::new(None).unwrap();
//! server.bootstrap();
//! gepa.add_services(&mut server, false);
//! ```

mod dispatch;
mod observe;
pub mod services;
pub mod standalone;
mod state;

pub use services::{FatalError, ShutdownOnFatal};
/// For the crate's benches, which build the state without a server.
#[cfg(feature = "internals")]
pub use state::GatewayState;

use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_error::{Error, Result};
use pingora_proxy::Session;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, GatewayConfig};
use crate::metrics::MetricsApp;
use crate::proposer::{HourlyLimit, Proposer};
use crate::request::RequestCtx;
use services::{Handover, StoreLoader};

/// How long the exit waits for the store's last commit.
const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// GEPA's state and its entry points for a Pingora proxy. Cheap to clone: clones share
/// one state.
#[derive(Clone)]
pub struct Gepa {
    state: Arc<state::GatewayState>,
    fatal: FatalError,
}

impl Gepa {
    /// GEPA from a validated `gateway` config section (see [`crate::config`]).
    pub fn new(config: GatewayConfig) -> Result<Self, String> {
        Ok(Gepa {
            state: Arc::new(state::GatewayState::new(config)?),
            fatal: FatalError::default(),
        })
    }

    /// GEPA from YAML holding a `gateway:` section (the format of `conf/gateway.yaml`;
    /// other top-level sections are Pingora's and are not used here). Secrets are read
    /// from the environment variables the section names.
    pub fn from_yaml(yaml: &str) -> Result<Self, String> {
        let config = config::parse_str(yaml, &config::process_env).map_err(|e| e.to_string())?;
        for warning in &config.warnings {
            log::warn!("{warning}");
        }
        Gepa::new(config.gateway)
    }

    /// Answers the request if its path is one of GEPA's (the session API under
    /// `/api/prompt-learning/online/gepa/sessions`, the proxy under `/api/gepa/v1/`).
    /// Call it first thing in `request_filter`: `Ok(true)` means the response was sent
    /// and the host returns `Ok(true)` too; `Ok(false)` means the path is the host's and
    /// nothing was read or written; `Err` means the client connection must be closed.
    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        dispatch::serve_gepa_route(&self.state, session, ctx).await
    }

    /// Writes the access-log line and the metrics of a request GEPA answered; does nothing
    /// for the host's requests. Call it from the host's `logging` phase.
    pub fn logging(&self, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
        if ctx.is_routed() {
            observe::request_done(&self.state.metrics, session, e, ctx);
        }
    }

    /// Adds GEPA's background services to `server`: the reflective proposer, the store's
    /// restore (GEPA's routes answer 503 until it is done) and the hand-over during a
    /// graceful upgrade or stop. `take_over`: the process was started with `-u` and
    /// takes the database over from the process it upgrades.
    pub fn add_services(&self, server: &mut Server, take_over: bool) {
        let state = &self.state;
        let proposer = Proposer {
            sessions: state.sessions.clone(),
            client: Arc::new(state.proposer_client()),
            wake: state.sessions.env().proposer_wake.clone(),
            hourly: HourlyLimit::new(state.config.proposer.max_proposals_per_hour),
        };
        server.add_service(background_service("proposer", proposer));
        let phases = parking_lot::Mutex::new(Some(server.watch_execution_phase()));
        let handover = Handover {
            state: state.clone(),
            phases,
        };
        server.add_service(background_service("handover", handover));
        let loader = StoreLoader {
            state: state.clone(),
            take_over,
            fatal: self.fatal.clone(),
        };
        server.add_service(background_service("store", loader));
    }

    /// The server's shutdown signal: Pingora's Unix signals, plus a fast stop when one of
    /// GEPA's services fails for good. A host that does not use it keeps running with
    /// GEPA's routes answering 503, and the error in its log.
    pub fn shutdown_signal(&self) -> ShutdownOnFatal {
        ShutdownOnFatal {
            fatal: self.fatal.clone(),
        }
    }

    /// Where GEPA's services, and the wiring around them, report an error they cannot go
    /// on from.
    pub fn fatal(&self) -> &FatalError {
        &self.fatal
    }

    /// The error that stopped one of GEPA's services, if one did.
    pub fn fatal_error(&self) -> Option<&str> {
        self.fatal.get()
    }

    /// Whether GEPA serves: its state is restored and it has not handed over.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire) && !self.state.handed_over.load(Ordering::Acquire)
    }

    /// The `/metrics` application, for a listening service of its own.
    pub fn metrics_app(&self) -> MetricsApp {
        MetricsApp {
            metrics: self.state.metrics.clone(),
        }
    }

    /// Writes out what would otherwise die with the process: call it after the server's
    /// `run` returns. Commits the rollout records of calls that finished since the
    /// store's last batch (and, after a hand-over, of every call served in the grace
    /// period) and the buffered access-log lines.
    pub fn flush_at_exit(&self) {
        if let Some(store) = &self.state.sqlite {
            store.flush_rollouts(EXIT_FLUSH_LIMIT);
        }
        crate::logging::flush_access();
    }
}
