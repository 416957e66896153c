//! Test harness: a mock OpenAI-compatible upstream the tests own, and the real gateway
//! binary started on port 0 (the system picks its ports) with a temporary config.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use gepa_gateway::server::{reported_address, LISTEN_LOG_TARGET};

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("upstream body is JSON")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct MockShared {
    requests: Mutex<Vec<Recorded>>,
    /// Proposer (reflection/merge) requests answered so far.
    proposals: std::sync::atomic::AtomicUsize,
    /// When set, proposer requests get a 500.
    proposer_fails: std::sync::atomic::AtomicBool,
    /// Released by the test to let a gated SSE stream send its remaining events.
    gate: Notify,
    /// Calls whose system message is this get a 400, as an upstream whose filter refuses
    /// one instruction would answer.
    refused_instruction: Mutex<Option<String>>,
    /// When set, the proposer model answers with this instruction (else "Improved
    /// instruction N").
    proposed_instruction: Mutex<Option<String>>,
}

/// The mock upstream. The client picks the behaviour with an `x-mock` request header,
/// which the gateway forwards like any other header:
/// - (none): a JSON chat completion whose content is "mock reply"
/// - `sse`: 3 SSE chunks + [DONE], 20 ms apart
/// - `sse-gated`: one SSE chunk, then waits for [`MockUpstream::release`], then the rest
/// - `status-500` / `status-429`: that status with an OpenAI error body
/// - `gzip`: the JSON completion gzip-encoded
/// - `hang`: never answers
/// - `reset`: closes the connection without answering
/// - `sse-break`: one SSE chunk, then closes the connection mid-stream
pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Arc<MockShared>,
}

pub const MOCK_REPLY: &str = "mock reply";

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(MockShared::default());
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(s.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        MockUpstream { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }

    pub fn release(&self) {
        self.shared.gate.notify_one();
    }

    /// Requests that were the gateway's own proposer calls.
    pub fn proposer_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(is_proposer_request)
            .collect()
    }

    /// From now on, calls whose system message is `instruction` get a 400.
    pub fn refuse_instruction(&self, instruction: &str) {
        *self.shared.refused_instruction.lock().unwrap() = Some(instruction.to_string());
    }

    /// From now on, the proposer model proposes `instruction`.
    pub fn propose(&self, instruction: &str) {
        *self.shared.proposed_instruction.lock().unwrap() = Some(instruction.to_string());
    }

    /// Requests whose system message is `instruction`.
    pub fn requests_with_instruction(&self, instruction: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| system_message(r).as_deref() == Some(instruction))
            .count()
    }

    pub fn fail_proposer(&self, fail: bool) {
        self.shared
            .proposer_fails
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }
}

type MockBody = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> MockBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn completion_json(content: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    })
}

pub fn sse_chunk(content: &str) -> String {
    let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
                   "model": "mock", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {v}\n\n")
}

async fn handle(
    shared: Arc<MockShared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<MockBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
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
    let mode = headers.get("x-mock").cloned().unwrap_or_default();
    shared.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body,
    });
    let json_resp = |status: u16, v: Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-upstream", "mock")
            .body(full(v.to_string()))
            .unwrap()
    };
    let recorded = shared.requests.lock().unwrap().last().cloned();
    if recorded.as_ref().is_some_and(is_proposer_request) {
        use std::sync::atomic::Ordering::SeqCst;
        if shared.proposer_fails.load(SeqCst) {
            return Ok(json_resp(
                500,
                json!({"error": {"message": "proposer model down"}}),
            ));
        }
        let n = shared.proposals.fetch_add(1, SeqCst) + 1;
        let proposed = shared.proposed_instruction.lock().unwrap().clone();
        let instruction = proposed.unwrap_or_else(|| format!("Improved instruction {n}"));
        let reply =
            format!("Here is the improved instruction:\n```text\n{instruction}\n```\nGood luck.");
        return Ok(json_resp(200, completion_json(&reply)));
    }
    let refused = shared.refused_instruction.lock().unwrap().clone();
    if refused.is_some() && recorded.as_ref().and_then(system_message) == refused {
        return Ok(json_resp(
            400,
            json!({"error": {"message": "this instruction is refused", "type": "invalid_request_error"}}),
        ));
    }
    match mode.as_str() {
        "" => Ok(json_resp(200, completion_json(MOCK_REPLY))),
        "status-500" | "status-429" => {
            let code: u16 = mode[7..].parse().unwrap();
            Ok(json_resp(
                code,
                json!({"error": {"message": "mock failure", "type": "server_error", "code": null}}),
            ))
        }
        "gzip" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(completion_json("zipped reply").to_string().as_bytes())
                .unwrap();
            Ok(Response::builder()
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(full(enc.finish().unwrap()))
                .unwrap())
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(json_resp(200, json!({})))
        }
        "reset" => Err(std::io::Error::other("mock reset")),
        m if m.starts_with("sse") => Ok(sse_response(shared, m.to_string())),
        other => Ok(json_resp(
            400,
            json!({"error": {"message": format!("unknown mock mode {other}")}}),
        )),
    }
}

