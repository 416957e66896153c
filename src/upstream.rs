//! The upstream: where proxied calls go, how we connect (pooled, TLS with SNI and
//! certificate checks for https), and how the upstream request is built.
//!
//! Hostnames are resolved here with tokio's resolver (off the worker thread) and cached
//! briefly, because Pingora's `HttpPeer::new` resolves with blocking `getaddrinfo`. The
//! cached answer is read without a lock (`ArcSwap`), so calls never meet on it.

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::client::HttpSession as UpstreamSession;
use pingora_core::protocols::http::v1::client::HttpSession as Http1Session;
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

/// Request headers that belong to the client's API key: the key itself, and the OpenAI
/// organization and project it is scoped to. When the gateway sends its own key they
/// are dropped, so a client can neither see its key forwarded nor bill the gateway's key
/// to an organization or project of its choosing (with another key, OpenAI answers such
/// a mismatch with an error anyway).
const CLIENT_KEY_SCOPE: [&str; 3] = ["authorization", "openai-organization", "openai-project"];

pub struct Upstream {
    pub config: UpstreamConfig,
    /// HTTP/1.1 only: the exchange writes the request on the connection's stream itself.
    connector: Connector,
    dns: ArcSwapOption<(SocketAddr, Instant)>,
    /// `{base path}/chat/completions`, and the `Authorization` value for the configured
    /// key: the same for every call, so built once.
    chat_path: String,
    authorization: Option<Secret>,
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Self {
        let mut options = ConnectorOptions::new(128);
        options.ca_file = config
            .ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        Upstream {
            chat_path: config.url.chat_completions_path(),
            authorization: config
                .api_key
                .as_ref()
                .map(|key| Secret::new(format!("Bearer {}", key.expose()))),
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
    /// configured key in place of the client's Authorization (and the organization and
    /// project that go with it) when there is one.
    ///
    /// It is serialized straight to HTTP/1.1 bytes rather than built as a Pingora
    /// `RequestHeader`: every header inserted there is parsed again and kept twice (value
    /// and original case), which cost more than the rest of the request's construction.
    /// Header names go out in lower case.
    pub fn build_request(
        &self,
        client: &RequestHeader,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        let query = client.uri.query();
        let mut req =
            RequestWriter::new(client.method.as_str(), &self.chat_path, query, body.len())?;
        for (name, value) in client.headers.iter() {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n) || n == "content-length" {
                continue;
            }
            if self.authorization.is_some() && CLIENT_KEY_SCOPE.contains(&n) {
                continue;
            }
            req.header(n, value.as_bytes());
        }
        Ok(self.finish_request(req, body))
    }

    /// Host, Content-Length and the configured key, then the body.
    fn finish_request(&self, mut req: RequestWriter, body: Bytes) -> UpstreamRequest {
        req.header("host", self.config.url.host_header.as_bytes());
        req.header(
            "content-length",
            itoa::Buffer::new().format(body.len()).as_bytes(),
        );
        if let Some(value) = &self.authorization {
            req.header("authorization", value.expose().as_bytes());
        }
        req.finish(body)
    }
}

/// One upstream request as HTTP/1.1 bytes, kept whole so that the one retry on a fresh
/// connection sends exactly the same thing.
pub struct UpstreamRequest {
    /// Request line and headers, and the body when it is at most `COALESCE_MAX` bytes:
    /// sent in one write.
    head: Bytes,
    /// A larger body, written straight from its buffer after `head`.
    rest: Option<Bytes>,
}

/// Serializes an HTTP/1.1 request.
struct RequestWriter {
    buf: BytesMut,
}

impl RequestWriter {
    /// The request line. The path is ours (configuration) and the query the client's,
    /// which Pingora has already parsed out of a valid request line; they are checked
    /// anyway, since a space or line break in them would change the request's meaning.
    fn new(
        method: &str,
        path: &str,
        query: Option<&str>,
        body_len: usize,
    ) -> Result<Self, ApiError> {
        let target_ok = |t: &str| !t.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n' | b' '));
        if !target_ok(path) || !query.is_none_or(target_ok) {
            return Err(ApiError::Internal {
                message: "building the upstream request: invalid request target".into(),
            });
        }
        let body_in_head = if body_len <= COALESCE_MAX {
            body_len
        } else {
            0
        };
        let mut buf = BytesMut::with_capacity(512 + body_in_head);
        buf.extend_from_slice(method.as_bytes());
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(path.as_bytes());
        if let Some(q) = query {
            buf.extend_from_slice(b"?");
            buf.extend_from_slice(q.as_bytes());
        }
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        Ok(RequestWriter { buf })
    }

