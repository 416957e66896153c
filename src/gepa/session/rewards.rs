//! Rewards under the contract's rules: idempotent repeats, conflicts, rewards for
//! rollouts that memory no longer holds, and group-committed first rewards.

use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Session, SessionState};
use crate::gepa::candidate::Candidate;
use crate::gepa::error::GepaError;
use crate::gepa::optimizer::{self, RewardedExample};
use crate::gepa::reward::{Reward, RewardReply, RewardRequest};
use crate::gepa::rollout_id;
use crate::gepa::status::Transition;
use crate::gepa::store::{RewardCommit, RewardWrite};

/// A reward that has been decided: the rollout and candidate it counts for, and whether it
/// only repeated the reward already recorded (an idempotent retry, which counts nothing).
struct Settled {
    rollout_id: String,
    candidate_id: String,
    duplicate: bool,
}

/// What [`Session::reward_step`] decided.
enum RewardStep {
    /// An idempotent repeat of the recorded reward.
    Duplicate(Settled),
    /// Another request is committing this rollout's first reward.
    Wait(watch::Receiver<bool>),
    /// A first reward to commit.
    Commit(PendingReward),
    /// Memory does not hold the rollout; `by_mac` is the candidate its id names, if the
    /// id is authentic.
    Lookup {
        rollout_id: String,
        by_mac: Option<Arc<Candidate>>,
    },
}

/// What the store's record of a rollout that memory no longer holds decided.
enum FromStore {
    /// A first reward to commit.
    Commit(PendingReward),
    /// An idempotent repeat of the reward the store holds.
    Duplicate(Settled),
}

/// A first reward on its way to the store.
struct PendingReward {
    rollout_id: String,
    candidate: Arc<Candidate>,
    with_rollout_record: bool,
    /// Wakes requests waiting on this rollout (`None` outside memory: there, the store's
    /// primary key settles concurrent rewards).
    done: Option<watch::Sender<bool>>,
}

/// The message of a reward whose `rollout_id` this session never issued.
const NO_SUCH_ROLLOUT_ID: &str = "this session issued no rollout with that rollout_id";

fn same_reward(existing: &Reward, reward: &Reward) -> Result<(), GepaError> {
    if existing == reward {
        Ok(())
    } else {
        Err(GepaError::RewardConflict)
    }
}

impl Session {
    /// Applies a reward (and/or a stop) under the contract's rules, answering once the
    /// reward is durable. The work runs in its own task: a client that disconnects
    /// mid-commit cannot leave a committed reward uncounted.
    pub async fn reward(self: &Arc<Self>, req: RewardRequest) -> Result<RewardReply, GepaError> {
        let session = self.clone();
        tokio::spawn(async move { session.reward_task(req).await })
            .await
            .unwrap_or_else(|e| Err(GepaError::Internal(format!("the reward task failed: {e}"))))
    }

    async fn reward_task(&self, req: RewardRequest) -> Result<RewardReply, GepaError> {
        // Without a reward (a bare stop) only the lifecycle changes.
        let settled = match req.reward.clone() {
            Some(reward) => Some(self.settle_reward(&req, reward).await?),
            None => None,
        };
        let mut st = self.state.lock();
        if req.stop {
            self.apply_transition(&mut st, Transition::Stop)?;
        }
        let Some(settled) = settled else {
            return Ok(self.reply(&st, None, None, false));
        };
        st.updated_at = OffsetDateTime::now_utc();
        Ok(self.reply(
            &st,
            Some(settled.rollout_id),
            Some(settled.candidate_id),
            settled.duplicate,
        ))
    }

    /// Decides and, for a first reward, commits it.
    async fn settle_reward(
        &self,
        req: &RewardRequest,
        reward: Reward,
    ) -> Result<Settled, GepaError> {
        loop {
            let step = {
                let mut st = self.state.lock();
                self.reward_step(&mut st, req, &reward)?
            };
            let commit = match step {
                RewardStep::Duplicate(settled) => return Ok(settled),
                RewardStep::Wait(mut committed) => {
                    // Err: the committing task ended; either way, look again.
                    let _ = committed.wait_for(|done| *done).await;
                    continue;
                }
                RewardStep::Commit(commit) => commit,
                RewardStep::Lookup { rollout_id, by_mac } => {
                    match self.commit_from_store(req, &reward, rollout_id, by_mac)? {
                        FromStore::Commit(commit) => commit,
                        FromStore::Duplicate(settled) => return Ok(settled),
                    }
                }
            };
            return self.commit_reward(commit, reward).await;
        }
    }

