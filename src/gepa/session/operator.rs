//! What an operator does to a session's candidates: read them, add a hand-written one,
//! approve a pending proposal, archive one. Each change is persisted before it applies.

use serde_json::Value;
use std::sync::Arc;
use time::OffsetDateTime;

use super::{Session, SessionState};
use crate::gepa::candidate::Candidate;
use crate::gepa::error::GepaError;
use crate::gepa::events::{detail, Event};
use crate::gepa::status::{ArchiveReason, CandidateStatus};

impl Session {
    /// The candidate with id `cid`.
    pub fn candidate(&self, cid: &str) -> Result<Arc<Candidate>, GepaError> {
        self.state
            .lock()
            .candidates
            .iter()
            .find(|c| &*c.id == cid)
            .cloned()
            .ok_or(GepaError::UnknownCandidate)
    }

    /// Up to `limit` candidates in creation order from position `cursor`, with `status`
    /// if given, and the cursor of the next page.
    pub fn candidates_page(
        &self,
        status: Option<CandidateStatus>,
        limit: usize,
        cursor: usize,
    ) -> (Vec<Arc<Candidate>>, Option<usize>) {
        let st = self.state.lock();
        let mut matching = st
            .candidates
            .iter()
            .enumerate()
            .skip(cursor)
            .filter(|(_, c)| status.is_none_or(|s| c.status() == s));
        let items: Vec<(usize, Arc<Candidate>)> = matching
            .by_ref()
            .take(limit)
            .map(|(i, c)| (i, c.clone()))
            .collect();
        let next = matching
            .next()
            .and(items.last().map(|(i, _)| i + 1));
        (items.into_iter().map(|(_, c)| c).collect(), next)
    }

    /// Adds a hand-written candidate, active at once (an operator's instruction needs no
    /// review), with no parents.
    pub fn add_candidate(&self, instruction: &str) -> Result<Arc<Candidate>, GepaError> {
        let instruction = instruction.trim();
        let max = self.env.optimizer.max_instruction_bytes;
        if instruction.is_empty() {
            return Err(GepaError::InvalidInstruction("must not be empty".into()));
        }
        if instruction.len() > max {
            return Err(GepaError::InvalidInstruction(format!(
                "must be at most proposer.max_instruction_bytes = {max} bytes"
            )));
        }
        let mut st = self.state.lock();
        if st.candidates.iter().any(|c| c.instruction.trim() == instruction) {
            return Err(GepaError::DuplicateCandidate);
        }
        let id = format!("cand_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let candidate = Arc::new(Candidate::new(id.into(), instruction.into(), Vec::new()));
        self.env
            .store
            .candidate_added(&self.id, &candidate.record())?;
        st.candidates.push(candidate.clone());
        st.updated_at = OffsetDateTime::now_utc();
        let detail = detail([("candidate_id", Value::from(&*candidate.id))]);
        self.record_event(&mut st, "candidate_added", detail);
        Ok(candidate)
    }

    /// A pending proposal becomes active (it is served from the next call on).
    pub fn approve(&self, cid: &str) -> Result<Arc<Candidate>, GepaError> {
        let candidate = self.candidate(cid)?;
        let mut st = self.state.lock();
        let status = candidate.status();
        if status != CandidateStatus::Pending {
            return Err(GepaError::CandidateNotPending(status));
        }
        self.set_candidate_status(&candidate, CandidateStatus::Active, None)?;
        st.updated_at = OffsetDateTime::now_utc();
        let detail = detail([("candidate_id", Value::from(&*candidate.id))]);
        self.record_event(&mut st, "candidate_approved", detail);
        Ok(candidate)
    }

    /// Stops serving a candidate (archived by the operator; a pending one is rejected so).
    /// Archiving an archived candidate changes nothing.
    pub fn archive_by_operator(&self, cid: &str) -> Result<Arc<Candidate>, GepaError> {
        let candidate = self.candidate(cid)?;
        let mut st = self.state.lock();
        if st.is_pinned(&candidate) {
            return Err(GepaError::CandidatePinned);
        }
        match candidate.status() {
            CandidateStatus::Archived => return Ok(candidate),
            CandidateStatus::Active if st.candidates.iter().filter(|c| c.is_active()).count() == 1 => {
                return Err(GepaError::LastActiveCandidate)
            }
            CandidateStatus::Active | CandidateStatus::Pending => {}
        }
        let reason = ArchiveReason::Operator;
        self.set_candidate_status(&candidate, CandidateStatus::Archived, Some(reason))?;
        st.updated_at = OffsetDateTime::now_utc();
        self.record_archive(&mut st, &candidate, reason);
        Ok(candidate)
    }

    /// Pins `cid`: while the session runs, every call gets it. An archived or pending
    /// candidate becomes active again. Rewards still count; proposals go on only in
    /// manual review.
    pub fn pin(&self, cid: &str) -> Result<(), GepaError> {
        let candidate = self.candidate(cid)?;
        let mut st = self.state.lock();
        if candidate.status() != CandidateStatus::Active {
            self.set_candidate_status(&candidate, CandidateStatus::Active, None)?;
        }
        self.env.store.pin_changed(&self.id, Some(&candidate.id))?;
        let detail = detail([("candidate_id", Value::from(&*candidate.id))]);
        st.pinned = Some(candidate);
        st.updated_at = OffsetDateTime::now_utc();
        self.record_event(&mut st, "pinned", detail);
        Ok(())
    }

    /// Ends the pin: traffic is allocated among the active candidates again.
    pub fn unpin(&self) -> Result<(), GepaError> {
        let mut st = self.state.lock();
        if st.pinned.is_none() {
            return Ok(());
        }
        self.env.store.pin_changed(&self.id, None)?;
        let unpinned = st.pinned.take().map(|c| c.id.to_string());
        st.updated_at = OffsetDateTime::now_utc();
        let detail = detail([("candidate_id", Value::from(unpinned))]);
        self.record_event(&mut st, "unpinned", detail);
        Ok(())
    }

    /// Up to `limit` of the session's events after `since_seq`, and the `since_seq` to
    /// ask with next (see [`crate::gepa::events::EventLog::since`]).
    pub fn events(&self, since_seq: u64, limit: usize) -> (Vec<Event>, u64) {
        self.state.lock().events.since(since_seq, limit)
    }
}

impl SessionState {
    pub(super) fn is_pinned(&self, candidate: &Candidate) -> bool {
        self.pinned.as_deref().is_some_and(|p| std::ptr::eq(p, candidate))
    }
}