    /// One header line. Names and values come from a parsed request, the validated
    /// configuration, or constants here, so they hold no line breaks.
    fn header(&mut self, name: &str, value: &[u8]) {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn finish(mut self, body: Bytes) -> UpstreamRequest {
        self.buf.extend_from_slice(b"\r\n");
        let rest = if body.len() <= COALESCE_MAX {
            self.buf.extend_from_slice(&body);
            None
        } else {
            Some(body)
        };
        UpstreamRequest {
            head: self.buf.freeze(),
            rest,
        }
    }
}

impl Upstream {
    /// Connects (pooled) and sends the request, reading the response header.
    ///
    /// At most one complete request goes upstream per call: a request that was written
    /// whole is never sent again, whatever happens next, since the upstream may have
    /// read it and started (and billed) the generation. Only a pooled connection that
    /// fails while the request is being written, so that the upstream never got all of
    /// it, is retried once on a fresh connection. (A pooled connection the upstream
    /// closed while idle is usually caught before use: Pingora's pool reads it once,
    /// without waiting, and drops it on EOF.)
    pub async fn send(
        &self,
        req: &UpstreamRequest,
    ) -> Result<(UpstreamSession, HttpPeer), ApiError> {
        let peer = self.peer().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (up, reused) = self.connection(&peer).await?;
            match self.exchange_header(up, &peer, req).await {
                Ok(up) => return Ok((up, peer)),
                Err(Exchange::NotWritten(e)) if reused && attempt == 1 && is_broken(&e) => {
                    continue
                }
                Err(Exchange::NotWritten(e) | Exchange::Written(e)) => {
                    return Err(upstream_error(&e))
                }
            }
        }
    }

    /// A pooled connection to `peer` if one is idle, else a new one (and whether it was
    /// pooled).
    ///
    /// The pool is asked first, and the connect path is boxed, because Pingora's connect
    /// future (TCP and TLS handshakes) is about 8 KiB: awaited inline it would make the
    /// whole request's future that large, and Pingora copies that future into a box on
    /// every request. Boxed here, the copy is paid only when a connection is made.
    async fn connection(&self, peer: &HttpPeer) -> Result<(Http1Session, bool), ApiError> {
        if let Some(up) = self.connector.reused_http_session(peer).await {
            return Ok((up, true));
        }
        Box::pin(self.connector.get_http_session(peer))
            .await
            .map_err(|e| upstream_error(&e))
    }

    /// Returns the connection of a finished exchange to the pool.
    pub async fn release(&self, up: UpstreamSession, peer: &HttpPeer) {
        if let UpstreamSession::H1(h1) = up {
            self.connector
                .release_http_session(h1, peer, Some(POOL_IDLE_TIMEOUT))
                .await;
        }
    }

    /// Writes the request and reads the response header on one connection.
    ///
    /// The request goes out in one write (header and a body of up to `COALESCE_MAX`
    /// bytes). Pingora's `write_request_header` flushes the header on its own, which
    /// costs a second send and, on the upstream, a second wake-up per call; so the
    /// session is taken apart, the request written on its stream, and a session rebuilt
    /// on that stream to read the response. The rebuilt session has no record of the
    /// request, which only matters for HEAD (no response body) and a request
    /// `Connection` header: we send neither.
    async fn exchange_header(
        &self,
        up: Http1Session,
        peer: &HttpPeer,
        req: &UpstreamRequest,
    ) -> Result<UpstreamSession, Exchange> {
        let mut stream = up.into_inner();
        write_request(&mut stream, req, self.config.write_timeout)
            .await
            .map_err(Exchange::NotWritten)?;
        let mut up = UpstreamSession::H1(Http1Session::new_with_options(stream, peer));
        up.set_read_timeout(Some(self.config.read_timeout));
        up.set_write_timeout(Some(self.config.write_timeout));
        up.read_response_header()
            .await
            .map_err(Exchange::Written)?;
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
        let body = Bytes::from(body.to_string());
        let mut req = RequestWriter::new("POST", &self.chat_path, None, body.len())?;
        req.header("content-type", b"application/json");
        req.header("accept-encoding", b"identity");
        let req = self.finish_request(req, body);
        let (mut up, peer) = self.send(&req).await?;
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
            self.release(up, &peer).await;
        }
        Ok((status, Bytes::from(out)))
    }
}

/// The write broke (the connection was reset or closed): `write_request` fails with
/// `WriteError` for that and `WriteTimedout` for a timeout, which is not retried, since a
/// slow upstream is not helped by a second connection.
fn is_broken(e: &Error) -> bool {
    e.etype() == &ErrorType::WriteError
}

