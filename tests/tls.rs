//! https upstreams, end to end: the real gateway against a TLS mock upstream whose
//! certificates the test makes with a throwaway CA. Proves the gateway sends SNI,
//! checks the chain against `gateway.upstream.ca_file` (or the system roots without
//! it) and checks the host name, and that a failed check is a 502 before any request.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::Acceptor;
use rustls::ServerConfig;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::LazyConfigAcceptor;

/// A throwaway certificate authority.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gepa-gateway test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP literals), signed by this CA.
    fn server_cert(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    /// Writes the CA certificate as PEM into `dir`; returns the file's path.
    fn write_pem(&self, dir: &tempfile::TempDir) -> String {
        let path = dir.path().join("test-ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// One TLS handshake as the mock saw it.
#[derive(Debug)]
struct Handshake {
    /// The SNI in the ClientHello (`None`: the client sent none).
    hello_sni: Option<String>,
    /// The ALPN protocols the client offered.
    alpn: Vec<String>,
    /// `Ok(ServerConnection::server_name())` once the handshake completed, or the
    /// handshake error.
    outcome: Result<Option<String>, String>,
}

/// An OpenAI-compatible upstream over HTTP/1.1 + TLS on a loopback address that
/// `localhost` resolves to. Every connection's handshake is reported in order, every
/// request is recorded, and every request gets a JSON chat completion.
struct TlsMock {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handshakes: tokio::sync::Mutex<mpsc::UnboundedReceiver<Handshake>>,
}

impl TlsMock {
    async fn start(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> TlsMock {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);

        // Bind where the gateway will connect: the first address `localhost` resolves to.
        let ip = localhost_ip().await;
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (config, tx, recorded) = (config.clone(), tx.clone(), recorded.clone());
                tokio::spawn(async move {
                    let Ok(start) = LazyConfigAcceptor::new(Acceptor::default(), stream).await
                    else {
                        return;
                    };
                    let hello = start.client_hello();
                    let hello_sni = hello.server_name().map(str::to_string);
                    let alpn = hello
                        .alpn()
                        .map(|protos| {
                            protos
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    let tls = match start.into_stream(config).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = tx.send(Handshake {
                                hello_sni,
                                alpn,
                                outcome: Err(e.to_string()),
                            });
                            return;
                        }
                    };
                    let server_name = tls.get_ref().1.server_name().map(str::to_string);
                    let _ = tx.send(Handshake {
                        hello_sni,
                        alpn,
                        outcome: Ok(server_name),
                    });
                    let svc = service_fn(move |req| record_and_answer(recorded.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsMock {
            addr,
            requests,
            handshakes: tokio::sync::Mutex::new(rx),
        }
    }

    /// The next handshake the mock saw (waits for it: the gateway may answer its client
    /// before the mock has read the client's alert).
    async fn next_handshake(&self) -> Handshake {
        let mut rx = self.handshakes.lock().await;
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a TLS handshake reached the mock")
            .expect("the mock is running")
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn localhost_ip() -> IpAddr {
    tokio::net::lookup_host(("localhost", 0))
        .await
        .unwrap()
        .next()
        .expect("localhost resolves")
        .ip()
}

async fn record_and_answer(
    requests: Arc<Mutex<Vec<Recorded>>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect::<HashMap<_, _>>();
    requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            completion_json(MOCK_REPLY).to_string(),
        )))
        .unwrap())
}

fn assert_gepa_headers(h: &reqwest::header::HeaderMap, session_id: &str) {
    assert_eq!(h["x-gepa-system-id"], session_id);
    assert_eq!(h["x-gepa-candidate-id"], "baseline");
    let rollout = h["x-gepa-rollout-id"].to_str().unwrap();
    assert!(rollout.starts_with("ro_"), "{rollout}");
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("error body is JSON");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// Starts the gateway against `url`, trusting `ca_file` when given.
async fn gateway(url: String, ca_file: Option<String>) -> Gateway {
    let mut o = GatewayOptions::new(url);
    o.ca_file = ca_file;
    Gateway::start_with(o).await
}

#[tokio::test]
async fn https_upstream_with_configured_ca_sends_sni_and_proxies() {
    let ca = TestCa::new();
    let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1", "::1"]);
    let mock = TlsMock::start(cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let port = mock.addr.port();
    let gw = gateway(
        format!("https://localhost:{port}/v1"),
        Some(ca.write_pem(&dir)),
    )
    .await;
    let s = gw.create_session("Answer over TLS.").await;
    let id = s["session_id"].as_str().unwrap();

    let (status, headers, body) = post_chat(&gw.chat_url(id), chat_body().to_string(), &[]).await;
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        gw.log()
    );
    assert_gepa_headers(&headers, id);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], MOCK_REPLY);

    let hs = mock.next_handshake().await;
    assert_eq!(hs.hello_sni.as_deref(), Some("localhost"), "{hs:?}");
    assert_eq!(hs.outcome, Ok(Some("localhost".to_string())), "{hs:?}");
    assert_eq!(hs.alpn, ["http/1.1"], "{hs:?}");

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let up = &reqs[0];
    assert_eq!(up.method, "POST");
    assert_eq!(up.path_and_query, "/v1/chat/completions");
    assert_eq!(
        up.header("host"),
        Some(format!("localhost:{port}").as_str())
    );
    let sent = up.json();
    assert_eq!(
        sent["messages"][0],
        serde_json::json!({"role": "system", "content": "Answer over TLS."})
    );
    assert_eq!(sent["messages"][1]["content"], "When will my card arrive?");
}

#[tokio::test]
async fn https_upstream_with_unknown_ca_is_502_before_any_request() {
    let ca = TestCa::new();
    let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1", "::1"]);
    let mock = TlsMock::start(cert, key).await;
    // No ca_file: the system roots, which do not know the throwaway CA.
    let gw = gateway(format!("https://localhost:{}/v1", mock.addr.port()), None).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();

    let (status, headers, body) = post_chat(&gw.chat_url(id), chat_body().to_string(), &[]).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (502, "upstream_unreachable"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_gepa_headers(&headers, id);

    // The connection reached the mock and the gateway rejected its certificate.
    let hs = mock.next_handshake().await;
    assert_eq!(hs.hello_sni.as_deref(), Some("localhost"), "{hs:?}");
    let err = hs.outcome.expect_err("the handshake must fail");
    assert!(err.contains("UnknownCA"), "{err}");
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

#[tokio::test]
async fn https_upstream_with_certificate_for_another_name_is_502() {
    let ca = TestCa::new();
    let (cert, key) = ca.server_cert(&["example.test"]);
    let mock = TlsMock::start(cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        format!("https://localhost:{}/v1", mock.addr.port()),
        Some(ca.write_pem(&dir)),
    )
    .await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();

    let (status, headers, body) = post_chat(&gw.chat_url(id), chat_body().to_string(), &[]).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (502, "upstream_unreachable"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_gepa_headers(&headers, id);

    // Trusted chain, wrong name: the host name check is what failed.
    let hs = mock.next_handshake().await;
    assert_eq!(hs.hello_sni.as_deref(), Some("localhost"), "{hs:?}");
    let err = hs.outcome.expect_err("the handshake must fail");
    assert!(err.contains("BadCertificate"), "{err}");
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

#[tokio::test]
async fn https_upstream_by_ip_literal_checks_the_ip_and_sends_no_sni() {
    let ca = TestCa::new();
    let (cert, key) = ca.server_cert(&["localhost", "127.0.0.1", "::1"]);
    let mock = TlsMock::start(cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let host = match mock.addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let gw = gateway(
        format!("https://{host}:{}/v1", mock.addr.port()),
        Some(ca.write_pem(&dir)),
    )
    .await;
    let s = gw.create_session("By IP.").await;
    let id = s["session_id"].as_str().unwrap();

    let (status, headers, body) = post_chat(&gw.chat_url(id), chat_body().to_string(), &[]).await;
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        gw.log()
    );
    assert_gepa_headers(&headers, id);
    // RFC 6066: an IP literal is never sent as SNI; the certificate's IP SAN is checked.
    let hs = mock.next_handshake().await;
    assert_eq!(hs.hello_sni, None, "{hs:?}");
    assert_eq!(hs.outcome, Ok(None), "{hs:?}");
    assert_eq!(
        mock.requests()[0].json()["messages"][0]["content"],
        "By IP."
    );
}
