//! The session's side of online GEPA: when a proposal is due, which parent it reflects on
//! (or which pair it merges), what happens to its result, which candidates are pruned,
//! and which candidate is the best. The proposer service ([`crate::proposer`]) does the
//! model calls; everything here is bookkeeping under the session's lock.
//!
//! Rules (docs/optimizer.md explains them for users):
//! - **Trigger**: status `started`, no proposal in flight, at least
//!   `online_proposer_min_rollouts` rewards since the last proposal, room in the pool, and
//!   past any failure back-off. The pool has room when fewer than
//!   `online_proposer_max_candidates` candidates are active, or when one of them can be
//!   replaced: the weakest judged candidate ([`weakest`]) is archived to make room, so a
//!   full pool keeps evolving instead of freezing.
//! - **Parent**: GEPA's Pareto front over per-instance mean rewards of the active
//!   candidates (instances keyed by `reward_info.seed`), sampled by instances won; with
//!   fewer than [`MIN_SHARED_INSTANCES`] instances scored by two or more candidates, the
//!   best mean instead.
//! - **Merge**: every [`MERGE_EVERY`]th proposal, when two front candidates share an
//!   ancestor (and neither descends from the other) and were not merged before.
//! - **Pruning**: an active candidate with at least `online_prune_min_rollouts` rewards is
//!   archived when its mean is below `online_prune_threshold`, or when the upper 95% bound
//!   of its mean is below the lower 95% bound of the best candidate's. The best and the
//!   last active candidate are never archived.
//! - **Best**: among active candidates with at least [`MIN_REWARDS_FOR_BEST`]
//!   rewards, the highest lower bound (mean − 1 standard error); `best_score` is its mean.

use rand::Rng;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::candidate::Candidate;
use crate::config::Review;
use crate::reply::Usage;
use super::pareto::{pareto_front, sample_parent, FrontMember, ScoreTable};
use super::reflection::{choose_minibatch, merge_prompt, reflection_prompt, ReflectionExample};
use super::status::Status;
use crate::rewrite::CapturedMessage;

/// A candidate never rewarded is judged, for pool replacement, once it has served this
/// many times `gepa.warmup_rollouts` rollouts.
const UNREWARDED_JUDGED: u64 = 4;

/// A session's candidate needs this many rewards before it can be named the best.
/// Two lucky rewards must not crown a candidate.
pub const MIN_REWARDS_FOR_BEST: u64 = 5;

/// Below this many instances compared between candidates, the parent is the best mean.
pub const MIN_SHARED_INSTANCES: usize = 3;
/// One proposal in this many is a merge, when a mergeable pair exists.
pub const MERGE_EVERY: u64 = 3;
/// Rewarded rollouts remembered per candidate for reflection minibatches.
pub const RECENT_PER_CANDIDATE: usize = 32;
/// Longest reflection prompt, in characters.
pub const MAX_PROMPT_CHARS: usize = 60_000;
/// Each proposal that did not change the best candidate doubles the rewards the next one
/// waits for, up to 2^MAX_STAGNATION times `online_proposer_min_rollouts`: a converged
/// session stops spending traffic on warming up near-copies, and a new best resets it.
pub const MAX_STAGNATION: u32 = 4;
/// z for the pruning rule's 95% bounds.
const PRUNE_Z: f64 = 1.96;
/// z for the best-candidate lower bound (one standard error).
const BEST_Z: f64 = 1.0;

/// Global optimizer settings (from the config file), shared by every session.
#[derive(Debug, Clone)]
pub struct OptimizerConfig {
    /// Rollouts per reflection minibatch (`proposer.minibatch_size`).
    pub minibatch_size: usize,
    /// Whether merges are proposed (`proposer.merge`).
    pub merge: bool,
    /// Longest instruction a proposal may have (`proposer.max_instruction_bytes`).
    pub max_instruction_bytes: usize,
    /// Whether proposals wait for an operator's approval (`proposer.review`).
    pub review: Review,
    /// Proposer calls per session (`proposer.max_proposals`); `None`: unlimited.
    pub max_proposals: Option<u64>,
    /// Why the proposer cannot run (no key), if it cannot.
    pub disabled_reason: Option<String>,
}