/// How an exchange failed: before or after the whole request was written.
enum Exchange {
    /// The request was not completely written: the upstream cannot have acted on it.
    NotWritten(Box<Error>),
    /// The request was written whole: the upstream may have acted on it.
    Written(Box<Error>),
}

/// Bodies up to this size are copied behind the header and sent in the same write;
/// larger ones are written straight from their buffer after it.
const COALESCE_MAX: usize = 256 * 1024;

/// Writes a serialized request on `stream` and flushes it, failing with `WriteTimedout`
/// if that takes longer than `write_timeout`.
async fn write_request(
    stream: &mut Stream,
    req: &UpstreamRequest,
    write_timeout: Duration,
) -> pingora_error::Result<()> {
    let write = async {
        stream.write_all(&req.head).await?;
        if let Some(rest) = &req.rest {
            stream.write_all(rest).await?;
        }
        stream.flush().await
    };
    match tokio::time::timeout(write_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Error::e_because(ErrorType::WriteError, "while writing the request", e),
        Err(_) => Error::e_explain(ErrorType::WriteTimedout, "while writing the request"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamUrl;

    fn upstream(api_key: Option<&str>) -> Upstream {
        Upstream::new(UpstreamConfig {
            url: UpstreamUrl::parse("http://api.example:8080/v1").unwrap(),
            api_key: api_key.map(Secret::new),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            ca_file: None,
        })
    }

    fn client_request() -> RequestHeader {
        let mut h = RequestHeader::build(
            "POST",
            b"/api/gepa/v1/s1/chat/completions?api-version=2&x=1",
            None,
        )
        .unwrap();
        for (name, value) in [
            ("Host", "gateway.local"),
            ("Content-Length", "999"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Expect", "100-continue"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("Authorization", "Bearer client-key"),
            ("OpenAI-Organization", "org-client"),
            ("OpenAI-Project", "proj_client"),
            ("Content-Type", "application/json"),
            ("X-Trace", "a"),
            ("X-Trace", "b"),
        ] {
            h.append_header(name, value).unwrap();
        }
        h
    }

    #[test]
    fn the_upstream_request_keeps_end_to_end_headers_and_sets_ours() {
        let body = Bytes::from_static(b"{\"messages\":[]}");
        let req = upstream(None)
            .build_request(&client_request(), body.clone())
            .unwrap();
        let expected = "POST /v1/chat/completions?api-version=2&x=1 HTTP/1.1\r\n\
                        authorization: Bearer client-key\r\n\
                        openai-organization: org-client\r\n\
                        openai-project: proj_client\r\n\
                        content-type: application/json\r\n\
                        x-trace: a\r\n\
                        x-trace: b\r\n\
                        host: api.example:8080\r\n\
                        content-length: 15\r\n\r\n\
                        {\"messages\":[]}";
        assert_eq!(std::str::from_utf8(&req.head).unwrap(), expected);
        assert!(req.rest.is_none());
    }

    #[test]
    fn the_configured_key_replaces_the_clients_and_its_organization_and_project() {
        let req = upstream(Some("sk-upstream"))
            .build_request(&client_request(), Bytes::new())
            .unwrap();
        let head = std::str::from_utf8(&req.head).unwrap();
        assert!(
            head.ends_with("authorization: Bearer sk-upstream\r\n\r\n"),
            "{head}"
        );
        for client_scoped in ["client-key", "openai-organization", "openai-project"] {
            assert!(!head.contains(client_scoped), "{head}");
        }
        assert!(head.contains("content-type: application/json"), "{head}");
    }

    #[test]
    fn a_large_body_is_written_after_the_head_not_copied_into_it() {
        let body = Bytes::from(vec![b'x'; COALESCE_MAX + 1]);
        let req = upstream(None)
            .build_request(&client_request(), body.clone())
            .unwrap();
        let head = std::str::from_utf8(&req.head).unwrap();
        assert!(head.ends_with(&format!("content-length: {}\r\n\r\n", body.len())));
        assert_eq!(req.rest.as_ref(), Some(&body));
    }

    #[test]
    fn a_request_target_with_a_space_or_line_break_is_refused() {
        for (path, query) in [
            ("/v1 x", None),
            ("/v1", Some("a=1\r\nx: y")),
            ("/v1\n", None),
        ] {
            assert!(
                RequestWriter::new("POST", path, query, 0).is_err(),
                "{path:?} {query:?}"
            );
        }
    }
}
