//! Wiring: command line, config, and the Pingora server with the gateway service.

use pingora_core::server::configuration::Opt;
use pingora_core::server::{ExecutionPhase, RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy_service_with_name;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::StorageBackend;
use crate::config::{self, Config};
use crate::gateway::{Gateway, GatewayState};
use crate::metrics::MetricsApp;
use crate::proposer::Proposer;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::Ordering;

/// The config file used when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "conf/gateway.yaml";

/// Runs the gateway as the command line asks; returns the process exit code: for `-t`,
/// for config errors, and once a running server has shut down.
pub fn run(opt: Opt) -> i32 {
    let path = PathBuf::from(
        opt.conf
            .clone()
            .unwrap_or_else(|| DEFAULT_CONFIG.to_string()),
    );
    let config = match config::load_file(&path, &config::process_env) {
        Ok(c) => c,
        Err(e) => {
            // One line per bad key, each with the prefix, so that every one is seen.
            for problem in e.to_string().lines() {
                eprintln!("gepa-gateway: configuration error: {problem}");
            }
            return 1;
        }
    };
    if opt.test {
        for w in &config.warnings {
            eprintln!("gepa-gateway: warning: {w}");
        }
        println!("gepa-gateway: configuration {} is valid", path.display());
        return 0;
    }
    crate::logging::init();
    for w in &config.warnings {
        log::warn!("{w}");
    }
    serve(opt, config)
}

fn serve(opt: Opt, config: Config) -> i32 {
    let Config {
        server, gateway, ..
    } = config;
    if gateway.storage.backend == StorageBackend::Sqlite {
        // Fail fast, before forking, on a path that cannot hold the database; the
        // connection itself is opened after the fork (see StoreLoader).
        if let Err(e) = crate::store::sqlite::check(&gateway.storage.path, opt.upgrade) {
            eprintln!("gepa-gateway: storage error: {}", e.0);
            std::process::exit(1);
        }
    }
    let listen = gateway.listen.to_string();
    let take_over = opt.upgrade;
    let mut server_opt = opt;
    // The gateway's own file is not a Pingora conf file; Pingora gets the parsed part.
    server_opt.conf = None;
    let mut pingora = Server::new_with_opt_and_conf(server_opt, server);
    pingora.bootstrap();
    let state = match GatewayState::new(gateway) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("gepa-gateway cannot start: {e}");
            std::process::exit(1);
        }
    };
    if let Some(addr) = state.config.metrics_listen {
        let app = MetricsApp {
            metrics: state.metrics.clone(),
        };
        let mut metrics = Service::new("metrics".to_string(), app);
        metrics.add_tcp(&addr.to_string());
        pingora.add_service(metrics);
        log::info!("metrics on http://{addr}/metrics");
    }
    let mut service = http_proxy_service_with_name(
        &pingora.configuration,
        Gateway {
            state: state.clone(),
        },
        "gepa-gateway",
    );
    service.add_tcp(&listen);
    pingora.add_service(service);
    let proposer = Proposer {
        sessions: state.sessions.clone(),
        client: Arc::new(state.proposer_client()),
        wake: state.sessions.env().proposer_wake.clone(),
    };
    pingora.add_service(background_service("proposer", proposer));
    let phases = pingora.watch_execution_phase();
    pingora.add_service(background_service(
        "handover",
        Handover {
            state: state.clone(),
            phases: parking_lot::Mutex::new(Some(phases)),
        },
    ));
    pingora.add_service(background_service(
        "store",
        StoreLoader {
            state: state.clone(),
            take_over,
        },
    ));
    log::info!("gepa-gateway listening on {listen}");
    // Returns once Pingora has shut down (after a graceful shutdown's grace period, or an
    // upgrade's), in the daemon too: `-d` forks inside it and the parent exits there.
    pingora.run(RunArgs::default());
    flush_at_exit(&state);
    0
}

/// How long the exit waits for the store's last commit.
const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Writes out what would otherwise die with the process: the rollout records of calls
/// that finished since the writer's last batch (up to `storage.write_behind_ms`, and
/// after a hand-over those of every call served in the grace period) and the buffered
/// access-log lines.
fn flush_at_exit(state: &GatewayState) {
    if let Some(store) = &state.sqlite {
        store.flush_rollouts(EXIT_FLUSH_LIMIT);
    }
    crate::logging::flush_access();
}

/// Opens the durable store after Pingora has forked, restores every session from it, and
/// only then lets the gateway serve state (`/readyz` turns 200). A store that cannot be
/// opened is fatal: the process exits with the reason, which names the path.
struct StoreLoader {
    state: Arc<GatewayState>,
    /// Started with `-u`: wait for the old process to hand the database over.
    take_over: bool,
}

#[async_trait]
impl BackgroundService for StoreLoader {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(store) = self.state.sqlite.clone() else {
            return;
        };
        let started = std::time::Instant::now();
        let take_over = self.take_over;
        let loaded = tokio::task::spawn_blocking(move || {
            store.open(take_over)?;
            store.restore()
        })
        .await;
        match loaded {
            Ok(Ok(sessions)) => {
                let n = self.state.sessions.restore(sessions);
                self.state.ready.store(true, Ordering::Release);
                log::info!(
                    "store: restored {n} sessions in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Ok(Err(e)) => {
                log::error!("store: {}", e.0);
                std::process::exit(1);
            }
            Err(e) => {
                log::error!("store: restoring failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Hands the session API and the database over when Pingora starts a graceful upgrade
/// (SIGQUIT: the listeners go to the new process) or a graceful shutdown (SIGTERM).
///
/// Pingora keeps the old process accepting for a few seconds after it sent its listeners,
/// and serving kept-alive connections through the grace period, so both processes run
/// at once. From the hand-over on, the old process answers the session API with 503 and
/// `Connection: close` (the client retries on a new connection, which reaches the new
/// process), commits what it already acknowledged, and releases the database, which the
/// new process waits for before it restores. Proxied calls go on being served.
struct Handover {
    state: Arc<GatewayState>,
    phases: parking_lot::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for Handover {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().take() else {
            return;
        };
        loop {
            let phase = tokio::select! {
                p = phases.recv() => p,
                _ = shutdown.changed() => break,
            };
            match phase {
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds)
                | Ok(ExecutionPhase::GracefulTerminate) => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
        self.state.handed_over.store(true, Ordering::Release);
        log::info!("handing over: the session API now answers 503 here");
        if let Some(store) = &self.state.sqlite {
            store.hand_over().await;
        }
    }
}
