//! The store that keeps nothing: state lives only in the process's memory
//! (`storage.backend: memory`).

use crate::gepa::store::{
    CandidateRecord, RewardCommit, RewardWrite, RolloutRecord, SessionRecord, StateStore,
    StoreError, StoredRollout,
};
use crate::gepa::status::{ArchiveReason, CandidateStatus};
use crate::gepa::events::Event;
use crate::gepa::Status;

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
    fn session_created(&self, _: &SessionRecord) -> Result<(), StoreError> {
        Ok(())
    }
    fn status_changed(&self, _: &str, _: Status) -> Result<(), StoreError> {
        Ok(())
    }
    async fn reward_recorded(&self, _: RewardWrite) -> Result<RewardCommit, StoreError> {
        Ok(RewardCommit::Inserted)
    }
    fn lookup_rollout(&self, _: &str, _: &str) -> Result<Option<StoredRollout>, StoreError> {
        Ok(None)
    }
    fn candidate_added(&self, _: &str, _: &CandidateRecord) -> Result<(), StoreError> {
        Ok(())
    }
    fn candidate_status_changed(
        &self,
        _: &str,
        _: &str,
        _: CandidateStatus,
        _: Option<ArchiveReason>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    fn session_deleted(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn event_recorded(&self, _: &str, _: &Event) {}
    fn pin_changed(&self, _: &str, _: Option<&str>) -> Result<(), StoreError> {
        Ok(())
    }
    fn rollout_finished(&self, _: RolloutRecord) {}
}
