//! One session: its state, its lifecycle, and the files that act on it.
//!
//! - [`calls`]: proxied calls, their rollouts and correlation pins;
//! - [`failures`]: candidates whose upstream calls fail stop being served;
//! - [`rewards`]: rewards under the contract's rules;
//! - [`proposals`]: when a proposal is due, its outcome, pruning;
//! - [`operator`]: an operator's changes to the candidates;
//! - [`restore`]: rebuilding a session from the store's records;
//! - [`snapshot`]: consistent copies of the state for the API and the metrics.

mod calls;
mod failures;
mod operator;
mod proposals;
mod restore;
mod rewards;
mod snapshot;

use calls::CorrelationPin;
pub use calls::{CallOutcome, CallTicket, Rollout};
pub use snapshot::{SessionDetail, SessionMetrics, SessionSummary};

use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use time::OffsetDateTime;

use super::candidate::Candidate;
use super::env::SessionEnv;
use super::events::{detail, EventLog};
use super::error::GepaError;
use super::optimizer::OptimizerState;
use super::settings::{GepaSettings, NewSession};
use super::status::{ArchiveReason, CandidateStatus, Status, Transition};
use super::store::{SessionRecord, StoreError};
use tokio::sync::watch;

/// The mutable part of a session, behind the session's own mutex.
#[derive(Debug)]
struct SessionState {
    status: Status,
    updated_at: OffsetDateTime,
    candidates: Vec<Arc<Candidate>>,
    /// Keyed by ids this gateway issued (random, so a fast hash without flooding
    /// resistance is safe here; client-chosen keys such as correlation ids keep SipHash).
    rollouts: HashMap<Arc<str>, Rollout, foldhash::fast::RandomState>,
    rollout_order: VecDeque<Arc<str>>,
    pins: HashMap<String, CorrelationPin>,
    /// Rollouts whose first reward is being committed; a second reward for one of them
    /// waits for that commit (the receiver turns `true`) and then looks again.
    committing: HashMap<String, watch::Receiver<bool>>,
    rollout_count: u64,
    reward_count: u64,
    calls_since_sweep: u32,
    optimizer: OptimizerState,
    /// The candidate an operator pinned: while the session runs, every call gets it.
    pinned: Option<Arc<Candidate>>,
    events: EventLog,
}

impl SessionState {
    fn new(status: Status, updated_at: OffsetDateTime, candidates: Vec<Arc<Candidate>>) -> Self {
        SessionState {
            status,
            updated_at,
            rollout_count: candidates.iter().map(|c| c.stats().issued).sum(),
            candidates,
            rollouts: HashMap::default(),
            rollout_order: VecDeque::new(),
            pins: HashMap::new(),
            committing: HashMap::new(),
            reward_count: 0,
            calls_since_sweep: 0,
            pinned: None,
            events: EventLog::default(),
            optimizer: OptimizerState::default(),
        }
    }
}

#[derive(Debug)]
pub struct Session {
    /// Shared (not copied) by the store's write-behind rollout records.
    pub id: Arc<str>,
    pub job_id: String,
    pub created_at: OffsetDateTime,
    pub metadata: Option<Value>,
    pub settings: GepaSettings,
    pub seq: u64,
    env: Arc<SessionEnv>,
    state: Mutex<SessionState>,
}

/// The contract's state table: the status a transition leads to, `Ok(None)` when the
/// session already is where the action leads (no change), or an error for a finished
/// session.
fn next_status(from: Status, t: Transition) -> Result<Option<Status>, GepaError> {
    use Status::*;
    use Transition::*;
    match (from, t) {
        (Started, Pause) => Ok(Some(Paused)),
        (Paused, Resume) => Ok(Some(Started)),
        (Started | Paused, Cancel) => Ok(Some(Cancelled)),
        (Started | Paused, Stop) => Ok(Some(Completed)),
        (Paused, Pause) | (Started, Resume) | (Cancelled, Cancel) | (Completed, Stop) => Ok(None),
        (Completed | Cancelled, _) => Err(GepaError::SessionFinished(from)),
    }
}

