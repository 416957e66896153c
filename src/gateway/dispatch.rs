//! Answering GEPA's routes: the session API and the proxy, under their two path prefixes
//! ([`routes::is_gepa_path`]). Any other path is left to the caller.

use pingora_error::Result;
use pingora_proxy::Session;
use std::sync::atomic::Ordering;

use super::state::GatewayState;
use crate::auth::authorization;
use crate::errors::ApiError;
use crate::proxy;
use crate::request::{read_body, RequestCtx};
use crate::respond::{self, fail};
use crate::routes::{self, Route};

/// Largest admin API body (session configs and rewards are small).
const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// Answers the request if its path is GEPA's: `Ok(true)` once answered, `Ok(false)` for
/// another path (nothing was read or written), `Err` when the client connection must be
/// closed without a further response.
pub(super) async fn serve_gepa_route(
    gw: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let header = session.req_header();
    if !routes::is_gepa_path(header.uri.path()) {
        return Ok(false);
    }
    let method = header.method.clone();
    let path = header.uri.path().to_string();
    let query = header.uri.query().unwrap_or("").to_string();
    let route = routes::route(&method, &path);
    ctx.route = route.name();
    if let Some(err) = unavailable(gw, session, &route) {
        fail(session, ctx, err).await?;
        return Ok(true);
    }
    match route {
        Route::Proxy {
            session_id,
            correlation_id,
        } => proxy::serve(&gw.proxy, session, ctx, session_id, correlation_id).await?,
        Route::MethodNotAllowed { allowed } => {
            fail(session, ctx, ApiError::MethodNotAllowed { allowed }).await?
        }
        // Under GEPA's prefixes there is no health route; anything unknown is a 404.
        Route::NotFound | Route::Health | Route::Ready => {
            fail(session, ctx, ApiError::route_not_found()).await?
        }
        admin_route => serve_admin(gw, session, ctx, &admin_route, &query).await?,
    }
    Ok(true)
}

/// Why this route cannot be served now, if it cannot: the state is still being restored
/// (the session API and the proxy wait for it), or this process has handed over.
fn unavailable(gw: &GatewayState, session: &mut Session, route: &Route<'_>) -> Option<ApiError> {
    let needs_state = route.is_admin() || matches!(route, Route::Proxy { .. });
    if needs_state && !gw.ready.load(Ordering::Acquire) {
        return Some(ApiError::Unavailable {
            message: "the gateway is restoring its state; retry shortly".into(),
            retry_after_s: 1,
        });
    }
    handed_over(gw, session, route)
}

/// The answer of a process that has handed over (a graceful upgrade or stop began): the
/// session API and readiness have moved on to the successor, and the connection is
/// closed so that the client's retry reaches it. Proxied calls go on being served.
pub(super) fn handed_over(
    gw: &GatewayState,
    session: &mut Session,
    route: &Route<'_>,
) -> Option<ApiError> {
    let moved_on = route.is_admin() || matches!(route, Route::Ready);
    if !moved_on || !gw.handed_over.load(Ordering::Acquire) {
        return None;
    }
    session.set_keepalive(None);
    Some(ApiError::Unavailable {
        message: "this gateway process has handed over to its successor; retry".into(),
        retry_after_s: 1,
    })
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
    let access = match gw.credentials.authorize_admin(route, auth, client_ip) {
        Ok(access) => access,
        Err(e) => return fail(session, ctx, e).await,
    };
    let body = match read_body(session, MAX_ADMIN_BODY).await? {
        Ok(b) => b,
        Err(e) => return fail(session, ctx, e).await,
    };
    ctx.bytes_in = body.len();
    if let Some(id) = route.session_id() {
        ctx.session_id = Some(id.into());
    }
    match gw.admin.handle(route, query, &body, access).await {
        Ok(body) => respond::json(session, 200, body, &[]).await,
        Err(e) => fail(session, ctx, e).await,
    }
}