/// The proposer's progress for one session, shown in GET session.
#[derive(Debug, Default)]
pub struct ProposerStatus {
    in_flight: bool,
    rewards_since_proposal: u64,
    proposals: u64,
    failures: u64,
    consecutive_failures: u32,
    last_error: Option<String>,
    retry_at: Option<Instant>,
    merged_pairs: HashSet<(String, String)>,
    /// Proposals since the best candidate last changed (see [`MAX_STAGNATION`]).
    stagnation: u32,
    /// The best candidate when it was last looked at.
    last_best: Option<String>,
    /// Proposer calls started (what `proposer.max_proposals` limits).
    calls: u64,
    /// Tokens the proposer model reported in its replies' `usage`.
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl ProposerStatus {
    pub fn proposals(&self) -> u64 {
        self.proposals
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// `(prompt, completion)` tokens the proposer model reported.
    pub fn tokens(&self) -> (u64, u64) {
        (self.prompt_tokens, self.completion_tokens)
    }

    pub(super) fn reward_counted(&mut self) {
        self.rewards_since_proposal += 1;
    }

    fn failed(&mut self, error: String, now: Instant) {
        self.failures += 1;
        self.consecutive_failures += 1;
        self.last_error = Some(error);
        self.retry_at = Some(now + backoff(self.consecutive_failures));
    }

    /// What GET session shows of the proposer, given the session's status.
    pub(super) fn snapshot(
        &self,
        session: Status,
        disabled: Option<&str>,
        max_proposals: Option<u64>,
    ) -> ProposerSnapshot {
        let limited = max_proposals.filter(|max| self.calls >= *max);
        let state = match (session, disabled) {
            (Status::Completed | Status::Cancelled, _) => ProposerState::Finished,
            (_, Some(_)) => ProposerState::Disabled,
            _ if limited.is_some() && !self.in_flight => ProposerState::Limited,
            _ if self.in_flight => ProposerState::Proposing,
            (Status::Paused, _) => ProposerState::Paused,
            _ => ProposerState::Idle,
        };
        let reason = match state {
            ProposerState::Disabled => disabled.map(str::to_string),
            ProposerState::Limited => limited.map(|max| {
                format!("proposer.max_proposals = {max} proposer calls were made")
            }),
            _ => None,
        };
        ProposerSnapshot {
            state,
            reason,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            proposals: self.proposals,
            failures: self.failures,
            last_error: self.last_error.clone(),
        }
    }
}

/// What the proposer is doing for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposerState {
    Idle,
    Proposing,
    Paused,
    /// No proposer key: traffic and rewards work, nothing is proposed.
    Disabled,
    /// The session used up `proposer.max_proposals`.
    Limited,
    Finished,
}

impl ProposerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposerState::Idle => "idle",
            ProposerState::Proposing => "proposing",
            ProposerState::Paused => "paused",
            ProposerState::Disabled => "disabled",
            ProposerState::Limited => "limited",
            ProposerState::Finished => "finished",
        }
    }
}

/// The proposer's progress for one session, as GET session shows it.
#[derive(Debug, Clone)]
pub struct ProposerSnapshot {
    pub state: ProposerState,
    /// Why it is disabled or limited, when it is.
    pub reason: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub proposals: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Exponential back-off after consecutive failures: 2 s, 4 s, … up to 5 minutes.
fn backoff(consecutive_failures: u32) -> Duration {
    let secs = 2u64.saturating_pow(consecutive_failures.min(16));
    Duration::from_secs(secs.min(300))
}

/// What the proposer must ask the model.
#[derive(Debug, Clone)]
pub enum ProposalKind {
    Reflect {
        parent_id: String,
        parent_instruction: Arc<str>,
        examples: Vec<ReflectionExample>,
    },
    Merge {
        ancestor_instruction: Arc<str>,
        a: (String, Arc<str>),
        b: (String, Arc<str>),
    },
}

/// One proposal to run, handed out by [`super::Session::take_proposal_job`].
#[derive(Debug, Clone)]
pub struct ProposalJob {
    pub model: String,
    pub kind: ProposalKind,
}

impl ProposalJob {
    pub fn prompt(&self) -> String {
        match &self.kind {
            ProposalKind::Reflect {
                parent_instruction,
                examples,
                ..
            } => reflection_prompt(parent_instruction, examples, MAX_PROMPT_CHARS),
            ProposalKind::Merge {
                ancestor_instruction,
                a,
                b,
            } => merge_prompt(ancestor_instruction, &a.1, &b.1),
        }
    }

