//! Session state: sessions, their candidates, rollouts and rewards, and the lifecycle.
//!
//! The registry ([`Sessions`]) is a sharded map, so lookups from many concurrent requests
//! never meet on one lock. Each session keeps its mutable state behind its own mutex,
//! held only for the few hundred nanoseconds of a bookkeeping step (never across I/O).
//!
//! Every acknowledged change is handed to a [`StateStore`] before it is applied (see
//! [`crate::store`]); a failed write leaves the state as it was.
//!
//! - [`candidate`]: one instruction and its statistics;
//! - [`session`]: one session: calls, rewards, lifecycle;
//! - [`optimizer`]: the session's side of GEPA: proposal jobs, pruning, the best candidate.

mod candidate;
mod optimizer;
pub mod rollout_id;
mod session;

pub use candidate::{Candidate, CandidateStatus};
pub use optimizer::{OptimizerConfig, ProposalJob, ProposalKind, ProposerStatus};
pub use session::{
    CallOutcome, CallTicket, CandidateMetrics, NewSession, Reward, RewardReply, RewardRequest,
    Rollout, Session, SessionMetrics,
};

use dashmap::DashMap;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::errors::ApiError;
use crate::selection::CandidateSelector;
use crate::store::StateStore;
use tokio::sync::Notify;

/// A session's candidate needs this many rewards before it can be named the best.
/// Two lucky rewards must not crown a candidate.
pub const MIN_REWARDS_FOR_BEST: u64 = 5;

/// RFC 3339 in UTC, as every time in the API.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Started,
    Paused,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Started => "started",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled)
    }
}

/// A lifecycle request from the admin API (a reward's `stop` is [`Transition::Stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Pause,
    Resume,
    Cancel,
    Stop,
}

/// The contract's state table: the status a transition leads to, `Ok(None)` when the
/// session already is where the action leads (200, no change), or a 409.
fn next_status(from: Status, t: Transition) -> Result<Option<Status>, ApiError> {
    use Status::*;
    use Transition::*;
    match (from, t) {
        (Started, Pause) => Ok(Some(Paused)),
        (Paused, Resume) => Ok(Some(Started)),
        (Started | Paused, Cancel) => Ok(Some(Cancelled)),
        (Started | Paused, Stop) => Ok(Some(Completed)),
        (Paused, Pause) | (Started, Resume) | (Cancelled, Cancel) | (Completed, Stop) => Ok(None),
        (Completed | Cancelled, _) => Err(ApiError::conflict(
            "session_finished",
            format!("the session is {} and cannot change state", from.as_str()),
        )),
    }
}

/// Per-session GEPA settings, resolved from the create body over the config defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GepaSettings {
    pub online_proposer_min_rollouts: u32,
    pub online_proposer_max_candidates: u32,
    pub online_prune_threshold: f64,
    pub online_prune_min_rollouts: u32,
    pub proposer_model: String,
}

/// Builds the URLs the API hands out, from `public_url`.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    base: String,
}

impl PublicUrls {
    pub fn new(public_url: &str) -> Self {
        PublicUrls {
            base: public_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn proxy_url(&self, session_id: &str, correlation_id: Option<&str>) -> String {
        match correlation_id {
            Some(c) => format!("{}/api/gepa/v1/{session_id}/{c}", self.base),
            None => format!("{}/api/gepa/v1/{session_id}", self.base),
        }
    }

    pub fn chat_completions_url(&self, session_id: &str, correlation_id: Option<&str>) -> String {
        format!(
            "{}/chat/completions",
            self.proxy_url(session_id, correlation_id)
        )
    }
}

/// What every session shares: the store, the optimizer's settings, the selector, and
/// the proposer's wake-up signal.
pub struct SessionEnv {
    pub correlation_ttl: Duration,
    /// Rollouts per session kept in memory (with their captured text: a few KiB each).
    /// Beyond this the oldest leave memory; with the durable store a reward for one of
    /// them is looked up there, with the memory store it is a 404.
    pub rollouts_in_memory: usize,
    pub store: Arc<dyn StateStore>,
    pub optimizer: OptimizerConfig,
    pub selector: CandidateSelector,
    /// Notified when a reward makes a proposal due.
    pub proposer_wake: Arc<Notify>,
}

impl std::fmt::Debug for SessionEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEnv")
            .field("correlation_ttl", &self.correlation_ttl)
            .field("optimizer", &self.optimizer)
            .finish_non_exhaustive()
    }
}

/// All sessions. Lookups are sharded; the ordered index serves listing only.
pub struct Sessions {
    by_id: DashMap<String, Arc<Session>>,
    by_age: RwLock<BTreeMap<u64, Arc<Session>>>,
    next_seq: AtomicU64,
    max_sessions: usize,
    env: Arc<SessionEnv>,
}

/// One page of the session list.
pub struct SessionPage {
    pub items: Vec<Arc<Session>>,
    pub next_cursor: Option<String>,
}

impl Sessions {
    pub fn new(max_sessions: usize, env: SessionEnv) -> Self {
        Sessions {
            by_id: DashMap::new(),
            by_age: RwLock::new(BTreeMap::new()),
            next_seq: AtomicU64::new(1),
            max_sessions,
            env: Arc::new(env),
        }
    }

    pub fn env(&self) -> &SessionEnv {
        &self.env
    }

    /// Every session, for the proposer's scan (a snapshot; no lock is held afterwards).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_id.iter().map(|s| s.value().clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.by_id.get(id).map(|s| s.value().clone())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn create(&self, new: NewSession) -> Result<Arc<Session>, ApiError> {
        if self.by_id.len() >= self.max_sessions {
            return Err(ApiError::conflict(
                "session_limit",
                format!(
                    "the gateway already holds sessions.max_sessions = {} sessions",
                    self.max_sessions
                ),
            ));
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session::new(seq, new, self.env.clone()));
        self.env.store.session_created(&session)?;
        self.by_id.insert(session.id.to_string(), session.clone());
        self.by_age.write().insert(seq, session.clone());
        Ok(session)
    }

    /// Puts back the sessions the durable store kept (at start-up, before serving).
    /// Returns how many were restored.
    pub fn restore(&self, sessions: Vec<crate::store::RestoredSession>) -> usize {
        let mut n = 0;
        for r in sessions {
            let Some(session) = Session::restore(r, self.env.clone()) else {
                continue;
            };
            let session = Arc::new(session);
            self.next_seq.fetch_max(session.seq + 1, Ordering::Relaxed);
            self.by_id.insert(session.id.to_string(), session.clone());
            self.by_age.write().insert(session.seq, session);
            n += 1;
        }
        n
    }

    /// Newest first. The cursor is the sequence number of the last item returned.
    pub fn list(&self, limit: usize, cursor: Option<u64>) -> SessionPage {
        let by_age = self.by_age.read();
        let upper = cursor.unwrap_or(u64::MAX);
        let mut items: Vec<Arc<Session>> = by_age
            .range(..upper)
            .rev()
            .take(limit + 1)
            .map(|(_, s)| s.clone())
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|s| s.seq.to_string())
        } else {
            None
        };
        SessionPage { items, next_cursor }
    }
}
