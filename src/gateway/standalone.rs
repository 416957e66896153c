//! The standalone gateway: GEPA in an otherwise empty Pingora proxy. Every request is
//! answered in `request_filter` (proxy calls included, see `crate::proxy`): GEPA's routes
//! by [`Gepa`], health and readiness here, anything else with a 404.

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::Ordering;

use super::{dispatch, observe, Gepa};
use crate::errors::ApiError;
use crate::request::RequestCtx;
use crate::respond::{self, fail};
use crate::routes::{self, Route};

/// The Pingora application of the standalone gateway.
pub struct Gateway {
    pub gepa: Gepa,
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
        if self.gepa.request_filter(session, ctx).await? {
            return Ok(true);
        }
        let header = session.req_header();
        let (method, path) = (header.method.clone(), header.uri.path().to_string());
        let route = routes::route(&method, &path);
        ctx.route = route.name();
        match route {
            Route::Health => ok_json(session, r#"{"status":"ok"}"#).await?,
            Route::Ready => self.ready(session, ctx, &route).await?,
            Route::MethodNotAllowed { allowed } => {
                fail(session, ctx, ApiError::MethodNotAllowed { allowed }).await?
            }
            _ => fail(session, ctx, ApiError::route_not_found()).await?,
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
        // Every request of the standalone gateway is its own, routed or not.
        observe::request_done(&self.gepa.state.metrics, session, e, ctx);
    }
}

impl Gateway {
    /// `/readyz`: 200 once the state is restored, 503 before, and 503 with the connection
    /// closed once this process has handed over to its successor.
    async fn ready(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route<'_>,
    ) -> Result<()> {
        let state = &self.gepa.state;
        if let Some(err) = dispatch::handed_over(state, session, route) {
            return fail(session, ctx, err).await;
        }
        if state.ready.load(Ordering::Acquire) {
            return ok_json(session, r#"{"status":"ready"}"#).await;
        }
        let err = ApiError::Unavailable {
            message: "state is not restored yet".into(),
            retry_after_s: 1,
        };
        respond::error(session, &err, &[]).await
    }
}

fn is_client_io(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
    )
}

async fn ok_json(session: &mut Session, body: &'static str) -> Result<()> {
    respond::json(session, 200, Bytes::from_static(body.as_bytes()), &[]).await
}
