//! The interface through which session state is made durable.
//!
//! The in-memory registry ([`crate::sessions::Sessions`]) is what the request path reads.
//! Every acknowledged change is first handed to a [`StateStore`]: a change whose write
//! fails is not applied, and the client gets a 503 to retry. Rollouts are handed over
//! write-behind (the call was already answered; nothing waits on the disk).
//!
//! Two stores implement it: [`MemoryStore`] keeps nothing beyond the process, and
//! [`sqlite::SqliteStore`] is the embedded durable store (`storage.path`), from which a
//! restarted gateway restores its sessions ([`RestoredSession`]).

pub mod sqlite;

use serde_json::Value;
use time::OffsetDateTime;

use crate::errors::ApiError;
use crate::rewrite::CapturedMessage;
use crate::sessions::{Candidate, GepaSettings, Reward, Rollout, Session, Status};

/// Why a store write failed. The message names the cause, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable {
            message: format!("the state store could not record the change: {}", e.0),
            retry_after_s: 1,
        }
    }
}

pub trait StateStore: Send + Sync {
    /// A new session, before it is visible or acknowledged.
    fn session_created(&self, session: &Session) -> Result<(), StoreError>;
    /// A lifecycle change, before it is applied.
    fn status_changed(&self, session: &Session, status: Status) -> Result<(), StoreError>;
    /// The first reward of a rollout, before it counts.
    fn reward_recorded(
        &self,
        session: &Session,
        rollout_id: &str,
        candidate_id: &str,
        reward: &Reward,
    ) -> Result<(), StoreError>;
    /// A new candidate from the proposer, before it serves.
    fn candidate_added(&self, session: &Session, candidate: &Candidate) -> Result<(), StoreError>;
    /// A candidate archived by pruning, before it stops serving.
    fn candidate_archived(&self, session: &Session, candidate_id: &str) -> Result<(), StoreError>;
    /// A finished call's rollout record, write-behind: must not block.
    fn rollout_finished(&self, session: &Session, rollout_id: &str, rollout: &Rollout);
}

/// Keeps nothing: state lives only in the process's memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStore;

impl StateStore for MemoryStore {
    fn session_created(&self, _: &Session) -> Result<(), StoreError> {
        Ok(())
    }
    fn status_changed(&self, _: &Session, _: Status) -> Result<(), StoreError> {
        Ok(())
    }
    fn reward_recorded(&self, _: &Session, _: &str, _: &str, _: &Reward) -> Result<(), StoreError> {
        Ok(())
    }
    fn candidate_added(&self, _: &Session, _: &Candidate) -> Result<(), StoreError> {
        Ok(())
    }
    fn candidate_archived(&self, _: &Session, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn rollout_finished(&self, _: &Session, _: &str, _: &Rollout) {}
}

/// A session as the durable store gives it back at start-up.
#[derive(Debug, Clone)]
pub struct RestoredSession {
    pub id: String,
    pub seq: u64,
    pub job_id: String,
    pub status: Status,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub settings: GepaSettings,
    pub metadata: Option<Value>,
    /// In creation order; the first is the baseline.
    pub candidates: Vec<RestoredCandidate>,
    /// In creation order (at most the newest ones the store keeps for serving).
    pub rollouts: Vec<RestoredRollout>,
    /// In the order they were counted.
    pub rewards: Vec<RestoredReward>,
}

#[derive(Debug, Clone)]
pub struct RestoredCandidate {
    pub id: String,
    pub instruction: String,
    pub parent_ids: Vec<String>,
    pub archived: bool,
    pub created_at: OffsetDateTime,
    /// Rollouts it served (as far as they were flushed).
    pub issued: u64,
}

#[derive(Debug, Clone)]
pub struct RestoredRollout {
    pub id: String,
    pub candidate_id: String,
    pub correlation_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub calls_ok: u32,
    pub calls_failed: u32,
    pub input: Vec<CapturedMessage>,
    pub output: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RestoredReward {
    pub rollout_id: String,
    pub candidate_id: String,
    pub reward: Reward,
}