    pub fn parent_ids(&self) -> Vec<String> {
        match &self.kind {
            ProposalKind::Reflect { parent_id, .. } => vec![parent_id.clone()],
            ProposalKind::Merge { a, b, .. } => vec![a.0.clone(), b.0.clone()],
        }
    }
}

/// A rewarded rollout as the optimizer keeps it: enough to reflect on.
#[derive(Debug, Clone)]
pub struct RewardedExample {
    /// Shared with the rollout it came from (no copy per reward).
    pub inputs: std::sync::Arc<[CapturedMessage]>,
    pub output: Option<String>,
    pub reward: f64,
    pub feedback: Option<String>,
}

/// The optimizer's per-session memory, kept inside the session state.
#[derive(Debug, Default)]
pub struct OptimizerState {
    pub status: ProposerStatus,
    pub scores: ScoreTable,
    /// Per candidate id, its most recent rewarded rollouts (newest last).
    recent: std::collections::HashMap<String, VecDeque<RewardedExample>>,
}

impl OptimizerState {
    /// Records a counted reward for the score table and the reflection memory.
    pub fn record(&mut self, candidate: &str, instance: &str, example: RewardedExample) {
        self.scores.add(candidate, instance, example.reward);
        self.status.reward_counted();
        let recent = self.recent.entry(candidate.to_string()).or_default();
        recent.push_back(example);
        while recent.len() > RECENT_PER_CANDIDATE {
            recent.pop_front();
        }
    }

    /// Whether a proposal may start now (the trigger rule).
    pub fn due(&self, min_rewards: u32, pool_has_room: bool, now: Instant) -> bool {
        let needed = u64::from(min_rewards) << self.status.stagnation.min(MAX_STAGNATION);
        !self.status.in_flight
            && self.status.rewards_since_proposal >= needed
            && pool_has_room
            && self.status.retry_at.is_none_or(|t| now >= t)
    }

    /// Chooses what to propose and marks a proposal in flight.
    pub fn start_job<R: Rng + ?Sized>(
        &mut self,
        candidates: &[Arc<Candidate>],
        cfg: &OptimizerConfig,
        model: &str,
        rng: &mut R,
    ) -> Option<ProposalJob> {
        let active: Vec<&Arc<Candidate>> = candidates.iter().filter(|c| c.is_active()).collect();
        let ids: Vec<&str> = active.iter().map(|c| &*c.id).collect();
        let front = pareto_front(&self.scores, &ids);
        let merge_turn = cfg.merge && self.status.proposals % MERGE_EVERY == MERGE_EVERY - 1;
        let kind = match merge_turn
            .then(|| self.merge_pair(candidates, &front))
            .flatten()
        {
            Some(kind) => kind,
            None => self.reflect_job(&active, &ids, &front, cfg.minibatch_size, rng)?,
        };
        self.status.in_flight = true;
        self.status.calls += 1;
        Some(ProposalJob {
            model: model.to_string(),
            kind,
        })
    }

