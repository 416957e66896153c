//! The proxy data path, end to end: the real gateway against a mock upstream.

mod common;

use common::*;
use serde_json::{json, Value};

fn assert_gepa_headers(h: &reqwest::header::HeaderMap, session_id: &str) -> String {
    assert_eq!(h["x-gepa-system-id"], session_id);
    assert_eq!(h["x-gepa-candidate-id"], "baseline");
    let rollout = h["x-gepa-rollout-id"].to_str().unwrap().to_string();
    assert!(rollout.starts_with("ro_"), "{rollout}");
    rollout
}

fn assert_no_gepa_headers(h: &reqwest::header::HeaderMap) {
    for name in [
        "x-gepa-system-id",
        "x-gepa-rollout-id",
        "x-gepa-candidate-id",
    ] {
        assert!(h.get(name).is_none(), "{name} must not be set");
    }
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("error body is JSON");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn replaces_system_message_and_keeps_every_other_byte() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw
        .create_session("Answer in \"French\".\nBe brief: é ✓")
        .await;
    let id = s["session_id"].as_str().unwrap();
    // Odd spacing, key order, number literals, escapes, unknown fields, tools: all kept.
    let prefix = r#"{ "model" :"gpt-4.1-mini","temperature":1.50,"seed":12345678901234567890123,"messages":[ {"name":"x","role":"system","content":"#;
    let suffix = r#"},{"role":"user","content":"caf\u00e9 \"q\" 1.0e10"}],"stream":false,"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"x_unknown":{"a":[1,-0,2E-3]} }"#;
    let body = format!("{prefix}\"client system prompt\"{suffix}");
    let (status, headers, resp) = post_chat(&gw.chat_url(id), body, &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert_gepa_headers(&headers, id);
    let up = mock.last();
    let expected = format!(
        "{prefix}{}{suffix}",
        serde_json::to_string("Answer in \"French\".\nBe brief: é ✓").unwrap()
    );
    assert_eq!(String::from_utf8_lossy(&up.body), expected);
    assert_eq!(
        up.header("content-length").unwrap(),
        expected.len().to_string()
    );
    assert_eq!(up.path_and_query, "/v1/chat/completions");
    assert_eq!(up.header("host").unwrap(), mock.addr.to_string());
    let v: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], MOCK_REPLY);
}

#[tokio::test]
async fn inserts_system_message_or_replaces_developer() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("the candidate").await;
    let id = s["session_id"].as_str().unwrap();

    let no_system = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, _) = post_chat(&gw.chat_url(id), no_system.to_string(), &[]).await;
    assert_eq!(status, 200);
    let sent = mock.last().json();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "the candidate"})
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "hi"})
    );

    let developer = json!({"model": "m", "messages": [
        {"role": "user", "content": "first"},
        {"role": "developer", "content": "old"},
        {"role": "system", "content": "second system stays"}]});
    let (status, _, _) = post_chat(&gw.chat_url(id), developer.to_string(), &[]).await;
    assert_eq!(status, 200);
    let sent = mock.last().json();
    assert_eq!(
        sent["messages"][1],
        json!({"role": "developer", "content": "the candidate"})
    );
    assert_eq!(sent["messages"][2]["content"], "second system stays");
}

