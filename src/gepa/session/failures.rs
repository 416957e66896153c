//! Failure-aware serving: a candidate whose upstream calls fail while the other candidates'
//! succeed stops being served, and is archived (`archived_reason: "upstream_failures"`).
//!
//! - After [`FAILURE_STREAK`] failed calls in a row a candidate is *suspended*: it is not
//!   served while any active candidate is not suspended. So a candidate the upstream
//!   refuses (its instruction trips a filter, breaks a schema) costs at most that many
//!   failed calls, with or without rewards.
//! - A suspended candidate is archived as soon as another candidate's call succeeds: the
//!   upstream works, the failures were the candidate's own.
//! - When every active candidate is suspended, the upstream is failing for all of them
//!   alike (an outage): every streak is forgiven and nothing is archived.
//! - A candidate that fails intermittently is archived when, over at least
//!   [`RATE_MIN_CALLS`] of its calls and as many of the others', its failure rate is at
//!   least [`RATE_FLOOR`] and [`RATE_FACTOR`] times the others'.
//!
//! The last active candidate is never archived. An outage that begins just as a new
//! candidate is suspended and ends before any other candidate is tried can archive it;
//! the operator can restore it (issue 13's candidate operations).

use std::sync::Arc;
use std::time::Instant;

use super::{Session, SessionState};
use crate::gepa::candidate::{CallVerdict, Candidate};
use crate::gepa::status::ArchiveReason;

/// Failed calls in a row after which a candidate is suspended.
pub(crate) const FAILURE_STREAK: u32 = 5;
/// Calls (of the candidate, and of the others) before failure rates are compared.
const RATE_MIN_CALLS: u64 = 20;
/// The failure rate below which a candidate is never archived for its rate.
const RATE_FLOOR: f64 = 0.5;
/// How many times the others' failure rate a candidate's must be to be archived.
const RATE_FACTOR: f64 = 4.0;

impl Session {
    /// Counts how a call of `served` ended, and archives the candidates that this shows
    /// to be failing.
    pub(super) fn judge_call(
        &self,
        st: &mut SessionState,
        served: &Arc<Candidate>,
        verdict: CallVerdict,
        now: Instant,
    ) {
        served.record_call(verdict, now);
        for candidate in st.failing_candidates(served, verdict) {
            self.archive(st, &candidate, ArchiveReason::UpstreamFailures);
        }
    }
}

impl SessionState {
    fn active(&self) -> impl Iterator<Item = &Arc<Candidate>> {
        self.candidates.iter().filter(|c| c.is_active())
    }

    /// The candidates to archive after a call of `served` ended with `verdict`.
    fn failing_candidates(&self, served: &Arc<Candidate>, verdict: CallVerdict) -> Vec<Arc<Candidate>> {
        match verdict {
            // The upstream works: the suspended candidates' failures were their own.
            CallVerdict::Succeeded => self
                .active()
                .filter(|c| !Arc::ptr_eq(c, served) && is_suspended(c) && !self.is_pinned(c))
                .cloned()
                .collect(),
            CallVerdict::Failed => {
                if self.active().all(|c| is_suspended(c)) {
                    // Every candidate fails alike: an outage, not a bad instruction.
                    self.active().for_each(|c| c.forgive_streak());
                    return Vec::new();
                }
                let leaves_one = self.active().count() > 1;
                (leaves_one && !self.is_pinned(served) && self.fails_far_more_often(served))
                    .then(|| served.clone())
                    .into_iter()
                    .collect()
            }
            CallVerdict::Inconclusive => Vec::new(),
        }
    }

    /// Whether `candidate`'s calls fail far more often than the other active candidates'.
    fn fails_far_more_often(&self, candidate: &Arc<Candidate>) -> bool {
        let own = candidate.calls();
        let (mut failed, mut total) = (0, 0);
        for other in self.active().filter(|c| !Arc::ptr_eq(c, candidate)) {
            let calls = other.calls();
            failed += calls.failed;
            total += calls.failed + calls.succeeded;
        }
        let own_total = own.failed + own.succeeded;
        if own_total < RATE_MIN_CALLS || total < RATE_MIN_CALLS {
            return false;
        }
        let own_rate = own.failed as f64 / own_total as f64;
        let others_rate = failed as f64 / total as f64;
        own_rate >= RATE_FLOOR && own_rate >= RATE_FACTOR * others_rate
    }

    /// The active candidates that may serve: the ones not suspended, or all of them when
    /// every one is (then the failures are an outage's, and serving goes on as before).
    pub(super) fn not_suspended(&self, candidates: Vec<Arc<Candidate>>) -> Vec<Arc<Candidate>> {
        if candidates.iter().all(|c| is_suspended(c)) {
            return candidates;
        }
        candidates.into_iter().filter(|c| !is_suspended(c)).collect()
    }
}

/// Whether `candidate` failed its last [`FAILURE_STREAK`] calls in a row.
pub(crate) fn is_suspended(candidate: &Candidate) -> bool {
    candidate.calls().streak >= FAILURE_STREAK
}
