//! One proxied chat-completions call, end to end: read and check the body, assign the
//! rollout, splice the candidate's instruction in, exchange with the upstream, stream the
//! response back with the x-gepa headers, and record the rollout.
//!
//! The upstream exchange is done here with pingora-core's pooled connector rather than
//! through Pingora's proxy phases: a body consumed in `request_filter` reaches the
//! upstream through the phases only via a 64 KiB retry buffer, and chat bodies are often
//! far larger. Doing the exchange ourselves sends any body up to `limits.max_body_bytes`
//! and keeps every step (timeouts, retry of a stale pooled connection, error mapping)
//! explicit. See docs/design.md.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora_core::protocols::http::client::HttpSession as UpstreamSession;
use pingora_error::{Error, ErrorType::InvalidHTTPHeader, OrErr, Result};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::{authorization, Credentials};
use crate::capture::ReplyCapture;
use crate::errors::ApiError;
use crate::gepa::Sessions;
use crate::gepa::candidate::CallVerdict;
use crate::gepa::{CallOutcome, CallTicket, Session as GepaSession};
use crate::request::{read_body, RequestCtx};
use crate::respond::{self, fail};
use crate::rewrite::{self, BodyError};
use crate::upstream::Upstream;

/// Response headers that describe the upstream hop; Pingora frames the client response.
static RESPONSE_HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::UPGRADE,
];

/// The headers that tell the client which session, rollout and candidate served it.
static X_GEPA_SYSTEM_ID: HeaderName = HeaderName::from_static("x-gepa-system-id");
static X_GEPA_ROLLOUT_ID: HeaderName = HeaderName::from_static("x-gepa-rollout-id");
static X_GEPA_CANDIDATE_ID: HeaderName = HeaderName::from_static("x-gepa-candidate-id");
const GEPA_HEADER_COUNT: usize = 3;

/// The proxy route: what it needs, built once at start-up.
pub struct Proxy {
    pub sessions: Arc<Sessions>,
    pub credentials: Arc<Credentials>,
    pub upstream: Upstream,
    /// `limits.max_body_bytes`: larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// `capture.max_bytes`: each captured message and reply is cut to this.
    pub capture_max_bytes: usize,
}

/// Serves a proxied call. `Err` only when the client connection is unusable (a write to it
/// failed, or a stream broke after its header went out): Pingora then closes it.
pub async fn serve(
    gw: &Proxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    session_id: &str,
    correlation_id: Option<&str>,
) -> Result<()> {
    let Some(gepa) = gw.sessions.get(session_id) else {
        return fail(session, ctx, ApiError::unknown_session(session_id)).await;
    };
    ctx.session_id = Some(gepa.id.clone());
    let auth = authorization(&session.req_header().headers);
    if let Err(e) = gw.credentials.authorize_proxy(auth) {
        return fail(session, ctx, e).await;
    }
    let body = match read_body(session, gw.max_body_bytes).await? {
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
        Err(e) => return fail(session, ctx, e.into()).await,
    };
    ctx.rollout_id = Some(ticket.rollout_id.clone());
    ctx.candidate_id = Some(ticket.candidate_id.clone());
    let rewritten = parsed.rewrite(&ticket.instruction, gw.capture_max_bytes);
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
    // A no-op unless the exchange ended without recording: the client went away, or the
    // upstream's header could not be passed on. Neither says anything of the candidate.
    recorder.record(CallVerdict::Inconclusive, None);
    end.client_error.map_or(Ok(()), Err)
}

/// Records the call's outcome on the rollout exactly once, and *before* the client can
/// see the end of the response: a client that rewards as soon as it has the answer must
/// find the outcome (e.g. `rollout_failed`) already booked.
struct Recorder<'a> {
    gepa: &'a GepaSession,
    rollout_id: &'a Arc<str>,
    input: Option<Vec<crate::rewrite::CapturedMessage>>,
}

