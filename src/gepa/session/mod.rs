//! One session: proxied calls and their rollouts, correlation pins, rewards, lifecycle.

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::allocation::ArmStats;
use super::candidate::Candidate;
use super::env::SessionEnv;
use super::error::GepaError;
use super::optimizer::{self, OptimizerState, ProposalJob, RewardedExample};
use super::reward::{Reward, RewardReply, RewardRequest};
use super::rollout_id;
use super::settings::{GepaSettings, NewSession};
use super::status::{Status, Transition};
use super::store::{RewardCommit, RewardWrite, RolloutRecord, SessionRecord, StoreError};
use crate::format::rfc3339;
use crate::rewrite::CapturedMessage;
use crate::routes::PublicUrls;
use tokio::sync::watch;

/// A session's figures for the metrics exposition.
#[derive(Debug, Clone)]
pub struct SessionMetrics {
    pub status: &'static str,
    /// How long ago a completed or cancelled session finished.
    pub finished_for: Option<Duration>,
    pub candidates: Vec<CandidateMetrics>,
    pub proposals: u64,
    pub failures: u64,
}

#[derive(Debug, Clone)]
pub struct CandidateMetrics {
    pub id: Arc<str>,
    pub active: bool,
    pub stats: ArmStats,
}

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

/// The result of one proxied call, reported by the proxy when the exchange ends.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The upstream answered 2xx and the whole response reached the client.
    pub ok: bool,
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

