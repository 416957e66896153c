//! `gateway.admin`: the tokens that open the admin API, and the reward-only tokens.

use super::validate::{named_secret_list, Env};
use super::Problems;
use crate::config::model::DEFAULT_ADMIN_TOKEN_ENV;
use crate::config::raw::RawAdmin;
use crate::config::secret::Secret;

const TOKEN_ENV: &str = "gateway.admin.token_env";
const REWARD_TOKEN_ENV: &str = "gateway.admin.reward_token_env";

/// The admin tokens and the reward-only tokens. Without admin tokens the admin API still
/// answers loopback clients, so a missing one is a warning, not a problem.
pub(super) fn resolve(
    raw: RawAdmin,
    env: Env<'_>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> (Option<Vec<Secret>>, Option<Vec<Secret>>) {
    let name = raw.token_env.as_deref().unwrap_or(DEFAULT_ADMIN_TOKEN_ENV);
    let admin = p.take(named_secret_list(TOKEN_ENV, name, env));
    match &admin {
        Some((None, _)) => warnings.push(format!(
            "{TOKEN_ENV}: is empty; the admin API answers loopback clients only"
        )),
        Some((Some(var), tokens)) if tokens.is_empty() => warnings.push(format!(
            "{TOKEN_ENV}: {var} is not set; the admin API answers loopback clients only"
        )),
        _ => {}
    }
    let name = raw.reward_token_env.as_deref().unwrap_or("");
    let reward = p.take(named_secret_list(REWARD_TOKEN_ENV, name, env));
    if let Some((Some(var), tokens)) = &reward {
        if tokens.is_empty() {
            warnings.push(format!(
                "{REWARD_TOKEN_ENV}: {var} is not set; no reward-only tokens are accepted"
            ));
        }
    }
    (
        admin.map(|(_, tokens)| tokens),
        reward.map(|(_, tokens)| tokens),
    )
}
