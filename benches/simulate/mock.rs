//! The in-process mock OpenAI-compatible server. One endpoint, two roles, told apart by
//! the request body (the proposer's prompts contain "## Your task"):
//!
//! - **Task LLM**: reads the system message and the ticket number in the user message,
//!   answers correctly with probability [`Task::p_correct`] and says so in its content:
//!   `ANSWER ok` or `ANSWER wrong: missing FACT-3, FACT-5` (or `ANSWER wrong` when no
//!   fact was missing and the answer was simply unlucky).
//! - **Proposer model**: reads the reflection prompt (current instruction = the first
//!   fenced block after the first line; the facts named in the "Reward and feedback"
//!   sections) and returns current + feedback facts, imperfectly: each new fact is lost
//!   with probability 0.2, each existing one with probability 0.05. A merge prompt
//!   ("Instruction A:" / "Instruction B:") gets the union of both instructions' facts.
//!   The wording of the first line is drawn from [`crate::task::WORDINGS`] variants, so
//!   (like a real model at temperature 1) it rarely repeats an earlier text exactly.
//!
//! Each role has its own seeded RNG. The driver is sequential, so the k-th task call of a
//! run always consumes the k-th draw: both allocation policies see the same luck at the
//! same rollout index (common random numbers).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::task::{Task, WORDINGS};

/// Probability that a fact named in the feedback is lost when added.
pub const P_DROP_NEW: f64 = 0.2;
/// Probability that a fact already in the instruction is lost.
pub const P_DROP_OLD: f64 = 0.05;

/// One proposer call as the mock answered it.
#[derive(Debug, Clone)]
pub struct ProposalRecord {
    pub merge: bool,
    /// Facts of the instruction(s) it started from (union for a merge).
    pub parent_facts: Vec<usize>,
    /// Facts named in the feedback and not yet in the instruction (reflections only).
    pub feedback_new: Vec<usize>,
    /// Facts of the instruction returned.
    pub result_facts: Vec<usize>,
}

struct State {
    task_rng: StdRng,
    proposer_rng: StdRng,
    task_calls: u64,
    proposals: Vec<ProposalRecord>,
    errors: Vec<String>,
}

pub struct Mock {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Mock {
    pub async fn start(task: Arc<Task>, seed: u64) -> std::io::Result<Mock> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            task_rng: StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1),
            proposer_rng: StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 2),
            task_calls: 0,
            proposals: Vec::new(),
            errors: Vec::new(),
        }));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (st, task) = (st.clone(), task.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), task.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Mock {
            addr,
            state,
            accept,
        })
    }

    /// The OpenAI-style base URL (the gateway appends `/chat/completions`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn task_calls(&self) -> u64 {
        self.lock().task_calls
    }

    pub fn proposals(&self) -> Vec<ProposalRecord> {
        self.lock().proposals.clone()
    }

    /// Requests the mock could not make sense of (should stay empty).
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

type Body = Full<Bytes>;

fn reply(status: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-sim", "object": "chat.completion", "created": 1_700_000_000u64,
        "model": "sim",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
}

fn error(state: &Mutex<State>, message: String) -> Response<Body> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.errors.push(message.clone());
    reply(
        400,
        &json!({"error": {"message": message, "type": "invalid_request_error"}}),
    )
}

