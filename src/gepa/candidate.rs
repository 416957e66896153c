//! One candidate instruction and its running statistics.
//!
//! Statistics sit behind the candidate's own small mutex because a candidate is shared
//! (by `Arc`) with the rollouts it served; every update happens under the session's lock
//! as well, so the two locks are never contended against each other.

use parking_lot::Mutex;
use std::sync::Arc;
use time::OffsetDateTime;

use super::allocation::{confidence_bounds, ArmStats};
use super::store::CandidateRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateStatus {
    Active,
    Archived,
}

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
    stats: Mutex<ArmStats>,
}

impl Candidate {
    pub fn new(id: Arc<str>, instruction: Arc<str>, parent_ids: Vec<String>) -> Self {
        Candidate {
            id,
            instruction,
            parent_ids,
            created_at: OffsetDateTime::now_utc(),
            status: Mutex::new(CandidateStatus::Active),
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
        if record.archived {
            c.archive();
        }
        c.stats.lock().issued = record.issued;
        c
    }

    /// The candidate as the store keeps it.
    pub fn record(&self) -> CandidateRecord {
        CandidateRecord {
            id: self.id.clone(),
            instruction: self.instruction.clone(),
            parent_ids: self.parent_ids.clone(),
            created_at: self.created_at,
            archived: !self.is_active(),
            issued: self.stats().issued,
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

    pub(super) fn archive(&self) {
        *self.status.lock() = CandidateStatus::Archived;
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
