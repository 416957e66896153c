//! Rebuilding a session from the durable store's records at start-up.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::calls::{CorrelationPin, Rollout};
use super::{Session, SessionState};
use crate::gepa::candidate::Candidate;
use crate::gepa::env::SessionEnv;
use crate::gepa::optimizer::{self, OptimizerState};
use crate::gepa::store::SessionRecord;

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
        let mut st = SessionState {
            status: r.status,
            updated_at: r.updated_at,
            rollouts: HashMap::default(),
            rollout_order: VecDeque::new(),
            pins: HashMap::new(),
            committing: HashMap::new(),
            rollout_count: candidates.iter().map(|c| c.stats().issued).sum(),
            reward_count: 0,
            calls_since_sweep: 0,
            optimizer: OptimizerState::default(),
            candidates,
        };
        let find =
            |st: &SessionState, id: &str| st.candidates.iter().find(|c| &*c.id == id).cloned();
        let now = Instant::now();
        for ro in r.rollouts {
            let Some(candidate) = find(&st, &ro.candidate_id) else {
                continue;
            };
            let id = ro.id;
            if let Some(corr) = &ro.correlation_id {
                st.pins.insert(
                    corr.clone(),
                    CorrelationPin {
                        rollout_id: id.clone(),
                        last_used: now,
                    },
                );
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
            st.rollouts.insert(id.clone(), rollout);
            st.rollout_order.push_back(id);
        }
        for rw in r.rewards {
            let Some(candidate) = find(&st, &rw.candidate_id) else {
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
