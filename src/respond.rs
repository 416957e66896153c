//! Writing local responses (health, admin API, errors) to the client.
//!
//! Every local response carries an exact Content-Length: without one an HTTP/1.1 client
//! waits for the connection to close.

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::errors::ApiError;
use crate::request::RequestCtx;

/// Writes a complete JSON response.
pub async fn json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    extra_headers: &[(&'static str, String)],
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4 + extra_headers.len()))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra_headers {
        header.insert_header(*name, value.as_str())?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// Writes an [`ApiError`] with its status, headers and OpenAI-shaped body, plus any
/// `extra` headers (the x-gepa headers of an assigned rollout).
pub async fn error(
    session: &mut Session,
    err: &ApiError,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut headers = err.extra_headers();
    headers.extend_from_slice(extra);
    json(session, err.status(), err.body(), &headers).await
}

/// Answers a client error that carries no x-gepa headers (nothing was assigned yet), and
/// closes the connection if the request body was not read: we do not drain a body we
/// refused.
pub async fn fail(session: &mut Session, ctx: &mut RequestCtx, err: ApiError) -> Result<()> {
    ctx.error_code = Some(err.code());
    if !session.as_downstream_mut().is_body_done() {
        session.set_keepalive(None);
    }
    error(session, &err, &[]).await
}