    fn reflect_job<R: Rng + ?Sized>(
        &self,
        active: &[&Arc<Candidate>],
        ids: &[&str],
        front: &[FrontMember],
        minibatch: usize,
        rng: &mut R,
    ) -> Option<ProposalKind> {
        let has_examples = |id: &str| self.recent.get(id).is_some_and(|r| !r.is_empty());
        let front: Vec<FrontMember> = front
            .iter()
            .filter(|m| has_examples(&m.candidate))
            .cloned()
            .collect();
        let parent_id =
            if self.scores.shared_instances(ids) >= MIN_SHARED_INSTANCES && !front.is_empty() {
                sample_parent(&front, rng)?
            } else {
                let with_examples = || active.iter().copied().filter(|c| has_examples(&c.id));
                best_mean(with_examples())
                    .or_else(|| with_examples().next().map(|c| c.id.to_string()))?
            };
        let parent = active.iter().find(|c| *c.id == *parent_id)?;
        let recent = self.recent.get(&parent_id)?;
        // age_rank 0 = newest
        let triples: Vec<(usize, f64, usize)> = recent
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.reward, recent.len() - 1 - i))
            .collect();
        let examples = choose_minibatch(&triples, minibatch)
            .into_iter()
            .filter_map(|i| recent.get(i))
            .map(|e| ReflectionExample {
                inputs: e.inputs.to_vec(),
                output: e.output.clone(),
                reward: e.reward,
                feedback: e.feedback.clone(),
            })
            .collect();
        Some(ProposalKind::Reflect {
            parent_id,
            parent_instruction: parent.instruction.clone(),
            examples,
        })
    }

    /// Two front candidates with a common ancestor, neither descending from the other,
    /// not merged before.
    fn merge_pair(
        &self,
        candidates: &[Arc<Candidate>],
        front: &[FrontMember],
    ) -> Option<ProposalKind> {
        let find = |id: &str| candidates.iter().find(|c| &*c.id == id);
        for (i, x) in front.iter().enumerate() {
            for y in &front[i + 1..] {
                let key = (x.candidate.clone(), y.candidate.clone());
                if self.status.merged_pairs.contains(&key) {
                    continue;
                }
                let ax = ancestors(candidates, &x.candidate);
                let ay = ancestors(candidates, &y.candidate);
                if ax.contains(&y.candidate) || ay.contains(&x.candidate) {
                    continue;
                }
                // The nearest common ancestor of x, in x's breadth-first order.
                let Some(common) = ax.iter().find(|a| ay.contains(*a)) else {
                    continue;
                };
                let (a, b, anc) = (find(&x.candidate)?, find(&y.candidate)?, find(common)?);
                return Some(ProposalKind::Merge {
                    ancestor_instruction: anc.instruction.clone(),
                    a: (a.id.to_string(), a.instruction.clone()),
                    b: (b.id.to_string(), b.instruction.clone()),
                });
            }
        }
        None
    }

    /// After a restart: the proposals accepted before it (proposer failures are not kept).
    pub fn restored(&mut self, proposals: u64) {
        self.status.proposals = proposals;
        // The calls that failed or were rejected before the restart are not kept.
        self.status.calls = proposals;
    }

    /// Whether the session has used up `proposer.max_proposals` (`None`: unlimited).
    pub fn exhausted(&self, max_proposals: Option<u64>) -> bool {
        max_proposals.is_some_and(|max| self.status.calls >= max)
    }

    /// Adds the tokens a proposer reply reported.
    pub fn used(&mut self, usage: Usage) {
        self.status.prompt_tokens += usage.prompt_tokens;
        self.status.completion_tokens += usage.completion_tokens;
    }

    /// Notes the session's current best candidate; a change resets the stagnation count.
    pub fn best_is(&mut self, best: Option<&str>) {
        if best.is_some() && self.status.last_best.as_deref() != best {
            self.status.last_best = best.map(str::to_string);
            self.status.stagnation = 0;
        }
    }

    /// Books an accepted proposal.
    pub fn accepted(&mut self, job: &ProposalJob) {
        self.status.stagnation += 1;
        self.status.in_flight = false;
        self.status.proposals += 1;
        self.status.rewards_since_proposal = 0;
        self.status.consecutive_failures = 0;
        self.status.retry_at = None;
        if let ProposalKind::Merge { a, b, .. } = &job.kind {
            self.status.merged_pairs.insert((a.0.clone(), b.0.clone()));
        }
    }

    /// Books a failed proposal (the model or the network failed); it is retried after a
    /// back-off.
    pub fn failed(&mut self, error: String, now: Instant) {
        self.status.in_flight = false;
        self.status.failed(error, now);
    }

    /// Books a rejected proposal (empty, or a duplicate): counted, but no back-off — the
    /// model works — and the next one waits for a fresh batch of rewards.
    pub fn rejected(&mut self, error: String) {
        self.status.stagnation += 1;
        self.status.in_flight = false;
        self.status.failures += 1;
        self.status.last_error = Some(error);
        self.status.rewards_since_proposal = 0;
    }
}