impl Session {
    pub(super) fn new(seq: u64, new: NewSession, env: Arc<SessionEnv>) -> Self {
        let now = OffsetDateTime::now_utc();
        let baseline = Arc::new(Candidate::baseline(new.baseline_instruction.into()));
        Session {
            id: uuid::Uuid::new_v4().to_string().into(),
            job_id: format!("pl_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            created_at: now,
            metadata: new.metadata,
            settings: new.settings,
            seq,
            env,
            state: Mutex::new(SessionState::new(Status::Started, now, vec![baseline])),
        }
    }

    /// The session as the store records it at creation.
    pub(super) fn record(&self) -> SessionRecord {
        let st = self.state.lock();
        SessionRecord {
            id: self.id.to_string(),
            seq: self.seq,
            job_id: self.job_id.clone(),
            status: st.status,
            created_at: self.created_at,
            updated_at: st.updated_at,
            settings: self.settings.clone(),
            metadata: self.metadata.clone(),
            candidates: st.candidates.iter().map(|c| c.record()).collect(),
            pinned_candidate_id: st.pinned.as_ref().map(|c| c.id.to_string()),
            rollouts: Vec::new(),
            rewards: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn status(&self) -> Status {
        self.state.lock().status
    }

    /// Applies a lifecycle transition. Returns the status after it.
    pub fn transition(&self, t: Transition) -> Result<Status, GepaError> {
        let mut st = self.state.lock();
        self.apply_transition(&mut st, t)?;
        Ok(st.status)
    }

    /// Persists, then applies, a status change.
    fn set_status(&self, st: &mut SessionState, next: Status) -> Result<(), StoreError> {
        self.env.store.status_changed(&self.id, next)?;
        st.status = next;
        st.updated_at = OffsetDateTime::now_utc();
        Ok(())
    }

    /// Records an event of the session (kept in memory, written behind to the store).
    fn record_event(&self, st: &mut SessionState, kind: &str, detail: Map<String, Value>) {
        let event = st.events.push(kind, detail);
        self.env.store.event_recorded(&self.id, &event);
    }

    /// Archives `candidate` for `reason`: persisted first, then it stops serving. `false`
    /// when the store refused (it then goes on serving; the next occasion tries again).
    fn archive(&self, st: &mut SessionState, candidate: &Candidate, reason: ArchiveReason) -> bool {
        let archived = CandidateStatus::Archived;
        if let Err(e) = self.set_candidate_status(candidate, archived, Some(reason)) {
            log::warn!(
                "session {}: candidate {} not archived ({}): {}",
                self.id,
                candidate.id,
                reason.as_str(),
                e.0
            );
            return false;
        }
        log::info!(
            "session {}: candidate {} archived ({})",
            self.id,
            candidate.id,
            reason.as_str()
        );
        self.record_archive(st, candidate, reason);
        true
    }

    fn record_archive(&self, st: &mut SessionState, candidate: &Candidate, reason: ArchiveReason) {
        let detail = detail([
            ("candidate_id", Value::from(&*candidate.id)),
            ("reason", Value::from(reason.as_str())),
        ]);
        self.record_event(st, "candidate_archived", detail);
    }

    /// Persists, then applies, a candidate's new status.
    pub(super) fn set_candidate_status(
        &self,
        candidate: &Candidate,
        status: CandidateStatus,
        reason: Option<ArchiveReason>,
    ) -> Result<(), StoreError> {
        self.env
            .store
            .candidate_status_changed(&self.id, &candidate.id, status, reason)?;
        candidate.set_status(status, reason);
        Ok(())
    }

    /// Applies a transition under the session's lock (persisted first).
    fn apply_transition(&self, st: &mut SessionState, t: Transition) -> Result<(), GepaError> {
        if let Some(next) = next_status(st.status, t)? {
            let from = st.status;
            self.set_status(st, next)?;
            let detail = detail([
                ("from", Value::from(from.as_str())),
                ("to", Value::from(next.as_str())),
            ]);
            self.record_event(st, "status_changed", detail);
        }
        Ok(())
    }

    /// A copy of a rollout, for the optimizer and for tests.
    pub fn rollout(&self, rollout_id: &str) -> Option<Rollout> {
        self.state.lock().rollouts.get(rollout_id).cloned()
    }
}

impl SessionState {}

impl Session {
    /// The session's candidates, in creation order.
    pub fn candidates(&self) -> Vec<Arc<Candidate>> {
        self.state.lock().candidates.clone()
    }
}

#[cfg(test)]
mod tests;
