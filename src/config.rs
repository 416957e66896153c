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

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use subtle::ConstantTimeEq;

/// The top-level key holding the gateway's own settings.
pub const GATEWAY_KEY: &str = "gateway";

// Defaults (documented in conf/gateway.yaml).
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_PUBLIC_URL: &str = "http://localhost:8080";
const DEFAULT_UPSTREAM_URL: &str = "https://api.openai.com/v1";
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_READ_TIMEOUT_S: u64 = 600;
const DEFAULT_WRITE_TIMEOUT_S: u64 = 60;
const DEFAULT_ADMIN_TOKEN_ENV: &str = "GEPA_ADMIN_TOKEN";
const DEFAULT_STORAGE_PATH: &str = "data/gepa.db";
const DEFAULT_RETENTION_DAYS: u32 = 30;
const DEFAULT_ROLLOUTS_IN_MEMORY: usize = 20_000;
const DEFAULT_WRITE_BEHIND_MS: u64 = 50;
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9091";
const DEFAULT_PROPOSER_MODEL: &str = "gpt-4.1-mini";
const DEFAULT_MINIBATCH_SIZE: u64 = 3;
const DEFAULT_MERGE: bool = true;
const DEFAULT_MIN_ROLLOUTS: u64 = 10;
const DEFAULT_MAX_CANDIDATES: u64 = 8;
const DEFAULT_PRUNE_THRESHOLD: f64 = 0.0;
const DEFAULT_PRUNE_MIN_ROLLOUTS: u64 = 20;
const DEFAULT_WARMUP_ROLLOUTS: u64 = 5;
const DEFAULT_MAX_SESSIONS: u64 = 10_000;
const DEFAULT_CORRELATION_TTL_S: u64 = 86_400;
const DEFAULT_CAPTURE_MAX_BYTES: u64 = 16_384;
const DEFAULT_MAX_BODY_BYTES: u64 = 10_485_760;

// ---------------------------------------------------------------------------------------------
// Secret
// ---------------------------------------------------------------------------------------------

/// A secret string that never prints: Debug and Display show "[redacted]".
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret's value. Only call this where the value is actually needed (e.g. to build an
    /// upstream `Authorization` header); never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (different lengths -> false without comparing bytes).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate))
    }

    /// True when `candidate` equals any secret in `secrets`. Every entry is compared (no early
    /// exit), so timing does not reveal which entry matched.
    pub fn matches_any(secrets: &[Secret], candidate: &[u8]) -> bool {
        let mut hit = subtle::Choice::from(0u8);
        for s in secrets {
            hit |= s.0.as_bytes().ct_eq(candidate);
        }
        bool::from(hit)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// A loaded, validated configuration.
///
/// Not `Clone`: Pingora's `ServerConf` does not implement `Clone`. Move `server` into Pingora
/// and clone/share `gateway`.
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

/// Where session state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Sqlite,
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
}

#[derive(Debug, Clone)]
pub struct GepaDefaults {
    pub online_proposer_min_rollouts: u32,
    pub online_proposer_max_candidates: u32,
    pub online_prune_threshold: f64,
    pub online_prune_min_rollouts: u32,
    /// Rollouts a new candidate is served first for, before the bandit takes over.
    pub warmup_rollouts: u32,
    /// `thompson` (default) or `uniform`: how traffic is split among active candidates.
    pub allocation: Allocation,
}

/// How traffic is split among a session's active candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Warm-up, then Thompson sampling on the mean reward (see `allocation.rs`).
    Thompson,
    /// An equal share for every active candidate (the simplest online baseline).
    Uniform,
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

/// A parsed `http://` / `https://` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    /// Lower-cased; IPv6 addresses without brackets.
    pub host: String,
    /// Explicit port, or 443 / 80 by scheme.
    pub port: u16,
    /// E.g. "/v1"; no trailing slash; "" for the root.
    pub base_path: String,
    /// "host", or "host:port" when the port is not the scheme's default; IPv6 hosts are
    /// bracketed ("[::1]:8080") as the Host header requires.
    pub host_header: String,
}

impl UpstreamUrl {
    /// Parses an `http://` or `https://` URL with a host, optional port and optional path.
    /// Query strings, fragments and user info are rejected. Error messages never echo the
    /// input (it could contain credentials).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let (tls, rest) = if let Some(rest) = strip_prefix_ci(s, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(s, "http://") {
            (false, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if tail.contains('#') {
            return Err("must not contain a fragment (#...)".into());
        }
        if tail.contains('?') {
            return Err("must not contain a query string (?...)".into());
        }
        if authority.contains('@') {
            return Err(
                "must not contain user info (user:password@); name an environment variable \
                 holding the key instead"
                    .into(),
            );
        }
        if authority.is_empty() {
            return Err("must have a host".into());
        }

        let (host, port, ipv6) = if let Some(r) = authority.strip_prefix('[') {
            let close = r
                .find(']')
                .ok_or("has an unterminated IPv6 address ('[' without ']')")?;
            let host = &r[..close];
            if host.parse::<Ipv6Addr>().is_err() {
                return Err("has an invalid IPv6 address".into());
            }
            let after = &r[close + 1..];
            let port = if after.is_empty() {
                None
            } else if let Some(p) = after.strip_prefix(':') {
                Some(p)
            } else {
                return Err("has unexpected characters after the IPv6 address".into());
            };
            (host.to_ascii_lowercase(), port, true)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => {
                    if p.contains(':') {
                        return Err(
                            "IPv6 addresses must be enclosed in brackets, e.g. http://[::1]:8080"
                                .into(),
                        );
                    }
                    (h, Some(p))
                }
                None => (authority, None),
            };
            if host.is_empty() {
                return Err("must have a host".into());
            }
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err("has an invalid host name".into());
            }
            (host.to_ascii_lowercase(), port, false)
        };

        let default_port = if tls { 443 } else { 80 };
        let port = match port {
            None => default_port,
            Some("") => return Err("has an empty port after ':'".into()),
            Some(p) => {
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("has an invalid port (expected a number 1-65535)".into());
                }
                match p.parse::<u16>() {
                    Ok(n) if n != 0 => n,
                    _ => return Err("has a port out of range (expected 1-65535)".into()),
                }
            }
        };

        if !valid_path(tail) {
            return Err("has a path with characters that must be percent-encoded".into());
        }
        let base_path = tail.trim_end_matches('/').to_string();

        let bracketed = if ipv6 {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let host_header = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(UpstreamUrl {
            tls,
            host,
            port,
            base_path,
            host_header,
        })
    }

    /// `base_path + "/chat/completions"`.
    pub fn chat_completions_path(&self) -> String {
        format!("{}/chat/completions", self.base_path)
    }

    fn same_origin(&self, other: &UpstreamUrl) -> bool {
        self.tls == other.tls && self.host == other.host && self.port == other.port
    }
}

