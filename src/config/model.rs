//! The validated configuration the rest of the gateway reads, and its defaults.
//!
//! Only `resolve` builds these from a file; serde never sees the structs, so a field here
//! can change shape without changing the file format. The two enums are the exception: a
//! variant is its own spelling in the file, so serde reads them directly (through
//! `raw::Named`, which names the allowed values when a file has another).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;

use super::secret::Secret;
use super::upstream_url::UpstreamUrl;

// Defaults (documented in conf/gateway.yaml).
pub(super) const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub(super) const DEFAULT_PUBLIC_URL: &str = "http://localhost:8080";
pub(super) const DEFAULT_UPSTREAM_URL: &str = "https://api.openai.com/v1";
pub(super) const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
pub(super) const DEFAULT_READ_TIMEOUT_S: u64 = 600;
pub(super) const DEFAULT_WRITE_TIMEOUT_S: u64 = 60;
pub(super) const DEFAULT_ADMIN_TOKEN_ENV: &str = "GEPA_ADMIN_TOKEN";
pub(super) const DEFAULT_STORAGE_PATH: &str = "data/gepa.db";
pub(super) const DEFAULT_RETENTION_DAYS: u32 = 30;
pub(super) const DEFAULT_ROLLOUTS_IN_MEMORY: usize = 20_000;
pub(super) const DEFAULT_WRITE_BEHIND_MS: u64 = 50;
pub(super) const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9091";
pub(super) const DEFAULT_PROPOSER_MODEL: &str = "gpt-4.1-mini";
pub(super) const DEFAULT_MINIBATCH_SIZE: u64 = 3;
pub(super) const DEFAULT_MAX_INSTRUCTION_BYTES: u64 = 8 * 1024;
pub(super) const DEFAULT_MERGE: bool = true;
pub(super) const DEFAULT_MIN_ROLLOUTS: u64 = 10;
pub(super) const DEFAULT_MAX_CANDIDATES: u64 = 8;
pub(super) const DEFAULT_PRUNE_THRESHOLD: f64 = 0.0;
pub(super) const DEFAULT_PRUNE_MIN_ROLLOUTS: u64 = 20;
pub(super) const DEFAULT_WARMUP_ROLLOUTS: u64 = 5;
pub(super) const DEFAULT_EXPLORE_SHARE: f64 = 0.5;
pub(super) const DEFAULT_MAX_SESSIONS: u64 = 10_000;
pub(super) const DEFAULT_CORRELATION_TTL_S: u64 = 86_400;
pub(super) const DEFAULT_CAPTURE_MAX_BYTES: u64 = 16_384;
pub(super) const DEFAULT_MAX_BODY_BYTES: u64 = 10_485_760;

/// A loaded, validated configuration.
///
/// Not `Clone`: Pingora's `ServerConf` does not implement `Clone`. Move `server` into Pingora
/// and clone/share `gateway`.
/// The top-level key holding the gateway's own settings.
pub const GATEWAY_KEY: &str = "gateway";

#[derive(Debug)]
pub struct Config {
    pub server: ServerConf,
    pub gateway: GatewayConfig,
    /// Non-fatal problems (e.g. admin token variable not set) for the caller to log.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Base of proxy URLs in API responses; no trailing slash.
    pub public_url: String,
    pub upstream: UpstreamConfig,
    /// From `auth.client_keys_env`.
    pub client_keys: Vec<Secret>,
    /// From `admin.token_env`.
    pub admin_tokens: Vec<Secret>,
    /// From `admin.reward_token_env`.
    pub reward_tokens: Vec<Secret>,
    pub storage: StorageConfig,
    /// `None` when `metrics.listen` is the empty string.
    pub metrics_listen: Option<SocketAddr>,
    pub proposer: ProposerConfig,
    pub gepa_defaults: GepaDefaults,
    pub max_sessions: usize,
    pub correlation_ttl: Duration,
    pub capture_max_bytes: usize,
    pub max_body_bytes: usize,
}

/// Where session state lives: `gateway.storage.backend`, spelled in the file as the variant
/// in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Durable, embedded (the default).
    #[default]
    Sqlite,
    /// Nothing survives a restart.
    Memory,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `sqlite` (durable, the default) or `memory` (nothing survives a restart).
    pub backend: StorageBackend,
    pub path: PathBuf,
    /// 0 = keep forever.
    pub retention_days: u32,
    /// Rollouts per session kept in memory (with their captured text); older ones live
    /// only in the durable store.
    pub rollouts_in_memory: usize,
    /// How long a finished call's rollout record may wait in memory before the writer
    /// commits it with the others that queued meanwhile: longer means larger, cheaper
    /// batches and more records lost if the process crashes.
    pub write_behind: Duration,
}

