//! Rebuilding a session from the durable store's records at start-up.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

use super::calls::{CorrelationPin, Rollout};
use super::{Session, SessionState};
use crate::gepa::candidate::Candidate;
use crate::gepa::env::SessionEnv;
use crate::gepa::optimizer;
use crate::gepa::store::{RolloutRecord, SessionRecord};

impl Session {
    /// Rebuilds a session from the durable store: candidates and their statistics, the
    /// rollouts that can still be rewarded (with their correlation pins), the rewards,
    /// and the optimizer's score table. `None` for a record without candidates.
    pub(in crate::gepa) fn restore(r: SessionRecord, env: Arc<SessionEnv>) -> Option<Self> {
        let candidates: Vec<Arc<Candidate>> = r
            .candidates
            .into_iter()
            .map(|c| Arc::new(Candidate::restored(c)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let mut st = SessionState::new(r.status, r.updated_at, candidates);
        st.pinned = r.pinned_candidate_id.and_then(|id| st.candidate(&id));
        for event in r.events {
            st.events.restore(event);
        }
        let now = Instant::now();
        for ro in r.rollouts {
            st.restore_rollout(ro, now);
        }
        for rw in r.rewards {
            let Some(candidate) = st.candidate(&rw.candidate_id) else {
                continue;
            };
            st.count_reward(&rw.rollout_id, &candidate, rw.reward);
        }
        let proposals = st.candidates.len().saturating_sub(1) as u64;
        st.optimizer.restored(proposals);
        let best = optimizer::best_candidate(&st.candidates).map(|(c, _)| c.id.clone());
        st.optimizer.best_is(best.as_deref());
        Some(Session {
            id: r.id.into(),
            job_id: r.job_id,
            created_at: r.created_at,
            metadata: r.metadata,
            settings: r.settings,
            seq: r.seq,
            env,
            state: Mutex::new(st),
        })
    }
}

impl SessionState {
    fn candidate(&self, id: &str) -> Option<Arc<Candidate>> {
        self.candidates.iter().find(|c| &*c.id == id).cloned()
    }

    /// Puts back a rollout that can still be rewarded, with its correlation pin.
    fn restore_rollout(&mut self, ro: RolloutRecord, now: Instant) {
        let Some(candidate) = self.candidate(&ro.candidate_id) else {
            return;
        };
        let id = ro.id;
        if let Some(corr) = &ro.correlation_id {
            let pin = CorrelationPin {
                rollout_id: id.clone(),
                last_used: now,
            };
            self.pins.insert(corr.clone(), pin);
        }
        let rollout = Rollout {
            candidate,
            correlation_id: ro.correlation_id,
            created_at: ro.created_at,
            calls_in_flight: 0,
            calls_ok: ro.calls_ok,
            calls_failed: ro.calls_failed,
            reward: None,
            input: ro.input,
            output: ro.output,
        };
        self.rollouts.insert(id.clone(), rollout);
        self.rollout_order.push_back(id);
    }
}
