//! The domain's port to durable storage: the [`StateStore`] trait and the plain records
//! it speaks in.
//!
//! The in-memory registry ([`super::Sessions`]) is what the request path reads. Every
//! acknowledged change is first handed to the store: a change whose write fails is not
//! applied, and the client gets a 503 to retry. Rewards are committed outside the
//! session's lock, so a burst of rewards shares commits and never stalls proxied calls.
//! Rollouts are handed over write-behind (the call was already answered; nothing waits on
//! the disk).
//!
//! The records are plain data, so that a store (SQLite today, PostgreSQL later, in
//! [`crate::store`]) depends on the domain's values and never on its live objects.

use serde_json::Value;
use std::sync::Arc;
use time::OffsetDateTime;

use super::events::Event;
use super::reward::Reward;
use super::settings::GepaSettings;
use super::status::{ArchiveReason, CandidateStatus, Status};
use crate::rewrite::CapturedMessage;

/// Why a store write failed. The message names the cause, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

/// A session as the store records it when it is created, and gives it back at start-up.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub seq: u64,
    pub job_id: String,
    pub status: Status,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub settings: GepaSettings,
    pub metadata: Option<Value>,
    /// The candidate an operator pinned, if any.
    pub pinned_candidate_id: Option<String>,
    /// In creation order; the first is the baseline.
    pub candidates: Vec<CandidateRecord>,
    /// Restore only: in the order their records were last written (at most the newest
    /// ones the store keeps for serving).
    pub rollouts: Vec<RolloutRecord>,
    /// Restore only: in the order they were counted.
    pub rewards: Vec<RewardRecord>,
    /// Restore only: the newest events, in order.
    pub events: Vec<Event>,
}

/// A candidate instruction as the store keeps it.
#[derive(Debug, Clone)]
pub struct CandidateRecord {
    pub id: Arc<str>,
    pub instruction: Arc<str>,
    pub parent_ids: Vec<String>,
    pub created_at: OffsetDateTime,
    pub status: CandidateStatus,
    /// Why it was archived; `None` unless archived, and for candidates archived before the
    /// reason was kept (schema 2).
    pub archived_reason: Option<ArchiveReason>,
    /// Rollouts it served (as far as their records were flushed).
    pub issued: u64,
    /// Its failed calls, as far as its rollouts' records were flushed (restore only; a
    /// rollout record counts a rate-limited or abandoned call as failed too).
    pub calls_failed: u64,
}

/// One rollout's record, written behind when one of its calls ends. The ids and the
/// captured text are shared with the session, not copied: a copy would be allocated on a
/// request thread and freed on the store's writer.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    pub session_id: Arc<str>,
    pub id: Arc<str>,
    pub candidate_id: Arc<str>,
    pub correlation_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub calls_ok: u32,
    pub calls_failed: u32,
    /// The last call's non-system messages, each capped.
    pub input: Arc<[CapturedMessage]>,
    /// The last successful call's reply text, capped.
    pub output: Option<String>,
}

/// A counted reward, as the store gives it back at start-up.
#[derive(Debug, Clone)]
pub struct RewardRecord {
    pub rollout_id: String,
    pub candidate_id: String,
    pub reward: Reward,
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
    /// A new session with its baseline candidate, before it is visible or acknowledged.
    fn session_created(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// A lifecycle change, before it is applied.
    fn status_changed(&self, session_id: &str, status: Status) -> Result<(), StoreError>;
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
    fn candidate_added(
        &self,
        session_id: &str,
        candidate: &CandidateRecord,
    ) -> Result<(), StoreError>;
    /// A candidate's new status (archived: pruned, replaced, failing, by an operator;
    /// approved; restored), before it takes effect. `reason` is the archive's.
    fn candidate_status_changed(
        &self,
        session_id: &str,
        candidate_id: &str,
        status: CandidateStatus,
        reason: Option<ArchiveReason>,
    ) -> Result<(), StoreError>;
    /// A session deleted by an operator, with everything the store keeps of it, before it
    /// leaves memory.
    fn session_deleted(&self, session_id: &str) -> Result<(), StoreError>;
    /// An event of the session, after the change it records. Committed like the change
    /// (events are rare); a failure is logged, the change stays.
    fn event_recorded(&self, session_id: &str, event: &Event);
    /// The candidate an operator pinned (`None`: unpinned), before it takes effect.
    fn pin_changed(&self, session_id: &str, candidate_id: Option<&str>) -> Result<(), StoreError>;
    /// A finished call's rollout record, write-behind: must not block.
    fn rollout_finished(&self, rollout: RolloutRecord);
}