/// The proposer's reflection and merge prompts end with a "## Your task" section.
/// The content of a chat request's first message when it is the system message.
pub fn system_message(r: &Recorded) -> Option<String> {
    let body: Value = serde_json::from_slice(&r.body).ok()?;
    let first = &body["messages"][0];
    (first["role"] == "system").then(|| first["content"].as_str().map(str::to_string))?
}

pub fn is_proposer_request(r: &Recorded) -> bool {
    String::from_utf8_lossy(&r.body).contains("## Your task")
}

fn sse_response(shared: Arc<MockShared>, mode: String) -> Response<MockBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        let send = |s: String| tx.send(Ok(Frame::data(Bytes::from(s))));
        if send(sse_chunk("Hel")).await.is_err() {
            return;
        }
        match mode.as_str() {
            "sse-gated" => shared.gate.notified().await,
            "sse-break" => {
                let _ = tx
                    .send(Err(std::io::Error::other("mock stream break")))
                    .await;
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        let _ = send(sse_chunk("lo")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = send(sse_chunk(" world")).await;
        let _ = send("data: [DONE]\n\n".to_string()).await;
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// The gateway's `public_url` in the tests: the base of the URLs its API hands out. Not
/// its address, which is known only once it listens (and `.invalid` never resolves).
pub const PUBLIC_URL: &str = "http://gateway.invalid";

/// The real gateway binary, started with a temporary config; killed on drop.
pub struct Gateway {
    /// Where the running process listens; taken from its log, as it listens on port 0.
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    child: Child,
    pub dir: tempfile::TempDir,
    pub admin_token: Option<String>,
    /// The environment it was started with, to start it again on the same files.
    envs: Vec<(String, String)>,
    db_file: String,
    /// The length of the log when the running process was started: the lines where it
    /// says where it listens come after.
    log_mark: usize,
}

pub struct GatewayOptions {
    pub upstream_url: String,
    pub admin_token: Option<String>,
    pub reward_token: Option<String>,
    /// (env var value of the upstream key, client keys)
    pub upstream_key: Option<(String, String)>,
    pub max_body_bytes: usize,
    pub read_timeout_s: u64,
    pub extra_gateway_yaml: String,
    /// `gateway.upstream.ca_file`: the PEM bundle that replaces the system roots.
    pub ca_file: Option<String>,
    /// Extra keys of `gateway.storage`, as YAML lines indented by four spaces.
    pub storage_yaml: String,
    /// `RUST_LOG` (default `warn`: no access log).
    pub rust_log: String,
    /// The database file, relative to the gateway's temporary directory.
    pub db_file: String,
}

impl GatewayOptions {
    pub fn new(upstream_url: String) -> Self {
        GatewayOptions {
            upstream_url,
            admin_token: Some("test-admin-token".into()),
            reward_token: None,
            upstream_key: None,
            max_body_bytes: 10 * 1024 * 1024,
            read_timeout_s: 30,
            extra_gateway_yaml: String::new(),
            ca_file: None,
            storage_yaml: String::new(),
            rust_log: "warn".into(),
            db_file: "gepa.db".into(),
        }
    }
}

/// Starts the gateway binary on `dir/gateway.yaml`, appending its stderr to `dir/gateway.log`.
fn spawn_gateway(dir: &std::path::Path, envs: &[(String, String)]) -> Child {
    spawn_gateway_with(dir, envs, &[])
}

fn spawn_gateway_with(dir: &std::path::Path, envs: &[(String, String)], args: &[&str]) -> Child {
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("-c").arg(dir.join("gateway.yaml")).args(args);
    for var in ["GEPA_TEST_ADMIN_TOKEN", "GEPA_TEST_REWARD_TOKEN"] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    cmd.stdout(Stdio::null()).stderr(log);
    cmd.spawn().expect("gateway binary starts")
}

pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gepa-gateway")
}

impl Gateway {
    pub async fn start(mock: &MockUpstream) -> Gateway {
        Gateway::start_with(GatewayOptions::new(mock.url())).await
    }

    pub async fn start_with(o: GatewayOptions) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (key_env, client_env) = if o.upstream_key.is_some() {
            ("GEPA_TEST_UPSTREAM_KEY", "GEPA_TEST_CLIENT_KEYS")
        } else {
            ("", "")
        };
        let yaml = format!(
            r#"version: 1
threads: 2
pid_file: {dir}/gw.pid
upgrade_sock: {dir}/gw-upgrade.sock
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 1
gateway:
  listen: "127.0.0.1:0"
  public_url: "{PUBLIC_URL}"
  upstream:
    url: "{upstream}"
    api_key_env: "{key_env}"
    connect_timeout_ms: 2000
    read_timeout_s: {read_timeout}
{ca_file}  auth:
    client_keys_env: "{client_env}"
  admin:
    token_env: "GEPA_TEST_ADMIN_TOKEN"
    reward_token_env: "GEPA_TEST_REWARD_TOKEN"
  storage:
    path: "{dir}/{db_file}"
{storage_yaml}  metrics:
    listen: "127.0.0.1:0"
  limits:
    max_body_bytes: {max_body}
{extra}"#,
            dir = dir.path().display(),
            upstream = o.upstream_url,
            read_timeout = o.read_timeout_s,
            max_body = o.max_body_bytes,
            extra = o.extra_gateway_yaml,
            storage_yaml = o.storage_yaml,
            db_file = o.db_file,
            ca_file = o
                .ca_file
                .as_ref()
                .map(|p| format!("    ca_file: \"{p}\"\n"))
                .unwrap_or_default(),
        );
        let conf = dir.path().join("gateway.yaml");
        std::fs::write(&conf, yaml).unwrap();
        // The `listen` lines say where it listens, whatever the level asked for.
        let rust_log = format!("{},{LISTEN_LOG_TARGET}=info", o.rust_log);
        let mut envs = vec![("RUST_LOG".to_string(), rust_log)];
        if let Some(t) = &o.admin_token {
            envs.push(("GEPA_TEST_ADMIN_TOKEN".into(), t.clone()));
        }
        if let Some(t) = &o.reward_token {
            envs.push(("GEPA_TEST_REWARD_TOKEN".into(), t.clone()));
        }
        if let Some((key, clients)) = &o.upstream_key {
            envs.push(("GEPA_TEST_UPSTREAM_KEY".into(), key.clone()));
            envs.push(("GEPA_TEST_CLIENT_KEYS".into(), clients.clone()));
        }
        let child = spawn_gateway(dir.path(), &envs);
        let unknown: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut gw = Gateway {
            addr: unknown,
            metrics_addr: unknown,
            child,
            dir,
            admin_token: o.admin_token,
            envs,
            db_file: o.db_file,
            log_mark: 0,
        };
        gw.wait_listening().await;
        gw.wait_healthy().await;
        gw
    }

    /// Waits (up to 10 s) until the running process has logged where its listeners are
    /// bound, and takes those addresses.
    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_since_start();
            let reported = |what| log.lines().find_map(|l| reported_address(l, what));
            if let (Some(addr), Some(metrics_addr)) = (reported("proxy"), reported("metrics")) {
                self.addr = addr;
                self.metrics_addr = metrics_addr;
                return;
            }
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!(
                    "the gateway exited ({exit}) before it listened; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not say where it listens within 10 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The log written since the running process was started.
    fn log_since_start(&self) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(log.get(self.log_mark..).unwrap_or_default()).into_owned()
    }

    /// Starts the gateway binary (with `args`) as the running process, on this config and
    /// environment.
    fn spawn(&mut self, args: &[&str]) -> Child {
        self.log_mark = std::fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize);
        spawn_gateway_with(self.dir.path(), &self.envs, args)
    }

    /// Polls /readyz until state is restored and the listener serves (start-up, not
    /// synchronisation).
    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway did not become healthy; log:\n{}", self.log());
    }

    /// Kills the gateway with SIGKILL (no shutdown of any kind) and starts it again on the
    /// same config and database, waiting until it has restored its state.
    pub async fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart().await;
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as an operator's graceful stop, without waiting for the exit.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (up to 15 s) for the process to exit; returns whether it exited with 0.
    pub async fn wait_exit(&mut self) -> bool {
        for _ in 0..300 {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not exit within 15 s; log:\n{}", self.log());
    }

    /// Starts the gateway again (after [`Gateway::kill9`]) on the same config and
    /// database, waiting until it has restored its state. It listens on new ports: the
    /// old ones were closed with the old process.
    pub async fn restart(&mut self) {
        self.child = self.spawn(&[]);
        self.wait_listening().await;
        self.wait_healthy().await;
    }

    /// Upgrades as an operator would: starts a new process with `-u` on the same config,
    /// waits until it listens on the upgrade socket, and sends the running one SIGQUIT.
    /// Returns the old process (it exits after Pingora's close timeout and grace period);
    /// `self` is the new one from now on. Does not wait for the new one to be ready.
    pub async fn upgrade(&mut self) -> Child {
        let sock = self.dir.path().join("gw-upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let new = self.spawn(&["-u"]);
        for _ in 0..400 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sock.exists(), "the new process listens for the listeners");
        let status = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        std::mem::replace(&mut self.child, new)
    }

    /// After [`Gateway::upgrade`]: waits until the new process says where it listens (on
    /// the sockets it took over, so at the same addresses) and serves state there.
    pub async fn wait_ready(&mut self) {
        let before = (self.addr, self.metrics_addr);
        self.wait_listening().await;
        assert_eq!(
            (self.addr, self.metrics_addr),
            before,
            "the new process listens where the old one did"
        );
        self.wait_healthy().await;
    }

    /// The gateway's database, for tests that check what reached the disk.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join(&self.db_file)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// A URL the gateway's API hands out (built on [`PUBLIC_URL`]).
    pub fn public_url(&self, path: &str) -> String {
        format!("{PUBLIC_URL}{path}")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Creates a session with the given baseline instruction; returns its GET-style JSON.
    pub async fn create_session(&self, instruction: &str) -> Value {
        let body = json!({"config_body": {"prompt_learning": {
            "algorithm": "gepa",
            "gepa": {"mode": "online", "online_proposer_min_rollouts": 10},
            "initial_prompt": {"messages": [{"role": "system", "pattern": instruction}]}
        }}});
        let r = self
            .admin(reqwest::Client::new().post(self.url(SESSIONS)))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Creates a session and returns its id.
    pub async fn new_session(&self, instruction: &str) -> String {
        self.create_session(instruction).await["session_id"]
            .as_str()
            .expect("session_id")
            .to_string()
    }

    pub fn chat_url(&self, session_id: &str) -> String {
        self.url(&format!("/api/gepa/v1/{session_id}/chat/completions"))
    }

    pub async fn get_session(&self, id: &str) -> Value {
        self.admin_get_ok(&format!("{SESSIONS}/{id}")).await
    }

    /// GET on the session list with `query` (e.g. `"?limit=2"`, or `""`), expecting 200.
    pub async fn list_sessions(&self, query: &str) -> Value {
        self.admin_get_ok(&format!("{SESSIONS}{query}")).await
    }

    /// An admin GET of `path`, expecting 200; its JSON body.
    async fn admin_get_ok(&self, path: &str) -> Value {
        let r = self
            .admin(reqwest::Client::new().get(self.url(path)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    pub async fn reward(&self, id: &str, body: Value) -> (u16, Value) {
        let r = self
            .admin(reqwest::Client::new().post(self.url(&format!("{SESSIONS}/{id}/reward"))))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str) -> (u16, Value) {
        let r = self
            .admin(reqwest::Client::new().post(self.url(path)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const SESSIONS: &str = "/api/prompt-learning/online/gepa/sessions";

/// A small chat body with a system message.
pub fn chat_body() -> Value {
    json!({"model": "gpt-4.1-mini", "messages": [
        {"role": "system", "content": "client system prompt"},
        {"role": "user", "content": "When will my card arrive?"}
    ]})
}

/// Starts a streamed chat call (`chat_body` with `"stream": true`) that the mock answers
/// with one SSE event and then holds until [`MockUpstream::release`]; returns the response
/// as soon as its header arrived.
pub async fn start_gated_stream(gw: &Gateway, session_id: &str) -> reqwest::Response {
    let mut body = chat_body();
    body["stream"] = json!(true);
    reqwest::Client::new()
        .post(gw.chat_url(session_id))
        .header("x-mock", "sse-gated")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Posts a chat body to the gateway; returns (status, headers, body).
pub async fn post_chat(
    url: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Bytes) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    (status, headers, body)
}