async fn handle(
    state: Arc<Mutex<State>>,
    task: Arc<Task>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error(&state, format!("body read failed: {e}"))),
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Ok(error(&state, format!("body is not JSON: {e}"))),
    };
    let messages: Vec<(&str, &str)> = v["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap_or(""),
                        m["content"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if messages.iter().any(|(_, c)| c.contains("## Your task")) {
        let prompt: String = messages.iter().map(|(_, c)| *c).collect();
        return Ok(match propose(&state, &task, &prompt) {
            Ok(instruction) => reply(
                200,
                &completion(&format!(
                    "Here is the improved instruction:\n\n```\n{instruction}\n```\n"
                )),
            ),
            Err(e) => error(&state, e),
        });
    }
    let system = messages
        .iter()
        .find(|(r, _)| *r == "system" || *r == "developer")
        .map(|(_, c)| *c)
        .unwrap_or("");
    let Some(instance) = messages
        .iter()
        .filter(|(r, _)| *r == "user")
        .find_map(|(_, c)| Task::parse_instance(c))
        .filter(|&i| i < task.instances.len())
    else {
        return Ok(error(&state, "no ticket number in the user message".into()));
    };
    let p = task.p_correct(instance, system);
    let u: f64 = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.task_calls += 1;
        st.task_rng.gen()
    };
    let content = if u < p {
        "ANSWER ok".to_string()
    } else {
        let missing: Vec<String> = task.instances[instance]
            .iter()
            .filter(|&&f| !system.contains(task.facts[f].as_str()))
            .map(|f| format!("FACT-{}", f + 1))
            .collect();
        if missing.is_empty() {
            "ANSWER wrong".to_string()
        } else {
            format!("ANSWER wrong: missing {}", missing.join(", "))
        }
    };
    Ok(reply(200, &completion(&content)))
}

/// The proposer model: a new instruction for a reflection or merge prompt.
fn propose(state: &Mutex<State>, task: &Task, prompt: &str) -> Result<String, String> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let rng = &mut st.proposer_rng;
    let record = if prompt.contains("Instruction A:") && prompt.contains("Instruction B:") {
        let block_after = |marker: &str| {
            prompt
                .split_once(marker)
                .and_then(|(_, rest)| first_fenced_block(rest))
        };
        let (Some(a), Some(b)) = (block_after("Instruction A:"), block_after("Instruction B:"))
        else {
            return Err("merge prompt without two fenced instructions".into());
        };
        let mut facts = task.facts_in(&a);
        for f in task.facts_in(&b) {
            if !facts.contains(&f) {
                facts.push(f);
            }
        }
        ProposalRecord {
            merge: true,
            parent_facts: facts.clone(),
            feedback_new: vec![],
            result_facts: facts,
        }
    } else {
        // The current instruction: the first fenced block after the header line.
        let after_header = prompt.split_once('\n').map_or("", |(_, rest)| rest);
        let current = first_fenced_block(after_header)
            .ok_or("reflection prompt without a fenced instruction")?;
        let existing = task.facts_in(&current);
        let mut feedback_new: Vec<usize> = Vec::new();
        for section in prompt.split("### Reward and feedback").skip(1) {
            let section = section.split("\n## ").next().unwrap_or("");
            for f in task.facts_in(section) {
                if !existing.contains(&f) && !feedback_new.contains(&f) {
                    feedback_new.push(f);
                }
            }
        }
        let mut result: Vec<usize> = existing
            .iter()
            .copied()
            .filter(|_| rng.gen::<f64>() >= P_DROP_OLD)
            .collect();
        result.extend(
            feedback_new
                .iter()
                .copied()
                .filter(|_| rng.gen::<f64>() >= P_DROP_NEW),
        );
        ProposalRecord {
            merge: false,
            parent_facts: existing,
            feedback_new,
            result_facts: result,
        }
    };
    let wording = rng.gen_range(0..WORDINGS);
    let text = task.render(wording, &record.result_facts);
    st.proposals.push(record);
    Ok(text)
}

/// The text of the first fenced (```) block in `text`: from the line after the opening
/// fence to the line holding only that fence.
fn first_fenced_block(text: &str) -> Option<String> {
    let mut lines = text.lines();
    let fence = loop {
        let line = lines.next()?.trim_start();
        if line.starts_with("```") {
            break line.chars().take_while(|&c| c == '`').collect::<String>();
        }
    };
    let body: Vec<&str> = lines.take_while(|l| l.trim() != fence).collect();
    Some(body.join("\n"))
}
