//! Wiring: command line, config, and the Pingora server with the gateway service.

use pingora_core::server::configuration::Opt;
use pingora_core::server::{ExecutionPhase, ListenFds, RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_core::services::{ServiceReadyNotifier, ServiceWithDependents};
use pingora_proxy::http_proxy_service_with_name;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, IntoRawFd};
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
            eprintln!("gepa-gateway: configuration error: {e}");
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
    let proxy_listener = Listener::new("proxy", gateway.listen, None);
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
    let metrics_listener = state
        .config
        .metrics_listen
        .map(|addr| Listener::new("metrics", addr, Some(&proxy_listener.key)));
    let bound = pingora.add_service(BindListeners {
        listeners: [Some(proxy_listener.clone()), metrics_listener.clone()]
            .into_iter()
            .flatten()
            .collect(),
    });
    if let Some(listener) = metrics_listener {
        let app = MetricsApp {
            metrics: state.metrics.clone(),
        };
        let mut metrics = Service::new("metrics".to_string(), app);
        metrics.add_tcp(&listener.key);
        pingora.add_service(metrics).add_dependency(&bound);
    }
    let mut service = http_proxy_service_with_name(
        &pingora.configuration,
        Gateway {
            state: state.clone(),
        },
        "gepa-gateway",
    );
    service.add_tcp(&proxy_listener.key);
    pingora.add_service(service).add_dependency(&bound);
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
    // Returns once Pingora has shut down (after a graceful shutdown's grace period, or an
    // upgrade's), in the daemon too: `-d` forks inside it and the parent exits there.
    pingora.run(RunArgs::default());
    flush_at_exit(&state);
    0
}

/// The log target of the lines that say where each listener is: one line per listener,
/// `{what} listening on {address}`, `what` being `proxy` or `metrics`.
pub const LISTEN_LOG_TARGET: &str = "listen";

/// One of the gateway's listening sockets, as Pingora knows it.
#[derive(Clone)]
struct Listener {
    /// `proxy` or `metrics`, for the log line.
    what: &'static str,
    /// The configured address; port 0 lets the system pick a free port.
    addr: SocketAddr,
    /// The socket's name in Pingora: the key of its table of listening sockets, which a
    /// zero-downtime upgrade hands to the new process, and the address Pingora binds when
    /// the table has no socket of that name.
    key: String,
}

impl Listener {
    /// The key is the address, as in any Pingora server, unless `taken` already names a
    /// socket: only possible for two listeners on port 0 of one IP (the config refuses
    /// other clashes). Pingora looks sockets up by key, so two services with one key would
    /// accept on one socket: the proxy would answer `/metrics` and the reverse.
    fn new(what: &'static str, addr: SocketAddr, taken: Option<&str>) -> Listener {
        let mut key = addr.to_string();
        if taken == Some(key.as_str()) {
            key = format!("{key}#{what}");
        }
        Listener { what, addr, key }
    }
}

/// Makes the address of every listener known, and binds those on port 0, before the
/// services that accept on them start (they depend on this one).
///
/// A Pingora service binds its listeners when it starts and keeps their addresses to
/// itself (`ListenerEndpoint::local_addr` exists only in Pingora's own tests), so a
/// listener on port 0 would never say which port it got. This service binds such a
/// listener itself and puts the socket into Pingora's table under the listener's key,
/// where Pingora's bind looks first (pingora-core 0.9 `listeners/l4.rs`,
/// `ListenerEndpointBuilder::listen`) and takes the socket as it takes one inherited in
/// an upgrade. After an upgrade the socket is already in the table, inherited: same port.
/// Either way its bound address is logged (target [`LISTEN_LOG_TARGET`]); this is how the
/// tests learn the ports of a gateway they start on port 0. Listeners on a fixed port are
/// left to Pingora (which retries for 30 s while the port is in use) and logged as
/// configured.
struct BindListeners {
    listeners: Vec<Listener>,
}

#[async_trait]
impl ServiceWithDependents for BindListeners {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        for listener in &self.listeners {
            match bound_address(listener, fds.as_ref()) {
                Ok(addr) => log::info!(
                    target: LISTEN_LOG_TARGET,
                    "{} listening on {addr}",
                    listener.what
                ),
                Err(e) => {
                    log::error!(
                        "cannot listen on {} ({}): {e}",
                        listener.addr,
                        listener.what
                    );
                    std::process::exit(1);
                }
            }
        }
        ready.notify_ready();
    }

    fn name(&self) -> &str {
        "listeners"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    /// Claims no socket of its own: the services that accept name theirs, so Pingora still
    /// closes inherited sockets that no service claims.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

/// Where `listener` is bound: its configured address on a fixed port; on port 0, the
/// address of the socket in Pingora's table (inherited), or of one bound here and added.
fn bound_address(listener: &Listener, fds: Option<&ListenFds>) -> std::io::Result<SocketAddr> {
    if listener.addr.port() != 0 {
        return Ok(listener.addr);
    }
    // Pingora passes its table to every service on Unix (`Server::run_service`).
    let Some(fds) = fds else {
        return Err(std::io::Error::other("no table of listening sockets"));
    };
    let mut table = fds.lock();
    if let Some(&fd) = table.get(&listener.key) {
        // SAFETY: the table holds open listening sockets, and none is closed while it is
        // locked; the borrow ends here.
        let inherited = unsafe { BorrowedFd::borrow_raw(fd) };
        return std::net::TcpListener::from(inherited.try_clone_to_owned()?).local_addr();
    }
    // std sets SO_REUSEADDR, as Pingora's bind does (Pingora then sets its own backlog).
    // Pingora's tokio listener needs the socket non-blocking, and owns it from here on.
    let socket = std::net::TcpListener::bind(listener.addr)?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    table.add(listener.key.clone(), socket.into_raw_fd());
    Ok(addr)
}

/// The address a log line (one JSON object) reports for the `what` listener, if it is a
/// [`LISTEN_LOG_TARGET`] line about that listener: for programs that start the gateway on
/// port 0 and read its stderr (the tests, `benches/simulate.rs`).
pub fn reported_address(log_line: &str, what: &str) -> Option<SocketAddr> {
    let line: serde_json::Value = serde_json::from_str(log_line).ok()?;
    if line["target"] != LISTEN_LOG_TARGET {
        return None;
    }
    line["message"]
        .as_str()?
        .strip_prefix(what)?
        .strip_prefix(" listening on ")?
        .parse()
        .ok()
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
