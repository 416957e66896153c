//! Turns what serde read into the validated model: one resolver per section of the file,
//! each in the file of that name (`server` for Pingora's top-level keys, `gateway` for the
//! keys directly under `gateway:`), and the checks they share in `validate`.
//!
//! A resolver records every bad key in [`Problems`] and carries on with the next, so one
//! run reports them all. It returns `None` for a value whose key was bad; what depends on
//! that value (the metrics port against `gateway.listen`, the client keys against the
//! upstream key) is then not checked, as it would only repeat the same mistake.

mod admin;
mod auth;
mod capture;
mod gateway;
mod gepa;
mod limits;
mod metrics;
mod proposer;
pub(super) mod server;
mod sessions;
mod storage;
mod upstream;
mod validate;

use crate::config::error::{ConfigError, Problem};
use crate::config::model::GatewayConfig;
use crate::config::raw::RawGateway;
use validate::Env;

/// What an `*_env` key names: the environment variable, or `None` when the key is empty
/// (not configured).
type VarName<'a> = Option<&'a str>;

/// The problems found so far, in the order the resolvers ran (the order of the file's
/// sections).
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    /// The value of a check that passed; a failed one is recorded, and is `None`.
    pub(super) fn take<T>(&mut self, checked: Result<T, Problem>) -> Option<T> {
        match checked {
            Ok(value) => Some(value),
            Err(problem) => {
                self.0.push(problem);
                None
            }
        }
    }

    /// `value` if nothing was wrong, else every problem.
    pub(super) fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match (ConfigError::from_problems(self.0), value) {
            (Some(problems), _) => Err(problems),
            (None, Some(value)) => Ok(value),
            // Each resolver records why it returns None; this only keeps a slip from passing.
            (None, None) => {
                Err(Problem::new("gateway", "is invalid (no detail was recorded)").into())
            }
        }
    }
}

/// The `gateway:` section, every key checked; `None` when any was bad.
pub(super) fn gateway(
    raw: RawGateway,
    env: Env<'_>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<GatewayConfig> {
    let (listen, public_url) = gateway::resolve(&raw, p);
    let raw_upstream = raw.upstream.unwrap_or_default();
    let upstream = upstream::resolve(&raw_upstream, p, warnings);
    let key_var = upstream.key_var;
    let client_keys = auth::resolve(raw.auth.unwrap_or_default(), key_var, env, p, warnings);
    let upstream = upstream.config(upstream::api_key(key_var, env, p));
    let (admin_tokens, reward_tokens) =
        admin::resolve(raw.admin.unwrap_or_default(), env, p, warnings);
    let storage = storage::resolve(raw.storage.unwrap_or_default(), p);
    let metrics_listen = metrics::resolve(raw.metrics.unwrap_or_default(), listen, p);
    let proposer = raw.proposer.unwrap_or_default();
    let proposer = proposer::resolve(proposer, upstream.as_ref(), key_var, env, p, warnings);
    let gepa_defaults = gepa::resolve(raw.gepa.unwrap_or_default(), p);
    let sessions = sessions::resolve(raw.sessions.unwrap_or_default(), p);
    let capture_max_bytes = capture::resolve(raw.capture.unwrap_or_default(), p);
    let max_body_bytes = limits::resolve(raw.limits.unwrap_or_default(), p);
    let (max_sessions, correlation_ttl) = sessions?;
    Some(GatewayConfig {
        listen: listen?,
        public_url: public_url?,
        upstream: upstream?,
        client_keys: client_keys?,
        admin_tokens: admin_tokens?,
        reward_tokens: reward_tokens?,
        storage: storage?,
        metrics_listen: metrics_listen?,
        proposer: proposer?,
        gepa_defaults: gepa_defaults?,
        max_sessions,
        correlation_ttl,
        capture_max_bytes: capture_max_bytes?,
        max_body_bytes: max_body_bytes?,
    })
}
