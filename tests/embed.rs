//! `examples/embed.rs`, a team's own Pingora proxy with GEPA added, serves both kinds of
//! traffic: its own routes reach its own upstream untouched, and GEPA's routes (session API,
//! proxy, rewards) work as in the standalone gateway, without touching the team's upstream.
//!
//! The example listens on a Unix socket in a temporary directory, so no port is involved.

mod common;

use bytes::Bytes;
use common::{chat_body, MockUpstream, MOCK_REPLY};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

const ADMIN_TOKEN: &str = "embed-admin-token";

/// The example's binary, built by `cargo test` next to this test's own.
fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug_dir = exe.parent().and_then(Path::parent).unwrap();
    debug_dir.join("examples").join("embed")
}

/// The running example; killed when dropped.
struct Embedded {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Embedded {
    async fn start(gepa_upstream: &MockUpstream, own_upstream: &MockUpstream) -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gepa.yaml");
        let yaml = format!(
            "gateway:\n  public_url: http://team-proxy.invalid\n  upstream:\n    url: {}\n  \
             admin:\n    token_env: EMBED_ADMIN_TOKEN\n  storage:\n    backend: memory\n",
            gepa_upstream.url()
        );
        std::fs::write(&config, yaml).unwrap();
        let socket = dir.path().join("proxy.sock");
        let log = dir.path().join("embed.log");
        let child = Command::new(example_bin())
            .arg(&config)
            .arg(format!("unix:{}", socket.display()))
            .arg(own_upstream.addr.to_string())
            .env("EMBED_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the example is built by `cargo test` (alone: `cargo build --example embed`)");
        let mut embedded = Embedded {
            child,
            socket,
            log,
            _dir: dir,
        };
        embedded.wait_serving().await;
        embedded
    }

    /// Waits (up to 10 s) until the example answers on its socket.
    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the example exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no socket in 10 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a new connection to the example's socket.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Bytes) {
        let stream = UnixStream::connect(&self.socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "team-proxy");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    async fn admin(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let body = if body.is_null() {
            vec![]
        } else {
            body.to_string().into_bytes()
        };
        let (status, _, body) = self.send(method, path, &headers, body).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

const SESSIONS: &str = "/api/prompt-learning/online/gepa/sessions";

fn create_body(instruction: &str) -> Value {
    json!({"config_body": {"prompt_learning": {
        "algorithm": "gepa",
        "gepa": {"mode": "online"},
        "initial_prompt": {"messages": [{"role": "system", "pattern": instruction}]}
    }}})
}

#[tokio::test]
async fn the_team_routes_and_gepa_routes_each_reach_their_own_upstream() {
    let gepa_upstream = MockUpstream::start().await;
    let own_upstream = MockUpstream::start().await;
    let proxy = Embedded::start(&gepa_upstream, &own_upstream).await;

    // The team's own route: proxied by Pingora to the team's upstream, untouched.
    let (status, headers, body) = proxy.send("GET", "/own/items?page=2", &[], vec![]).await;
    assert_eq!(status, 200, "{}", proxy.log());
    assert_eq!(headers["x-upstream"], "mock");
    assert!(
        headers.get("x-gepa-rollout-id").is_none(),
        "no rollout for the team's routes"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["choices"][0]["message"]["content"],
        MOCK_REPLY
    );
    assert_eq!(own_upstream.last().path_and_query, "/own/items?page=2");
    assert_eq!(gepa_upstream.count(), 0);

    // Any other path is the team's 404, not GEPA's JSON error.
    let (status, _, body) = proxy.send("GET", "/elsewhere", &[], vec![]).await;
    assert_eq!(status, 404);
    assert!(
        serde_json::from_slice::<Value>(&body).is_err(),
        "Pingora's own error page"
    );
    assert_eq!(
        own_upstream.count(),
        1,
        "nothing else reached the team's upstream"
    );

    // GEPA's session API, with its token.
    let (status, created) = proxy
        .admin("POST", SESSIONS, create_body("Answer briefly."))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        created["proxy_url"],
        format!("http://team-proxy.invalid/api/gepa/v1/{id}")
    );
    let (status, _) = proxy
        .admin("GET", &format!("{SESSIONS}/{id}"), Value::Null)
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = proxy
        .send("GET", &format!("{SESSIONS}/{id}"), &[], vec![])
        .await;
    assert_eq!(status, 401, "the session API needs the token");

    // A proxied call: the candidate's instruction replaces the system prompt upstream.
    let chat = chat_body().to_string().into_bytes();
    let (status, headers, body) = proxy
        .send(
            "POST",
            &format!("/api/gepa/v1/{id}/chat/completions"),
            &[("content-type", "application/json")],
            chat,
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rollout = headers["x-gepa-rollout-id"].to_str().unwrap().to_string();
    assert_eq!(headers["x-gepa-candidate-id"], "baseline");
    let sent = gepa_upstream.last().json();
    assert_eq!(sent["messages"][0]["content"], "Answer briefly.");
    assert_eq!(
        own_upstream.count(),
        1,
        "GEPA's calls never reach the team's upstream"
    );

    // Its reward.
    let reward = json!({"rollout_id": rollout, "reward_info": {"outcome_reward": 1.0}});
    let (status, answer) = proxy
        .admin("POST", &format!("{SESSIONS}/{id}/reward"), reward)
        .await;
    assert_eq!(
        (status, answer["reward_count"].clone()),
        (200, json!(1)),
        "{answer}"
    );

    // A GEPA path GEPA does not know is GEPA's JSON 404, named as such.
    let (status, _, body) = proxy.send("GET", "/api/gepa/v1/nope", &[], vec![]).await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        "unknown_route"
    );
}
