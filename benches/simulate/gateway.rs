//! The real gateway binary, started with a temporary YAML config on port 0 (the system
//! picks the port, which the gateway logs) and killed on drop; plus the few session API
//! calls the simulator needs.

use gepa_gateway::server::{reported_address, LISTEN_LOG_TARGET};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const SESSIONS: &str = "/api/prompt-learning/online/gepa/sessions";
pub const CLIENT_KEY: &str = "ck-sim";
const ADMIN_TOKEN: &str = "sim-admin-token";

/// The settings that differ between runs.
pub struct GatewaySpec<'a> {
    pub binary: &'a Path,
    pub upstream_url: String,
    /// `gateway.gepa.allocation`: "thompson" or "uniform".
    pub allocation: &'a str,
    /// `gateway.gepa.warmup_rollouts` (None: the gateway's default).
    pub warmup_rollouts: Option<u32>,
    /// `gateway.gepa.explore_share` (None: the gateway's default).
    pub explore_share: Option<f64>,
}

/// The session's `config_body.prompt_learning.gepa` settings.
pub struct SessionSpec {
    pub min_rollouts: u32,
    pub max_candidates: u32,
    /// None: the gateway's default.
    pub prune_min_rollouts: Option<u32>,
}

pub struct Gateway {
    /// `http://` and the address it listens on (empty until it said).
    pub base: String,
    child: Child,
    dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Gateway {
    pub async fn start(spec: &GatewaySpec<'_>) -> Res<Gateway> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display();
        let yaml = format!(
            r#"version: 1
threads: 2
pid_file: {d}/gw.pid
upgrade_sock: {d}/gw-upgrade.sock
gateway:
  listen: "127.0.0.1:0"
  upstream:
    url: "{upstream}"
    api_key_env: "GEPA_SIM_UPSTREAM_KEY"
    connect_timeout_ms: 2000
    read_timeout_s: 30
  auth:
    client_keys_env: "GEPA_SIM_CLIENT_KEYS"
  admin:
    token_env: "GEPA_SIM_ADMIN_TOKEN"
  storage:
    path: "{d}/gepa.db"
  metrics:
    listen: ""
  proposer:
    minibatch_size: 3
    merge: true
  gepa:
    allocation: "{allocation}"
{warmup}"#,
            upstream = spec.upstream_url,
            allocation = spec.allocation,
            warmup = [
                spec.warmup_rollouts
                    .map(|w| format!("    warmup_rollouts: {w}\n")),
                spec.explore_share
                    .map(|s| format!("    explore_share: {s}\n")),
            ]
            .into_iter()
            .flatten()
            .collect::<String>(),
        );
        let conf = dir.path().join("gateway.yaml");
        std::fs::write(&conf, yaml)?;
        let log = std::fs::File::create(dir.path().join("gateway.log"))?;
        let child = Command::new(spec.binary)
            .arg("-c")
            .arg(&conf)
            .env("GEPA_SIM_UPSTREAM_KEY", "sk-sim-upstream")
            .env("GEPA_SIM_CLIENT_KEYS", CLIENT_KEY)
            .env("GEPA_SIM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", format!("warn,{LISTEN_LOG_TARGET}=info"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", spec.binary.display()))?;
        let mut gw = Gateway {
            base: String::new(),
            child,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        gw.wait_healthy().await?;
        Ok(gw)
    }

    /// Waits up to 15 s for the gateway to log where it listens, then polls /readyz there;
    /// fails early (with the log) if the process exits.
    async fn wait_healthy(&mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "the gateway exited during start-up ({status}); its log:\n{}",
                    self.log()
                )
                .into());
            }
            if self.base.is_empty() {
                let log = self.log();
                if let Some(addr) = log.lines().find_map(|l| reported_address(l, "proxy")) {
                    self.base = format!("http://{addr}");
                }
            } else if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!(
            "the gateway did not become healthy within 15 s; its log:\n{}",
            self.log()
        )
        .into())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log"))
            .unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn admin_json(&self, req: reqwest::RequestBuilder, what: &str) -> Res<Value> {
        let r = req.bearer_auth(ADMIN_TOKEN).send().await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            return Err(format!("{what}: HTTP {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Creates a session; returns its id.
    pub async fn create_session(&self, instruction: &str, spec: &SessionSpec) -> Res<String> {
        let mut gepa = json!({"mode": "online",
                              "online_proposer_min_rollouts": spec.min_rollouts,
                              "online_proposer_max_candidates": spec.max_candidates});
        if let Some(n) = spec.prune_min_rollouts {
            gepa["online_prune_min_rollouts"] = json!(n);
        }
        let body = json!({"config_body": {"prompt_learning": {
            "algorithm": "gepa",
            "gepa": gepa,
            "initial_prompt": {"messages": [{"role": "system", "pattern": instruction}]}
        }}, "metadata": {"source": "benches/simulate.rs"}});
        let v = self
            .admin_json(
                self.http.post(self.url(SESSIONS)).json(&body),
                "create session",
            )
            .await?;
        if let Some(w) = v["warnings"].as_array().filter(|w| !w.is_empty()) {
            return Err(format!("session created with warnings: {w:?}").into());
        }
        v["session_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no session_id in {v}").into())
    }

    pub async fn get_session(&self, id: &str) -> Res<Value> {
        self.admin_json(
            self.http.get(self.url(&format!("{SESSIONS}/{id}"))),
            "get session",
        )
        .await
    }

    pub async fn reward(&self, id: &str, body: &Value) -> Res<Value> {
        self.admin_json(
            self.http
                .post(self.url(&format!("{SESSIONS}/{id}/reward")))
                .json(body),
            "reward",
        )
        .await
    }

    /// One proxied chat call; returns (rollout id, candidate id, reply content).
    pub async fn chat(&self, id: &str, question: &str) -> Res<(String, String, String)> {
        let body = json!({"model": "sim-task", "messages": [
            {"role": "system", "content": "client system prompt (replaced by the gateway)"},
            {"role": "user", "content": question}
        ]});
        let r = self
            .http
            .post(self.url(&format!("/api/gepa/v1/{id}/chat/completions")))
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (rollout, candidate) = (header("x-gepa-rollout-id"), header("x-gepa-candidate-id"));
        let text = r.text().await?;
        if !status.is_success() {
            return Err(format!("proxied call: HTTP {status}: {text}").into());
        }
        let (Some(rollout), Some(candidate)) = (rollout, candidate) else {
            return Err("proxied call: no x-gepa-rollout-id / x-gepa-candidate-id".into());
        };
        let v: Value = serde_json::from_str(&text)?;
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| format!("proxied call: no content in {text}"))?
            .to_string();
        Ok((rollout, candidate, content))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway binary to run: `--gateway`, else `target/release/gepa-gateway` (built
/// with `cargo build --release --bin gepa-gateway` when missing or when `build` is set).
pub fn locate_binary(explicit: Option<PathBuf>, build: bool) -> Res<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(format!("--gateway {}: no such file", p.display()).into());
        }
        return Ok(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("gepa-gateway");
    if build || !bin.is_file() {
        eprintln!("building the gateway: cargo build --release --bin gepa-gateway");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "gepa-gateway"])
            .current_dir(root)
            .status()?;
        if !status.success() || !bin.is_file() {
            return Err(format!(
                "building the gateway failed ({status}); build it yourself with \
                 `cargo build --release --bin gepa-gateway` or pass --gateway PATH"
            )
            .into());
        }
    } else if let Some(newer) = newer_source(&root.join("src"), modified(&bin)) {
        eprintln!(
            "warning: {} is older than {}; pass --build to rebuild it",
            bin.display(),
            newer.display()
        );
    }
    Ok(bin)
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A file under `dir` modified after `than`, if any.
fn newer_source(dir: &Path, than: Option<SystemTime>) -> Option<PathBuf> {
    let than = than?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(found) = newer_source(&p, Some(than)) {
                return Some(found);
            }
        } else if modified(&p).is_some_and(|m| m > than) {
            return Some(p);
        }
    }
    None
}
