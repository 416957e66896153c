//! Wiring: command line, config, and the Pingora server with the gateway service.

use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy_service_with_name;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, Config};
use crate::gateway::{Gateway, GatewayState};
use crate::metrics::MetricsApp;
use crate::proposer::Proposer;

/// The config file used when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "conf/gateway.yaml";

/// Runs the gateway as the command line asks; returns the process exit code for `-t` and
/// for config errors (a running server never returns).
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

fn serve(opt: Opt, config: Config) -> ! {
    let Config {
        server, gateway, ..
    } = config;
    let listen = gateway.listen.to_string();
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
    log::info!("gepa-gateway listening on {listen}");
    pingora.run_forever()
}
