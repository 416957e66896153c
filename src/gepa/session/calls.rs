//! Proxied calls: choosing the candidate, opening or reusing a rollout (correlation
//! pins), and booking how each call ended.

use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::{Session, SessionState};
use crate::gepa::candidate::{CallVerdict, Candidate};
use crate::gepa::error::GepaError;
use crate::gepa::optimizer;
use crate::gepa::reward::Reward;
use crate::gepa::rollout_id;
use crate::gepa::status::Status;
use crate::gepa::store::RolloutRecord;
use crate::rewrite::CapturedMessage;
/// One rollout: every call of a (session, correlation id) until its reward, or one
/// uncorrelated call.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub candidate: Arc<Candidate>,
    pub correlation_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub calls_in_flight: u32,
    pub calls_ok: u32,
    pub calls_failed: u32,
    pub reward: Option<Reward>,
    /// The last call's non-system messages, each capped (shared with the store's writer
    /// and the optimizer's examples, which serialize or read it later).
    pub input: Arc<[CapturedMessage]>,
    /// The last successful call's reply text, capped.
    pub output: Option<String>,
}

impl Rollout {
    /// A rollout whose first call has just started.
    fn opened(candidate: Arc<Candidate>, correlation_id: Option<&str>) -> Self {
        Rollout {
            candidate,
            correlation_id: correlation_id.map(str::to_string),
            created_at: OffsetDateTime::now_utc(),
            calls_in_flight: 1,
            calls_ok: 0,
            calls_failed: 0,
            reward: None,
            input: Arc::from([]),
            output: None,
        }
    }
}

/// The result of one proxied call, reported by the proxy when the exchange ends.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub verdict: CallVerdict,
    pub input: Vec<CapturedMessage>,
    pub output: Option<String>,
}

/// The candidate and rollout one proxied call runs under.
#[derive(Debug, Clone)]
pub struct CallTicket {
    pub rollout_id: Arc<str>,
    pub candidate_id: Arc<str>,
    pub instruction: Arc<str>,
}

#[derive(Debug, Clone)]
pub(super) struct CorrelationPin {
    pub(super) rollout_id: Arc<str>,
    pub(super) last_used: Instant,
}

impl Session {
    /// Starts one proxied call: reuses the open rollout of `correlation_id` when its
    /// candidate may still serve, else opens a new rollout on a freshly chosen candidate.
    pub fn begin_call(&self, correlation_id: Option<&str>) -> Result<CallTicket, GepaError> {
        let now = Instant::now();
        let mut st = self.state.lock();
        let ttl = self.env.correlation_ttl;
        st.sweep_expired_pins(now, ttl);
        let servable = st.servable();

        if let Some(corr) = correlation_id {
            if let Some(ticket) = st.reuse_pin(corr, &servable, now, ttl) {
                return Ok(ticket);
            }
        }

        let candidate = self
            .env
            .selector
            .choose(&servable, &mut rand::thread_rng())
            .cloned()
            .ok_or_else(|| GepaError::Internal("session has no candidate to serve".into()))?;
        let rollout_id = self.issue_rollout_id(&st, &candidate)?;
        candidate.record_issued();
        st.insert_rollout(
            self.env.rollouts_in_memory,
            rollout_id.clone(),
            Rollout::opened(candidate.clone(), correlation_id),
        );
        if let Some(corr) = correlation_id {
            st.pins.insert(
                corr.to_string(),
                CorrelationPin {
                    rollout_id: rollout_id.clone(),
                    last_used: now,
                },
            );
        }
        Ok(CallTicket {
            rollout_id,
            candidate_id: candidate.id.clone(),
            instruction: candidate.instruction.clone(),
        })
    }

    /// A fresh rollout id naming `candidate` by its place in the session's list (which
    /// only grows), authenticated with the store's key.
    fn issue_rollout_id(
        &self,
        st: &SessionState,
        candidate: &Arc<Candidate>,
    ) -> Result<Arc<str>, GepaError> {
        let key = self
            .env
            .store
            .rollout_key()
            .ok_or(GepaError::StoreNotOpen)?;
        let position = st
            .candidates
            .iter()
            .position(|c| Arc::ptr_eq(c, candidate))
            .ok_or_else(|| {
                GepaError::Internal("the chosen candidate is not in the session".into())
            })?;
        Ok(rollout_id::issue(&key, &self.id, position).into())
    }

