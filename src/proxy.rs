//! One proxied chat-completions call, end to end: read and check the body, assign the
//! rollout, splice the candidate's instruction in, exchange with the upstream, stream the
//! response back with the x-gepa headers, and record the rollout.
//!
//! The upstream exchange is done here with pingora-core's pooled connector rather than
//! through Pingora's proxy phases: a body consumed in `request_filter` reaches the
//! upstream through the phases only via a 64 KiB retry buffer, and chat bodies are often
//! far larger. Doing the exchange ourselves sends any body up to `limits.max_body_bytes`
//! and keeps every step (timeouts, retry of a stale pooled connection, error mapping)
//! explicit. See the README's design notes.

use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::client::HttpSession as UpstreamSession;
use pingora_error::{Error, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Instant;

use crate::capture::ReplyCapture;
use crate::errors::ApiError;
use crate::gateway::{fail, GatewayState, RequestCtx};
use crate::respond;
use crate::rewrite::{self, BodyError};
use crate::sessions::{CallOutcome, CallTicket, Session as GepaSession};

/// Response headers that describe the upstream hop; Pingora frames the client response.
const RESPONSE_HOP_BY_HOP: [&str; 4] = ["connection", "keep-alive", "proxy-connection", "upgrade"];

/// Serves a proxied call. `Err` only when the client connection is unusable (a write to it
/// failed, or a stream broke after its header went out): Pingora then closes it.
pub async fn serve(
    gw: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    session_id: &str,
    correlation_id: Option<&str>,
) -> Result<()> {
    let Some(gepa) = gw.sessions.get(session_id) else {
        return fail(session, ctx, ApiError::unknown_session(session_id)).await;
    };
    ctx.session_id = Some(gepa.id.clone());
    let auth = session
        .req_header()
        .headers
        .get("authorization")
        .map(|v| v.as_bytes());
    if let Err(e) = gw.credentials.authorize_proxy(auth) {
        return fail(session, ctx, e).await;
    }
    let body = match read_body(session, gw.config.max_body_bytes).await? {
        Ok(body) => body,
        Err(e) => return fail(session, ctx, e).await,
    };
    ctx.bytes_in = body.len();
    let parsed = match rewrite::ParsedChatBody::parse(&body) {
        Ok(p) => p,
        Err(e) => return fail(session, ctx, body_error(&e)).await,
    };
    // Only now, with a valid body, is a rollout assigned.
    let ticket = match gepa.begin_call(correlation_id) {
        Ok(t) => t,
        Err(e) => return fail(session, ctx, e).await,
    };
    ctx.rollout_id = Some(ticket.rollout_id.clone());
    ctx.candidate_id = Some(ticket.candidate_id.clone());
    let rewritten = parsed.rewrite(&ticket.instruction, gw.config.capture_max_bytes);
    drop(parsed);
    let mut recorder = Recorder {
        gepa: &gepa,
        rollout_id: &ticket.rollout_id,
        input: Some(rewritten.captured),
    };
    let end = exchange(
        gw,
        session,
        ctx,
        &gepa,
        &ticket,
        rewritten.body,
        &mut recorder,
    )
    .await;
    recorder.record(false, None); // no-op unless the exchange ended without recording
    end.client_error.map_or(Ok(()), Err)
}

/// Records the call's outcome on the rollout exactly once, and *before* the client can
/// see the end of the response: a client that rewards as soon as it has the answer must
/// find the outcome (e.g. `rollout_failed`) already booked.
struct Recorder<'a> {
    gepa: &'a GepaSession,
    rollout_id: &'a str,
    input: Option<Vec<crate::rewrite::CapturedMessage>>,
}

impl Recorder<'_> {
    fn record(&mut self, ok: bool, output: Option<String>) {
        if let Some(input) = self.input.take() {
            self.gepa
                .finish_call(self.rollout_id, CallOutcome { ok, input, output });
        }
    }
}

fn body_error(e: &BodyError) -> ApiError {
    ApiError::BadRequest {
        code: e.code(),
        param: e.param(),
        message: e.to_string(),
    }
}

/// Reads the whole request body, refusing it (413) past `limit`, before reading if the
/// declared Content-Length already says so. The outer `Err` is a client I/O failure.
async fn read_body(
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
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(Err(ApiError::PayloadTooLarge { limit }));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Ok(buf.freeze()))
}

/// How an exchange ended.
struct ExchangeEnd {
    /// Set when the client connection must be dropped.
    client_error: Option<Box<Error>>,
}

impl ExchangeEnd {
    fn failed(client_error: Option<Box<Error>>) -> Self {
        ExchangeEnd { client_error }
    }
}