    /// One look at the session under its lock: what to do with this reward.
    fn reward_step(
        &self,
        st: &mut SessionState,
        req: &RewardRequest,
        reward: &Reward,
    ) -> Result<RewardStep, GepaError> {
        if st.status.is_finished() {
            return Err(GepaError::RewardsClosed(st.status));
        }
        if let Some(committed) = req
            .rollout_id
            .as_deref()
            .and_then(|id| st.commit_in_progress(id))
        {
            return Ok(RewardStep::Wait(committed));
        }
        let rollout_id = match st.resolve_rollout(req) {
            Ok(id) => id,
            Err(GepaError::UnknownRollout(_)) if req.rollout_id.is_some() => {
                // Not in memory: evicted, or answered but lost in a crash before its
                // record was flushed. The store and the id itself can tell.
                let id = req.rollout_id.clone().unwrap_or_default();
                let by_mac = self
                    .env
                    .store
                    .rollout_key()
                    .and_then(|key| rollout_id::verify(&key, &self.id, &id))
                    .and_then(|position| st.candidates.get(position).cloned());
                return Ok(RewardStep::Lookup {
                    rollout_id: id,
                    by_mac,
                });
            }
            Err(e) => return Err(e),
        };
        if let Some(committed) = st.commit_in_progress(&rollout_id) {
            return Ok(RewardStep::Wait(committed));
        }
        let duplicate = st.check_reward(&rollout_id, req.candidate_id.as_deref(), reward)?;
        let candidate = st
            .rollouts
            .get(&rollout_id)
            .map(|r| r.candidate.clone())
            .ok_or(GepaError::UnknownRollout("unknown rollout"))?;
        if duplicate {
            return Ok(RewardStep::Duplicate(Settled {
                rollout_id: rollout_id.to_string(),
                candidate_id: candidate.id.to_string(),
                duplicate: true,
            }));
        }
        let (done, committed) = watch::channel(false);
        st.committing.insert(rollout_id.to_string(), committed);
        Ok(RewardStep::Commit(PendingReward {
            rollout_id: rollout_id.to_string(),
            candidate,
            with_rollout_record: false,
            done: Some(done),
        }))
    }

    /// A reward for a rollout memory no longer holds: decided from the store's record of
    /// it, else from its authenticated id.
    fn commit_from_store(
        &self,
        req: &RewardRequest,
        reward: &Reward,
        rollout_id: String,
        by_mac: Option<Arc<Candidate>>,
    ) -> Result<FromStore, GepaError> {
        let unknown = || GepaError::UnknownRollout(NO_SUCH_ROLLOUT_ID);
        let Some(stored) = self.env.store.lookup_rollout(&self.id, &rollout_id)? else {
            return Err(unknown());
        };
        let by_record = stored.record.as_ref().and_then(|(candidate_id, _)| {
            self.state
                .lock()
                .candidates
                .iter()
                .find(|c| *c.id == **candidate_id)
                .cloned()
        });
        let candidate = by_record.or(by_mac).ok_or_else(unknown)?;
        if let Some(cid) = req.candidate_id.as_deref() {
            if cid != &*candidate.id {
                return Err(GepaError::CandidateMismatch {
                    served: candidate.id.to_string(),
                    named: cid.to_string(),
                });
            }
        }
        if let Some(existing) = stored.reward {
            same_reward(&existing, reward)?;
            return Ok(FromStore::Duplicate(Settled {
                rollout_id,
                candidate_id: candidate.id.to_string(),
                duplicate: true,
            }));
        }
        if stored
            .record
            .as_ref()
            .is_some_and(|(_, calls_ok)| *calls_ok == 0)
        {
            return Err(GepaError::RolloutFailed);
        }
        Ok(FromStore::Commit(PendingReward {
            rollout_id,
            with_rollout_record: stored.record.is_none(),
            candidate,
            done: None,
        }))
    }

    /// Commits a first reward (sharing the commit with concurrent ones), then counts it.
    async fn commit_reward(
        &self,
        mut pending: PendingReward,
        reward: Reward,
    ) -> Result<Settled, GepaError> {
        let committed = self
            .env
            .store
            .reward_recorded(RewardWrite {
                session_id: self.id.to_string(),
                rollout_id: pending.rollout_id.clone(),
                candidate_id: pending.candidate.id.to_string(),
                reward: reward.clone(),
                with_rollout_record: pending.with_rollout_record,
            })
            .await;
        let mut st = self.state.lock();
        st.committing.remove(&pending.rollout_id);
        if let Some(done) = pending.done.take() {
            let _ = done.send(true);
        }
        let mut settled = Settled {
            rollout_id: pending.rollout_id.clone(),
            candidate_id: pending.candidate.id.to_string(),
            duplicate: false,
        };
        match committed? {
            RewardCommit::Inserted => {
                st.count_reward(&pending.rollout_id, &pending.candidate, reward);
                self.prune(&mut st);
                let best = optimizer::best_candidate(&st.candidates).map(|(c, _)| c.id.clone());
                st.optimizer.best_is(best.as_deref());
                if self.proposal_due(&st, Instant::now()) {
                    self.env.proposer_wake.notify_one();
                }
                Ok(settled)
            }
            // Another request (or process) recorded this rollout's reward first.
            RewardCommit::Existing(existing) => {
                same_reward(&existing, &reward)?;
                settled.duplicate = true;
                Ok(settled)
            }
        }
    }

