//! `gateway.auth`: the keys clients must present, and the rule that the gateway's own
//! upstream key is only spent on clients that presented one.

use super::validate::{named_secret_list, Env};
use super::{Problems, VarName};
use crate::config::error::Problem;
use crate::config::raw::RawAuth;
use crate::config::secret::Secret;

const KEY: &str = "gateway.auth.client_keys_env";

/// The client keys. `upstream_key_var` is what `gateway.upstream.api_key_env` names (`None`
/// when that name was bad, and the rule is not checked).
pub(super) fn resolve(
    raw: RawAuth,
    upstream_key_var: Option<VarName<'_>>,
    env: Env<'_>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<Vec<Secret>> {
    let name = raw.client_keys_env.as_deref().unwrap_or("");
    let (var, keys) = p.take(named_secret_list(KEY, name, env))?;
    match (var, upstream_key_var) {
        (Some(var), Some(None)) if keys.is_empty() => warnings.push(format!(
            "{KEY}: {var} is not set or empty; client keys are not checked"
        )),
        (_, Some(Some(upstream_var))) => {
            p.take(guard_upstream_key(var, upstream_var, &keys));
        }
        _ => {}
    }
    Some(keys)
}

/// Refuses to spend the gateway's own upstream key (from `upstream_var`) on unauthenticated
/// clients: client keys must come from another variable, and be set.
fn guard_upstream_key(
    client_var: Option<&str>,
    upstream_var: &str,
    keys: &[Secret],
) -> Result<(), Problem> {
    match client_var {
        None => Err(Problem::new(
            KEY,
            "is required when gateway.upstream.api_key_env is set: the gateway refuses to \
             spend its own upstream key on unauthenticated clients; name a variable holding \
             comma-separated client keys",
        )),
        Some(var) if var == upstream_var => Err(Problem::new(
            KEY,
            "must not name the same variable as gateway.upstream.api_key_env",
        )),
        Some(var) if keys.is_empty() => Err(Problem::new(
            KEY,
            format!(
                "environment variable {var} is not set or holds no keys; it is required when \
                 gateway.upstream.api_key_env is set: the gateway refuses to spend its own \
                 upstream key on unauthenticated clients"
            ),
        )),
        Some(_) => Ok(()),
    }
}