#[tokio::test]
async fn forwards_authorization_query_and_v1_and_correlation_forms() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    for path in [
        format!("/api/gepa/v1/{id}/v1/chat/completions?api-version=2024-06-01"),
        format!("/api/gepa/v1/{id}/conv-1/chat/completions?api-version=2024-06-01"),
        format!("/api/gepa/v1/{id}/conv-2/v1/chat/completions?api-version=2024-06-01"),
    ] {
        let (status, headers, _) = post_chat(
            &gw.url(&path),
            chat_body().to_string(),
            &[
                ("authorization", "Bearer sk-client"),
                ("openai-organization", "org-client"),
                ("openai-project", "proj_client"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{path}");
        assert_gepa_headers(&headers, id);
        let up = mock.last();
        assert_eq!(
            up.path_and_query,
            "/v1/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(up.header("authorization"), Some("Bearer sk-client"));
        // The client's own key goes with its own organization and project.
        assert_eq!(up.header("openai-organization"), Some("org-client"));
        assert_eq!(up.header("openai-project"), Some("proj_client"));
    }
}

#[tokio::test]
async fn upstream_key_replaces_client_key_and_client_keys_are_required() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.upstream_key = Some(("sk-gateway-secret".into(), "ck-one, ck-two".into()));
    o.rust_log = "info".into();
    let gw = Gateway::start_with(o).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();

    for auth in [None, Some("Bearer wrong"), Some("Bearer sk-gateway-secret")] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        let (status, h, body) =
            post_chat(&gw.chat_url(id), chat_body().to_string(), &headers).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(error_code(&body), "unauthorized");
        assert_no_gepa_headers(&h);
    }
    assert_eq!(mock.count(), 0, "the upstream received nothing");

    let (status, _, _) = post_chat(
        &gw.chat_url(id),
        chat_body().to_string(),
        &[
            ("authorization", "Bearer ck-two"),
            ("openai-organization", "org-client"),
            ("openai-project", "proj_client"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let up = mock.last();
    assert_eq!(up.header("authorization"), Some("Bearer sk-gateway-secret"));
    // The client's organization and project do not go with the gateway's key.
    assert_eq!(up.header("openai-organization"), None);
    assert_eq!(up.header("openai-project"), None);
    // Access-log lines are written out every few milliseconds: wait for this call's.
    for _ in 0..200 {
        if gw
            .log()
            .contains(r#""route":"proxy","method":"POST","status":200"#)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let log = gw.log();
    assert!(
        log.contains(r#""status":401"#),
        "the refusals are logged: {log}"
    );
    for secret in ["sk-gateway-secret", "ck-two", "ck-one", "Bearer wrong"] {
        assert!(!log.contains(secret), "{secret} never reaches a log line");
    }
}

#[tokio::test]
async fn streams_sse_event_by_event() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    let mut resp = start_gated_stream(&gw, id).await;
    assert_eq!(resp.status(), 200);
    assert_gepa_headers(resp.headers(), id);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The mock holds every later event until we release it: seeing the first one now
    // proves it was forwarded before the last was even sent.
    let first = resp.chunk().await.unwrap().expect("first event");
    assert!(
        String::from_utf8_lossy(&first).contains("\"Hel\""),
        "{first:?}"
    );
    mock.release();
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.contains("\"lo\"")
            && rest.contains("\" world\"")
            && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
}

fn big_body(bytes: usize, stream: bool) -> Value {
    // Mixed content so the bytes are not trivially compressible or all-ASCII.
    let text: String = "Long RAG context with unicode é✓ and \"quotes\". ".repeat(bytes / 50 + 1);
    json!({"model": "m", "stream": stream, "messages": [
        {"role": "system", "content": "old"},
        {"role": "user", "content": text}]})
}

#[tokio::test]
async fn large_bodies_reach_the_upstream_whole() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("new system").await;
    let id = s["session_id"].as_str().unwrap();
    for (size, stream) in [
        (1 << 20, false),
        (1 << 20, true),
        (5 << 20, false),
        (5 << 20, true),
    ] {
        let body = big_body(size, stream);
        let sent_text = body["messages"][1]["content"].clone();
        let mode: &[(&str, &str)] = if stream { &[("x-mock", "sse")] } else { &[] };
        let (status, headers, resp) = post_chat(&gw.chat_url(id), body.to_string(), mode).await;
        assert_eq!(status, 200, "size {size} stream {stream}");
        assert_gepa_headers(&headers, id);
        let up = mock.last();
        assert_eq!(
            up.header("content-length").unwrap(),
            up.body.len().to_string()
        );
        let got = up.json();
        assert_eq!(got["messages"][0]["content"], "new system");
        assert_eq!(got["messages"][1]["content"], sent_text);
        if stream {
            assert!(String::from_utf8_lossy(&resp).ends_with("data: [DONE]\n\n"));
        }
    }
}

#[tokio::test]
async fn bad_bodies_are_400_and_never_reach_the_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    let cases: [(&str, &str); 6] = [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ("[1,2]", "invalid_body"),
        (r#"{"model":"m"}"#, "missing_messages"),
        (r#"{"model":"m","messages":"hi"}"#, "invalid_messages"),
        (r#"{"model":"m","messages":[1]}"#, "invalid_messages"),
    ];
    for (body, code) in cases {
        let (status, headers, resp) = post_chat(&gw.chat_url(id), body.to_string(), &[]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_code(&resp), code, "{body}");
        assert_no_gepa_headers(&headers);
    }
    assert_eq!(mock.count(), 0);
    let v = gw.get_session(id).await;
    assert_eq!(v["rollout_count"], 0, "no rollout for a refused request");
}

#[tokio::test]
async fn oversized_bodies_are_413_declared_or_streamed() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.max_body_bytes = 4096;
    let gw = Gateway::start_with(o).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    let body = big_body(8192, false).to_string();
    // Declared Content-Length over the limit: refused before reading.
    let (status, headers, resp) = post_chat(&gw.chat_url(id), body.clone(), &[]).await;
    assert_eq!(status, 413);
    assert_eq!(error_code(&resp), "body_too_large");
    assert_no_gepa_headers(&headers);
    // Chunked, no Content-Length: refused while reading.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = reqwest::Client::new()
        .post(gw.chat_url(id))
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(mock.count(), 0);
    // Just under the limit still works.
    let ok = json!({"model": "m", "messages": [{"role": "user", "content": "a".repeat(3000)}]});
    let (status, _, _) = post_chat(&gw.chat_url(id), ok.to_string(), &[]).await;
    assert_eq!(status, 200);
    // ... also when it arrives chunked, in pieces: joined whole before the rewrite.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = ok
        .to_string()
        .into_bytes()
        .chunks(700)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = reqwest::Client::new()
        .post(gw.chat_url(id))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = mock.last().json();
    assert_eq!(up["messages"][0]["content"], "x");
    assert_eq!(up["messages"][1]["content"], "a".repeat(3000));
    assert_eq!(mock.count(), 2);
}

#[tokio::test]
async fn unknown_sessions_routes_and_methods() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, h, body) = post_chat(&gw.chat_url(unknown), chat_body().to_string(), &[]).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "unknown_session")
    );
    assert_no_gepa_headers(&h);
    for path in [
        format!("/api/gepa/v1/{id}/bad%20id/chat/completions"),
        format!("/api/gepa/v1/{id}/embeddings"),
        format!("/api/gepa/v1/{id}/{}/chat/completions", "c".repeat(129)),
        "/v1/chat/completions".to_string(),
        "/metrics".to_string(),
    ] {
        let (status, h, body) = post_chat(&gw.url(&path), chat_body().to_string(), &[]).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (404, "unknown_route"),
            "{path}"
        );
        assert_no_gepa_headers(&h);
    }
    let r = reqwest::get(gw.chat_url(id)).await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(error_code(&r.bytes().await.unwrap()), "method_not_allowed");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn upstream_failures_carry_gepa_headers() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.read_timeout_s = 1;
    let gw = Gateway::start_with(o).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();

    // Upstream error statuses pass through with their body.
    let (status, h, body) = post_chat(
        &gw.chat_url(id),
        chat_body().to_string(),
        &[("x-mock", "status-429")],
    )
    .await;
    assert_eq!(status, 429);
    assert_gepa_headers(&h, id);
    assert_eq!(h["x-upstream"], "mock");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["message"], "mock failure");
    // A client that rewards the moment it has the whole error response finds the call
    // already booked as failed (the response's end is written after the booking).
    assert!(
        h.contains_key("content-length"),
        "a Content-Length response"
    );
    for _ in 0..20 {
        let (status, h, _) = post_chat(
            &gw.chat_url(id),
            chat_body().to_string(),
            &[("x-mock", "status-500")],
        )
        .await;
        assert_eq!(status, 500);
        let rollout = h["x-gepa-rollout-id"].to_str().unwrap();
        let (status, v) = gw
            .reward(
                id,
                serde_json::json!({"rollout_id": rollout, "reward_info": {"outcome_reward": 1.0}}),
            )
            .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (409, Some("rollout_failed"))
        );
    }

    // A reset is a 502, a silent upstream a 504: both OpenAI-shaped, both with headers.
    let (status, h, body) = post_chat(
        &gw.chat_url(id),
        chat_body().to_string(),
        &[("x-mock", "reset")],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (502, "upstream_error")
    );
    assert_gepa_headers(&h, id);
    let (status, h, body) = post_chat(
        &gw.chat_url(id),
        chat_body().to_string(),
        &[("x-mock", "hang")],
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (504, "upstream_timeout")
    );
    assert_gepa_headers(&h, id);
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A port bound and never listened on refuses connections, and no one else can take it
    // while the socket is held.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed_addr = closed.local_addr().unwrap();
    let gw = Gateway::start_with(GatewayOptions::new(format!("http://{closed_addr}/v1"))).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    let (status, h, body) = post_chat(&gw.chat_url(id), chat_body().to_string(), &[]).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (502, "upstream_unreachable")
    );
    let rollout = assert_gepa_headers(&h, id);
    // An outage says nothing about a prompt: the rollout cannot be rewarded.
    let (status, v) = gw
        .reward(
            id,
            json!({"rollout_id": rollout, "reward_info": {"outcome_reward": 1}}),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("rollout_failed"))
    );
}