impl Recorder<'_> {
    fn record(&mut self, verdict: CallVerdict, output: Option<String>) {
        if let Some(input) = self.input.take() {
            let outcome = CallOutcome {
                verdict,
                input,
                output,
            };
            self.gepa.finish_call(self.rollout_id, outcome);
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

/// The x-gepa headers of a call: which session, rollout and candidate served it.
type GepaHeaders<'a> = [(&'static HeaderName, &'a str); GEPA_HEADER_COUNT];

fn gepa_header_values<'a>(gepa: &'a GepaSession, ticket: &'a CallTicket) -> GepaHeaders<'a> {
    [
        (&X_GEPA_SYSTEM_ID, &gepa.id),
        (&X_GEPA_ROLLOUT_ID, &ticket.rollout_id),
        (&X_GEPA_CANDIDATE_ID, &ticket.candidate_id),
    ]
}

/// The x-gepa headers for a local (error) response.
fn gepa_headers(
    gepa: &GepaSession,
    ticket: &CallTicket,
) -> [(&'static str, String); GEPA_HEADER_COUNT] {
    gepa_header_values(gepa, ticket).map(|(name, value)| (name.as_str(), value.to_string()))
}

/// Sends the request upstream and relays the response. Every failure before the response
/// header reached the client becomes a 502/504 carrying the x-gepa headers.
async fn exchange(
    gw: &Proxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    gepa: &Arc<GepaSession>,
    ticket: &CallTicket,
    body: Bytes,
    recorder: &mut Recorder<'_>,
) -> ExchangeEnd {
    let started = Instant::now();
    let (mut upstream, peer) = match send(&gw.upstream, session.req_header(), body).await {
        Ok(pair) => pair,
        Err(api) => {
            ctx.upstream_ms = Some(started.elapsed());
            return fail_before_header(session, ctx, recorder, &gepa_headers(gepa, ticket), api)
                .await;
        }
    };
    ctx.upstream_ttfb = Some(started.elapsed());
    let Some(upstream_header) = upstream.response_header() else {
        let api = ApiError::BadGateway {
            code: "upstream_error",
            message: "the upstream sent no response header".into(),
        };
        return fail_before_header(session, ctx, recorder, &gepa_headers(gepa, ticket), api).await;
    };
    let status = upstream_header.status.as_u16();
    ctx.upstream_status = Some(status);
    let mut capture = reply_capture(upstream_header, gw.capture_max_bytes);
    let client_header =
        match client_response_header(upstream_header, &gepa_header_values(gepa, ticket)) {
            Ok(h) => h,
            Err(e) => return ExchangeEnd::failed(Some(e)),
        };
    if let Err(e) = session.write_response_header(client_header, false).await {
        return ExchangeEnd::failed(Some(e));
    }
    let last_chunk = match relay_body(session, &mut upstream, &mut capture, ctx).await {
        Ok(last) => last,
        Err(broken) => {
            ctx.upstream_ms = Some(started.elapsed());
            ctx.error_code = Some("stream_broken");
            return ExchangeEnd::failed(Some(broken.into_error(recorder)));
        }
    };
    ctx.upstream_ms = Some(started.elapsed());
    let verdict = verdict_of_status(status);
    let output = (verdict == CallVerdict::Succeeded)
        .then(|| capture.finish())
        .flatten();
    recorder.record(verdict, output);
    // The connection goes back to the pool before the client sees the end: a client
    // whose next call follows at once then finds it there (released after, the next call
    // raced the release and often opened a new connection).
    if upstream.response_done() {
        gw.upstream.release(upstream, &peer).await;
    }
    // Only now does the client see the end of the response.
    let finished = session.write_response_body(last_chunk, true).await;
    ExchangeEnd {
        client_error: finished.err(),
    }
}

/// Ends a call that failed before any of the response reached the client: the failure
/// is booked on the rollout, and the client gets the error with the x-gepa headers.
async fn fail_before_header(
    session: &mut Session,
    ctx: &mut RequestCtx,
    recorder: &mut Recorder<'_>,
    gepa_headers: &[(&'static str, String)],
    api: ApiError,
) -> ExchangeEnd {
    ctx.error_code = Some(api.code());
    // The upstream could not be reached, timed out or broke the exchange: the candidate's
    // call failed. Anything else (a request the gateway could not build) is not its doing.
    let verdict = match api {
        ApiError::BadGateway { .. } | ApiError::GatewayTimeout { .. } => CallVerdict::Failed,
        _ => CallVerdict::Inconclusive,
    };
    recorder.record(verdict, None);
    let res = respond::error(session, &api, gepa_headers).await;
    ExchangeEnd::failed(res.err())
}

/// Builds the upstream request and sends it, up to the response header.
async fn send(
    upstream: &Upstream,
    client_header: &RequestHeader,
    body: Bytes,
) -> std::result::Result<(UpstreamSession, HttpPeer), ApiError> {
    let request = upstream.build_request(client_header, body)?;
    upstream.send(&request).await
}

/// A capture of the reply, in the response's content type and coding.
fn reply_capture(upstream_header: &ResponseHeader, max_text_bytes: usize) -> ReplyCapture {
    ReplyCapture::new(
        header_str(upstream_header, "content-type"),
        header_str(upstream_header, "content-encoding"),
        max_text_bytes,
    )
}

fn header_str<'a>(h: &'a ResponseHeader, name: &str) -> &'a str {
    h.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The upstream's status and headers, minus hop-by-hop ones, plus the x-gepa headers.
/// This is the gateway's response filter.
///
/// Built as plain `http` parts with typed header names rather than by cloning the
/// upstream's `ResponseHeader` and editing it: each of Pingora's header edits parses the
/// name again and keeps it in two maps, which made this the costliest step of the proxy
/// path. The client gets names in canonical case (Pingora title-cases the standard ones,
/// the rest go lower case), which HTTP/1.1 allows.
fn client_response_header(
    upstream: &ResponseHeader,
    gepa_headers: &GepaHeaders<'_>,
) -> Result<Box<ResponseHeader>> {
    let mut headers = HeaderMap::with_capacity(upstream.headers.len() + GEPA_HEADER_COUNT);
    for (name, value) in &upstream.headers {
        if !RESPONSE_HOP_BY_HOP.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for &(name, value) in gepa_headers {
        let value = HeaderValue::from_str(value).or_err(
            InvalidHTTPHeader,
            "an x-gepa header value is not a valid header",
        )?;
        headers.insert(name.clone(), value);
    }
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = upstream.status;
    parts.version = upstream.version;
    parts.headers = headers;
    Ok(Box::new(ResponseHeader::from(parts)))
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
) -> std::result::Result<Option<Bytes>, BrokenStream> {
    loop {
        let chunk = match upstream.read_response_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(None),
            Err(e) => return Err(BrokenStream::ByUpstream(e)),
        };
        capture.feed(&chunk);
        ctx.bytes_out += chunk.len();
        if upstream.response_done() {
            // With a Content-Length the last data chunk is the end the client sees:
            // hold it back until the call's outcome is booked.
            return Ok(Some(chunk));
        }
        if let Err(e) = session.write_response_body(Some(chunk), false).await {
            return Err(BrokenStream::ByClient(e));
        }
    }
}

/// Which side broke a response midway.
enum BrokenStream {
    /// The upstream: the candidate's call failed.
    ByUpstream(Box<Error>),
    /// The client went away: nothing to hold against the candidate.
    ByClient(Box<Error>),
}

impl BrokenStream {
    /// Books the call's outcome and hands back the error that closes the client's
    /// connection.
    fn into_error(self, recorder: &mut Recorder<'_>) -> Box<Error> {
        let (verdict, e) = match self {
            BrokenStream::ByUpstream(e) => (CallVerdict::Failed, e),
            BrokenStream::ByClient(e) => (CallVerdict::Inconclusive, e),
        };
        recorder.record(verdict, None);
        e
    }
}

/// What an upstream status says of the candidate's call: 2xx succeeded; 429 (the
/// upstream's rate limit) says nothing of the candidate; any other 4xx or 5xx failed.
fn verdict_of_status(status: u16) -> CallVerdict {
    match status {
        200..=299 => CallVerdict::Succeeded,
        429 => CallVerdict::Inconclusive,
        400..=599 => CallVerdict::Failed,
        _ => CallVerdict::Inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gepa(session_id: &'static str) -> GepaHeaders<'static> {
        [
            (&X_GEPA_SYSTEM_ID, session_id),
            (&X_GEPA_ROLLOUT_ID, "ro_1"),
            (&X_GEPA_CANDIDATE_ID, "cand"),
        ]
    }

    #[test]
    fn the_client_header_drops_hop_by_hop_headers_and_adds_the_gepa_ones() {
        let mut upstream = ResponseHeader::build(201, None).unwrap();
        for (name, value) in [
            ("Content-Type", "application/json"),
            ("X-Request-Id", "req-1"),
            ("Set-Cookie", "a=1"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"),
            ("x-gepa-rollout-id", "spoofed"),
        ] {
            upstream.append_header(name, value).unwrap();
        }
        upstream.append_header("Set-Cookie", "b=2").unwrap();

        let h = client_response_header(&upstream, &gepa("sess")).unwrap();

        assert_eq!(h.status.as_u16(), 201);
        let mut names: Vec<&str> = h.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-type",
                "set-cookie",
                "x-gepa-candidate-id",
                "x-gepa-rollout-id",
                "x-gepa-system-id",
                "x-request-id",
            ]
        );
        let cookies: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(
            cookies,
            ["a=1", "b=2"],
            "repeated headers all kept, in order"
        );
        assert_eq!(h.headers["x-gepa-system-id"], "sess");
        assert_eq!(
            h.headers["x-gepa-rollout-id"], "ro_1",
            "the upstream's is replaced"
        );
        assert_eq!(h.headers["x-gepa-candidate-id"], "cand");
    }

    #[test]
    fn an_id_that_is_no_header_value_is_an_error_not_a_panic() {
        let upstream = ResponseHeader::build(200, None).unwrap();
        assert!(client_response_header(&upstream, &gepa("bad\nid")).is_err());
    }
}