/// The normalized URL, e.g. `https://api.openai.com/v1` (default ports omitted).
impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header, self.base_path)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// RFC 3986 path characters: visible ASCII minus the ones that must be escaped, and `%` only
/// as the start of a `%XX` escape.
fn valid_path(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
            continue;
        }
        if !c.is_ascii_graphic() || b"\"<>\\^`{|}".contains(&c) {
            return false;
        }
        i += 1;
    }
    true
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
                backend: StorageBackend::Sqlite,
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
            },
            gepa_defaults: GepaDefaults {
                online_proposer_min_rollouts: DEFAULT_MIN_ROLLOUTS as u32,
                online_proposer_max_candidates: DEFAULT_MAX_CANDIDATES as u32,
                online_prune_threshold: DEFAULT_PRUNE_THRESHOLD,
                online_prune_min_rollouts: DEFAULT_PRUNE_MIN_ROLLOUTS as u32,
                warmup_rollouts: DEFAULT_WARMUP_ROLLOUTS as u32,
                allocation: Allocation::Thompson,
            },
            max_sessions: DEFAULT_MAX_SESSIONS as usize,
            correlation_ttl: Duration::from_secs(DEFAULT_CORRELATION_TTL_S),
            capture_max_bytes: DEFAULT_CAPTURE_MAX_BYTES as usize,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES as usize,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A configuration error. Display: `<file>: <key path>: <message>` (file and key path are
/// omitted when unknown / not applicable).
#[derive(Debug)]
pub struct ConfigError {
    file: Option<PathBuf>,
    path: String,
    message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            path: path.into(),
            message: message.into(),
        }
    }

    fn with_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }

    /// The config file, when loaded with [`load_file`].
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The full key path, e.g. `gateway.upstream.url` (empty for file-level errors such as
    /// YAML syntax errors).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// `std::env::var(name).ok()`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads and validates a config file; `env` looks up environment variables.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new("", format!("cannot read config file: {e}")).with_file(path)
    })?;
    parse_str(&text, env).map_err(|e| e.with_file(path))
}

/// Parses and validates config text; `env` looks up environment variables.
pub fn parse_str(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();

    let mut doc: Value = serde_yaml::from_str(yaml).map_err(yaml_syntax_error)?;
    doc.apply_merge()
        .map_err(|e| ConfigError::new("", format!("invalid YAML merge key (<<): {e}")))?;
    let mut top = match doc {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        _ => {
            return Err(ConfigError::new(
                "",
                "the top level must be a mapping of settings",
            ))
        }
    };
    let gateway = top.remove(GATEWAY_KEY).unwrap_or(Value::Null);

    warn_unknown_server_keys(&top, &mut warnings);
    let server: ServerConf = serde_path_to_error::deserialize(Value::Mapping(top))
        .map_err(|e| ConfigError::new(root_path(e.path()), e.inner().to_string()))?;
    let server = server.validate().map_err(|e| {
        let detail = match &e.context {
            Some(c) => c.as_str().to_string(),
            None => e.to_string(),
        };
        ConfigError::new("", format!("invalid server setting: {detail}"))
    })?;

    let raw: RawGateway = serde_path_to_error::deserialize(gateway).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            GATEWAY_KEY.to_string()
        } else {
            format!("{GATEWAY_KEY}.{path}")
        };
        ConfigError::new(path, e.inner().to_string())
    })?;
    let gateway = resolve(raw, env, &mut warnings)?;

    Ok(Config {
        server,
        gateway,
        warnings,
    })
}

