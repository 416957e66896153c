//! The upstream: where proxied calls go, how we connect (pooled, TLS with SNI and
//! certificate checks for https), and how the upstream request is built.
//!
//! Hostnames are resolved here with tokio's resolver (off the worker thread) and cached
//! briefly, because Pingora's `HttpPeer::new` resolves with blocking `getaddrinfo`. The
//! cached answer is read without a lock (`ArcSwap`), so calls never meet on it.

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::client::HttpSession as UpstreamSession;
use pingora_core::protocols::http::v1::client::{
    http_req_header_to_wire, HttpSession as Http1Session,
};
use pingora_core::protocols::Stream;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

use crate::config::{Secret, UpstreamConfig};
use crate::errors::ApiError;

/// How long a DNS answer is reused.
const DNS_TTL: Duration = Duration::from_secs(30);
/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Request headers that describe the client hop, not the message: never forwarded.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
];

pub struct Upstream {
    pub config: UpstreamConfig,
    pub connector: Connector,
    dns: ArcSwapOption<(SocketAddr, Instant)>,
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Self {
        let mut options = ConnectorOptions::new(128);
        options.ca_file = config
            .ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        Upstream {
            config,
            connector: Connector::new(Some(options)),
            dns: ArcSwapOption::empty(),
        }
    }

    /// The peer to connect to, with our timeouts; resolves the host asynchronously.
    pub async fn peer(&self) -> Result<HttpPeer, ApiError> {
        let addr = self.resolve().await?;
        let url = &self.config.url;
        let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.config.connect_timeout);
        o.total_connection_timeout = Some(self.config.connect_timeout);
        o.read_timeout = Some(self.config.read_timeout);
        o.write_timeout = Some(self.config.write_timeout);
        o.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        o.verify_cert = true;
        o.verify_hostname = true;
        // HTTP/1.1 keeps SSE framing simple and is what every OpenAI-compatible server speaks.
        o.alpn = ALPN::H1;
        Ok(peer)
    }

    pub fn pool_idle_timeout(&self) -> Duration {
        POOL_IDLE_TIMEOUT
    }

    async fn resolve(&self) -> Result<SocketAddr, ApiError> {
        let url = &self.config.url;
        if let Ok(ip) = url.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, url.port));
        }
        if let Some(cached) = self.dns.load().as_deref() {
            if cached.1.elapsed() < DNS_TTL {
                return Ok(cached.0);
            }
        }
        let lookup = tokio::time::timeout(
            self.config.connect_timeout,
            tokio::net::lookup_host((url.host.as_str(), url.port)),
        )
        .await;
        let addr = match lookup {
            Ok(Ok(mut addrs)) => addrs.next(),
            Ok(Err(_)) | Err(_) => None,
        }
        .ok_or_else(|| ApiError::BadGateway {
            code: "upstream_unreachable",
            message: format!("could not resolve the upstream host {}", url.host),
        })?;
        self.dns.store(Some(Arc::new((addr, Instant::now()))));
        Ok(addr)
    }

    /// The upstream request for one proxied call: the client's method, query string and
    /// headers (minus hop-by-hop ones), our path, Host and Content-Length, and the
    /// configured key in place of the client's Authorization when there is one.
    pub fn build_request(
        &self,
        client: &RequestHeader,
        body_len: usize,
    ) -> Result<RequestHeader, ApiError> {
        let url = &self.config.url;
        let mut path = url.chat_completions_path();
        if let Some(q) = client.uri.query() {
            path.push('?');
            path.push_str(q);
        }
        let internal = |e: Box<Error>| ApiError::Internal {
            message: format!("building the upstream request: {}", e.etype().as_str()),
        };
        let mut req =
            RequestHeader::build(client.method.clone(), path.as_bytes(), None).map_err(internal)?;
        for (name, value) in client.headers.iter() {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n) || n == "content-length" {
                continue;
            }
            if n == "authorization" && self.config.api_key.is_some() {
                continue;
            }
            req.append_header(name.clone(), value.clone())
                .map_err(internal)?;
        }
        req.insert_header("host", url.host_header.as_str())
            .map_err(internal)?;
        req.insert_header("content-length", body_len.to_string())
            .map_err(internal)?;
        if let Some(key) = &self.config.api_key {
            req.insert_header("authorization", bearer(key))
                .map_err(internal)?;
        }
        Ok(req)
    }
}