fn gepa_headers(gepa: &GepaSession, ticket: &CallTicket) -> [(&'static str, String); 3] {
    [
        ("x-gepa-system-id", gepa.id.clone()),
        ("x-gepa-rollout-id", ticket.rollout_id.to_string()),
        ("x-gepa-candidate-id", ticket.candidate_id.clone()),
    ]
}

/// Sends the request upstream and relays the response. Every failure before the response
/// header reached the client becomes a 502/504 carrying the x-gepa headers.
async fn exchange(
    gw: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    gepa: &Arc<GepaSession>,
    ticket: &CallTicket,
    body: Bytes,
    recorder: &mut Recorder<'_>,
) -> ExchangeEnd {
    let headers = gepa_headers(gepa, ticket);
    let started = Instant::now();
    let connected = match gw.upstream.build_request(session.req_header(), body) {
        Ok(req) => gw.upstream.send(&req).await,
        Err(e) => Err(e),
    };
    let (mut upstream, peer) = match connected {
        Ok(pair) => pair,
        Err(api) => {
            ctx.error_code = Some(api.code());
            ctx.upstream_ms = Some(started.elapsed());
            recorder.record(false, None);
            let res = respond::error(session, &api, &headers).await;
            return ExchangeEnd::failed(res.err());
        }
    };
    ctx.upstream_ttfb = Some(started.elapsed());
    let Some(upstream_header) = upstream.response_header() else {
        let api = ApiError::BadGateway {
            code: "upstream_error",
            message: "the upstream sent no response header".into(),
        };
        ctx.error_code = Some(api.code());
        recorder.record(false, None);
        let res = respond::error(session, &api, &headers).await;
        return ExchangeEnd::failed(res.err());
    };
    let status = upstream_header.status.as_u16();
    ctx.upstream_status = Some(status);
    let mut capture = ReplyCapture::new(
        header_str(upstream_header, "content-type"),
        header_str(upstream_header, "content-encoding"),
        gw.config.capture_max_bytes,
    );
    let client_header = match client_response_header(upstream_header, &headers) {
        Ok(h) => h,
        Err(e) => return ExchangeEnd::failed(Some(e)),
    };
    if let Err(e) = session.write_response_header(client_header, false).await {
        return ExchangeEnd::failed(Some(e));
    }
    let last_chunk = match relay_body(session, &mut upstream, &mut capture, ctx).await {
        Ok(last) => last,
        Err(e) => {
            ctx.upstream_ms = Some(started.elapsed());
            ctx.error_code = Some("stream_broken");
            return ExchangeEnd::failed(Some(e));
        }
    };
    ctx.upstream_ms = Some(started.elapsed());
    let ok = (200..300).contains(&status);
    recorder.record(ok, if ok { capture.finish() } else { None });
    // Only now does the client see the end of the response.
    let finished = session.write_response_body(last_chunk, true).await;
    if upstream.response_done() {
        gw.upstream
            .connector
            .release_http_session(upstream, &peer, Some(gw.upstream.pool_idle_timeout()))
            .await;
    }
    ExchangeEnd {
        client_error: finished.err(),
    }
}

fn header_str<'a>(h: &'a ResponseHeader, name: &str) -> &'a str {
    h.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The upstream's status and headers, minus hop-by-hop ones, plus the x-gepa headers.
/// This is the gateway's response filter.
fn client_response_header(
    upstream: &ResponseHeader,
    gepa_headers: &[(&'static str, String)],
) -> Result<Box<ResponseHeader>> {
    let mut h = Box::new(upstream.clone());
    for name in RESPONSE_HOP_BY_HOP {
        h.remove_header(name);
    }
    for (name, value) in gepa_headers {
        h.insert_header(*name, value.as_str())?;
    }
    Ok(h)
}

/// Streams the response body to the client chunk by chunk, keeping a copy for capture.
/// Each write is flushed, so SSE events arrive as the upstream sends them. The end is
/// left to the caller, which writes it after booking the call's outcome: returned is the
/// last data chunk when it completes a Content-Length body (for a chunked body the end
/// is the terminating chunk, and `None` is returned).
async fn relay_body(
    session: &mut Session,
    upstream: &mut UpstreamSession,
    capture: &mut ReplyCapture,
    ctx: &mut RequestCtx,
) -> Result<Option<Bytes>> {
    while let Some(chunk) = upstream.read_response_body().await? {
        capture.feed(&chunk);
        ctx.bytes_out += chunk.len();
        if upstream.response_done() {
            // With a Content-Length the last data chunk is the end the client sees:
            // hold it back until the call's outcome is booked.
            return Ok(Some(chunk));
        }
        session.write_response_body(Some(chunk), false).await?;
    }
    Ok(None)
}
