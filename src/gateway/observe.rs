//! What each finished request leaves behind: one access-log line and the request metrics.

use pingora_error::Error;
use pingora_proxy::Session;

use crate::metrics::{Metrics, RequestObservation};
use crate::request::RequestCtx;

/// Logs and counts a request that has ended (answered, failed, or dropped).
pub(super) fn request_done(
    metrics: &Metrics,
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
) {
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
    metrics.observe(&RequestObservation {
        route: ctx.route,
        status,
        total: ctx.started.elapsed(),
        upstream: ctx.upstream_ms,
        upstream_ttfb: ctx.upstream_ttfb,
        upstream_status: ctx.upstream_status,
        error_code: ctx.error_code,
    });
}