impl Upstream {
    /// Connects (pooled) and sends the request, reading the response header. A pooled
    /// connection that the upstream closed while idle fails on first use; that one case
    /// is retried once on a fresh connection.
    pub async fn send(
        &self,
        req: RequestHeader,
        body: Bytes,
    ) -> Result<(UpstreamSession, HttpPeer), ApiError> {
        let peer = self.peer().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (up, reused) = self
                .connector
                .get_http_session(&peer)
                .await
                .map_err(|e| upstream_error(&e))?;
            match self.exchange_header(up, &peer, &req, &body).await {
                Ok(up) => return Ok((up, peer)),
                Err(e) if reused && attempt == 1 && is_stale_connection(&e) => continue,
                Err(e) => return Err(upstream_error(&e)),
            }
        }
    }

    /// Writes the request and reads the response header on one connection.
    ///
    /// Over HTTP/1 (always the case: the peer's ALPN is H1) the request line, headers and
    /// a body of up to `COALESCE_MAX` bytes go out in one write. Pingora's
    /// `write_request_header` flushes the header on its own, which costs a second send
    /// and, on the upstream, a second wake-up per call; so the session is taken apart,
    /// the request written on its stream, and a session rebuilt on that stream to read
    /// the response. The rebuilt session has no record of the request, which only matters
    /// for HEAD (no response body) and a request `Connection` header: we send neither.
    async fn exchange_header(
        &self,
        up: UpstreamSession,
        peer: &HttpPeer,
        req: &RequestHeader,
        body: &Bytes,
    ) -> pingora_error::Result<UpstreamSession> {
        let mut up = match up {
            UpstreamSession::H1(h1) => {
                let mut stream = h1.into_inner();
                write_request(&mut stream, req, body, self.config.write_timeout).await?;
                UpstreamSession::H1(Http1Session::new_with_options(stream, peer))
            }
            mut other => {
                other.set_write_timeout(Some(self.config.write_timeout));
                other.write_request_header(Box::new(req.clone())).await?;
                if !body.is_empty() {
                    other.write_request_body(body.clone(), true).await?;
                }
                other.finish_request_body().await?;
                other
            }
        };
        up.set_read_timeout(Some(self.config.read_timeout));
        up.set_write_timeout(Some(self.config.write_timeout));
        up.read_response_header().await?;
        Ok(up)
    }

    /// One complete chat-completions call made by the gateway itself (the proposer):
    /// POSTs `body` with the configured key and returns the status and the whole
    /// response body (at most `max_response` bytes).
    pub async fn post_chat(
        &self,
        body: &Value,
        max_response: usize,
    ) -> Result<(u16, Bytes), ApiError> {
        let internal = |e: Box<Error>| ApiError::Internal {
            message: format!("building the proposer request: {}", e.etype().as_str()),
        };
        let body = Bytes::from(body.to_string());
        let url = &self.config.url;
        let mut req = RequestHeader::build("POST", url.chat_completions_path().as_bytes(), None)
            .map_err(internal)?;
        req.insert_header("host", url.host_header.as_str())
            .map_err(internal)?;
        req.insert_header("content-type", "application/json")
            .map_err(internal)?;
        req.insert_header("accept-encoding", "identity")
            .map_err(internal)?;
        req.insert_header("content-length", body.len().to_string())
            .map_err(internal)?;
        if let Some(key) = &self.config.api_key {
            req.insert_header("authorization", bearer(key))
                .map_err(internal)?;
        }
        let (mut up, peer) = self.send(req, body).await?;
        let status = up.response_header().map_or(0, |h| h.status.as_u16());
        let mut out = Vec::new();
        while let Some(chunk) = up
            .read_response_body()
            .await
            .map_err(|e| upstream_error(&e))?
        {
            if out.len() + chunk.len() > max_response {
                return Err(ApiError::BadGateway {
                    code: "upstream_error",
                    message: format!("the proposer's response exceeds {max_response} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        if up.response_done() {
            self.connector
                .release_http_session(up, &peer, Some(POOL_IDLE_TIMEOUT))
                .await;
        }
        Ok((status, Bytes::from(out)))
    }
}

fn is_stale_connection(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::ReadError
    )
}

/// Bodies up to this size are copied behind the header and sent in the same write;
/// larger ones are written straight from their buffer after it.
const COALESCE_MAX: usize = 256 * 1024;

/// Writes an HTTP/1.1 request (header, then the whole body) on `stream` and flushes it,
/// failing with `WriteTimedout` if that takes longer than `write_timeout`.
async fn write_request(
    stream: &mut Stream,
    req: &RequestHeader,
    body: &Bytes,
    write_timeout: Duration,
) -> pingora_error::Result<()> {
    let Some(mut wire) = http_req_header_to_wire(req) else {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "the upstream request line contains a forbidden byte",
        );
    };
    let write = async {
        if body.len() <= COALESCE_MAX {
            wire.extend_from_slice(body);
            stream.write_all(&wire).await?;
        } else {
            stream.write_all(&wire).await?;
            stream.write_all(body).await?;
        }
        stream.flush().await
    };
    match tokio::time::timeout(write_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Error::e_because(ErrorType::WriteError, "while writing the request", e),
        Err(_) => Error::e_explain(ErrorType::WriteTimedout, "while writing the request"),
    }
}

fn bearer(key: &Secret) -> String {
    format!("Bearer {}", key.expose())
}

/// Maps a failed upstream exchange (before any response byte went to the client) to the
/// client's status: timeouts are 504, everything else 502.
pub fn upstream_error(e: &Error) -> ApiError {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            ApiError::GatewayTimeout {
                message: format!(
                    "the upstream did not answer in time ({})",
                    e.etype().as_str()
                ),
            }
        }
        ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure | InvalidCert
        | HandshakeError | TLSWantX509Lookup | SocketError | BindError => ApiError::BadGateway {
            code: "upstream_unreachable",
            message: format!("could not connect to the upstream ({})", e.etype().as_str()),
        },
        _ => ApiError::BadGateway {
            code: "upstream_error",
            message: format!("the upstream connection failed ({})", e.etype().as_str()),
        },
    }
}
