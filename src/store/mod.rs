//! The interface through which session state is made durable.
//!
//! The in-memory registry ([`crate::sessions::Sessions`]) is what the request path reads.
//! Every acknowledged change is first handed to a [`StateStore`]: a change whose write
//! fails is not applied, and the client gets a 503 to retry. Rewards are committed outside
//! the session's lock, so a burst of rewards shares commits and never stalls proxied calls.
//! Rollouts are handed over write-behind (the call was already answered; nothing waits on
//! the disk).
//!
//! Two stores implement it: [`MemoryStore`] keeps nothing beyond the process, and
//! [`sqlite::SqliteStore`] is the embedded durable store (`storage.path`), from which a
//! restarted gateway restores its sessions ([`RestoredSession`]).

pub mod sqlite;

use serde_json::Value;
use std::sync::Arc;
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

/// What the store reports to Prometheus (registered by [`crate::metrics::Metrics`]).
#[derive(Clone)]
pub struct StoreProbe {
    /// Writes queued for the writer thread and not yet taken.
    pub queue_depth: prometheus::IntGauge,
    /// Time to write and commit one batch (one fsync).
    pub commit_seconds: prometheus::Histogram,
    /// Writes per committed batch: how many commits group commit saves.
    pub batch_size: prometheus::Histogram,
}

impl StoreProbe {
    pub fn new() -> prometheus::Result<Self> {
        use prometheus::{Histogram, HistogramOpts, IntGauge};
        Ok(StoreProbe {
            queue_depth: IntGauge::new(
                "gepa_store_queue_depth",
                "Writes queued for the store's writer and not yet taken.",
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "gepa_store_commit_seconds",
                    "Time to write and commit one batch of store writes.",
                )
                .buckets(vec![
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0,
                ]),
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "gepa_store_batch_writes",
                    "Writes committed together in one store transaction.",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                ]),
            )?,
        })
    }

    /// The collectors, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.queue_depth.clone()),
            Box::new(self.commit_seconds.clone()),
            Box::new(self.batch_size.clone()),
        ]
    }
}

/// A first reward on its way to the store.
#[derive(Debug, Clone)]
pub struct RewardWrite {
    pub session_id: String,
    pub rollout_id: String,
    pub candidate_id: String,
    pub reward: Reward,
    /// Also record the rollout itself (its record was lost in a crash before it was
    /// flushed; the gateway recognised the id by its MAC), so that counts add up.
    pub with_rollout_record: bool,
}

/// What committing a first reward found.
#[derive(Debug, Clone, PartialEq)]
pub enum RewardCommit {
    /// The reward is durable and counts.
    Inserted,
    /// The rollout already had this reward in the store (written by a concurrent request
    /// or before a restart): the new one does not count.
    Existing(Reward),
}

/// What the store knows of a rollout that is no longer in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRollout {
    /// `(candidate_id, calls_ok)` when the rollout's record was flushed.
    pub record: Option<(String, u32)>,
    /// Its reward, if it has one.
    pub reward: Option<Reward>,
}

#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// The key that rollout ids are authenticated with (kept in the store, so ids
    /// issued before a restart stay recognisable). `None` until the store is open.
    fn rollout_key(&self) -> Option<[u8; 32]>;
    /// A new session, before it is visible or acknowledged.
    fn session_created(&self, session: &Session) -> Result<(), StoreError>;
    /// A lifecycle change, before it is applied.
    fn status_changed(&self, session: &Session, status: Status) -> Result<(), StoreError>;
    /// The first reward of a rollout, before it counts. Resolves once committed; many
    /// concurrent rewards share one commit. Must not be awaited under a session's lock.
    async fn reward_recorded(&self, write: RewardWrite) -> Result<RewardCommit, StoreError>;
    /// A rollout that memory no longer holds. `Ok(None)`: this store does not keep
    /// rollouts beyond memory.
    fn lookup_rollout(
        &self,
        session_id: &str,
        rollout_id: &str,
    ) -> Result<Option<StoredRollout>, StoreError>;
    /// A new candidate from the proposer, before it serves.
    fn candidate_added(&self, session: &Session, candidate: &Candidate) -> Result<(), StoreError>;
    /// A candidate archived by pruning, before it stops serving.
    fn candidate_archived(&self, session: &Session, candidate_id: &str) -> Result<(), StoreError>;
    /// A finished call's rollout record, write-behind: must not block.
    fn rollout_finished(&self, session: &Session, rollout_id: &Arc<str>, rollout: &Rollout);
}

/// Keeps nothing: state lives only in the process's memory.
#[derive(Debug, Clone, Copy)]
pub struct MemoryStore {
    rollout_key: [u8; 32],
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            rollout_key: rand::random(),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    fn rollout_key(&self) -> Option<[u8; 32]> {
        Some(self.rollout_key)
    }
    fn session_created(&self, _: &Session) -> Result<(), StoreError> {
        Ok(())
    }
    fn status_changed(&self, _: &Session, _: Status) -> Result<(), StoreError> {
        Ok(())
    }
    async fn reward_recorded(&self, _: RewardWrite) -> Result<RewardCommit, StoreError> {
        Ok(RewardCommit::Inserted)
    }
    fn lookup_rollout(&self, _: &str, _: &str) -> Result<Option<StoredRollout>, StoreError> {
        Ok(None)
    }
    fn candidate_added(&self, _: &Session, _: &Candidate) -> Result<(), StoreError> {
        Ok(())
    }
    fn candidate_archived(&self, _: &Session, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn rollout_finished(&self, _: &Session, _: &Arc<str>, _: &Rollout) {}
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
    /// In the order their records were last written (at most the newest ones the store
    /// keeps for serving).
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
