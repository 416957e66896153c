//! The reflective proposer: a Pingora background service that, whenever a session's
//! proposal is due, asks the proposer model for a better instruction (or a merge of two)
//! and hands the answer back to the session.
//!
//! It never blocks the request path: it wakes on a signal from the reward path (and once
//! a second, for back-offs), takes jobs from sessions under their locks for microseconds,
//! and runs each model call in its own task. Failures are counted on the session and
//! retried after a back-off; they never touch proxy traffic. Shutdown aborts calls in
//! flight (a proposal lost that way is simply proposed again later).

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::gepa::reflection::{extract_instruction, proposer_max_tokens, proposer_request};
use crate::gepa::{ProposalJob, Session, Sessions};
use crate::reply::{json_reply, usage, Reply, Usage};
use crate::upstream::Upstream;

/// Largest proposer response accepted.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most model calls in flight at once, over all sessions.
const MAX_CONCURRENT_PROPOSALS: usize = 8;
/// How often sessions are re-checked without a wake-up (back-offs expire).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Proposer {
    pub sessions: Arc<Sessions>,
    /// The proposer model's endpoint (`proposer.url`, else the upstream) and key.
    pub client: Arc<Upstream>,
    pub wake: Arc<Notify>,
    /// `proposer.max_proposals_per_hour` over the whole gateway.
    pub hourly: HourlyLimit,
}

/// At most `max` proposer calls in any hour: the start times of the calls of the last hour
/// (never more than `max` of them). A session whose proposal is due while the limit is
/// reached waits; it is not charged.
#[derive(Debug, Default)]
pub struct HourlyLimit {
    max: Option<usize>,
    started: parking_lot::Mutex<VecDeque<Instant>>,
}

impl HourlyLimit {
    pub fn new(max: Option<u64>) -> Self {
        HourlyLimit {
            max: max.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            started: parking_lot::Mutex::new(VecDeque::new()),
        }
    }

    /// Whether a call may start at `now`.
    fn allows(&self, now: Instant) -> bool {
        let Some(max) = self.max else { return true };
        let mut started = self.started.lock();
        while started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
        {
            started.pop_front();
        }
        started.len() < max
    }

    fn record(&self, now: Instant) {
        if self.max.is_some() {
            self.started.lock().push_back(now);
        }
    }
}

#[async_trait]
impl BackgroundService for Proposer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut calls: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = self.wake.notified() => {},
                _ = tokio::time::sleep(RESCAN_INTERVAL) => {},
                Some(_) = calls.join_next(), if !calls.is_empty() => {},
            }
            self.start_due_jobs(&mut calls);
        }
        calls.abort_all();
    }
}

impl Proposer {
    fn start_due_jobs(&self, calls: &mut JoinSet<()>) {
        let now = Instant::now();
        for session in self.sessions.all() {
            if calls.len() >= MAX_CONCURRENT_PROPOSALS || !self.hourly.allows(now) {
                return;
            }
            if let Some(job) = session.take_proposal_job(now) {
                self.hourly.record(now);
                let client = self.client.clone();
                let max_bytes = self.sessions.env().optimizer.max_instruction_bytes;
                calls.spawn(run_job(client, session, job, proposer_max_tokens(max_bytes)));
            }
        }
    }
}

/// One proposal: the model call, the extraction, and the booking on the session.
pub async fn run_job(
    client: Arc<Upstream>,
    session: Arc<Session>,
    job: ProposalJob,
    max_tokens: u32,
) {
    let (result, usage) = propose(&client, &job, max_tokens).await;
    match session.finish_proposal(&job, result, usage) {
        Some(id) => log::info!("session {}: new candidate {id}", session.id),
        None => log::warn!("session {}: proposal failed", session.id),
    }
}

/// The model call: the instruction it proposes (or why there is none), and the tokens
/// its reply reported.
async fn propose(
    client: &Upstream,
    job: &ProposalJob,
    max_tokens: u32,
) -> (Result<String, String>, Option<Usage>) {
    let body = proposer_request(&job.model, &job.prompt(), max_tokens);
    let (status, response) = match client.post_chat(&body, MAX_RESPONSE_BYTES).await {
        Ok(answer) => answer,
        Err(e) => return (Err(format!("proposer call failed: {}", e.message())), None),
    };
    let usage = usage(&response);
    if !(200..300).contains(&status) {
        return (Err(format!("the proposer model answered HTTP {status}")), usage);
    }
    let Some(Reply::Text(text)) = json_reply(&response) else {
        let error = "the proposer's reply holds no message content".to_string();
        return (Err(error), usage);
    };
    let instruction = extract_instruction(&text)
        .ok_or_else(|| "the proposer's reply holds no instruction".to_string());
    (instruction, usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hourly_limit_counts_the_calls_of_the_last_hour() {
        let limit = HourlyLimit::new(Some(2));
        let t0 = Instant::now();
        assert!(limit.allows(t0));
        limit.record(t0);
        limit.record(t0 + Duration::from_secs(60));
        assert!(!limit.allows(t0 + Duration::from_secs(120)), "two calls this hour");
        assert!(!limit.allows(t0 + Duration::from_secs(3599)));
        assert!(limit.allows(t0 + Duration::from_secs(3600)), "the first left the hour");
        assert!(HourlyLimit::new(None).allows(t0), "no limit");
    }
}
