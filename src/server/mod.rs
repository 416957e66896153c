//! Wiring: command line, config, and the Pingora server with the standalone gateway's
//! services. Returns the process's exit status; only `main` exits.

mod listeners;

pub use listeners::{reported_address, LISTEN_LOG_TARGET};

use pingora_core::server::configuration::Opt;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy_service_with_name;
use std::path::PathBuf;

use crate::config::{self, Config, StorageBackend};
use crate::gateway::standalone::Gateway;
use crate::gateway::Gepa;
use listeners::{BindListeners, Listener};

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
        // connection itself is opened after the fork (by GEPA's store service).
        if let Err(e) = crate::store::sqlite::check(&gateway.storage.path, opt.upgrade) {
            eprintln!("gepa-gateway: storage error: {}", e.0);
            return 1;
        }
    }
    let proxy_listener = Listener::new("proxy", gateway.listen, None);
    let metrics_listener = gateway
        .metrics_listen
        .map(|addr| Listener::new("metrics", addr, Some(&proxy_listener.key)));
    let take_over = opt.upgrade;
    let mut server_opt = opt;
    // The gateway's own file is not a Pingora conf file; Pingora gets the parsed part.
    server_opt.conf = None;
    let mut pingora = Server::new_with_opt_and_conf(server_opt, server);
    pingora.bootstrap();
    let gepa = match Gepa::new(gateway) {
        Ok(gepa) => gepa,
        Err(e) => {
            log::error!("gepa-gateway cannot start: {e}");
            return 1;
        }
    };
    let bound = pingora.add_service(BindListeners {
        listeners: [Some(proxy_listener.clone()), metrics_listener.clone()]
            .into_iter()
            .flatten()
            .collect(),
        fatal: gepa.fatal().clone(),
    });
    if let Some(listener) = metrics_listener {
        let mut metrics = Service::new("metrics".to_string(), gepa.metrics_app());
        metrics.add_tcp(&listener.key);
        pingora.add_service(metrics).add_dependency(&bound);
    }
    let gateway = Gateway { gepa: gepa.clone() };
    let mut service = http_proxy_service_with_name(&pingora.configuration, gateway, "gepa-gateway");
    service.add_tcp(&proxy_listener.key);
    pingora.add_service(service).add_dependency(&bound);
    gepa.add_services(&mut pingora, take_over);
    // Returns once Pingora has shut down (after a graceful shutdown's grace period, or an
    // upgrade's, or at once after a fatal error of one of GEPA's services), in the daemon
    // too: `-d` forks inside it and the parent exits there.
    pingora.run(RunArgs {
        shutdown_signal: Box::new(gepa.shutdown_signal()),
    });
    gepa.flush_at_exit();
    exit_status(&gepa)
}

/// 0 after a requested stop; 1 when a service stopped the server with a fatal error
/// (already logged; repeated on stderr for whoever watches the process rather than its log).
fn exit_status(gepa: &Gepa) -> i32 {
    match gepa.fatal_error() {
        Some(e) => {
            eprintln!("gepa-gateway: {e}");
            1
        }
        None => 0,
    }
}