#[tokio::test]
async fn a_stream_that_breaks_midway_is_not_ended_cleanly() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    let mut resp = reqwest::Client::new()
        .post(gw.chat_url(id))
        .header("x-mock", "sse-break")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_gepa_headers(resp.headers(), id);
    let mut saw_error = false;
    loop {
        match resp.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => {
                saw_error = true;
                break;
            }
        }
    }
    assert!(
        saw_error,
        "a truncated stream must not look complete to the client"
    );
}

#[tokio::test]
async fn gzip_responses_pass_through() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let s = gw.create_session("x").await;
    let id = s["session_id"].as_str().unwrap();
    // reqwest (gzip feature) sends Accept-Encoding: gzip and decodes, as the SDKs do.
    let r = reqwest::Client::builder()
        .gzip(true)
        .build()
        .unwrap()
        .post(gw.chat_url(id))
        .header("x-mock", "gzip")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.last().header("accept-encoding"), Some("gzip"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "zipped reply");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let body = chat_body().to_string();
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let head = format!(
        "POST /api/gepa/v1/{id}/chat/completions HTTP/1.1\r\nHost: gw\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    write.write_all(head.as_bytes()).await.unwrap();
    // As curl does for large bodies: wait for the interim response before sending the body.
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    let mut blank = String::new();
    read.read_line(&mut blank).await.unwrap();
    assert_eq!(blank, "\r\n");
    write.write_all(body.as_bytes()).await.unwrap();
    let mut status = String::new();
    read.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let mut rest = vec![0u8; 64];
    let _ = read.read(&mut rest).await.unwrap();
    let up = mock.last();
    assert!(
        up.header("expect").is_none(),
        "Expect is hop-by-hop: not forwarded"
    );
    assert_eq!(up.json()["messages"][0]["content"], "x");
}

