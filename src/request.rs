//! The state of one request as it passes through the gateway, and reading its body.
//!
//! Shared by the application ([`crate::gateway`]) and the edges that serve a route
//! (`crate::proxy`, the admin routes), so that none of them reaches back into another.

use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::errors::ApiError;

/// The route name of a request not (yet) routed.
const UNROUTED: &str = "unknown";

/// Per-request facts for the access log.
#[derive(Debug)]
pub struct RequestCtx {
    pub started: Instant,
    pub route: &'static str,
    pub session_id: Option<Arc<str>>,
    pub rollout_id: Option<Arc<str>>,
    pub candidate_id: Option<Arc<str>>,
    pub error_code: Option<&'static str>,
    pub upstream_ttfb: Option<Duration>,
    pub upstream_ms: Option<Duration>,
    /// The upstream's response status, when one arrived.
    pub upstream_status: Option<u16>,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            route: UNROUTED,
            session_id: None,
            rollout_id: None,
            candidate_id: None,
            error_code: None,
            upstream_ttfb: None,
            upstream_ms: None,
            upstream_status: None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

impl RequestCtx {
    /// Whether the gateway routed this request (a host's own requests stay unrouted).
    pub fn is_routed(&self) -> bool {
        self.route != UNROUTED
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the whole request body, refusing it (413) past `limit`, before reading if the
/// declared Content-Length already says so. The outer `Err` is a client I/O failure.
pub(crate) async fn read_body(
    session: &mut Session,
    limit: usize,
) -> Result<std::result::Result<Bytes, ApiError>> {
    let headers = &session.req_header().headers;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(Err(ApiError::PayloadTooLarge { limit }));
    }
    let expects_continue = headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await?;
    }
    // A body that arrives as one chunk (the usual case) is kept as it is; only one that
    // takes several is copied into one buffer.
    let mut single: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0;
    while let Some(chunk) = session.read_request_body().await? {
        len += chunk.len();
        if len > limit {
            return Ok(Err(ApiError::PayloadTooLarge { limit }));
        }
        match single.take() {
            None if joined.is_empty() => single = Some(chunk),
            Some(first) => {
                joined.reserve(declared.map_or(len, |n| n as usize).max(len));
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
            }
            None => joined.extend_from_slice(&chunk),
        }
    }
    Ok(Ok(single.unwrap_or_else(|| joined.freeze())))
}
