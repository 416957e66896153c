//! Turns the raw file model into the validated model.

mod server;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::model::*;
use crate::config::raw::RawGateway;
use crate::config::{ConfigError, UpstreamUrl};
pub(super) use server::server;
use validate::*;

pub(super) fn gateway(
    raw: RawGateway,
    env: Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<GatewayConfig, ConfigError> {
    let upstream = raw.upstream.unwrap_or_default();
    let auth = raw.auth.unwrap_or_default();
    let admin = raw.admin.unwrap_or_default();
    let storage = raw.storage.unwrap_or_default();
    let metrics = raw.metrics.unwrap_or_default();
    let proposer = raw.proposer.unwrap_or_default();
    let gepa = raw.gepa.unwrap_or_default();
    let sessions = raw.sessions.unwrap_or_default();
    let capture = raw.capture.unwrap_or_default();
    let limits = raw.limits.unwrap_or_default();

    // listen / public_url
    let listen = parse_listen(
        "gateway.listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
    )?;
    let public_url = {
        let key = "gateway.public_url";
        let s = raw
            .public_url
            .as_deref()
            .unwrap_or(DEFAULT_PUBLIC_URL)
            .trim();
        UpstreamUrl::parse(s).map_err(|m| ConfigError::new(key, m))?;
        s.trim_end_matches('/').to_string()
    };

    // upstream (the key itself is read below, after the client-key requirement check)
    let url = {
        let key = "gateway.upstream.url";
        let url = UpstreamUrl::parse(upstream.url.as_deref().unwrap_or(DEFAULT_UPSTREAM_URL))
            .map_err(|m| ConfigError::new(key, m))?;
        if url.base_path.ends_with("/chat/completions") {
            warnings.push(format!(
                "{key}: is a base URL; /chat/completions is appended to it, so requests go \
                 to {}",
                url.chat_completions_path()
            ));
        }
        url
    };
    let connect_timeout = Duration::from_millis(in_range(
        "gateway.upstream.connect_timeout_ms",
        upstream
            .connect_timeout_ms
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        1,
        600_000,
    )?);
    let read_timeout = Duration::from_secs(in_range(
        "gateway.upstream.read_timeout_s",
        upstream.read_timeout_s.unwrap_or(DEFAULT_READ_TIMEOUT_S),
        1,
        86_400,
    )?);
    let write_timeout = Duration::from_secs(in_range(
        "gateway.upstream.write_timeout_s",
        upstream.write_timeout_s.unwrap_or(DEFAULT_WRITE_TIMEOUT_S),
        1,
        3_600,
    )?);
    let ca_file = match upstream.ca_file.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(check_ca_file("gateway.upstream.ca_file", p)?),
    };

    // variable names first, so a bad name is reported before anything is looked up
    let upstream_key_var = env_var_name(
        "gateway.upstream.api_key_env",
        upstream.api_key_env.as_deref().unwrap_or(""),
    )?;
    let client_keys_var = env_var_name(
        "gateway.auth.client_keys_env",
        auth.client_keys_env.as_deref().unwrap_or(""),
    )?;
    let admin_var = env_var_name(
        "gateway.admin.token_env",
        admin
            .token_env
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_TOKEN_ENV),
    )?;
    let reward_var = env_var_name(
        "gateway.admin.reward_token_env",
        admin.reward_token_env.as_deref().unwrap_or(""),
    )?;
    let proposer_key_var = env_var_name(
        "gateway.proposer.api_key_env",
        proposer.api_key_env.as_deref().unwrap_or(""),
    )?;

    // auth.client_keys_env
    let client_keys = match client_keys_var {
        None => Vec::new(),
        Some(var) => {
            let keys = secret_list("gateway.auth.client_keys_env", var, env)?;
            if keys.is_empty() && upstream_key_var.is_none() {
                warnings.push(format!(
                    "gateway.auth.client_keys_env: {var} is not set or empty; client keys are \
                     not checked"
                ));
            }
            keys
        }
    };

    // upstream.api_key_env: refuse to spend our own key on unauthenticated clients
    let upstream_api_key = match upstream_key_var {
        None => None,
        Some(var) => {
            let key = "gateway.auth.client_keys_env";
            match client_keys_var {
                None => {
                    return Err(ConfigError::new(
                        key,
                        "is required when gateway.upstream.api_key_env is set: the gateway \
                         refuses to spend its own upstream key on unauthenticated clients; \
                         name a variable holding comma-separated client keys",
                    ))
                }
                Some(ck) if ck == var => {
                    return Err(ConfigError::new(
                        key,
                        "must not name the same variable as gateway.upstream.api_key_env",
                    ))
                }
                Some(ck) if client_keys.is_empty() => {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "environment variable {ck} is not set or holds no keys; it is \
                             required when gateway.upstream.api_key_env is set: the gateway \
                             refuses to spend its own upstream key on unauthenticated clients"
                        ),
                    ))
                }
                Some(_) => {}
            }
            Some(
                single_secret("gateway.upstream.api_key_env", var, env)?.ok_or_else(|| {
                    ConfigError::new(
                        "gateway.upstream.api_key_env",
                        format!("environment variable {var} is not set"),
                    )
                })?,
            )
        }
    };

    // admin
    let admin_tokens = match admin_var {
        None => {
            warnings.push(
                "gateway.admin.token_env: is empty; the admin API answers loopback clients only"
                    .to_string(),
            );
            Vec::new()
        }
        Some(var) => {
            let tokens = secret_list("gateway.admin.token_env", var, env)?;
            if tokens.is_empty() {
                warnings.push(format!(
                    "gateway.admin.token_env: {var} is not set; the admin API answers loopback \
                     clients only"
                ));
            }
            tokens
        }
    };
    let reward_tokens = match reward_var {
        None => Vec::new(),
        Some(var) => {
            let tokens = secret_list("gateway.admin.reward_token_env", var, env)?;
            if tokens.is_empty() {
                warnings.push(format!(
                    "gateway.admin.reward_token_env: {var} is not set; no reward-only tokens \
                     are accepted"
                ));
            }
            tokens
        }
    };

    // storage
    let storage = {
        let key = "gateway.storage.path";
        let path = storage
            .path
            .as_deref()
            .unwrap_or(DEFAULT_STORAGE_PATH)
            .trim();
        if path.is_empty() {
            return Err(ConfigError::new(key, "must not be empty"));
        }
        let rollouts_in_memory = in_range(
            "gateway.storage.rollouts_in_memory",
            storage
                .rollouts_in_memory
                .unwrap_or(DEFAULT_ROLLOUTS_IN_MEMORY as u64),
            1,
            10_000_000,
        )?;
        let write_behind_ms = in_range(
            "gateway.storage.write_behind_ms",
            storage.write_behind_ms.unwrap_or(DEFAULT_WRITE_BEHIND_MS),
            1,
            10_000,
        )?;
        StorageConfig {
            backend: storage.backend.unwrap_or_default(),
            path: PathBuf::from(path),
            retention_days: storage.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
            rollouts_in_memory: rollouts_in_memory as usize,
            write_behind: Duration::from_millis(write_behind_ms),
        }
    };

    // metrics
    let metrics_listen = {
        let key = "gateway.metrics.listen";
        match metrics
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_LISTEN)
            .trim()
        {
            "" => None,
            s => {
                let addr = parse_listen(key, s)?;
                if addr.port() != 0
                    && addr.port() == listen.port()
                    && (addr.ip() == listen.ip()
                        || addr.ip().is_unspecified()
                        || listen.ip().is_unspecified())
                {
                    return Err(ConfigError::new(
                        key,
                        "conflicts with gateway.listen (same port); use another port or \"\" \
                         to disable metrics",
                    ));
                }
                Some(addr)
            }
        }
    };

    // proposer
    let proposer = {
        let model = proposer
            .model
            .as_deref()
            .unwrap_or(DEFAULT_PROPOSER_MODEL)
            .trim();
        if model.is_empty() {
            return Err(ConfigError::new(
                "gateway.proposer.model",
                "must not be empty",
            ));
        }
        let purl = match proposer.url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(
                UpstreamUrl::parse(s).map_err(|m| ConfigError::new("gateway.proposer.url", m))?,
            ),
        };
        let api_key = match proposer_key_var {
            Some(var) => {
                let k = single_secret("gateway.proposer.api_key_env", var, env)?;
                if k.is_none() {
                    warnings.push(format!(
                        "gateway.proposer.api_key_env: {var} is not set; the proposer sends no \
                         API key"
                    ));
                }
                k
            }
            None => {
                if let (Some(p), Some(_), Some(uvar)) = (&purl, &upstream_api_key, upstream_key_var)
                {
                    if !p.same_origin(&url) {
                        warnings.push(format!(
                            "gateway.proposer.api_key_env: is empty, so the upstream key from \
                             {uvar} is sent to gateway.proposer.url, a different host than \
                             gateway.upstream.url"
                        ));
                    }
                }
                upstream_api_key.clone()
            }
        };
        let minibatch_size = in_range(
            "gateway.proposer.minibatch_size",
            proposer.minibatch_size.unwrap_or(DEFAULT_MINIBATCH_SIZE),
            1,
            32,
        )?;
        ProposerConfig {
            model: model.to_string(),
            url: purl,
            api_key,
            minibatch_size: to_usize("gateway.proposer.minibatch_size", minibatch_size)?,
            merge: proposer.merge.unwrap_or(DEFAULT_MERGE),
        }
    };

    // gepa
    let gepa_defaults = {
        let threshold = gepa
            .online_prune_threshold
            .unwrap_or(DEFAULT_PRUNE_THRESHOLD);
        if !threshold.is_finite() {
            return Err(ConfigError::new(
                "gateway.gepa.online_prune_threshold",
                "must be a finite number",
            ));
        }
        GepaDefaults {
            online_proposer_min_rollouts: at_least_one_u32(
                "gateway.gepa.online_proposer_min_rollouts",
                gepa.online_proposer_min_rollouts
                    .unwrap_or(DEFAULT_MIN_ROLLOUTS),
            )?,
            online_proposer_max_candidates: at_least_one_u32(
                "gateway.gepa.online_proposer_max_candidates",
                gepa.online_proposer_max_candidates
                    .unwrap_or(DEFAULT_MAX_CANDIDATES),
            )?,
            online_prune_threshold: threshold,
            online_prune_min_rollouts: at_least_one_u32(
                "gateway.gepa.online_prune_min_rollouts",
                gepa.online_prune_min_rollouts
                    .unwrap_or(DEFAULT_PRUNE_MIN_ROLLOUTS),
            )?,
            warmup_rollouts: at_least_one_u32(
                "gateway.gepa.warmup_rollouts",
                gepa.warmup_rollouts.unwrap_or(DEFAULT_WARMUP_ROLLOUTS),
            )?,
            allocation: gepa.allocation.unwrap_or_default(),
        }
    };

    // sessions / capture / limits
    let max_sessions = {
        let key = "gateway.sessions.max_sessions";
        let v = in_range(
            key,
            sessions.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
            1,
            u64::MAX,
        )?;
        to_usize(key, v)?
    };
    let correlation_ttl = Duration::from_secs(in_range(
        "gateway.sessions.correlation_ttl_s",
        sessions
            .correlation_ttl_s
            .unwrap_or(DEFAULT_CORRELATION_TTL_S),
        1,
        u64::MAX,
    )?);
    let capture_max_bytes = {
        let key = "gateway.capture.max_bytes";
        let v = in_range(
            key,
            capture.max_bytes.unwrap_or(DEFAULT_CAPTURE_MAX_BYTES),
            0,
            16_777_216,
        )?;
        to_usize(key, v)?
    };
    let max_body_bytes = {
        let key = "gateway.limits.max_body_bytes";
        let v = in_range(
            key,
            limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            1,
            1_073_741_824,
        )?;
        to_usize(key, v)?
    };

    Ok(GatewayConfig {
        listen,
        public_url,
        upstream: UpstreamConfig {
            url,
            api_key: upstream_api_key,
            connect_timeout,
            read_timeout,
            write_timeout,
            ca_file,
        },
        client_keys,
        admin_tokens,
        reward_tokens,
        storage,
        metrics_listen,
        proposer,
        gepa_defaults,
        max_sessions,
        correlation_ttl,
        capture_max_bytes,
        max_body_bytes,
    })
}