/// What `upstream_ending_connections` does to each connection.
#[derive(Clone, Copy, PartialEq)]
enum ConnectionEnd {
    /// Answer the first request (keeping the connection alive); on a second one, read it
    /// whole, then close the connection without answering.
    CloseOnSecondRequest,
    /// The same, but reset (RST) the connection after reading the second request.
    ResetOnSecondRequest,
    /// Answer the first request, then close the connection at once, the way a server
    /// drops a kept-alive connection it has timed out.
    CloseAfterAnswer,
}

/// An upstream whose connections end as `end` says. Returns its address and, per
/// connection accepted, how many whole requests it read, and how many connections it has
/// ended.
async fn upstream_ending_connections(
    end: ConnectionEnd,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let per_connection = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ended = std::sync::Arc::new(AtomicUsize::new(0));
    let (seen, ends) = (per_connection.clone(), ended.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push(0);
                seen.len() - 1
            };
            let (seen, ends) = (seen.clone(), ends.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one whole request: the header, then Content-Length bytes.
                    let (head_end, body_len) = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            break (end + 4, len);
                        }
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < head_end + body_len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + body_len);
                    let served = {
                        let mut seen = seen.lock().unwrap();
                        seen[index] += 1;
                        seen[index]
                    };
                    if served > 1 {
                        if end == ConnectionEnd::ResetOnSecondRequest {
                            // A zero linger makes the close below send RST.
                            #[allow(deprecated)]
                            conn.set_linger(Some(std::time::Duration::ZERO)).unwrap();
                        }
                        drop(conn);
                        ends.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let body = completion_json(MOCK_REPLY).to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    if end == ConnectionEnd::CloseAfterAnswer {
                        drop(conn);
                        ends.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    (addr, per_connection, ended)
}

/// Makes a chat call through the gateway to `id` and checks its status, its x-gepa
/// headers and, for a 200, the reply.
async fn call_expecting(gw: &Gateway, id: &str, status: u16, what: &str) {
    let (got, h, body) = post_chat(&gw.chat_url(id), chat_body().to_string(), &[]).await;
    assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
    assert_gepa_headers(&h, id);
    if status == 200 {
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], MOCK_REPLY);
    }
}

