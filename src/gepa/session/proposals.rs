//! The session's side of proposals: when one is due, handing out the job, booking its
//! outcome, and pruning.

use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

use super::{Session, SessionState};
use crate::config::Review;
use crate::gepa::candidate::Candidate;
use crate::gepa::events::detail;
use crate::gepa::guard;
use crate::gepa::optimizer::{self, ProposalJob};
use crate::gepa::status::{ArchiveReason, CandidateStatus, Status};
use crate::reply::Usage;

impl Session {
    /// Whether the proposal trigger fires (see [`super::optimizer`]).
    pub(super) fn proposal_due(&self, st: &SessionState, now: Instant) -> bool {
        st.status == Status::Started
            && self.env.optimizer.disabled_reason.is_none()
            && !self.awaits_review(st)
            && !st.optimizer.exhausted(self.env.optimizer.max_proposals)
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
            if !self.archive(&mut st, &weakest, ArchiveReason::Replaced) {
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

    /// Books a proposal's outcome: `Ok(instruction)` becomes a new candidate (pending in
    /// manual review) unless the guard refuses it, it is empty, or it duplicates a
    /// candidate; such a rejection is counted, and an `Err` is counted and retried after
    /// a back-off. Either way an event says what happened. Returns the new candidate's id.
    pub fn finish_proposal(
        &self,
        job: &ProposalJob,
        result: Result<String, String>,
        usage: Option<Usage>,
    ) -> Option<String> {
        // Judged before taking the lock: the copy check reads every example's text.
        let judged = result.map(|text| {
            let text = text.trim().to_string();
            let max_bytes = self.env.optimizer.max_instruction_bytes;
            match guard::rejection(&text, job, max_bytes) {
                None if text.is_empty() => Err("the proposal was empty".to_string()),
                None => Ok(text),
                Some(reason) => Err(reason),
            }
        });
        let mut st = self.state.lock();
        if let Some(usage) = usage {
            st.optimizer.used(usage);
        }
        match judged {
            Ok(Ok(instruction)) => self.add_proposal(&mut st, job, instruction),
            Ok(Err(reason)) => {
                self.reject_proposal(&mut st, reason);
                None
            }
            Err(error) => {
                st.optimizer.failed(error.clone(), Instant::now());
                let detail = detail([("error", Value::from(error))]);
                self.record_event(&mut st, "proposal_failed", detail);
                None
            }
        }
    }

    fn reject_proposal(&self, st: &mut SessionState, reason: String) {
        st.optimizer.rejected(reason.clone());
        let detail = detail([("reason", Value::from(reason))]);
        self.record_event(st, "proposal_rejected", detail);
    }

    /// A proposal that passed the guard becomes a candidate, unless it duplicates one.
    fn add_proposal(
        &self,
        st: &mut SessionState,
        job: &ProposalJob,
        instruction: String,
    ) -> Option<String> {
        if st.candidates.iter().any(|c| c.instruction.trim() == instruction) {
            let reason = "the proposal duplicates an existing candidate".to_string();
            self.reject_proposal(st, reason);
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
        let stored = self.env.store.candidate_added(&self.id, &candidate.record());
        if let Err(e) = stored {
            let error = format!("the store refused the candidate: {}", e.0);
            st.optimizer.failed(error, Instant::now());
            return None;
        }
        let detail = detail([
            ("candidate_id", Value::from(id.as_str())),
            ("parent_ids", Value::from(job.parent_ids())),
            ("status", Value::from(candidate.status().as_str())),
        ]);
        st.candidates.push(candidate);
        st.optimizer.accepted(job);
        st.updated_at = OffsetDateTime::now_utc();
        self.record_event(st, "proposal_accepted", detail);
        Some(id)
    }

    /// Archives the candidates the pruning rule rejects (see [`super::optimizer::prune`]).
    pub(super) fn prune(&self, st: &mut SessionState) {
        let losers = optimizer::prune(
            &st.candidates,
            self.settings.online_prune_threshold,
            self.settings.online_prune_min_rollouts,
        );
        for c in losers {
            if !st.is_pinned(&c) {
                self.archive(st, &c, ArchiveReason::Pruned);
            }
        }
    }
}
