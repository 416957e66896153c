//! The Pingora application: every request is routed and answered in `request_filter`
//! (proxy calls included, see [`crate::proxy`]), and `logging` writes the access log.

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

use crate::admin::AdminApi;
use crate::auth::{authorization, Credentials};
use crate::config::GatewayConfig;
use crate::config::StorageBackend;
use crate::errors::ApiError;
use crate::gepa::selection::CandidateSelector;
use crate::gepa::{OptimizerConfig, SessionEnv, Sessions};
use crate::metrics::{Metrics, RequestObservation};
use crate::proxy::{self, Proxy};
use crate::request::{read_body, RequestCtx};
use crate::respond;
use crate::respond::fail;
use crate::routes::PublicUrls;
use crate::routes::{self, Route};
use crate::store::sqlite::SqliteStore;
use crate::store::{MemoryStore, StateStore, StoreProbe};
use crate::upstream::Upstream;

/// Largest admin API body (session configs and rewards are small).
const MAX_ADMIN_BODY: usize = 1024 * 1024;

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
        let env = SessionEnv {
            correlation_ttl: config.correlation_ttl,
            rollouts_in_memory: config.storage.rollouts_in_memory,
            store,
            optimizer: OptimizerConfig {
                minibatch_size: config.proposer.minibatch_size,
                merge: config.proposer.merge,
                disabled_reason: config.proposer.api_key.is_none().then(|| {
                    "no proposer key: set gateway.proposer.api_key_env or \
                     gateway.upstream.api_key_env"
                        .to_string()
                }),
            },
            selector: CandidateSelector::with_allocation(
                config.gepa_defaults.warmup_rollouts,
                config.gepa_defaults.allocation,
            ),
            proposer_wake: Arc::new(Notify::new()),
        };
        let sessions = Arc::new(Sessions::new(config.max_sessions, env));
        let admin = AdminApi {
            sessions: sessions.clone(),
            urls: PublicUrls::new(&config.public_url),
            defaults: config.gepa_defaults.clone(),
            default_proposer_model: config.proposer.model.clone(),
        };
        let credentials = Arc::new(Credentials {
            admin_tokens: config.admin_tokens.clone(),
            reward_tokens: config.reward_tokens.clone(),
            client_keys: config.client_keys.clone(),
        });
        let proxy = Proxy {
            sessions: sessions.clone(),
            credentials: credentials.clone(),
            upstream: Upstream::new(config.upstream.clone()),
            max_body_bytes: config.max_body_bytes,
            capture_max_bytes: config.capture_max_bytes,
        };
        let store_probe = sqlite.is_some().then_some(&probe);
        let metrics =
            Arc::new(Metrics::new(sessions.clone(), store_probe).map_err(|e| e.to_string())?);
        Ok(GatewayState {
            proxy,
            metrics,
            sessions,
            admin,
            credentials,
            // A durable store must be restored (after Pingora's fork) before serving.
            ready: AtomicBool::new(sqlite.is_none()),
            handed_over: AtomicBool::new(false),
            sqlite,
            config,
        })
    }
}