#[derive(Debug, Clone)]
pub struct ProposerConfig {
    pub model: String,
    /// `None`: use the upstream's URL.
    pub url: Option<UpstreamUrl>,
    pub api_key: Option<Secret>,
    pub minibatch_size: usize,
    pub merge: bool,
    /// Longest instruction a proposal may have; a longer one is rejected.
    pub max_instruction_bytes: usize,
    pub review: Review,
    /// Proposer calls per session; `None`: unlimited.
    pub max_proposals: Option<u64>,
    /// Proposer calls per hour over the whole gateway; `None`: unlimited.
    pub max_proposals_per_hour: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct GepaDefaults {
    pub online_proposer_min_rollouts: u32,
    pub online_proposer_max_candidates: u32,
    pub online_prune_threshold: f64,
    pub online_prune_min_rollouts: u32,
    /// Rollouts a new candidate is served first for, before the bandit takes over.
    pub warmup_rollouts: u32,
    /// The most of a session's calls a warming-up candidate gets (0 to 1).
    pub explore_share: f64,
    /// `thompson` (default) or `uniform`: how traffic is split among active candidates.
    pub allocation: Allocation,
}

/// How traffic is split among a session's active candidates: `gateway.gepa.allocation`,
/// spelled in the file as the variant in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    /// Warm-up, then Thompson sampling on the mean reward (see `allocation.rs`); the default.
    #[default]
    Thompson,
    /// An equal share for every active candidate (the simplest online baseline).
    Uniform,
}

/// Whether proposals serve at once or wait for an operator: `gateway.proposer.review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Review {
    /// A proposal becomes an active candidate at once; the default.
    #[default]
    Auto,
    /// A proposal becomes a pending candidate, never served until an operator approves it.
    Manual,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: UpstreamUrl,
    /// `None`: forward the client's `Authorization` header.
    pub api_key: Option<Secret>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

impl Default for GatewayConfig {
    /// The same values as an empty config file with no environment variables set.
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_url: DEFAULT_PUBLIC_URL.to_string(),
            upstream: UpstreamConfig {
                url: UpstreamUrl {
                    tls: true,
                    host: "api.openai.com".to_string(),
                    port: 443,
                    base_path: "/v1".to_string(),
                    host_header: "api.openai.com".to_string(),
                },
                api_key: None,
                connect_timeout: Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS),
                read_timeout: Duration::from_secs(DEFAULT_READ_TIMEOUT_S),
                write_timeout: Duration::from_secs(DEFAULT_WRITE_TIMEOUT_S),
                ca_file: None,
            },
            client_keys: Vec::new(),
            admin_tokens: Vec::new(),
            reward_tokens: Vec::new(),
            storage: StorageConfig {
                backend: StorageBackend::default(),
                path: PathBuf::from(DEFAULT_STORAGE_PATH),
                retention_days: DEFAULT_RETENTION_DAYS,
                rollouts_in_memory: DEFAULT_ROLLOUTS_IN_MEMORY,
                write_behind: Duration::from_millis(DEFAULT_WRITE_BEHIND_MS),
            },
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
            proposer: ProposerConfig {
                model: DEFAULT_PROPOSER_MODEL.to_string(),
                url: None,
                api_key: None,
                minibatch_size: DEFAULT_MINIBATCH_SIZE as usize,
                merge: DEFAULT_MERGE,
                max_instruction_bytes: DEFAULT_MAX_INSTRUCTION_BYTES as usize,
                review: Review::Auto,
                max_proposals: None,
                max_proposals_per_hour: None,
            },
            gepa_defaults: GepaDefaults {
                online_proposer_min_rollouts: DEFAULT_MIN_ROLLOUTS as u32,
                online_proposer_max_candidates: DEFAULT_MAX_CANDIDATES as u32,
                online_prune_threshold: DEFAULT_PRUNE_THRESHOLD,
                online_prune_min_rollouts: DEFAULT_PRUNE_MIN_ROLLOUTS as u32,
                warmup_rollouts: DEFAULT_WARMUP_ROLLOUTS as u32,
                explore_share: DEFAULT_EXPLORE_SHARE,
                allocation: Allocation::default(),
            },
            max_sessions: DEFAULT_MAX_SESSIONS as usize,
            correlation_ttl: Duration::from_secs(DEFAULT_CORRELATION_TTL_S),
            capture_max_bytes: DEFAULT_CAPTURE_MAX_BYTES as usize,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES as usize,
        }
    }
}
