//! One candidate instruction and its running statistics.
//!
//! Statistics sit behind the candidate's own small mutex because a candidate is shared
//! (by `Arc`) with the rollouts it served; every update happens under the session's lock
//! as well, so the two locks are never contended against each other.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

use super::allocation::{confidence_bounds, ArmStats};
pub use super::status::CandidateStatus;
use super::status::ArchiveReason;
use super::store::CandidateRecord;

/// One instruction the session can serve.
#[derive(Debug)]
pub struct Candidate {
    /// Shared (not copied) by the rollouts, tickets and records that name it.
    pub id: Arc<str>,
    pub instruction: Arc<str>,
    /// Empty for the baseline, one for a reflective proposal, two for a merge.
    pub parent_ids: Vec<String>,
    pub created_at: OffsetDateTime,
    status: Mutex<CandidateStatus>,
    /// Why it was archived, while it is.
    archived_reason: Mutex<Option<ArchiveReason>>,
    stats: Mutex<ArmStats>,
    calls: Mutex<CallStats>,
}

/// How a candidate's proxied calls ended, for failure-aware serving
/// (`session::failures`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    pub succeeded: u64,
    /// Calls the upstream refused or broke (see [`CallVerdict::Failed`]).
    pub failed: u64,
    /// Failed calls in a row, and when the first of them ended.
    pub streak: u32,
    pub streak_since: Option<Instant>,
}

/// How one proxied call ended, as far as the candidate that served it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallVerdict {
    /// 2xx, and the whole response reached the client.
    Succeeded,
    /// The upstream refused or broke the call: a 4xx other than 429, a 5xx, a timeout, a
    /// refused or broken connection. Held against the candidate.
    Failed,
    /// Neither: rate limited (429), or the client went away. Not the candidate's doing.
    Inconclusive,
}

impl Candidate {
    pub fn new(id: Arc<str>, instruction: Arc<str>, parent_ids: Vec<String>) -> Self {
        Candidate {
            id,
            instruction,
            parent_ids,
            created_at: OffsetDateTime::now_utc(),
            status: Mutex::new(CandidateStatus::Active),
            archived_reason: Mutex::new(None),
            calls: Mutex::new(CallStats::default()),
            stats: Mutex::new(ArmStats {
                issued: 0,
                rewards: 0,
                reward_sum: 0.0,
                reward_sum_sq: 0.0,
            }),
        }
    }

    /// A candidate as the durable store gives it back (rewards are replayed after).
    pub fn restored(record: CandidateRecord) -> Self {
        let c = Candidate::new(record.id, record.instruction, record.parent_ids);
        let c = Candidate {
            created_at: record.created_at,
            ..c
        };
        *c.status.lock() = record.status;
        *c.archived_reason.lock() = record.archived_reason;
        c.stats.lock().issued = record.issued;
        c.calls.lock().failed = record.calls_failed;
        c
    }

    /// The candidate as the store keeps it.
    pub fn record(&self) -> CandidateRecord {
        CandidateRecord {
            id: self.id.clone(),
            instruction: self.instruction.clone(),
            parent_ids: self.parent_ids.clone(),
            created_at: self.created_at,
            status: self.status(),
            archived_reason: self.archived_reason(),
            issued: self.stats().issued,
            calls_failed: self.calls().failed,
        }
    }

    pub fn baseline(instruction: Arc<str>) -> Self {
        Candidate::new("baseline".into(), instruction, vec![])
    }

    pub fn is_baseline(&self) -> bool {
        &*self.id == "baseline"
    }

    pub fn status(&self) -> CandidateStatus {
        *self.status.lock()
    }

    pub fn is_active(&self) -> bool {
        self.status() == CandidateStatus::Active
    }

    /// Sets its status; `reason` is the archive's (`None` unless archived).
    pub(super) fn set_status(&self, status: CandidateStatus, reason: Option<ArchiveReason>) {
        *self.status.lock() = status;
        *self.archived_reason.lock() = reason;
    }

    /// Why it was archived, while it is.
    pub fn archived_reason(&self) -> Option<ArchiveReason> {
        *self.archived_reason.lock()
    }

    pub fn calls(&self) -> CallStats {
        *self.calls.lock()
    }

    /// Counts how one of its calls ended, at `now`.
    pub(super) fn record_call(&self, verdict: CallVerdict, now: Instant) {
        let mut calls = self.calls.lock();
        match verdict {
            CallVerdict::Succeeded => {
                calls.succeeded += 1;
                calls.streak = 0;
                calls.streak_since = None;
            }
            CallVerdict::Failed => {
                calls.failed += 1;
                calls.streak += 1;
                calls.streak_since.get_or_insert(now);
            }
            CallVerdict::Inconclusive => {}
        }
    }

    /// Forgets a run of failures that were not its own (an outage hit every candidate).
    pub(super) fn forgive_streak(&self) {
        let mut calls = self.calls.lock();
        calls.streak = 0;
        calls.streak_since = None;
    }

    pub fn stats(&self) -> ArmStats {
        *self.stats.lock()
    }

    /// Mean reward, or `None` before the first reward.
    pub fn mean_reward(&self) -> Option<f64> {
        let s = self.stats();
        (s.rewards > 0).then(|| s.reward_sum / s.rewards as f64)
    }

    pub fn reward_count(&self) -> u64 {
        self.stats().rewards
    }

    /// Counts a rollout served by this candidate.
    pub(super) fn record_issued(&self) {
        self.stats.lock().issued += 1;
    }

    pub(super) fn record_reward(&self, reward: f64) {
        let mut s = self.stats.lock();
        s.rewards += 1;
        s.reward_sum += reward;
        s.reward_sum_sq += reward * reward;
    }

    /// Test helper: one issued rollout with its reward.
    #[cfg(test)]
    pub fn record_issued_for_test(&self, reward: f64) {
        self.record_issued();
        self.record_reward(reward);
    }

    /// Lower and upper confidence bounds of the mean reward (None below two rewards).
    pub fn bounds(&self, z: f64) -> Option<(f64, f64)> {
        confidence_bounds(&self.stats(), z)
    }
}