    fn reply(
        &self,
        st: &SessionState,
        rollout_id: Option<String>,
        candidate_id: Option<String>,
        duplicate: bool,
    ) -> RewardReply {
        RewardReply {
            session_id: self.id.to_string(),
            rollout_id,
            candidate_id,
            reward_count: st.reward_count,
            status: st.status,
            duplicate,
        }
    }
}

impl SessionState {
    /// The commit another request is making of this rollout's first reward, if any. An
    /// entry whose committing task ended without clearing it (it panicked) is dropped
    /// here, so that waiters do not spin on it.
    fn commit_in_progress(&mut self, rollout_id: &str) -> Option<watch::Receiver<bool>> {
        let committed = self.committing.get(rollout_id)?;
        if committed.has_changed().is_err() {
            self.committing.remove(rollout_id);
            return None;
        }
        Some(committed.clone())
    }

    /// Finds the rollout a reward names: by id, else by the correlation's open rollout.
    fn resolve_rollout(&self, req: &RewardRequest) -> Result<Arc<str>, GepaError> {
        if let Some(id) = &req.rollout_id {
            return self
                .rollouts
                .get_key_value(id.as_str())
                .map(|(k, _)| k.clone())
                .ok_or(GepaError::UnknownRollout(NO_SUCH_ROLLOUT_ID));
        }
        if let Some(corr) = &req.correlation_id {
            return self.pins.get(corr).map(|p| p.rollout_id.clone()).ok_or(
                GepaError::UnknownRollout("no open rollout for that correlation_id"),
            );
        }
        Err(GepaError::MissingRollout)
    }

    /// Checks a reward against the rollout: `Ok(true)` for an idempotent repeat of the
    /// recorded reward, `Ok(false)` for a first reward that may be committed.
    fn check_reward(
        &self,
        rollout_id: &Arc<str>,
        candidate_id: Option<&str>,
        reward: &Reward,
    ) -> Result<bool, GepaError> {
        let Some(rollout) = self.rollouts.get(rollout_id) else {
            return Err(GepaError::UnknownRollout("unknown rollout"));
        };
        if let Some(cid) = candidate_id {
            if cid != &*rollout.candidate.id {
                return Err(GepaError::CandidateMismatch {
                    served: rollout.candidate.id.to_string(),
                    named: cid.to_string(),
                });
            }
        }
        if let Some(existing) = &rollout.reward {
            return same_reward(existing, reward).map(|()| true);
        }
        if rollout.calls_ok == 0 && rollout.calls_in_flight == 0 {
            return Err(GepaError::RolloutFailed);
        }
        Ok(false)
    }

    /// Counts a reward: the candidate's statistics, the optimizer's score table and
    /// reflection memory, the rollout (if still in memory), and its correlation pin.
    pub(super) fn count_reward(
        &mut self,
        rollout_id: &str,
        candidate: &Arc<Candidate>,
        reward: Reward,
    ) {
        candidate.record_reward(reward.outcome);
        // A reward without a seed is its own task instance.
        let instance = match &reward.seed {
            Some(Value::String(s)) => format!("s:{s}"),
            Some(seed) => format!("n:{seed}"),
            None => format!("r:{rollout_id}"),
        };
        let rollout = self.rollouts.get_mut(rollout_id);
        let (inputs, output) = rollout
            .as_ref()
            .map(|r| (r.input.clone(), r.output.clone()))
            .unwrap_or_default();
        self.optimizer.record(
            &candidate.id,
            &instance,
            RewardedExample {
                inputs,
                output,
                reward: reward.outcome,
                feedback: reward.feedback.clone(),
            },
        );
        self.reward_count += 1;
        let Some(rollout) = rollout else { return };
        rollout.reward = Some(reward);
        // The reward closes a correlated conversation: its next call opens a new rollout.
        if let Some(corr) = rollout.correlation_id.clone() {
            if self
                .pins
                .get(&corr)
                .is_some_and(|p| &*p.rollout_id == rollout_id)
            {
                self.pins.remove(&corr);
            }
        }
    }
}