/// What [`Session::reward_step`] decided.
enum RewardStep {
    /// An idempotent repeat of the recorded reward.
    Duplicate {
        rollout_id: String,
        candidate_id: String,
    },
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

#[derive(Debug, Clone)]
struct CorrelationPin {
    rollout_id: Arc<str>,
    last_used: Instant,
}

/// The mutable part of a session, behind the session's own mutex.
#[derive(Debug)]
struct SessionState {
    status: Status,
    updated_at: OffsetDateTime,
    candidates: Vec<Arc<Candidate>>,
    /// Keyed by ids this gateway issued (random, so a fast hash without flooding
    /// resistance is safe here; client-chosen keys such as correlation ids keep SipHash).
    rollouts: HashMap<Arc<str>, Rollout, foldhash::fast::RandomState>,
    rollout_order: VecDeque<Arc<str>>,
    pins: HashMap<String, CorrelationPin>,
    /// Rollouts whose first reward is being committed; a second reward for one of them
    /// waits for that commit (the receiver turns `true`) and then looks again.
    committing: HashMap<String, watch::Receiver<bool>>,
    rollout_count: u64,
    reward_count: u64,
    calls_since_sweep: u32,
    optimizer: OptimizerState,
}

#[derive(Debug)]
pub struct Session {
    /// Shared (not copied) by the store's write-behind rollout records.
    pub id: Arc<str>,
    pub job_id: String,
    pub created_at: OffsetDateTime,
    pub metadata: Option<Value>,
    pub settings: GepaSettings,
    pub seq: u64,
    env: Arc<SessionEnv>,
    state: Mutex<SessionState>,
}

/// The contract's state table: the status a transition leads to, `Ok(None)` when the
/// session already is where the action leads (no change), or an error for a finished
/// session.
fn next_status(from: Status, t: Transition) -> Result<Option<Status>, GepaError> {
    use Status::*;
    use Transition::*;
    match (from, t) {
        (Started, Pause) => Ok(Some(Paused)),
        (Paused, Resume) => Ok(Some(Started)),
        (Started | Paused, Cancel) => Ok(Some(Cancelled)),
        (Started | Paused, Stop) => Ok(Some(Completed)),
        (Paused, Pause) | (Started, Resume) | (Cancelled, Cancel) | (Completed, Stop) => Ok(None),
        (Completed | Cancelled, _) => Err(GepaError::SessionFinished(from)),
    }
}

impl Session {
    pub(super) fn new(seq: u64, new: NewSession, env: Arc<SessionEnv>) -> Self {
        let now = OffsetDateTime::now_utc();
        let baseline = Arc::new(Candidate::baseline(new.baseline_instruction.into()));
        Session {
            id: uuid::Uuid::new_v4().to_string().into(),
            job_id: format!("pl_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            created_at: now,
            metadata: new.metadata,
            settings: new.settings,
            seq,
            env,
            state: Mutex::new(SessionState {
                status: Status::Started,
                updated_at: now,
                candidates: vec![baseline],
                rollouts: HashMap::default(),
                rollout_order: VecDeque::new(),
                pins: HashMap::new(),
                committing: HashMap::new(),
                rollout_count: 0,
                reward_count: 0,
                calls_since_sweep: 0,
                optimizer: OptimizerState::default(),
            }),
        }
    }

    /// The session as the store records it at creation.
    pub(super) fn record(&self) -> SessionRecord {
        let st = self.state.lock();
        SessionRecord {
            id: self.id.to_string(),
            seq: self.seq,
            job_id: self.job_id.clone(),
            status: st.status,
            created_at: self.created_at,
            updated_at: st.updated_at,
            settings: self.settings.clone(),
            metadata: self.metadata.clone(),
            candidates: st.candidates.iter().map(|c| c.record()).collect(),
            rollouts: Vec::new(),
            rewards: Vec::new(),
        }
    }

    pub fn status(&self) -> Status {
        self.state.lock().status
    }

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
        let key = self
            .env
            .store
            .rollout_key()
            .ok_or(GepaError::StoreNotOpen)?;
        // The id names the candidate by its place in the session's list (append-only).
        let position = st
            .candidates
            .iter()
            .position(|c| Arc::ptr_eq(c, &candidate))
            .ok_or_else(|| {
                GepaError::Internal("the chosen candidate is not in the session".into())
            })?;
        let rollout_id: Arc<str> = rollout_id::issue(&key, &self.id, position).into();
        candidate.record_issued();
        st.insert_rollout(
            self.env.rollouts_in_memory,
            rollout_id.clone(),
            Rollout {
                candidate: candidate.clone(),
                correlation_id: correlation_id.map(str::to_string),
                created_at: OffsetDateTime::now_utc(),
                calls_in_flight: 1,
                calls_ok: 0,
                calls_failed: 0,
                reward: None,
                input: Arc::from([]),
                output: None,
            },
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

    /// Records how a call that [`Session::begin_call`] started ended.
    pub fn finish_call(&self, rollout_id: &Arc<str>, outcome: CallOutcome) {
        let mut st = self.state.lock();
        if let Some(r) = st.rollouts.get_mut(&**rollout_id) {
            r.calls_in_flight = r.calls_in_flight.saturating_sub(1);
            if outcome.ok {
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
        }
    }

    /// Applies a lifecycle transition. Returns the status after it.
    pub fn transition(&self, t: Transition) -> Result<Status, GepaError> {
        let mut st = self.state.lock();
        self.apply_transition(&mut st, t)?;
        Ok(st.status)
    }

    /// Persists, then applies, a status change.
    fn set_status(&self, st: &mut SessionState, next: Status) -> Result<(), StoreError> {
        self.env.store.status_changed(&self.id, next)?;
        st.status = next;
        st.updated_at = OffsetDateTime::now_utc();
        Ok(())
    }

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
        let Some((rollout_id, candidate_id, duplicate)) = settled else {
            return Ok(self.reply(&st, None, None, false));
        };
        st.updated_at = OffsetDateTime::now_utc();
        Ok(self.reply(&st, Some(rollout_id), Some(candidate_id), duplicate))
    }

    /// Decides and, for a first reward, commits it: `(rollout, candidate, duplicate)`.
    async fn settle_reward(
        &self,
        req: &RewardRequest,
        reward: Reward,
    ) -> Result<(String, String, bool), GepaError> {
        loop {
            let step = {
                let mut st = self.state.lock();
                self.reward_step(&mut st, req, &reward)?
            };
            let commit = match step {
                RewardStep::Duplicate {
                    rollout_id,
                    candidate_id,
                } => return Ok((rollout_id, candidate_id, true)),
                RewardStep::Wait(mut committed) => {
                    // Err: the committing task ended; either way, look again.
                    let _ = committed.wait_for(|done| *done).await;
                    continue;
                }
                RewardStep::Commit(commit) => commit,
                RewardStep::Lookup { rollout_id, by_mac } => {
                    match self.commit_from_store(req, &reward, rollout_id, by_mac)? {
                        Ok(commit) => commit,
                        Err(answer) => return Ok(answer),
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
            return Ok(RewardStep::Duplicate {
                rollout_id: rollout_id.to_string(),
                candidate_id: candidate.id.to_string(),
            });
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
    /// it, else from its authenticated id. `Err(answer)` is a finished duplicate.
    #[allow(clippy::type_complexity)]
    fn commit_from_store(
        &self,
        req: &RewardRequest,
        reward: &Reward,
        rollout_id: String,
        by_mac: Option<Arc<Candidate>>,
    ) -> Result<Result<PendingReward, (String, String, bool)>, GepaError> {
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
            return same_reward(&existing, reward)
                .map(|()| Err((rollout_id, candidate.id.to_string(), true)));
        }
        if stored
            .record
            .as_ref()
            .is_some_and(|(_, calls_ok)| *calls_ok == 0)
        {
            return Err(GepaError::RolloutFailed);
        }
        Ok(Ok(PendingReward {
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
    ) -> Result<(String, String, bool), GepaError> {
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
        let answer = (
            pending.rollout_id.clone(),
            pending.candidate.id.to_string(),
            false,
        );
        match committed? {
            RewardCommit::Inserted => {
                st.count_reward(&pending.rollout_id, &pending.candidate, reward);
                self.prune(&mut st);
                let best = optimizer::best_candidate(&st.candidates).map(|(c, _)| c.id.clone());
                st.optimizer.best_is(best.as_deref());
                if self.proposal_due(&st, Instant::now()) {
                    self.env.proposer_wake.notify_one();
                }
                Ok(answer)
            }
            // Another request (or process) recorded this rollout's reward first.
            RewardCommit::Existing(existing) => {
                same_reward(&existing, &reward)?;
                Ok((answer.0, answer.1, true))
            }
        }
    }

    /// Applies a transition under the session's lock (persisted first).
    fn apply_transition(&self, st: &mut SessionState, t: Transition) -> Result<(), GepaError> {
        if let Some(next) = next_status(st.status, t)? {
            self.set_status(st, next)?;
        }
        Ok(())
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

    pub fn metrics_snapshot(&self) -> SessionMetrics {
        let st = self.state.lock();
        let finished_for = st.status.is_finished().then(|| {
            let ago = OffsetDateTime::now_utc() - st.updated_at;
            Duration::from_secs_f64(ago.as_seconds_f64().max(0.0))
        });
        SessionMetrics {
            status: st.status.as_str(),
            finished_for,
            candidates: st
                .candidates
                .iter()
                .map(|c| CandidateMetrics {
                    id: c.id.clone(),
                    active: c.is_active(),
                    stats: c.stats(),
                })
                .collect(),
            proposals: st.optimizer.status.proposals(),
            failures: st.optimizer.status.failures(),
        }
    }

    /// A copy of a rollout, for the optimizer and for tests.
    pub fn rollout(&self, rollout_id: &str) -> Option<Rollout> {
        self.state.lock().rollouts.get(rollout_id).cloned()
    }

    /// Whether the proposal trigger fires (see [`super::optimizer`]).
    fn proposal_due(&self, st: &SessionState, now: Instant) -> bool {
        st.status == Status::Started
            && self.env.optimizer.disabled_reason.is_none()
            && st
                .optimizer
                .due(self.settings.online_proposer_min_rollouts, true, now)
            && (self.pool_has_free_slot(st) || self.replaceable(st).is_some())
    }

    fn pool_has_free_slot(&self, st: &SessionState) -> bool {
        let active = st.candidates.iter().filter(|c| c.is_active()).count();
        active < self.settings.online_proposer_max_candidates as usize
    }

    /// The candidate a full pool gives up for the next proposal.
    fn replaceable(&self, st: &SessionState) -> Option<Arc<Candidate>> {
        optimizer::weakest(&st.candidates, self.env.selector.policy.min_rollouts)
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
            self.env
                .store
                .candidate_archived(&self.id, &weakest.id)
                .ok()?;
            weakest.archive();
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
        let mut st = self.state.lock();
        let now = Instant::now();
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
    fn prune(&self, st: &mut SessionState) {
        let losers = optimizer::prune(
            &st.candidates,
            self.settings.online_prune_threshold,
            self.settings.online_prune_min_rollouts,
        );
        for c in losers {
            if self.env.store.candidate_archived(&self.id, &c.id).is_ok() {
                c.archive();
            }
        }
    }

    /// The fields shared by GET and list.
    pub fn summary_json(&self, urls: &PublicUrls) -> Value {
        let st = self.state.lock();
        self.summary_with(&st, urls)
    }

    fn summary_with(&self, st: &SessionState, urls: &PublicUrls) -> Value {
        let best = optimizer::best_candidate(&st.candidates);
        json!({
            "session_id": &*self.id,
            "job_id": self.job_id,
            "status": st.status.as_str(),
            "mode": "online",
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(st.updated_at),
            "rollout_count": st.rollout_count,
            "reward_count": st.reward_count,
            "best_candidate_id": best.as_ref().map(|(c, _)| c.id.clone()),
            "best_score": best.as_ref().map(|(_, s)| *s),
            "proxy_url": urls.proxy_url(&self.id, None),
            "chat_completions_url": urls.chat_completions_url(&self.id, None),
            "metadata": self.metadata,
        })
    }

    /// The full live state for GET session.
    pub fn detail_json(&self, urls: &PublicUrls) -> Value {
        let st = self.state.lock();
        let mut v = self.summary_with(&st, urls);
        v["candidates"] = st.candidates.iter().map(|c| c.to_json()).collect();
        v["settings"] = json!({
            "online_proposer_min_rollouts": self.settings.online_proposer_min_rollouts,
            "online_proposer_max_candidates": self.settings.online_proposer_max_candidates,
            "online_prune_threshold": self.settings.online_prune_threshold,
            "online_prune_min_rollouts": self.settings.online_prune_min_rollouts,
            "proposer_model": self.settings.proposer_model,
        });
        v["proposer"] = st.optimizer.status.to_json(
            st.status.as_str(),
            self.env.optimizer.disabled_reason.as_deref(),
        );
        v
    }
}

impl SessionState {
    /// The candidates this status may serve (contract table): active ones while running,
    /// the best (else the baseline) once completed, the baseline once cancelled.
    fn servable(&self) -> Vec<Arc<Candidate>> {
        let baseline = || {
            self.candidates
                .iter()
                .filter(|c| c.is_baseline())
                .cloned()
                .collect()
        };
        match self.status {
            Status::Started | Status::Paused => self
                .candidates
                .iter()
                .filter(|c| c.is_active())
                .cloned()
                .collect(),
            Status::Completed => match optimizer::best_candidate(&self.candidates) {
                Some((c, _)) => vec![c],
                None => baseline(),
            },
            Status::Cancelled => baseline(),
        }
    }

    fn reuse_pin(
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

    fn insert_rollout(&mut self, limit: usize, id: Arc<str>, rollout: Rollout) {
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
    fn sweep_expired_pins(&mut self, now: Instant, ttl: Duration) {
        self.calls_since_sweep += 1;
        if self.calls_since_sweep < 1024 {
            return;
        }
        self.calls_since_sweep = 0;
        self.pins
            .retain(|_, p| now.duration_since(p.last_used) <= ttl);
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
    fn count_reward(&mut self, rollout_id: &str, candidate: &Arc<Candidate>, reward: Reward) {
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

impl Session {
    /// The session's candidates, in creation order.
    pub fn candidates(&self) -> Vec<Arc<Candidate>> {
        self.state.lock().candidates.clone()
    }

    /// Rebuilds a session from the durable store: candidates and their statistics, the
    /// rollouts that can still be rewarded (with their correlation pins), the rewards,
    /// and the optimizer's score table. `None` for a record without candidates.
    pub(super) fn restore(r: SessionRecord, env: Arc<SessionEnv>) -> Option<Self> {
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

#[cfg(test)]
mod tests {
    use super::super::optimizer::{OptimizerConfig, MIN_REWARDS_FOR_BEST};
    use super::super::selection::CandidateSelector;
    use super::super::store::{CandidateRecord, StateStore, StoredRollout};
    use super::super::Sessions;
    use super::*;
    use crate::errors::ApiError;
    use crate::store::MemoryStore;

    /// The HTTP status and code a client would get for a domain error.
    trait AsHttp {
        fn status(&self) -> u16;
        fn code(&self) -> &'static str;
        fn extra_headers(&self) -> Vec<(&'static str, String)>;
    }

    impl AsHttp for GepaError {
        fn status(&self) -> u16 {
            ApiError::from(self.clone()).status()
        }
        fn code(&self) -> &'static str {
            ApiError::from(self.clone()).code()
        }
        fn extra_headers(&self) -> Vec<(&'static str, String)> {
            ApiError::from(self.clone()).extra_headers()
        }
    }

    fn env_with(ttl: Duration, store: Arc<dyn StateStore>) -> SessionEnv {
        SessionEnv {
            correlation_ttl: ttl,
            rollouts_in_memory: 1000,
            store,
            optimizer: OptimizerConfig {
                minibatch_size: 3,
                merge: true,
                disabled_reason: None,
            },
            selector: CandidateSelector::new(5),
            proposer_wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn registry(max: usize, ttl: Duration, store: Arc<dyn StateStore>) -> Sessions {
        Sessions::new(max, env_with(ttl, store))
    }

    fn settings() -> GepaSettings {
        GepaSettings {
            online_proposer_min_rollouts: 10,
            online_proposer_max_candidates: 8,
            online_prune_threshold: 0.0,
            online_prune_min_rollouts: 20,
            proposer_model: "m".into(),
        }
    }

    fn new_session(baseline_instruction: &str) -> NewSession {
        NewSession {
            baseline_instruction: baseline_instruction.into(),
            settings: settings(),
            metadata: None,
        }
    }

    fn session() -> Arc<Session> {
        let s = registry(10, Duration::from_secs(60), Arc::new(MemoryStore::new()));
        s.create(new_session("be helpful")).unwrap()
    }

    fn ok_call(s: &Session, corr: Option<&str>) -> CallTicket {
        let t = s.begin_call(corr).unwrap();
        s.finish_call(
            &t.rollout_id,
            CallOutcome {
                ok: true,
                input: vec![],
                output: Some("hi".into()),
            },
        );
        t
    }

    fn reward(rollout: &str, x: f64) -> RewardRequest {
        RewardRequest {
            rollout_id: Some(rollout.into()),
            correlation_id: None,
            candidate_id: None,
            reward: Some(Reward {
                outcome: x,
                seed: None,
                feedback: None,
            }),
            stop: false,
        }
    }

    #[test]
    fn lifecycle_table() {
        use Status::*;
        use Transition::*;
        assert_eq!(next_status(Started, Pause).unwrap(), Some(Paused));
        assert_eq!(next_status(Paused, Pause).unwrap(), None);
        assert_eq!(next_status(Paused, Resume).unwrap(), Some(Started));
        assert_eq!(next_status(Started, Resume).unwrap(), None);
        assert_eq!(next_status(Paused, Cancel).unwrap(), Some(Cancelled));
        assert_eq!(next_status(Cancelled, Cancel).unwrap(), None);
        assert_eq!(next_status(Paused, Stop).unwrap(), Some(Completed));
        assert_eq!(next_status(Completed, Stop).unwrap(), None);
        for t in [Pause, Resume, Cancel] {
            assert_eq!(next_status(Completed, t).unwrap_err().status(), 409);
        }
        for t in [Pause, Resume, Stop] {
            assert_eq!(next_status(Cancelled, t).unwrap_err().status(), 409);
        }
    }

    #[tokio::test]
    async fn reward_rules() {
        let s = session();
        let t = ok_call(&s, None);
        let r = s.reward(reward(&t.rollout_id, 0.5)).await.unwrap();
        assert_eq!((r.reward_count, r.duplicate), (1, false));
        let again = s.reward(reward(&t.rollout_id, 0.5)).await.unwrap();
        assert_eq!((again.reward_count, again.duplicate), (1, true));
        assert_eq!(
            s.reward(reward(&t.rollout_id, 0.7))
                .await
                .unwrap_err()
                .code(),
            "reward_conflict"
        );
        assert_eq!(
            s.reward(reward("ro_nope", 0.7)).await.unwrap_err().status(),
            404
        );
        let mut wrong = reward(&ok_call(&s, None).rollout_id, 1.0);
        wrong.candidate_id = Some("cand_x".into());
        assert_eq!(
            s.reward(wrong).await.unwrap_err().code(),
            "candidate_mismatch"
        );
    }

    #[tokio::test]
    async fn failed_rollout_cannot_be_rewarded_but_in_flight_can() {
        let s = session();
        let t = s.begin_call(None).unwrap();
        s.finish_call(
            &t.rollout_id,
            CallOutcome {
                ok: false,
                input: vec![],
                output: None,
            },
        );
        assert_eq!(
            s.reward(reward(&t.rollout_id, 1.0))
                .await
                .unwrap_err()
                .code(),
            "rollout_failed"
        );
        let t2 = s.begin_call(None).unwrap();
        assert!(s.reward(reward(&t2.rollout_id, 1.0)).await.is_ok());
    }

    #[tokio::test]
    async fn correlation_pins_until_rewarded() {
        let s = session();
        let a = ok_call(&s, Some("c1"));
        let b = ok_call(&s, Some("c1"));
        assert_eq!(a.rollout_id, b.rollout_id);
        let other = ok_call(&s, Some("c2"));
        assert_ne!(a.rollout_id, other.rollout_id);
        let mut by_corr = reward("unused", 1.0);
        by_corr.rollout_id = None;
        by_corr.correlation_id = Some("c1".into());
        let r = s.reward(by_corr.clone()).await.unwrap();
        assert_eq!(r.rollout_id.as_deref(), Some(&*a.rollout_id));
        let c = ok_call(&s, Some("c1"));
        assert_ne!(c.rollout_id, a.rollout_id, "the reward closes the rollout");
        assert_eq!(s.state.lock().rollout_count, 3);
    }

    #[test]
    fn expired_pin_opens_new_rollout() {
        let reg = registry(10, Duration::from_millis(0), Arc::new(MemoryStore::new()));
        let s = reg.create(new_session("x")).unwrap();
        let a = ok_call(&s, Some("c"));
        std::thread::sleep(Duration::from_millis(2));
        let b = ok_call(&s, Some("c"));
        assert_ne!(a.rollout_id, b.rollout_id);
    }

    #[tokio::test]
    async fn stop_and_finished_sessions() {
        let s = session();
        let t = ok_call(&s, None);
        let mut stop = reward(&t.rollout_id, 1.0);
        stop.stop = true;
        assert_eq!(s.reward(stop).await.unwrap().status, Status::Completed);
        let bare = RewardRequest {
            rollout_id: None,
            correlation_id: None,
            candidate_id: None,
            reward: None,
            stop: true,
        };
        assert_eq!(
            s.reward(bare.clone()).await.unwrap().status,
            Status::Completed
        );
        let t2 = ok_call(&s, None);
        assert_eq!(
            s.reward(reward(&t2.rollout_id, 1.0))
                .await
                .unwrap_err()
                .code(),
            "session_finished"
        );
        let c = session();
        c.transition(Transition::Cancel).unwrap();
        assert_eq!(c.reward(bare).await.unwrap_err().status(), 409);
    }

    #[tokio::test]
    async fn best_needs_enough_rewards() {
        let s = session();
        for i in 0..MIN_REWARDS_FOR_BEST {
            assert!(
                s.detail_json(&PublicUrls::new("http://x"))["best_candidate_id"].is_null(),
                "{i}"
            );
            let t = ok_call(&s, None);
            s.reward(reward(&t.rollout_id, 1.0)).await.unwrap();
        }
        let v = s.detail_json(&PublicUrls::new("http://x"));
        assert_eq!(v["best_candidate_id"], "baseline");
        assert_eq!(v["best_score"], 1.0);
    }

    #[test]
    fn list_is_newest_first_with_cursor() {
        let reg = registry(100, Duration::from_secs(1), Arc::new(MemoryStore::new()));
        let ids: Vec<String> = (0..5)
            .map(|_| reg.create(new_session("x")).unwrap().id.to_string())
            .collect();
        let p1 = reg.list(2, None);
        assert_eq!(
            p1.items
                .iter()
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>(),
            vec![ids[4].clone(), ids[3].clone()]
        );
        let cur = p1.next_cursor.unwrap().parse().unwrap();
        let p2 = reg.list(2, Some(cur));
        assert_eq!(&*p2.items[0].id, ids[2]);
        let p3 = reg.list(2, p2.next_cursor.map(|c| c.parse().unwrap()));
        assert_eq!(p3.items.len(), 1);
        assert!(p3.next_cursor.is_none());
    }

    #[test]
    fn session_limit() {
        let reg = registry(1, Duration::from_secs(1), Arc::new(MemoryStore::new()));
        reg.create(new_session("x")).unwrap();
        assert_eq!(
            reg.create(new_session("x")).unwrap_err().code(),
            "session_limit"
        );
    }

    /// A store whose every write fails: nothing may change, and clients get a 503.
    struct BrokenStore;

    #[async_trait::async_trait]
    impl StateStore for BrokenStore {
        fn rollout_key(&self) -> Option<[u8; 32]> {
            Some([1; 32])
        }
        fn session_created(&self, _: &SessionRecord) -> Result<(), StoreError> {
            Err(StoreError("disk full".into()))
        }
        fn status_changed(&self, _: &str, _: Status) -> Result<(), StoreError> {
            Err(StoreError("disk full".into()))
        }
        async fn reward_recorded(&self, _: RewardWrite) -> Result<RewardCommit, StoreError> {
            Err(StoreError("disk full".into()))
        }
        fn lookup_rollout(&self, _: &str, _: &str) -> Result<Option<StoredRollout>, StoreError> {
            Err(StoreError("disk full".into()))
        }
        fn candidate_added(&self, _: &str, _: &CandidateRecord) -> Result<(), StoreError> {
            Err(StoreError("disk full".into()))
        }
        fn candidate_archived(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Err(StoreError("disk full".into()))
        }
        fn rollout_finished(&self, _: RolloutRecord) {}
    }

    /// A store whose reward commits wait until the test opens the gate.
    struct GatedStore {
        gate: tokio::sync::Semaphore,
        reward_writes: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl StateStore for GatedStore {
        fn rollout_key(&self) -> Option<[u8; 32]> {
            Some([2; 32])
        }
        fn session_created(&self, _: &SessionRecord) -> Result<(), StoreError> {
            Ok(())
        }
        fn status_changed(&self, _: &str, _: Status) -> Result<(), StoreError> {
            Ok(())
        }
        async fn reward_recorded(&self, _: RewardWrite) -> Result<RewardCommit, StoreError> {
            self.reward_writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _permit = self.gate.acquire().await;
            Ok(RewardCommit::Inserted)
        }
        fn lookup_rollout(&self, _: &str, _: &str) -> Result<Option<StoredRollout>, StoreError> {
            Ok(None)
        }
        fn candidate_added(&self, _: &str, _: &CandidateRecord) -> Result<(), StoreError> {
            Ok(())
        }
        fn candidate_archived(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        fn rollout_finished(&self, _: RolloutRecord) {}
    }

    #[tokio::test]
    async fn a_commit_that_ended_without_clearing_its_entry_does_not_block_rewards() {
        let s = session();
        let t = ok_call(&s, None);
        let (done, committed) = watch::channel(false);
        drop(done); // the committing task died
        s.state
            .lock()
            .committing
            .insert(t.rollout_id.to_string(), committed);
        let reply =
            tokio::time::timeout(Duration::from_secs(5), s.reward(reward(&t.rollout_id, 0.5)))
                .await
                .expect("the reward does not spin on the stale entry")
                .unwrap();
        assert!(!reply.duplicate);
        assert_eq!(reply.reward_count, 1);
    }

    #[test]
    fn eviction_spares_rollouts_whose_call_is_running() {
        let reg = registry(10, Duration::from_secs(60), Arc::new(MemoryStore::new()));
        let s = reg.create(new_session("x")).unwrap();
        // The env keeps 1000 rollouts; the first call stays open while 1000 more finish.
        let running = s.begin_call(None).unwrap();
        for _ in 0..1000 {
            ok_call(&s, None);
        }
        assert!(s.rollout(&running.rollout_id).is_some(), "still in memory");
        assert_eq!(s.state.lock().rollouts.len(), 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reward_arriving_while_the_first_commits_waits_and_is_a_duplicate() {
        let store = Arc::new(GatedStore {
            gate: tokio::sync::Semaphore::new(0),
            reward_writes: Default::default(),
        });
        let reg = registry(10, Duration::from_secs(60), store.clone());
        let s = reg.create(new_session("x")).unwrap();
        let t = ok_call(&s, None);
        let writes = || {
            store
                .reward_writes
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        let first = tokio::spawn({
            let (s, req) = (s.clone(), reward(&t.rollout_id, 0.5));
            async move { s.reward(req).await }
        });
        while writes() == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let (s, req) = (s.clone(), reward(&t.rollout_id, 0.5));
            async move { s.reward(req).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(writes(), 1, "the second reward waits instead of writing");
        assert!(
            !second.is_finished(),
            "nor is it answered before the commit"
        );
        store.gate.add_permits(10);
        assert!(!first.await.unwrap().unwrap().duplicate);
        assert!(second.await.unwrap().unwrap().duplicate);
        assert_eq!((writes(), s.state.lock().reward_count), (1, 1));
    }

    #[tokio::test]
    async fn failed_store_writes_change_nothing() {
        let reg = registry(10, Duration::from_secs(60), Arc::new(BrokenStore));
        let err = reg.create(new_session("x")).unwrap_err();
        assert_eq!(err.status(), 503);
        assert!(err.extra_headers().iter().any(|(h, _)| *h == "retry-after"));
        assert!(reg.is_empty() && reg.list(10, None).items.is_empty());

        let s = Arc::new(Session::new(
            1,
            new_session("x"),
            Arc::new(env_with(Duration::from_secs(60), Arc::new(BrokenStore))),
        ));
        let t = ok_call(&s, None);
        assert_eq!(
            s.reward(reward(&t.rollout_id, 1.0))
                .await
                .unwrap_err()
                .status(),
            503
        );
        assert!(s.rollout(&t.rollout_id).unwrap().reward.is_none());
        assert_eq!(s.state.lock().reward_count, 0);
        assert_eq!(s.transition(Transition::Pause).unwrap_err().status(), 503);
        assert_eq!(s.status(), Status::Started);
    }

    #[tokio::test]
    async fn proposals_only_while_started_and_at_the_threshold() {
        for (transition, due) in [
            (None, true),
            (Some(Transition::Pause), false),
            (Some(Transition::Cancel), false),
            (Some(Transition::Stop), false),
        ] {
            let s = session();
            for i in 0..10 {
                if i == 9 {
                    assert!(s.take_proposal_job(Instant::now()).is_none(), "9 of 10");
                }
                let t = ok_call(&s, None);
                s.reward(reward(&t.rollout_id, 0.5)).await.unwrap();
            }
            if let Some(t) = transition {
                s.transition(t).unwrap();
            }
            let job = s.take_proposal_job(Instant::now());
            assert_eq!(job.is_some(), due, "{transition:?}");
            if let Some(job) = job {
                assert!(
                    s.take_proposal_job(Instant::now()).is_none(),
                    "one in flight"
                );
                let dup = s.finish_proposal(&job, Ok("be helpful".into()));
                assert!(
                    dup.is_none(),
                    "an exact duplicate of the baseline is rejected"
                );
                let v = s.detail_json(&PublicUrls::new("http://x"));
                assert_eq!(v["proposer"]["failures"], 1);
                assert!(v["proposer"]["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("duplicate"));
            }
        }
    }
}