fn root_path(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

fn yaml_syntax_error(e: serde_yaml::Error) -> ConfigError {
    // serde_yaml's message for syntax errors is libyaml's fixed problem description plus the
    // position; it does not quote the document.
    let mut msg = format!("invalid YAML: {e}");
    if let Some(loc) = e.location() {
        let marker = format!("line {}", loc.line());
        if !msg.contains(&marker) {
            msg.push_str(&format!(" at line {} column {}", loc.line(), loc.column()));
        }
    }
    ConfigError::new("", msg)
}

/// Pingora ignores unknown top-level keys; a typo there (`thread: 4`) would otherwise go
/// unnoticed, so it becomes a warning.
fn warn_unknown_server_keys(top: &Mapping, warnings: &mut Vec<String>) {
    let Ok(Value::Mapping(known)) = serde_yaml::to_value(ServerConf::default()) else {
        return;
    };
    for key in top.keys() {
        if known.contains_key(key) {
            continue;
        }
        match key.as_str() {
            Some(k) => warnings.push(format!(
                "{k}: unknown top-level key is ignored (gateway settings belong under `{GATEWAY_KEY}:`)"
            )),
            None => warnings.push("a non-string top-level key is ignored".to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw file model (every key optional; a key with no value means the default)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of gateway settings")]
struct RawGateway {
    listen: Option<String>,
    public_url: Option<String>,
    upstream: Option<RawUpstream>,
    auth: Option<RawAuth>,
    admin: Option<RawAdmin>,
    storage: Option<RawStorage>,
    metrics: Option<RawMetrics>,
    proposer: Option<RawProposer>,
    gepa: Option<RawGepa>,
    sessions: Option<RawSessions>,
    capture: Option<RawCapture>,
    limits: Option<RawLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawUpstream {
    url: Option<String>,
    api_key_env: Option<String>,
    connect_timeout_ms: Option<u64>,
    read_timeout_s: Option<u64>,
    write_timeout_s: Option<u64>,
    ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawAuth {
    client_keys_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawAdmin {
    token_env: Option<String>,
    reward_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawStorage {
    backend: Option<String>,
    path: Option<String>,
    retention_days: Option<u32>,
    rollouts_in_memory: Option<u64>,
    write_behind_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawProposer {
    model: Option<String>,
    url: Option<String>,
    api_key_env: Option<String>,
    minibatch_size: Option<u64>,
    merge: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawGepa {
    online_proposer_min_rollouts: Option<u64>,
    online_proposer_max_candidates: Option<u64>,
    online_prune_threshold: Option<f64>,
    online_prune_min_rollouts: Option<u64>,
    warmup_rollouts: Option<u64>,
    allocation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawSessions {
    max_sessions: Option<u64>,
    correlation_ttl_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawCapture {
    max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
struct RawLimits {
    max_body_bytes: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn resolve(
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
        let backend = match storage.backend.as_deref().map(str::trim) {
            None | Some("") | Some("sqlite") => StorageBackend::Sqlite,
            Some("memory") => StorageBackend::Memory,
            Some(_) => {
                return Err(ConfigError::new(
                    "gateway.storage.backend",
                    "must be \"sqlite\" or \"memory\"",
                ))
            }
        };
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
            backend,
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
            allocation: match gepa.allocation.as_deref().map(str::trim) {
                None | Some("") | Some("thompson") => Allocation::Thompson,
                Some("uniform") => Allocation::Uniform,
                Some(_) => {
                    return Err(ConfigError::new(
                        "gateway.gepa.allocation",
                        "must be \"thompson\" or \"uniform\"",
                    ))
                }
            },
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

fn parse_listen(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            key,
            "must be an IP address and port such as 0.0.0.0:8080 or [::]:8080 (host names are \
             not accepted)",
        )
    })
}

fn in_range(key: &str, v: u64, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    if v >= lo && v <= hi {
        Ok(v)
    } else if hi == u64::MAX {
        Err(ConfigError::new(
            key,
            format!("must be at least {lo} (got {v})"),
        ))
    } else {
        Err(ConfigError::new(
            key,
            format!("must be between {lo} and {hi} (got {v})"),
        ))
    }
}

fn at_least_one_u32(key: &str, v: u64) -> Result<u32, ConfigError> {
    let v = in_range(key, v, 1, u64::MAX)?;
    u32::try_from(v)
        .map_err(|_| ConfigError::new(key, format!("must be at most {} (got {v})", u32::MAX)))
}

fn to_usize(key: &str, v: u64) -> Result<usize, ConfigError> {
    usize::try_from(v).map_err(|_| ConfigError::new(key, "is too large for this platform"))
}

fn check_ca_file(key: &str, p: &str) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(p);
    let bytes = std::fs::read(&path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !bytes.windows(marker.len()).any(|w| w == marker) {
        return Err(ConfigError::new(
            key,
            format!("{} contains no PEM certificate", path.display()),
        ));
    }
    Ok(path)
}

/// Validates an environment variable name; `""` means "not configured".
fn env_var_name<'a>(key: &str, name: &'a str) -> Result<Option<&'a str>, ConfigError> {
    if name.is_empty() {
        return Ok(None);
    }
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(Some(name))
    } else {
        // Deliberately not echoed: someone may have pasted the secret itself here.
        Err(ConfigError::new(
            key,
            "must be the NAME of an environment variable ([A-Za-z_][A-Za-z0-9_]*), not a value",
        ))
    }
}

/// A secret must be usable in an HTTP header and compare against header values: visible ASCII.
fn header_safe(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// One secret from `var`; `None` when unset or empty (surrounding whitespace is trimmed).
fn single_secret(key: &str, var: &str, env: Env<'_>) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if !header_safe(value) {
        return Err(ConfigError::new(
            key,
            format!(
                "environment variable {var} contains characters not allowed in an HTTP header \
                 (only visible ASCII)"
            ),
        ));
    }
    Ok(Some(Secret::new(value)))
}

/// Comma-separated secrets from `var`: split on ',', trim, drop empties. Empty when unset.
fn secret_list(key: &str, var: &str, env: Env<'_>) -> Result<Vec<Secret>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, item) in value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        if !header_safe(item) {
            return Err(ConfigError::new(
                key,
                format!(
                    "environment variable {var}: entry {} contains characters not allowed in an \
                     HTTP header (only visible ASCII)",
                    i + 1
                ),
            ));
        }
        out.push(Secret::new(item));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        parse_str(yaml, &no_env)
    }

    fn parse_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_str(yaml, &move |k: &str| map.get(k).cloned())
    }

    fn err(yaml: &str) -> ConfigError {
        parse(yaml).expect_err("expected a config error")
    }

    fn manifest_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    #[test]
    fn defaults_from_empty_file() {
        for yaml in [
            "",
            "---\n",
            "{}",
            "gateway:\n",
            "gateway: {}\n",
            "gateway: ~\n",
        ] {
            let c = parse(yaml).unwrap();
            let g = &c.gateway;
            assert_eq!(g.listen, "0.0.0.0:8080".parse().unwrap(), "{yaml:?}");
            assert_eq!(g.public_url, "http://localhost:8080");
            assert_eq!(g.upstream.url.host, "api.openai.com");
            assert_eq!(g.upstream.url.port, 443);
            assert!(g.upstream.url.tls);
            assert_eq!(g.upstream.url.base_path, "/v1");
            assert_eq!(
                g.upstream.url.chat_completions_path(),
                "/v1/chat/completions"
            );
            assert!(g.upstream.api_key.is_none());
            assert_eq!(g.upstream.connect_timeout, Duration::from_millis(10_000));
            assert_eq!(g.upstream.read_timeout, Duration::from_secs(600));
            assert_eq!(g.upstream.write_timeout, Duration::from_secs(60));
            assert!(g.upstream.ca_file.is_none());
            assert!(g.client_keys.is_empty());
            assert!(g.admin_tokens.is_empty());
            assert!(g.reward_tokens.is_empty());
            assert_eq!(g.storage.path, PathBuf::from("data/gepa.db"));
            assert_eq!(g.storage.retention_days, 30);
            assert_eq!(g.storage.write_behind, Duration::from_millis(50));
            assert_eq!(g.metrics_listen, Some("127.0.0.1:9091".parse().unwrap()));
            assert_eq!(g.proposer.model, "gpt-4.1-mini");
            assert!(g.proposer.url.is_none());
            assert!(g.proposer.api_key.is_none());
            assert_eq!(g.proposer.minibatch_size, 3);
            assert!(g.proposer.merge);
            assert_eq!(g.gepa_defaults.online_proposer_min_rollouts, 10);
            assert_eq!(g.gepa_defaults.online_proposer_max_candidates, 8);
            assert_eq!(g.gepa_defaults.online_prune_threshold, 0.0);
            assert_eq!(g.gepa_defaults.online_prune_min_rollouts, 20);
            assert_eq!(g.max_sessions, 10_000);
            assert_eq!(g.correlation_ttl, Duration::from_secs(86_400));
            assert_eq!(g.capture_max_bytes, 16_384);
            assert_eq!(g.max_body_bytes, 10_485_760);
            // Pingora's own defaults for an empty top level
            assert_eq!(c.server, ServerConf::default());
            // the only warning: no admin token
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
            assert!(c.warnings[0].contains("GEPA_ADMIN_TOKEN is not set"));
        }
    }

    #[test]
    fn empty_sections_mean_defaults() {
        let c = parse("gateway:\n  upstream:\n  proposer: ~\n  limits: {}\n").unwrap();
        assert_eq!(c.gateway.upstream.url.host, "api.openai.com");
        assert_eq!(c.gateway.max_body_bytes, 10_485_760);
    }

    #[test]
    fn default_impl_matches_empty_file() {
        let parsed = parse("").unwrap().gateway;
        assert_eq!(
            format!("{:?}", GatewayConfig::default()),
            format!("{parsed:?}")
        );
    }

    #[test]
    fn shipped_config_parses() {
        let path = manifest_file("conf/gateway.yaml");
        let c = load_file(&path, &|k: &str| {
            (k == "GEPA_ADMIN_TOKEN").then(|| "admintok".to_string())
        })
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.server.version, 1);
        assert_eq!(c.server.threads, 2);
        assert_eq!(c.server.pid_file, "/tmp/gepa-gateway.pid");
        assert_eq!(c.server.upgrade_sock, "/tmp/gepa-gateway-upgrade.sock");
        assert_eq!(c.server.grace_period_seconds, Some(30));
        assert_eq!(c.gateway.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            c.gateway.upstream.url.to_string(),
            "https://api.openai.com/v1"
        );
        assert_eq!(c.gateway.admin_tokens.len(), 1);
        // The shipped file spells out the defaults.
        let mut shipped = c.gateway.clone();
        shipped.admin_tokens.clear();
        assert_eq!(
            format!("{shipped:?}"),
            format!("{:?}", GatewayConfig::default())
        );
    }

    #[test]
    fn broken_fixtures_fail_with_their_key_path() {
        let cases = [
            ("unknown_key.yaml", "gateway.upstream.timeout_ms"),
            ("bad_url.yaml", "gateway.upstream.url"),
            ("bad_yaml.yaml", ""),
            ("missing_client_keys.yaml", "gateway.auth.client_keys_env"),
            ("bad_listen.yaml", "gateway.listen"),
        ];
        for (file, path) in cases {
            let p = manifest_file("tests/fixtures/config").join(file);
            // The upstream key variable set or not, the client-key rule fires first.
            for env in [None, Some("sk-fixture")] {
                let e = load_file(&p, &|k: &str| {
                    (k == "GEPA_TEST_UPSTREAM_KEY")
                        .then(|| env.map(str::to_string))
                        .flatten()
                })
                .expect_err(file);
                assert_eq!(e.path(), path, "{file}: {e}");
                assert_eq!(e.file(), Some(p.as_path()));
                assert!(e.to_string().starts_with(&format!("{}: ", p.display())));
            }
        }
    }

    #[test]
    fn unknown_key_names_full_path() {
        let e = err("gateway:\n  upstream:\n    timeout: 5\n");
        assert_eq!(e.path(), "gateway.upstream.timeout");
        assert!(e.message().contains("unknown field `timeout`"), "{e}");
        assert!(e.to_string().starts_with("gateway.upstream.timeout: "));

        let e = err("gateway:\n  listn: 1\n");
        assert_eq!(e.path(), "gateway.listn");
        let e = err("gateway:\n  gepa:\n    online_prune: 1\n");
        assert_eq!(e.path(), "gateway.gepa.online_prune");
    }

    #[test]
    fn type_errors_name_their_path() {
        let e = err("gateway:\n  upstream:\n    read_timeout_s: soon\n");
        assert_eq!(e.path(), "gateway.upstream.read_timeout_s");
        let e = err("gateway:\n  upstream: 5\n");
        assert_eq!(e.path(), "gateway.upstream");
        let e = err("gateway: [1, 2]\n");
        assert_eq!(e.path(), "gateway");
        let e = err("gateway:\n  capture:\n    max_bytes: -1\n");
        assert_eq!(e.path(), "gateway.capture.max_bytes");
        let e = err("- a\n- b\n");
        assert!(e.message().contains("top level must be a mapping"), "{e}");
    }

    #[test]
    fn validation_errors_name_their_path() {
        let cases: &[(&str, &str)] = &[
            ("listen: localhost:8080", "gateway.listen"),
            ("listen: 0.0.0.0:99999", "gateway.listen"),
            ("public_url: ftp://x", "gateway.public_url"),
            ("public_url: http://x/?a=1", "gateway.public_url"),
            ("upstream: {url: 'ftp://x'}", "gateway.upstream.url"),
            ("upstream: {url: 'https://'}", "gateway.upstream.url"),
            (
                "upstream: {url: 'https://a/v1?x=1'}",
                "gateway.upstream.url",
            ),
            ("upstream: {url: 'https://a/v1#x'}", "gateway.upstream.url"),
            (
                "upstream: {url: 'https://u:p@a/v1'}",
                "gateway.upstream.url",
            ),
            (
                "upstream: {connect_timeout_ms: 0}",
                "gateway.upstream.connect_timeout_ms",
            ),
            (
                "upstream: {connect_timeout_ms: 600001}",
                "gateway.upstream.connect_timeout_ms",
            ),
            (
                "upstream: {read_timeout_s: 0}",
                "gateway.upstream.read_timeout_s",
            ),
            (
                "upstream: {read_timeout_s: 86401}",
                "gateway.upstream.read_timeout_s",
            ),
            (
                "upstream: {write_timeout_s: 0}",
                "gateway.upstream.write_timeout_s",
            ),
            (
                "upstream: {write_timeout_s: 3601}",
                "gateway.upstream.write_timeout_s",
            ),
            (
                "upstream: {ca_file: /nonexistent/ca.pem}",
                "gateway.upstream.ca_file",
            ),
            (
                "upstream: {api_key_env: 'sk-abc'}",
                "gateway.upstream.api_key_env",
            ),
            (
                "auth: {client_keys_env: '1KEYS'}",
                "gateway.auth.client_keys_env",
            ),
            ("admin: {token_env: 'A B'}", "gateway.admin.token_env"),
            (
                "admin: {reward_token_env: 'x-y'}",
                "gateway.admin.reward_token_env",
            ),
            (
                "proposer: {api_key_env: 'é'}",
                "gateway.proposer.api_key_env",
            ),
            ("storage: {path: ''}", "gateway.storage.path"),
            ("metrics: {listen: 'nope'}", "gateway.metrics.listen"),
            (
                "metrics: {listen: '127.0.0.1:8080'}",
                "gateway.metrics.listen",
            ),
            ("proposer: {model: ''}", "gateway.proposer.model"),
            ("proposer: {url: 'ftp://x'}", "gateway.proposer.url"),
            (
                "proposer: {minibatch_size: 0}",
                "gateway.proposer.minibatch_size",
            ),
            (
                "proposer: {minibatch_size: 33}",
                "gateway.proposer.minibatch_size",
            ),
            (
                "gepa: {online_proposer_min_rollouts: 0}",
                "gateway.gepa.online_proposer_min_rollouts",
            ),
            (
                "gepa: {online_proposer_max_candidates: 0}",
                "gateway.gepa.online_proposer_max_candidates",
            ),
            (
                "gepa: {online_prune_threshold: .nan}",
                "gateway.gepa.online_prune_threshold",
            ),
            (
                "gepa: {online_prune_threshold: .inf}",
                "gateway.gepa.online_prune_threshold",
            ),
            (
                "gepa: {online_prune_min_rollouts: 0}",
                "gateway.gepa.online_prune_min_rollouts",
            ),
            (
                "gepa: {online_prune_min_rollouts: 4294967296}",
                "gateway.gepa.online_prune_min_rollouts",
            ),
            (
                "sessions: {max_sessions: 0}",
                "gateway.sessions.max_sessions",
            ),
            (
                "sessions: {correlation_ttl_s: 0}",
                "gateway.sessions.correlation_ttl_s",
            ),
            (
                "capture: {max_bytes: 16777217}",
                "gateway.capture.max_bytes",
            ),
            (
                "limits: {max_body_bytes: 0}",
                "gateway.limits.max_body_bytes",
            ),
            (
                "limits: {max_body_bytes: 1073741825}",
                "gateway.limits.max_body_bytes",
            ),
            (
                "storage: {retention_days: -1}",
                "gateway.storage.retention_days",
            ),
            (
                "storage: {rollouts_in_memory: 0}",
                "gateway.storage.rollouts_in_memory",
            ),
            (
                "storage: {write_behind_ms: 0}",
                "gateway.storage.write_behind_ms",
            ),
            (
                "storage: {write_behind_ms: 10001}",
                "gateway.storage.write_behind_ms",
            ),
            ("proposer: {merge: maybe}", "gateway.proposer.merge"),
        ];
        for (snippet, path) in cases {
            let yaml = format!("gateway:\n  {snippet}\n");
            let e = err(&yaml);
            assert_eq!(e.path(), *path, "{snippet}: {e}");
            assert!(
                e.to_string().starts_with(&format!("{path}: ")),
                "{snippet}: {e}"
            );
        }
    }

    #[test]
    fn range_bounds_are_inclusive() {
        let c = parse(
            "gateway:\n  upstream: {connect_timeout_ms: 600000, read_timeout_s: 86400, \
             write_timeout_s: 3600}\n  proposer: {minibatch_size: 32, merge: false}\n  \
             capture: {max_bytes: 0}\n  limits: {max_body_bytes: 1073741824}\n  \
             gepa: {online_prune_threshold: -0.5}\n  storage: {retention_days: 0, write_behind_ms: 1000}\n  \
             metrics: {listen: ''}\n",
        )
        .unwrap();
        let g = c.gateway;
        assert_eq!(g.upstream.connect_timeout, Duration::from_secs(600));
        assert_eq!(g.upstream.read_timeout, Duration::from_secs(86_400));
        assert_eq!(g.upstream.write_timeout, Duration::from_secs(3_600));
        assert_eq!(g.proposer.minibatch_size, 32);
        assert!(!g.proposer.merge);
        assert_eq!(g.capture_max_bytes, 0);
        assert_eq!(g.max_body_bytes, 1_073_741_824);
        assert_eq!(g.gepa_defaults.online_prune_threshold, -0.5);
        assert_eq!(g.storage.retention_days, 0);
        assert_eq!(g.storage.write_behind, Duration::from_secs(1));
        assert_eq!(g.metrics_listen, None);
    }

    #[test]
    fn secrets_from_env() {
        let yaml = "gateway:\n  upstream:\n    api_key_env: OPENAI_API_KEY\n  auth:\n    \
                    client_keys_env: CLIENT_KEYS\n  admin:\n    reward_token_env: REWARD\n";
        let c = parse_env(
            yaml,
            &[
                ("OPENAI_API_KEY", " sk-upstream \n"),
                ("CLIENT_KEYS", " ck1, ,ck2,,  "),
                ("GEPA_ADMIN_TOKEN", "adm1,adm2"),
                ("REWARD", "rw"),
            ],
        )
        .unwrap();
        let g = &c.gateway;
        assert_eq!(g.upstream.api_key.as_ref().unwrap().expose(), "sk-upstream");
        let keys: Vec<&str> = g.client_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["ck1", "ck2"]);
        let admin: Vec<&str> = g.admin_tokens.iter().map(Secret::expose).collect();
        assert_eq!(admin, ["adm1", "adm2"]);
        assert_eq!(g.reward_tokens.len(), 1);
        assert_eq!(g.reward_tokens[0].expose(), "rw");
        // proposer falls back to the upstream key
        assert_eq!(g.proposer.api_key.as_ref().unwrap().expose(), "sk-upstream");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn upstream_key_unset_names_the_variable() {
        let yaml = "gateway:\n  upstream: {api_key_env: OPENAI_API_KEY}\n  auth: \
                    {client_keys_env: CK}\n";
        for val in [None, Some(""), Some("  ")] {
            let mut vars = vec![("CK", "k1")];
            if let Some(v) = val {
                vars.push(("OPENAI_API_KEY", v));
            }
            let e = parse_env(yaml, &vars).unwrap_err();
            assert_eq!(
                e.to_string(),
                "gateway.upstream.api_key_env: environment variable OPENAI_API_KEY is not set"
            );
        }
    }

    #[test]
    fn upstream_key_requires_client_keys() {
        let base = "gateway:\n  upstream: {api_key_env: OPENAI_API_KEY}\n";
        let up = [("OPENAI_API_KEY", "sk-secret-upstream")];
        // no client_keys_env at all
        let e = parse_env(base, &up).unwrap_err();
        assert_eq!(e.path(), "gateway.auth.client_keys_env");
        assert!(e.message().contains("refuses to spend"), "{e}");
        // named but unset / empty / only commas
        let yaml = format!("{base}  auth: {{client_keys_env: CK}}\n");
        for ck in [None, Some(""), Some(" , ,")] {
            let mut vars = up.to_vec();
            if let Some(v) = ck {
                vars.push(("CK", v));
            }
            let e = parse_env(&yaml, &vars).unwrap_err();
            assert_eq!(e.path(), "gateway.auth.client_keys_env");
            assert!(e.message().contains("CK"), "{e}");
            assert!(e.message().contains("refuses to spend"), "{e}");
            assert!(!e.to_string().contains("sk-secret-upstream"));
        }
        // same variable for both
        let yaml = format!("{base}  auth: {{client_keys_env: OPENAI_API_KEY}}\n");
        let e = parse_env(&yaml, &up).unwrap_err();
        assert_eq!(e.path(), "gateway.auth.client_keys_env");
        assert!(!e.to_string().contains("sk-secret-upstream"));
    }

    #[test]
    fn admin_token_missing_is_a_warning() {
        let c = parse_env("", &[("GEPA_ADMIN_TOKEN", " ")]).unwrap();
        assert!(c.gateway.admin_tokens.is_empty());
        assert_eq!(
            c.warnings,
            [
                "gateway.admin.token_env: GEPA_ADMIN_TOKEN is not set; the admin API answers \
              loopback clients only"
            ]
        );
        let c = parse("gateway:\n  admin: {token_env: MY_ADMIN}\n").unwrap();
        assert!(c.warnings[0].contains("MY_ADMIN is not set"));
        let c = parse("gateway:\n  admin: {token_env: ''}\n").unwrap();
        assert!(c.warnings[0].contains("loopback clients only"));
        let c = parse_env(
            "gateway:\n  admin: {token_env: MY_ADMIN, reward_token_env: RW}\n",
            &[("MY_ADMIN", "t")],
        )
        .unwrap();
        assert_eq!(c.gateway.admin_tokens.len(), 1);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("RW is not set"));
    }

    #[test]
    fn proposer_key_resolution() {
        let adm = ("GEPA_ADMIN_TOKEN", "a");
        // own variable
        let c = parse_env(
            "gateway:\n  proposer: {api_key_env: PROP_KEY}\n",
            &[adm, ("PROP_KEY", "pk")],
        )
        .unwrap();
        assert_eq!(c.gateway.proposer.api_key.unwrap().expose(), "pk");
        // own variable unset: warning, no key (no fallback)
        let c = parse_env(
            "gateway:\n  upstream: {api_key_env: UP}\n  auth: {client_keys_env: CK}\n  \
             proposer: {api_key_env: PROP_KEY}\n",
            &[adm, ("UP", "uk"), ("CK", "c")],
        )
        .unwrap();
        assert!(c.gateway.proposer.api_key.is_none());
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].starts_with("gateway.proposer.api_key_env: PROP_KEY is not set"));
        // fallback to a different host: allowed, with a warning
        let c = parse_env(
            "gateway:\n  upstream: {api_key_env: UP}\n  auth: {client_keys_env: CK}\n  \
             proposer: {url: 'https://other.example/v1'}\n",
            &[adm, ("UP", "uk"), ("CK", "c")],
        )
        .unwrap();
        assert_eq!(c.gateway.proposer.api_key.unwrap().expose(), "uk");
        assert_eq!(c.gateway.proposer.url.unwrap().host, "other.example");
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("different host"));
    }

    #[test]
    fn secrets_never_printed() {
        let secret = "sk-VERY-SECRET-0123456789";
        let s = Secret::new(secret);
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");

        let yaml = "gateway:\n  upstream: {api_key_env: UP}\n  auth: {client_keys_env: CK}\n  \
                    admin: {reward_token_env: RW}\n";
        let vars = [
            ("UP", secret),
            ("CK", "client-SECRET-1,client-SECRET-2"),
            ("GEPA_ADMIN_TOKEN", "admin-SECRET"),
            ("RW", "reward-SECRET"),
        ];
        let c = parse_env(yaml, &vars).unwrap();
        let dbg = format!("{:?}", c);
        assert!(!dbg.contains("SECRET"), "{dbg}");
        assert!(dbg.contains("[redacted]"));

        // errors caused by a secret's content do not echo it
        let e = parse_env(yaml, &[("UP", "sk-SECRET with space"), ("CK", "c")]).unwrap_err();
        assert_eq!(e.path(), "gateway.upstream.api_key_env");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let e = parse_env(yaml, &[("UP", "u"), ("CK", "ok,bad SECRET\u{1}")]).unwrap_err();
        assert_eq!(e.path(), "gateway.auth.client_keys_env");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        // a key pasted where a variable name belongs is not echoed
        let e = err("gateway:\n  upstream: {api_key_env: 'sk-SECRET-pasted'}\n");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        // credentials in a URL are not echoed
        let e = err("gateway:\n  upstream: {url: 'https://user:SECRET@host/v1'}\n");
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    #[test]
    fn secret_matches_in_constant_time_api() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b"abcd"));
        assert!(!s.matches(b""));
        let list = [Secret::new("one"), Secret::new("two")];
        assert!(Secret::matches_any(&list, b"two"));
        assert!(!Secret::matches_any(&list, b"three"));
        assert!(!Secret::matches_any(&[], b""));
    }

    #[test]
    fn url_parsing() {
        let u = UpstreamUrl::parse("https://api.openai.com/v1").unwrap();
        assert_eq!(
            u,
            UpstreamUrl {
                tls: true,
                host: "api.openai.com".into(),
                port: 443,
                base_path: "/v1".into(),
                host_header: "api.openai.com".into(),
            }
        );
        assert_eq!(u.chat_completions_path(), "/v1/chat/completions");

        let u = UpstreamUrl::parse("http://Example.COM").unwrap();
        assert!(!u.tls);
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, 80);
        assert_eq!(u.base_path, "");
        assert_eq!(u.host_header, "example.com");
        assert_eq!(u.chat_completions_path(), "/chat/completions");

        let u = UpstreamUrl::parse("http://localhost:8000/").unwrap();
        assert_eq!(u.port, 8000);
        assert_eq!(u.base_path, "");
        assert_eq!(u.host_header, "localhost:8000");

        // explicit default port is not repeated in the Host header
        let u = UpstreamUrl::parse("https://h:443/x").unwrap();
        assert_eq!(u.host_header, "h");
        let u = UpstreamUrl::parse("https://h:80/x").unwrap();
        assert_eq!(u.host_header, "h:80");

        let u = UpstreamUrl::parse("http://[::1]:8080/openai/v1//").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.host_header, "[::1]:8080");
        assert_eq!(u.base_path, "/openai/v1");
        assert_eq!(u.to_string(), "http://[::1]:8080/openai/v1");

        let u = UpstreamUrl::parse("HTTPS://[2001:DB8::1]").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.port, 443);
        assert_eq!(u.host_header, "[2001:db8::1]");

        let u = UpstreamUrl::parse("https://10.0.0.1:4443/v1/%7Euser/").unwrap();
        assert_eq!(u.host, "10.0.0.1");
        assert_eq!(u.base_path, "/v1/%7Euser");

        for bad in [
            "",
            "api.openai.com/v1",
            "ftp://x",
            "https://",
            "https:///v1",
            "https://:8080",
            "https://h:",
            "https://h:0",
            "https://h:65536",
            "https://h:8o",
            "https://::1/v1",
            "https://[::1",
            "https://[zz]/",
            "https://[::1]x/",
            "https://h/v1?x=1",
            "https://h/v1#frag",
            "https://h?x",
            "https://user@h/",
            "https://h o/",
            "https://h/a b",
            "https://h/a%zz",
            "https://h/a%2",
            "https://h/é",
            "https://h\u{0}/",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(
            UpstreamUrl::parse("ftp://x").unwrap_err(),
            "must start with http:// or https://"
        );
    }

    #[test]
    fn public_url_trailing_slash_trimmed() {
        let c = parse("gateway:\n  public_url: 'https://gw.example.com/prefix/'\n").unwrap();
        assert_eq!(c.gateway.public_url, "https://gw.example.com/prefix");
    }

    #[test]
    fn full_endpoint_url_warns() {
        let c = parse("gateway:\n  upstream: {url: 'https://h/v1/chat/completions'}\n").unwrap();
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("gateway.upstream.url:")));
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad = dir.path().join("empty.pem");
        std::fs::write(&bad, "not a cert").unwrap();

        let c = parse(&format!(
            "gateway:\n  upstream: {{ca_file: '{}'}}\n",
            good.display()
        ))
        .unwrap();
        assert_eq!(c.gateway.upstream.ca_file, Some(good));
        let e = err(&format!(
            "gateway:\n  upstream: {{ca_file: '{}'}}\n",
            bad.display()
        ));
        assert_eq!(e.path(), "gateway.upstream.ca_file");
        let e = err("gateway:\n  upstream: {ca_file: '/nonexistent/x.pem'}\n");
        assert!(e.message().contains("cannot read"), "{e}");
    }

    #[test]
    fn pingora_keys_reach_server_conf() {
        let c = parse(
            "version: 1\nthreads: 3\npid_file: /tmp/x.pid\nupgrade_sock: /tmp/x.sock\n\
             grace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 7\ndaemon: true\n\
             error_log: /tmp/err.log\nuser: nobody\ngateway:\n  listen: 127.0.0.1:9000\n",
        )
        .unwrap();
        assert_eq!(c.server.version, 1);
        assert_eq!(c.server.threads, 3);
        assert_eq!(c.server.pid_file, "/tmp/x.pid");
        assert_eq!(c.server.upgrade_sock, "/tmp/x.sock");
        assert_eq!(c.server.grace_period_seconds, Some(5));
        assert_eq!(c.server.graceful_shutdown_timeout_seconds, Some(7));
        assert!(c.server.daemon);
        assert_eq!(c.server.error_log.as_deref(), Some("/tmp/err.log"));
        assert_eq!(c.server.user.as_deref(), Some("nobody"));
        assert_eq!(c.gateway.listen, "127.0.0.1:9000".parse().unwrap());
        // untouched keys keep Pingora's defaults
        assert_eq!(c.server.max_retries, ServerConf::default().max_retries);
    }

    #[test]
    fn unknown_top_level_key_is_a_warning() {
        let c = parse("thread: 4\nlisten: 1.2.3.4:5\n").unwrap();
        assert!(c.warnings.iter().any(|w| w.starts_with("thread: ")));
        assert!(c.warnings.iter().any(|w| w.starts_with("listen: ")));
        assert_eq!(c.server.threads, 1);
    }

    #[test]
    fn bad_pingora_key_does_not_echo_file() {
        let marker = "UNIQUE-MARKER-abcdefghijklmnopqrstuvwxyz-0123456789";
        let yaml = format!(
            "# {marker}\nversion: 1\nthreads: many\nerror_log: /tmp/{marker}\ngateway:\n  \
             public_url: 'http://{marker}'\n"
        );
        let e = err(&yaml);
        assert_eq!(e.path(), "threads");
        assert!(!e.to_string().contains(marker), "{e}");
        assert!(e.to_string().len() < 200, "{e}");

        // Pingora's own validate() runs and is reported without the file
        let e = err(&format!("# {marker}\nmax_blocking_threads: 0\n"));
        assert!(e.message().contains("max_blocking_threads"), "{e}");
        assert!(!e.to_string().contains(marker), "{e}");
    }

    #[test]
    fn yaml_syntax_error_has_position_not_text() {
        let marker = "UNIQUE-MARKER-zyxwvutsrqponmlkjihgfedcba";
        let yaml = format!("version: 1\ngateway:\n  listen: \"{marker}\n  public_url: [\n");
        let e = err(&yaml);
        assert_eq!(e.path(), "");
        assert!(e.message().starts_with("invalid YAML"), "{e}");
        assert!(e.message().contains("line "), "{e}");
        assert!(!e.to_string().contains(marker), "{e}");

        let e = err("a: 1\n  b: 2\nc: [\n");
        assert!(e.message().contains("line 2"), "{e}");
    }

    #[test]
    fn load_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let e = load_file(&missing, &no_env).unwrap_err();
        assert_eq!(e.file(), Some(missing.as_path()));
        assert!(e.to_string().starts_with(&missing.display().to_string()));

        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "gateway:\n  upstream:\n    url: ftp://x\n").unwrap();
        let e = load_file(&f, &no_env).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: gateway.upstream.url: must start with http:// or https://",
                f.display()
            )
        );
    }

    #[test]
    fn merge_keys_are_supported() {
        let c = parse(
            "x-common: &common\n  read_timeout_s: 5\ngateway:\n  upstream:\n    <<: *common\n    \
             write_timeout_s: 6\n",
        )
        .unwrap();
        assert_eq!(c.gateway.upstream.read_timeout, Duration::from_secs(5));
        assert_eq!(c.gateway.upstream.write_timeout, Duration::from_secs(6));
    }

    #[test]
    fn process_env_reads_the_environment() {
        assert_eq!(process_env("PATH"), std::env::var("PATH").ok(),);
        assert_eq!(process_env("GEPA_SURELY_UNSET_VARIABLE_42"), None);
    }
}
