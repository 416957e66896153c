//! `gateway.proposer`: the model that proposes new prompts, where it is reached, and with
//! which key.

use super::validate::{env_var_name, in_range, parse_url, single_secret, usize_in_range, Env};
use super::{Problems, VarName};
use crate::config::error::Problem;
use crate::config::model::{ProposerConfig, UpstreamConfig};
use crate::config::model::{
    DEFAULT_MAX_INSTRUCTION_BYTES, DEFAULT_MERGE, DEFAULT_MINIBATCH_SIZE, DEFAULT_PROPOSER_MODEL,
};
use crate::config::raw::RawProposer;
use crate::config::secret::Secret;
use crate::config::upstream_url::UpstreamUrl;

const KEY_ENV: &str = "gateway.proposer.api_key_env";

/// The proposer settings. Its key falls back to the upstream's (`upstream`, `None` when
/// that section had a bad key), whose variable `upstream_key_var` names for the warning.
pub(super) fn resolve(
    raw: RawProposer,
    upstream: Option<&UpstreamConfig>,
    upstream_key_var: Option<VarName<'_>>,
    env: Env<'_>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<ProposerConfig> {
    let model = raw
        .model
        .as_deref()
        .unwrap_or(DEFAULT_PROPOSER_MODEL)
        .trim();
    let model = p.take(if model.is_empty() {
        Err(Problem::new("gateway.proposer.model", "must not be empty"))
    } else {
        Ok(model.to_string())
    });
    let url = p.take(match raw.url.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => parse_url("gateway.proposer.url", s).map(Some),
    });
    let own_key = p.take(own_key(raw.api_key_env.as_deref().unwrap_or(""), env));
    let minibatch_size = p.take(usize_in_range(
        "gateway.proposer.minibatch_size",
        raw.minibatch_size.unwrap_or(DEFAULT_MINIBATCH_SIZE),
        1,
        32,
    ));
    let max_instruction_bytes = p.take(usize_in_range(
        "gateway.proposer.max_instruction_bytes",
        raw.max_instruction_bytes
            .unwrap_or(DEFAULT_MAX_INSTRUCTION_BYTES),
        256,
        1024 * 1024,
    ));
    let review = p.take(raw.review.resolve("gateway.proposer.review"));
    // 0 (the default) means no limit.
    let limit = |key, value: Option<u64>| {
        in_range(key, value.unwrap_or(0), 0, 1_000_000).map(|n| (n > 0).then_some(n))
    };
    let max_proposals = p.take(limit("gateway.proposer.max_proposals", raw.max_proposals));
    let max_per_hour = p.take(limit(
        "gateway.proposer.max_proposals_per_hour",
        raw.max_proposals_per_hour,
    ));
    let api_key = match own_key? {
        Some((var, key)) => {
            if key.is_none() {
                warnings.push(format!(
                    "{KEY_ENV}: {var} is not set; the proposer sends no API key"
                ));
            }
            key
        }
        None => upstream_key(
            url.as_ref()?.as_ref(),
            upstream?,
            upstream_key_var?,
            warnings,
        ),
    };
    Some(ProposerConfig {
        model: model?,
        url: url?,
        api_key,
        minibatch_size: minibatch_size?,
        merge: raw.merge.unwrap_or(DEFAULT_MERGE),
        max_instruction_bytes: max_instruction_bytes?,
        review: review?.unwrap_or_default(),
        max_proposals: max_proposals?,
        max_proposals_per_hour: max_per_hour?,
    })
}

/// The variable `api_key_env` names and the key it holds (`None` when unset); `None` when
/// the key is empty (not configured).
fn own_key<'a>(name: &'a str, env: Env<'_>) -> Result<Option<(&'a str, Option<Secret>)>, Problem> {
    let Some(var) = env_var_name(KEY_ENV, name)? else {
        return Ok(None);
    };
    Ok(Some((var, single_secret(KEY_ENV, var, env)?)))
}

/// The upstream's key, lent to the proposer; allowed to travel to another host (the
/// proposer may be a different provider), but not without a warning.
fn upstream_key(
    url: Option<&UpstreamUrl>,
    upstream: &UpstreamConfig,
    upstream_key_var: Option<&str>,
    warnings: &mut Vec<String>,
) -> Option<Secret> {
    if let (Some(url), Some(_), Some(var)) = (url, &upstream.api_key, upstream_key_var) {
        if !url.same_origin(&upstream.url) {
            warnings.push(format!(
                "{KEY_ENV}: is empty, so the upstream key from {var} is sent to \
                 gateway.proposer.url, a different host than gateway.upstream.url"
            ));
        }
    }
    upstream.api_key.clone()
}
