//! The session's side of proposals: when one is due, handing out the job, booking its
//! outcome, and pruning.

use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

use super::{Session, SessionState};
use crate::gepa::candidate::Candidate;
use crate::gepa::guard;
use crate::gepa::optimizer::{self, ProposalJob};
use crate::config::Review;
use crate::gepa::status::{ArchiveReason, CandidateStatus, Status};

impl Session {
    /// Whether the proposal trigger fires (see [`super::optimizer`]).
    pub(super) fn proposal_due(&self, st: &SessionState, now: Instant) -> bool {
        st.status == Status::Started
            && self.env.optimizer.disabled_reason.is_none()
            && !self.awaits_review(st)
            // A pin holds traffic on one candidate: new proposals then only make sense
            // for an operator who reviews them.
            && (st.pinned.is_none() || self.env.optimizer.review == Review::Manual)
            && st
                .optimizer
                .due(self.settings.online_proposer_min_rollouts, true, now)
            && (self.pool_has_free_slot(st) || self.replaceable(st).is_some())
    }

    /// In manual review, one proposal waits for the operator at a time: the next is
    /// proposed once it is approved or archived.
    fn awaits_review(&self, st: &SessionState) -> bool {
        self.env.optimizer.review == Review::Manual
            && st
                .candidates
                .iter()
                .any(|c| c.status() == CandidateStatus::Pending)
    }

    fn pool_has_free_slot(&self, st: &SessionState) -> bool {
        let active = st.candidates.iter().filter(|c| c.is_active()).count();
        active < self.settings.online_proposer_max_candidates as usize
    }

    /// The candidate a full pool gives up for the next proposal.
    fn replaceable(&self, st: &SessionState) -> Option<Arc<Candidate>> {
        optimizer::weakest(&st.candidates, self.env.selector.policy.min_rollouts)
            .filter(|c| !st.is_pinned(c))
    }

    /// Hands out the next proposal when one is due, marking it in flight.
    pub fn take_proposal_job(&self, now: Instant) -> Option<ProposalJob> {
        let mut st = self.state.lock();
        if !self.proposal_due(&st, now) {
            return None;
        }
        if !self.pool_has_free_slot(&st) {
            // A full pool replaces its weakest judged candidate instead of freezing.
            let weakest = self.replaceable(&st)?;
            if !self.archive(&weakest, ArchiveReason::Replaced) {
                return None;
            }
        }
        let SessionState {
            candidates,
            optimizer,
            ..
        } = &mut *st;
        optimizer.start_job(
            candidates,
            &self.env.optimizer,
            &self.settings.proposer_model,
            &mut rand::thread_rng(),
        )
    }

    /// Books a proposal's outcome: `Ok(instruction)` becomes a new candidate unless it is
    /// empty or an exact duplicate; an `Err` is counted and retried after a back-off.
    /// Returns the new candidate's id.
    pub fn finish_proposal(
        &self,
        job: &ProposalJob,
        result: Result<String, String>,
    ) -> Option<String> {
        // Checked before taking the lock: the copy check reads every example's text.
        let max_bytes = self.env.optimizer.max_instruction_bytes;
        let refused = match &result {
            Ok(text) => guard::rejection(text.trim(), job, max_bytes),
            Err(_) => None,
        };
        let mut st = self.state.lock();
        let now = Instant::now();
        if let Some(reason) = refused {
            st.optimizer.rejected(reason);
            return None;
        }
        let instruction = match result {
            Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
            Ok(_) => {
                st.optimizer.rejected("the proposal was empty".into());
                return None;
            }
            Err(e) => {
                st.optimizer.failed(e, now);
                return None;
            }
        };
        if st
            .candidates
            .iter()
            .any(|c| c.instruction.trim() == instruction)
        {
            st.optimizer
                .rejected("the proposal duplicates an existing candidate".into());
            return None;
        }
        let id = format!("cand_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let candidate = Arc::new(Candidate::new(
            id.as_str().into(),
            instruction.into(),
            job.parent_ids(),
        ));
        if self.env.optimizer.review == Review::Manual {
            // Recorded as pending: never served until an operator approves it.
            candidate.set_status(CandidateStatus::Pending, None);
        }
        if let Err(e) = self
            .env
            .store
            .candidate_added(&self.id, &candidate.record())
        {
            st.optimizer
                .failed(format!("the store refused the candidate: {}", e.0), now);
            return None;
        }
        st.candidates.push(candidate);
        st.optimizer.accepted(job);
        st.updated_at = OffsetDateTime::now_utc();
        Some(id)
    }

    /// Archives the candidates the pruning rule rejects (see [`super::optimizer::prune`]).
    pub(super) fn prune(&self, st: &mut SessionState) {
        let losers = optimizer::prune(
            &st.candidates,
            self.settings.online_prune_threshold,
            self.settings.online_prune_min_rollouts,
        );
        for c in losers.iter().filter(|c| !st.is_pinned(c)) {
            self.archive(c, ArchiveReason::Pruned);
        }
    }
}