/// Ancestors of `id`, nearest first (breadth-first over parent links).
fn ancestors(candidates: &[Arc<Candidate>], id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut queue: VecDeque<String> = VecDeque::from([id.to_string()]);
    while let Some(cur) = queue.pop_front() {
        let Some(c) = candidates.iter().find(|c| *c.id == *cur) else {
            continue;
        };
        for p in &c.parent_ids {
            if !out.contains(p) {
                out.push(p.clone());
                queue.push_back(p.clone());
            }
        }
    }
    out
}

fn best_mean<'a>(cands: impl Iterator<Item = &'a Arc<Candidate>>) -> Option<String> {
    let mut best: Option<(&Arc<Candidate>, f64)> = None;
    for c in cands {
        let Some(m) = c.mean_reward() else { continue };
        if best.is_none_or(|(_, bm)| m > bm) {
            best = Some((c, m));
        }
    }
    best.map(|(c, _)| c.id.to_string())
}

/// Rewards-worth of prior that pulls a candidate's mean toward the session's mean when
/// judging the weakest (few rewards say little).
const SHRINK_WEIGHT: f64 = 2.0;

/// The candidate a full pool replaces: among active candidates past their warm-up
/// (`warmup` rollouts served) with at least one reward, other than the best, the one with
/// the lowest mean shrunk toward the session's mean. `None` when no candidate qualifies.
pub fn weakest(candidates: &[Arc<Candidate>], warmup: u64) -> Option<Arc<Candidate>> {
    let active: Vec<&Arc<Candidate>> = candidates.iter().filter(|c| c.is_active()).collect();
    let (sum, n) = active.iter().fold((0.0, 0u64), |(s, n), c| {
        let st = c.stats();
        (s + st.reward_sum, n + st.rewards)
    });
    let session_mean = if n > 0 { sum / n as f64 } else { 0.0 };
    let by_shrunk = |a: &&Arc<Candidate>, b: &&Arc<Candidate>| {
        shrunk_mean(a, session_mean).total_cmp(&shrunk_mean(b, session_mean))
    };
    // The best is protected; with no best named yet, the highest shrunk mean is.
    let protected = best_candidate(candidates)
        .map(|(c, _)| c)
        .or_else(|| active.iter().copied().max_by(by_shrunk).cloned());
    active
        .iter()
        .copied()
        .filter(|c| protected.as_ref().is_none_or(|p| !Arc::ptr_eq(p, c)))
        .filter(|c| {
            // Judged by its rewards; or, never rewarded, by having served long enough that
            // its rollouts evidently cannot be rewarded (its shrunk mean is the session's).
            let st = c.stats();
            st.issued >= warmup && (st.rewards > 0 || st.issued >= UNREWARDED_JUDGED * warmup)
        })
        .min_by(by_shrunk)
        .cloned()
}

fn shrunk_mean(c: &Candidate, prior_mean: f64) -> f64 {
    let st = c.stats();
    (st.reward_sum + SHRINK_WEIGHT * prior_mean) / (st.rewards as f64 + SHRINK_WEIGHT)
}

/// The best candidate by the documented rule, with its mean reward.
pub fn best_candidate(candidates: &[Arc<Candidate>]) -> Option<(Arc<Candidate>, f64)> {
    let mut best: Option<(Arc<Candidate>, f64, f64)> = None;
    for c in candidates.iter().filter(|c| c.is_active()) {
        if c.reward_count() < MIN_REWARDS_FOR_BEST {
            continue;
        }
        let (Some(mean), Some((lower, _))) = (c.mean_reward(), c.bounds(BEST_Z)) else {
            continue;
        };
        if best.as_ref().is_none_or(|(_, _, bl)| lower > *bl) {
            best = Some((c.clone(), mean, lower));
        }
    }
    best.map(|(c, mean, _)| (c, mean))
}

