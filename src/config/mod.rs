//! Configuration file loading and validation.
//!
//! One YAML file holds Pingora's own server keys at the top level (`version`, `threads`,
//! `pid_file`, ...) and the gateway's settings under `gateway:`. Secrets never live in the
//! file: it only names environment variables, which are looked up through the `env` closure
//! given to [`load_file`] / [`parse_str`] (use [`process_env`] for the real environment).
//!
//! Error messages name the full key path (`gateway.upstream.url`) and never contain a secret
//! value or the file's text. Nothing here prints or logs; non-fatal problems are returned in
//! [`Config::warnings`].
//!
//! Two layers: `raw` mirrors the file (serde structs, every key optional, unknown keys
//! refused), and `resolve` turns it into the validated `model` the gateway reads.
//! [`Secret`] and [`UpstreamUrl`] are the two value types the model holds; [`ConfigError`]
//! lists what is wrong, one [`Problem`] per bad key: a file that reads is checked in full,
//! so one run reports every bad value.

mod error;
mod model;
mod raw;
mod resolve;
mod secret;
mod upstream_url;

#[cfg(test)]
mod tests;

use std::path::Path;

use resolve::Problems;

pub use error::{ConfigError, Problem};
pub use model::{
    Allocation, Config, GatewayConfig, GepaDefaults, ProposerConfig, Review, StorageBackend,
    StorageConfig, UpstreamConfig, GATEWAY_KEY,
};
pub use secret::Secret;
pub use upstream_url::UpstreamUrl;

/// `std::env::var(name).ok()`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads and validates a config file; `env` looks up environment variables.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::from(Problem::new("", format!("cannot read config file: {e}"))).with_file(path)
    })?;
    parse_str(&text, env).map_err(|e| e.with_file(path))
}

/// Parses and validates config text; `env` looks up environment variables.
pub fn parse_str(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    // A file YAML cannot read, or with Pingora keys serde cannot, stops at the first error.
    let mut top = raw::top_level(yaml)?;
    let gateway = top.remove(GATEWAY_KEY).unwrap_or(serde_yaml::Value::Null);
    let server = resolve::server::read(top, &mut warnings)?;
    // From here on every problem is collected, so one run reports them all (serde reading
    // the gateway section still stops at its first, but that one joins Pingora's).
    let mut problems = Problems::default();
    let server = resolve::server::resolve(server, &mut problems);
    let gateway = problems
        .take(raw::RawGateway::from_value(gateway))
        .and_then(|raw| resolve::gateway(raw, env, &mut problems, &mut warnings));
    let (server, gateway) = problems.finish(server.zip(gateway))?;
    Ok(Config {
        server,
        gateway,
        warnings,
    })
}