#[tokio::test]
async fn a_request_the_upstream_read_is_never_sent_twice_even_on_a_reused_connection() {
    for end in [
        ConnectionEnd::CloseOnSecondRequest,
        ConnectionEnd::ResetOnSecondRequest,
    ] {
        let (addr, per_connection, _) = upstream_ending_connections(end).await;
        let gw = Gateway::start_with(GatewayOptions::new(format!("http://{addr}/v1"))).await;
        let id = gw.new_session("x").await;
        call_expecting(&gw, &id, 200, "the first call").await;
        // The second call goes out on the pooled connection; the upstream reads it whole
        // and ends the connection. It may have started the generation: no second request.
        call_expecting(&gw, &id, 502, "the call the upstream dropped").await;
        assert_eq!(
            *per_connection.lock().unwrap(),
            vec![2],
            "one request, no resend"
        );
        // The broken connection is not pooled again: the next call opens a new one.
        call_expecting(&gw, &id, 200, "the next call").await;
        assert_eq!(*per_connection.lock().unwrap(), vec![2, 1]);
        assert_eq!(
            gw.get_session(&id).await["rollout_count"],
            3,
            "nothing lost"
        );
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_while_idle_is_not_used() {
    use std::sync::atomic::Ordering;
    let (addr, per_connection, ended) =
        upstream_ending_connections(ConnectionEnd::CloseAfterAnswer).await;
    let gw = Gateway::start_with(GatewayOptions::new(format!("http://{addr}/v1"))).await;
    let id = gw.new_session("x").await;
    for call in 1..=3 {
        call_expecting(&gw, &id, 200, &format!("call {call}")).await;
        // Wait until the upstream has closed this call's connection before the next.
        while ended.load(Ordering::SeqCst) < call {
            tokio::task::yield_now().await;
        }
    }
    // Each call found the previous connection closed and opened a new one.
    assert_eq!(*per_connection.lock().unwrap(), vec![1, 1, 1]);
}