/// Candidates the pruning rule archives now (never the best, never the last active one).
pub fn prune(
    candidates: &[Arc<Candidate>],
    threshold: f64,
    min_rewards: u32,
) -> Vec<Arc<Candidate>> {
    let best = best_candidate(candidates).map(|(c, _)| c);
    let best_lower = best
        .as_ref()
        .filter(|b| b.reward_count() >= u64::from(min_rewards))
        .and_then(|b| b.bounds(PRUNE_Z))
        .map(|(l, _)| l);
    let mut active = candidates.iter().filter(|c| c.is_active()).count();
    let mut out = Vec::new();
    for c in candidates.iter().filter(|c| c.is_active()) {
        if active <= 1 || best.as_ref().is_some_and(|b| Arc::ptr_eq(b, c)) {
            continue;
        }
        if c.reward_count() < u64::from(min_rewards) {
            continue;
        }
        let below_threshold = c.mean_reward().is_some_and(|m| m < threshold);
        let confidently_worse = match (c.bounds(PRUNE_Z), best_lower) {
            (Some((_, upper)), Some(bl)) => upper < bl,
            _ => false,
        };
        if below_threshold || confidently_worse {
            out.push(c.clone());
            active -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cand(id: &str, parents: &[&str]) -> Arc<Candidate> {
        Arc::new(Candidate::new(
            id.into(),
            format!("instruction of {id}").into(),
            parents.iter().map(|p| p.to_string()).collect(),
        ))
    }

    fn rewarded(c: &Candidate, rewards: &[f64]) {
        for r in rewards {
            c.record_issued();
            c.record_reward(*r);
        }
    }

    fn example(reward: f64) -> RewardedExample {
        RewardedExample {
            inputs: vec![CapturedMessage {
                role: "user".into(),
                content: format!("q{reward}"),
            }]
            .into(),
            output: Some("a".into()),
            reward,
            feedback: None,
        }
    }

    fn cfg() -> OptimizerConfig {
        OptimizerConfig {
            minibatch_size: 3,
            merge: true,
            max_instruction_bytes: 8192,
            review: Review::Auto,
            max_proposals: None,
            disabled_reason: None,
        }
    }

    #[test]
    fn trigger_rule() {
        let mut o = OptimizerState::default();
        let now = Instant::now();
        for _ in 0..9 {
            o.record("baseline", "s", example(0.5));
        }
        assert!(!o.due(10, true, now), "9 of 10 rewards");
        o.record("baseline", "s", example(0.5));
        assert!(o.due(10, true, now), "exactly at the threshold");
        assert!(!o.due(10, false, now), "candidate pool full");
        let job = o.start_job(
            &[cand("baseline", &[])],
            &cfg(),
            "m",
            &mut rand::thread_rng(),
        );
        assert!(job.is_some());
        assert!(!o.due(10, true, now), "one in flight");
        o.failed("boom".into(), now);
        assert!(!o.due(10, true, now), "backing off");
        assert!(o.due(10, true, now + Duration::from_secs(3)));
    }

    #[test]
    fn reflect_job_uses_lowest_rewards_of_the_parent() {
        let mut o = OptimizerState::default();
        let base = cand("baseline", &[]);
        for (i, r) in [0.9, 0.1, 0.5, 0.2, 0.8].iter().enumerate() {
            base.record_reward(*r);
            o.record("baseline", &format!("s{i}"), example(*r));
        }
        let job = o
            .start_job(
                std::slice::from_ref(&base),
                &cfg(),
                "m",
                &mut rand::thread_rng(),
            )
            .unwrap();
        let ProposalKind::Reflect {
            parent_id,
            examples,
            ..
        } = &job.kind
        else {
            panic!("expected a reflection")
        };
        assert_eq!(parent_id, "baseline");
        let rewards: Vec<f64> = examples.iter().map(|e| e.reward).collect();
        assert_eq!(rewards, vec![0.1, 0.2, 0.5]);
        assert!(job.prompt().contains("instruction of baseline"));
        assert_eq!(job.parent_ids(), vec!["baseline".to_string()]);
    }

    #[test]
    fn pareto_parent_when_instances_are_shared() {
        let mut o = OptimizerState::default();
        let (a, b, c) = (cand("a", &[]), cand("b", &["a"]), cand("c", &["a"]));
        // b wins s1..s3, c wins s4; a is dominated everywhere.
        for (id, inst, r) in [
            ("a", "s1", 0.1),
            ("a", "s2", 0.1),
            ("a", "s3", 0.1),
            ("a", "s4", 0.1),
            ("b", "s1", 0.9),
            ("b", "s2", 0.9),
            ("b", "s3", 0.9),
            ("b", "s4", 0.2),
            ("c", "s1", 0.2),
            ("c", "s2", 0.2),
            ("c", "s3", 0.2),
            ("c", "s4", 0.9),
        ] {
            o.record(id, inst, example(r));
        }
        let cands = vec![a, b, c];
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut hits = std::collections::HashMap::new();
        let no_merge = OptimizerConfig {
            merge: false,
            ..cfg()
        };
        for _ in 0..400 {
            let job = o.start_job(&cands, &no_merge, "m", &mut rng).unwrap();
            *hits.entry(job.parent_ids()[0].clone()).or_insert(0) += 1;
            o.failed("reset".into(), Instant::now());
        }
        assert!(!hits.contains_key("a"), "dominated: {hits:?}");
        assert!(hits["b"] > hits["c"] * 2, "weighted by wins: {hits:?}");
    }

    #[test]
    fn merge_pairs_share_an_ancestor_and_are_recorded() {
        let mut o = OptimizerState::default();
        let cands = vec![cand("a", &[]), cand("b", &["a"]), cand("c", &["a"])];
        for (id, inst, r) in [
            ("b", "s1", 0.9),
            ("c", "s1", 0.1),
            ("b", "s2", 0.1),
            ("c", "s2", 0.9),
        ] {
            o.record(id, inst, example(r));
        }
        o.status.proposals = MERGE_EVERY - 1;
        let job = o
            .start_job(&cands, &cfg(), "m", &mut rand::thread_rng())
            .unwrap();
        let ProposalKind::Merge {
            ancestor_instruction,
            ..
        } = &job.kind
        else {
            panic!("expected a merge, got {job:?}")
        };
        assert_eq!(&**ancestor_instruction, "instruction of a");
        assert_eq!(job.parent_ids(), vec!["b".to_string(), "c".to_string()]);
        o.accepted(&job);
        o.status.proposals = 2 * MERGE_EVERY - 1;
        let next = o
            .start_job(&cands, &cfg(), "m", &mut rand::thread_rng())
            .unwrap();
        assert!(
            matches!(next.kind, ProposalKind::Reflect { .. }),
            "pair already merged"
        );
    }

    #[test]
    fn pruning_archives_a_clear_loser_but_never_the_last() {
        let good = cand("good", &[]);
        let bad = cand("bad", &[]);
        rewarded(&good, &[0.9, 1.0, 0.8, 0.9, 1.0, 0.9, 0.85, 0.95]);
        rewarded(&bad, &[0.1, 0.0, 0.2, 0.1, 0.0, 0.1, 0.15, 0.05]);
        let pruned = prune(&[good.clone(), bad.clone()], 0.0, 5);
        assert_eq!(pruned.len(), 1);
        assert_eq!(&*pruned[0].id, "bad");
        let below = prune(&[good.clone(), bad.clone()], 0.5, 20);
        assert!(below.is_empty(), "not enough rewards yet");
        assert!(
            prune(std::slice::from_ref(&bad), 0.9, 1).is_empty(),
            "last active candidate stays"
        );
    }

    #[test]
    fn a_full_pool_replaces_its_weakest_judged_candidate() {
        let best = cand("best", &[]);
        rewarded(&best, &[0.9, 1.0, 0.8, 0.9, 1.0, 0.9]);
        let weak = cand("weak", &[]);
        rewarded(&weak, &[0.0, 0.0, 0.1, 0.0, 0.0]);
        let middling = cand("mid", &[]);
        rewarded(&middling, &[0.5, 0.6, 0.4, 0.5, 0.5]);
        let warming = cand("new", &[]);
        warming.record_issued();
        let pool = vec![best.clone(), weak.clone(), middling, warming];
        assert_eq!(&*weakest(&pool, 5).unwrap().id, "weak");
        // Candidates still warming up or unrewarded are never replaced, nor is the best.
        assert!(weakest(&[best.clone(), cand("fresh", &[])], 5).is_none());
        assert!(weakest(std::slice::from_ref(&best), 5).is_none());
    }

    #[test]
    fn a_candidate_never_rewarded_is_replaceable_once_it_has_served_long_enough() {
        let best = cand("best", &[]);
        rewarded(&best, &[0.9, 1.0, 0.8, 0.9, 1.0, 0.9]);
        let silent = cand("silent", &[]);
        for _ in 0..19 {
            silent.record_issued();
        }
        let pool = vec![best.clone(), silent.clone()];
        assert!(weakest(&pool, 5).is_none(), "19 rollouts: not judged yet");
        silent.record_issued();
        assert_eq!(&*weakest(&pool, 5).unwrap().id, "silent");
    }

    #[test]
    fn rejected_proposals_do_not_back_off() {
        let mut o = OptimizerState::default();
        let now = Instant::now();
        for _ in 0..3 {
            o.record("baseline", "s", example(0.5));
        }
        o.start_job(
            &[cand("baseline", &[])],
            &cfg(),
            "m",
            &mut rand::thread_rng(),
        );
        o.rejected("duplicate".into());
        assert_eq!(o.status.failures, 1);
        assert!(!o.due(3, true, now), "waits for fresh rewards");
        // A rejection also counts as a proposal that did not change the best: 2 × 3.
        for _ in 0..6 {
            o.record("baseline", "s", example(0.5));
        }
        assert!(o.due(3, true, now), "no time back-off");
    }

    #[test]
    fn proposals_slow_down_while_the_best_does_not_change() {
        let mut o = OptimizerState::default();
        let now = Instant::now();
        let base = [cand("baseline", &[])];
        o.best_is(Some("baseline"));
        for round in 0..3u32 {
            for _ in 0..(10u32 << round) - 1 {
                o.record("baseline", "s", example(0.5));
            }
            assert!(!o.due(10, true, now), "round {round}: one short");
            o.record("baseline", "s", example(0.5));
            assert!(o.due(10, true, now), "round {round}: 10 << {round} rewards");
            let job = o
                .start_job(&base, &cfg(), "m", &mut rand::thread_rng())
                .unwrap();
            o.accepted(&job);
        }
        o.best_is(Some("cand_new"));
        for _ in 0..10 {
            o.record("baseline", "s", example(0.5));
        }
        assert!(o.due(10, true, now), "a new best resets the pace");
    }

    #[test]
    fn best_rule_needs_evidence() {
        let lucky = cand("lucky", &[]);
        rewarded(&lucky, &[1.0, 1.0]);
        let steady = cand("steady", &[]);
        rewarded(&steady, &[0.8, 0.7, 0.8, 0.9, 0.8, 0.75]);
        let (best, score) = best_candidate(&[lucky.clone(), steady.clone()]).unwrap();
        assert_eq!(&*best.id, "steady");
        assert!((score - 0.791_666).abs() < 1e-3);
        assert!(best_candidate(&[lucky]).is_none());
    }

    #[test]
    fn proposer_state() {
        let s = ProposerStatus::default();
        let state = |status, disabled| s.snapshot(status, disabled, None).state.as_str();
        assert_eq!(state(Status::Started, None), "idle");
        assert_eq!(state(Status::Paused, None), "paused");
        assert_eq!(state(Status::Completed, None), "finished");
        let d = s.snapshot(Status::Started, Some("no key"), None);
        assert_eq!(
            (d.state.as_str(), d.reason.as_deref()),
            ("disabled", Some("no key"))
        );
    }
}