/// The Pingora service.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default adds a response-compression module, switched
    /// off, whose context is still built and consulted on every request; the gateway never
    /// compresses (responses keep the upstream's `Content-Encoding`).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Never reached: `request_filter` answers every request itself.
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "every route is answered in request_filter",
        )
    }

    /// Routes and answers the request. Always returns `Ok(true)` (the response was sent),
    /// or `Err` when the client connection must be closed without a further response.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let gw = &*self.state;
        let header = session.req_header();
        let method = header.method.clone();
        let path = header.uri.path().to_string();
        let query = header.uri.query().unwrap_or("").to_string();
        let route = routes::route(&method, &path);
        ctx.route = route.name();
        let needs_state = route.is_admin() || matches!(route, Route::Proxy { .. });
        if needs_state && !gw.ready.load(Ordering::Acquire) {
            let err = ApiError::Unavailable {
                message: "the gateway is restoring its state; retry shortly".into(),
                retry_after_s: 1,
            };
            fail(session, ctx, err).await?;
            return Ok(true);
        }
        if (route.is_admin() || matches!(route, Route::Ready))
            && gw.handed_over.load(Ordering::Acquire)
        {
            // Closing the connection sends the client's retry to the successor process.
            session.set_keepalive(None);
            let err = ApiError::Unavailable {
                message: "this gateway process has handed over to its successor; retry".into(),
                retry_after_s: 1,
            };
            fail(session, ctx, err).await?;
            return Ok(true);
        }
        match route {
            Route::Proxy {
                session_id,
                correlation_id,
            } => proxy::serve(&gw.proxy, session, ctx, session_id, correlation_id).await?,
            Route::Health => ok_json(session, json!({"status": "ok"})).await?,
            Route::Ready => ready(gw, session).await?,
            Route::NotFound => fail(session, ctx, ApiError::route_not_found()).await?,
            Route::MethodNotAllowed { allowed } => {
                fail(session, ctx, ApiError::MethodNotAllowed { allowed }).await?
            }
            admin_route => serve_admin(gw, session, ctx, &admin_route, &query).await?,
        }
        Ok(true)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // A response already started (a stream broke midway): close the connection so the
        // client sees a truncated response, never a clean end.
        if session.response_written().is_some() || is_client_io(e) {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let api = ApiError::Internal {
            message: "internal error".into(),
        };
        ctx.error_code = Some(api.code());
        let _ = respond::error(session, &api, &[]).await;
        FailToProxy {
            error_code: 500,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        if crate::logging::access_enabled() {
            let ts = crate::format::rfc3339(time::OffsetDateTime::now_utc());
            crate::logging::access(&crate::logging::AccessRecord {
                ts: &ts,
                route: ctx.route,
                method: session.req_header().method.as_str(),
                status,
                session: ctx.session_id.as_deref(),
                rollout: ctx.rollout_id.as_deref(),
                candidate: ctx.candidate_id.as_deref(),
                error: ctx.error_code.or(e.map(|e| e.etype().as_str())),
                upstream_ttfb_ms: ctx.upstream_ttfb,
                upstream_ms: ctx.upstream_ms,
                total_ms: ctx.started.elapsed(),
                bytes_in: ctx.bytes_in,
                bytes_out: ctx.bytes_out,
            });
        }
        self.state.metrics.observe(&RequestObservation {
            route: ctx.route,
            status,
            total: ctx.started.elapsed(),
            upstream: ctx.upstream_ms,
            upstream_ttfb: ctx.upstream_ttfb,
            upstream_status: ctx.upstream_status,
            error_code: ctx.error_code,
        });
    }
}

fn is_client_io(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
    )
}

async fn ok_json(session: &mut Session, v: serde_json::Value) -> Result<()> {
    respond::json(session, 200, Bytes::from(v.to_string()), &[]).await
}

async fn ready(gw: &GatewayState, session: &mut Session) -> Result<()> {
    if gw.ready.load(Ordering::Acquire) {
        return ok_json(session, json!({"status": "ready"})).await;
    }
    let err = ApiError::Unavailable {
        message: "state is not restored yet".into(),
        retry_after_s: 1,
    };
    respond::error(session, &err, &[]).await
}

async fn serve_admin(
    gw: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route<'_>,
    query: &str,
) -> Result<()> {
    let auth = authorization(&session.req_header().headers);
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    if let Err(e) = gw.credentials.authorize_admin(route, auth, client_ip) {
        return fail(session, ctx, e).await;
    }
    let body = match read_body(session, MAX_ADMIN_BODY).await? {
        Ok(b) => b,
        Err(e) => return fail(session, ctx, e).await,
    };
    ctx.bytes_in = body.len();
    if let Route::GetSession(id)
    | Route::Pause(id)
    | Route::Resume(id)
    | Route::Cancel(id)
    | Route::Reward(id)
    | Route::PromptUrls(id) = route
    {
        ctx.session_id = Some((*id).into());
    }
    match gw.admin.handle(route, query, &body).await {
        Ok(body) => respond::json(session, 200, body, &[]).await,
        Err(e) => fail(session, ctx, e).await,
    }
}
