//! GEPA's shared state, built once at start-up from the `gateway` config section.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::Notify;

use crate::admin::AdminApi;
use crate::auth::Credentials;
use crate::config::GatewayConfig;
use crate::config::StorageBackend;
use crate::gepa::selection::CandidateSelector;
use crate::gepa::{OptimizerConfig, SessionEnv, Sessions};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::routes::PublicUrls;
use crate::store::sqlite::SqliteStore;
use crate::store::{MemoryStore, StateStore, StoreProbe};
use crate::upstream::Upstream;

/// Everything the request path shares, built once at start-up.
pub struct GatewayState {
    pub config: GatewayConfig,
    pub sessions: Arc<Sessions>,
    pub admin: AdminApi,
    pub proxy: Proxy,
    pub credentials: Arc<Credentials>,
    /// True once state is restored and the listener serves (`/readyz`).
    pub ready: AtomicBool,
    /// Set when a graceful upgrade or shutdown began: the session API has moved on.
    pub handed_over: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// The durable store, when `storage.backend` is `sqlite`.
    pub sqlite: Option<Arc<SqliteStore>>,
}

impl GatewayState {
    /// The proposer's client: `proposer.url` (else the upstream) with the proposer key.
    pub fn proposer_client(&self) -> Upstream {
        let mut cfg = self.config.upstream.clone();
        if let Some(url) = &self.config.proposer.url {
            cfg.url = url.clone();
        }
        cfg.api_key = self.config.proposer.api_key.clone();
        Upstream::new(cfg)
    }

    pub fn new(config: GatewayConfig) -> Result<Self, String> {
        // Metric names and labels are constants: creating them cannot fail at run time.
        let probe = StoreProbe::new().map_err(|e| e.to_string())?;
        let sqlite = (config.storage.backend == StorageBackend::Sqlite)
            .then(|| Arc::new(SqliteStore::new(&config.storage, probe.clone())));
        let store: Arc<dyn StateStore> = match &sqlite {
            Some(s) => s.clone(),
            None => Arc::new(MemoryStore::new()),
        };
        let sessions = Arc::new(Sessions::new(
            config.max_sessions,
            session_env(&config, store),
        ));
        let credentials = Arc::new(Credentials {
            admin_tokens: config.admin_tokens.clone(),
            reward_tokens: config.reward_tokens.clone(),
            client_keys: config.client_keys.clone(),
        });
        let store_probe = sqlite.is_some().then_some(&probe);
        let metrics =
            Arc::new(Metrics::new(sessions.clone(), store_probe).map_err(|e| e.to_string())?);
        Ok(GatewayState {
            proxy: Proxy {
                sessions: sessions.clone(),
                credentials: credentials.clone(),
                upstream: Upstream::new(config.upstream.clone()),
                max_body_bytes: config.max_body_bytes,
                capture_max_bytes: config.capture_max_bytes,
            },
            admin: AdminApi {
                sessions: sessions.clone(),
                urls: PublicUrls::new(&config.public_url),
                defaults: config.gepa_defaults.clone(),
                default_proposer_model: config.proposer.model.clone(),
            },
            metrics,
            sessions,
            credentials,
            // A durable store must be restored (after Pingora's fork) before serving.
            ready: AtomicBool::new(sqlite.is_none()),
            handed_over: AtomicBool::new(false),
            sqlite,
            config,
        })
    }
}

/// What every session shares, from the config.
fn session_env(config: &GatewayConfig, store: Arc<dyn StateStore>) -> SessionEnv {
    SessionEnv {
        correlation_ttl: config.correlation_ttl,
        rollouts_in_memory: config.storage.rollouts_in_memory,
        store,
        optimizer: OptimizerConfig {
            minibatch_size: config.proposer.minibatch_size,
            merge: config.proposer.merge,
            max_instruction_bytes: config.proposer.max_instruction_bytes,
            review: config.proposer.review,
            max_proposals: config.proposer.max_proposals,
            disabled_reason: config.proposer.api_key.is_none().then(|| {
                "no proposer key: set gateway.proposer.api_key_env or \
                 gateway.upstream.api_key_env"
                    .to_string()
            }),
        },
        selector: CandidateSelector {
            explore_share: config.gepa_defaults.explore_share,
            ..CandidateSelector::with_allocation(
                config.gepa_defaults.warmup_rollouts,
                config.gepa_defaults.allocation,
            )
        },
        proposer_wake: Arc::new(Notify::new()),
    }
}