    /// Records how a call that [`Session::begin_call`] started ended.
    pub fn finish_call(&self, rollout_id: &Arc<str>, outcome: CallOutcome) {
        let mut st = self.state.lock();
        let verdict = outcome.verdict;
        if let Some(r) = st.rollouts.get_mut(&**rollout_id) {
            r.calls_in_flight = r.calls_in_flight.saturating_sub(1);
            if verdict == CallVerdict::Succeeded {
                r.calls_ok += 1;
                r.output = outcome.output;
            } else {
                r.calls_failed += 1;
            }
            r.input = outcome.input.into();
            self.env.store.rollout_finished(RolloutRecord {
                session_id: self.id.clone(),
                id: rollout_id.clone(),
                candidate_id: r.candidate.id.clone(),
                correlation_id: r.correlation_id.clone(),
                created_at: r.created_at,
                calls_ok: r.calls_ok,
                calls_failed: r.calls_failed,
                input: r.input.clone(),
                output: r.output.clone(),
            });
            let served = r.candidate.clone();
            self.judge_call(&mut st, &served, verdict, Instant::now());
        }
    }
}

impl SessionState {
    /// The candidates this status may serve (contract table): active ones while running
    /// (but not those suspended for failing, see [`super::failures`]),
    /// the best (else the baseline) once completed, the baseline once cancelled.
    pub(super) fn servable(&self) -> Vec<Arc<Candidate>> {
        let baseline = || {
            self.candidates
                .iter()
                .filter(|c| c.is_baseline())
                .cloned()
                .collect()
        };
        match self.status {
            // The operator's pin wins, over suspension for failures too.
            Status::Started | Status::Paused if self.pinned.is_some() => {
                self.pinned.iter().cloned().collect()
            }
            Status::Started | Status::Paused => self.not_suspended(
                self.candidates
                    .iter()
                    .filter(|c| c.is_active())
                    .cloned()
                    .collect(),
            ),
            Status::Completed => match optimizer::best_candidate(&self.candidates) {
                Some((c, _)) => vec![c],
                None => baseline(),
            },
            Status::Cancelled => baseline(),
        }
    }

    pub(super) fn reuse_pin(
        &mut self,
        corr: &str,
        servable: &[Arc<Candidate>],
        now: Instant,
        ttl: Duration,
    ) -> Option<CallTicket> {
        let pin = self.pins.get_mut(corr)?;
        if now.duration_since(pin.last_used) > ttl {
            return None;
        }
        let rollout = self.rollouts.get_mut(&pin.rollout_id)?;
        if rollout.reward.is_some() || !servable.iter().any(|c| Arc::ptr_eq(c, &rollout.candidate))
        {
            return None;
        }
        pin.last_used = now;
        rollout.calls_in_flight += 1;
        Some(CallTicket {
            rollout_id: pin.rollout_id.clone(),
            candidate_id: rollout.candidate.id.clone(),
            instruction: rollout.candidate.instruction.clone(),
        })
    }

    pub(super) fn insert_rollout(&mut self, limit: usize, id: Arc<str>, rollout: Rollout) {
        self.rollout_count += 1;
        self.rollouts.insert(id.clone(), rollout);
        self.rollout_order.push_back(id);
        // Evict the oldest, but not a rollout whose call is still running (its record is
        // written when the call ends): such a one goes to the back. Bounded, so a session
        // of only long calls still stays within a few entries of its limit.
        let mut spared = 0;
        while self.rollout_order.len() > limit {
            let Some(old) = self.rollout_order.pop_front() else {
                break;
            };
            // One lookup in the common case; a running one (rare) is put back.
            let Some(evicted) = self.rollouts.remove(&old) else {
                continue;
            };
            if evicted.calls_in_flight > 0 && spared < 8 {
                spared += 1;
                self.rollouts.insert(old.clone(), evicted);
                self.rollout_order.push_back(old);
            }
        }
    }

    /// Drops expired correlation pins now and then, so abandoned conversations do not
    /// accumulate. Amortised: one scan per 1024 calls.
    pub(super) fn sweep_expired_pins(&mut self, now: Instant, ttl: Duration) {
        self.calls_since_sweep += 1;
        if self.calls_since_sweep < 1024 {
            return;
        }
        self.calls_since_sweep = 0;
        self.pins
            .retain(|_, p| now.duration_since(p.last_used) <= ttl);
    }
}
