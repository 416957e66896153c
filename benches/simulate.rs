//! A seeded, offline simulator that drives the REAL gateway binary and measures the
//! online optimizer (reflective proposals + traffic allocation).
//!
//! ```sh
//! cargo build --release --bin gepa-gateway        # the binary under test (built if missing)
//! cargo run --release --example simulate -- --seeds 1,2,3,4,5 --rollouts 1000
//! ```
//!
//! (About 20–30 s for the 10 runs on 2 cores once built. `--help` lists the knobs:
//! `--prune-min-rollouts`, `--warmup-rollouts`, `--max-candidates`, `--verbose`, ...)
//!
//! Per seed it runs the gateway twice, with `gateway.gepa.allocation: "thompson"` and
//! `"uniform"`, each against a fresh in-process mock that plays both the task LLM and the
//! proposer model (see `simulate/mock.rs`, `simulate/task.rs`). One session per run,
//! `online_proposer_min_rollouts` 10 and `online_proposer_max_candidates` 8 (flags).
//!
//! The driver is sequential: for each rollout it picks a task instance (seeded), posts a
//! chat completion through the session's proxy URL, reads the mock's verdict, and posts
//! the reward (1/0) with `reward_info.seed` = the instance and the grader's feedback
//! ("correct", or "wrong: the answer needed FACT-3: ...; FACT-5: ..."). The proposer runs
//! in the background inside the gateway; to make proposals land at the same rollout index
//! whatever the machine's speed, the driver settles after every reward: when a proposal
//! is due by the documented trigger rule (or GET session shows `proposer.state ==
//! "proposing"`), it polls GET session until the proposal has been booked (accepted or
//! failed). A failed proposal (e.g. an exact duplicate of an existing candidate) is
//! retried by the gateway after a wall-clock back-off (2 s, 4 s, ...); the driver sleeps
//! through it (up to `--max-backoff-wait`, default 20 s), so the retry lands at the next
//! rollout as it would with traffic slower than the back-off. `--no-wait-backoff` runs on
//! instead: at the simulator's pace one 2 s back-off then spans ~1000 rollouts.
//!
//! What stays random: the gateway's own RNG (Thompson draws, uniform picks, Pareto parent
//! sampling) is not seeded, so a rerun gives close but not identical numbers. The task
//! instances, the task LLM's luck (one draw per rollout index, shared by both policies)
//! and the proposer's garbling are seeded.
//!
//! Metrics per run: mean reward over the first 100 and the last 200 rollouts; cumulative
//! regret against an oracle that always serves the best instruction found in that run
//! (exact expected accuracy over the instances, from the mock's formula); candidates
//! created; the best candidate's true accuracy; and diagnostics (proposals, failures,
//! archived candidates, rollouts during which the pool was full, the true accuracy of the
//! gateway's `best_candidate_id`). Results go to stdout and to
//! `target/bench/simulate-<date>.txt`. The candidate table and event log (proposals,
//! archiving, failures) are printed for the `--series-seed` runs, for every run with
//! `--verbose`, and for any run that stalled (no new candidate after the first 10% of
//! its rollouts).

#[path = "simulate/gateway.rs"]
mod gateway;
#[path = "simulate/mock.rs"]
mod mock;
#[path = "simulate/task.rs"]
mod task;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::{Gateway, GatewaySpec, Res, SessionSpec};
use mock::{Mock, ProposalRecord};
use task::Task;

#[derive(Parser, Debug)]
#[command(about = "Drive the real gepa-gateway with a simulated task and proposer")]
struct Args {
    /// Simulation seeds (task instances, task luck, proposer garbling).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
    seeds: Vec<u64>,
    /// Rollouts per run.
    #[arg(long, default_value_t = 1000)]
    rollouts: usize,
    /// Allocation policies to compare (`gateway.gepa.allocation`).
    #[arg(long, value_delimiter = ',', default_value = "thompson,uniform")]
    policies: Vec<String>,
    /// Hidden facts in the task (1..=10).
    #[arg(long, default_value_t = 6)]
    facts: usize,
    /// Task instances (reward_info.seed values).
    #[arg(long, default_value_t = 50)]
    instances: usize,
    /// Session setting online_proposer_min_rollouts.
    #[arg(long, default_value_t = 10)]
    min_rollouts: u32,
    /// Session setting online_proposer_max_candidates.
    #[arg(long, default_value_t = 8)]
    max_candidates: u32,
    /// Session setting online_prune_min_rollouts (default: the gateway's, 20).
    #[arg(long)]
    prune_min_rollouts: Option<u32>,
    /// Config gateway.gepa.warmup_rollouts (default: the gateway's, 5).
    #[arg(long)]
    warmup_rollouts: Option<u32>,
    /// Config gateway.gepa.explore_share (default: the gateway's, 0.5).
    #[arg(long)]
    explore_share: Option<f64>,
    /// Seed whose time series and candidate tables are printed (default: the first).
    #[arg(long)]
    series_seed: Option<u64>,
    /// Print the event log and candidate table of every run, not just the series seed's.
    #[arg(long)]
    verbose: bool,
    /// Gateway binary (default: target/release/gepa-gateway, built if missing).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Run `cargo build --release --bin gepa-gateway` first even if the binary exists.
    #[arg(long)]
    build: bool,
    /// Do not sleep through the gateway's wall-clock back-off after a failed proposal
    /// (by default the driver waits, so the retry lands at the next rollout, as with
    /// traffic slower than the back-off; without waiting, at the simulator's pace of
    /// several hundred rollouts a second, one 2 s back-off spans ~1000 rollouts).
    #[arg(long)]
    no_wait_backoff: bool,
    /// Longest back-off the driver sleeps through (seconds); longer ones run on.
    #[arg(long, default_value_t = 20)]
    max_backoff_wait: u64,
    /// Report file (default: target/bench/simulate-<date>.txt).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One candidate as the run saw it.
#[derive(Debug, Clone)]
struct Cand {
    label: String,
    id: String,
    instruction: String,
    parents: Vec<String>,
    /// Rollouts completed when the driver first saw it (0 for the baseline).
    born_at: usize,
    /// Exact expected accuracy over the task instances.
    acc: f64,
    status: String,
    rollouts: u64,
    rewards: u64,
    avg: Option<f64>,
}

struct RunResult {
    policy: String,
    seed: u64,
    rewards: Vec<f64>,
    /// True accuracy of the candidate that served each rollout.
    served_acc: Vec<f64>,
    /// Active candidates after each rollout.
    active: Vec<usize>,
    cands: Vec<Cand>,
    events: Vec<String>,
    proposals: u64,
    failures: u64,
    pool_full: usize,
    /// Share of rollouts after which best_candidate_id had the highest true accuracy
    /// among active candidates with at least 5 rewards (rollouts with none eligible skipped).
    best_ok: f64,
    /// The session's online_prune_min_rollouts (from GET session).
    prune_min: u64,
    best_id: Option<String>,
    sync_timeouts: u32,
    backoff_slept: Duration,
    mock_proposals: Vec<ProposalRecord>,
    elapsed: Duration,
}

impl RunResult {
    fn mean(v: &[f64]) -> f64 {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }
    fn first100(&self) -> f64 {
        Self::mean(&self.rewards[..self.rewards.len().min(100)])
    }
    fn last200(&self) -> f64 {
        Self::mean(&self.rewards[self.rewards.len().saturating_sub(200)..])
    }
    fn last200_expected(&self) -> f64 {
        Self::mean(&self.served_acc[self.served_acc.len().saturating_sub(200)..])
    }
    fn oracle(&self) -> f64 {
        self.cands.iter().map(|c| c.acc).fold(f64::MIN, f64::max)
    }
    fn regret(&self) -> f64 {
        let o = self.oracle();
        self.served_acc.iter().map(|a| o - a).sum()
    }
    /// Regret against the best possible instruction (every fact: accuracy FLOOR + GAIN),
    /// which also charges a run for never finding it.
    fn regret_ceiling(&self) -> f64 {
        let o = task::FLOOR + task::GAIN;
        self.served_acc.iter().map(|a| o - a).sum()
    }
    fn created(&self) -> usize {
        self.cands.len().saturating_sub(1)
    }
    fn archived(&self) -> usize {
        self.cands.iter().filter(|c| c.status == "archived").count()
    }
    fn merges(&self) -> usize {
        self.cands.iter().filter(|c| c.parents.len() == 2).count()
    }
    /// Rollouts completed when the last candidate was created (0: none).
    fn last_new(&self) -> usize {
        self.cands
            .iter()
            .skip(1)
            .map(|c| c.born_at)
            .max()
            .unwrap_or(0)
    }
    /// Active candidates at the end with fewer rewards than the pruning rule needs.
    fn starved(&self) -> usize {
        self.cands
            .iter()
            .filter(|c| c.status == "active" && c.rewards < self.prune_min)
            .count()
    }
    fn archived_best(&self) -> usize {
        let o = self.oracle();
        self.cands
            .iter()
            .filter(|c| c.status == "archived" && (o - c.acc).abs() < 1e-12)
            .count()
    }
    fn noop_reflections(&self) -> usize {
        self.mock_proposals
            .iter()
            .filter(|p| !p.merge && p.feedback_new.is_empty())
            .count()
    }
    /// Stalled: no candidate created after the first 10% of the rollouts.
    fn stalled(&self) -> bool {
        self.last_new() * 10 <= self.rewards.len()
    }
    fn gateway_best(&self) -> Option<&Cand> {
        let id = self.best_id.as_deref()?;
        self.cands.iter().find(|c| c.id == id)
    }
    /// Share of the last 200 rollouts served by a candidate with the run's best accuracy.
    fn last200_on_best(&self) -> f64 {
        let o = self.oracle();
        let tail = &self.served_acc[self.served_acc.len().saturating_sub(200)..];
        tail.iter().filter(|a| (o - **a).abs() < 1e-12).count() as f64 / tail.len().max(1) as f64
    }
}

/// The driver's view of the proposer, to settle after each reward.
#[derive(Default)]
struct ProposerTrack {
    rewards_since_accept: u32,
    /// Mirrors the gateway's stagnation rule: proposals since the best last changed.
    stagnation: u32,
    last_best: Option<String>,
    proposals: u64,
    failures: u64,
    consecutive_failures: u32,
    backoff_until: Option<Instant>,
}

/// The gateway's back-off after `n` consecutive failures (src/gepa/optimizer.rs).
fn backoff(n: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(n.min(16)).min(300))
}

fn active_count(v: &Value) -> usize {
    v["candidates"].as_array().map_or(0, |cs| {
        cs.iter().filter(|c| c["status"] == "active").count()
    })
}

/// Folds GET session into the run's candidate list; returns events.
fn absorb(
    v: &Value,
    task: &Task,
    cands: &mut Vec<Cand>,
    index: &mut HashMap<String, usize>,
    done: usize,
) -> Vec<String> {
    let mut events = Vec::new();
    let Some(list) = v["candidates"].as_array() else {
        return events;
    };
    for c in list {
        let id = c["candidate_id"].as_str().unwrap_or_default().to_string();
        let status = c["status"].as_str().unwrap_or_default().to_string();
        let i = match index.get(&id) {
            Some(&i) => i,
            None => {
                let instruction = c["instruction"].as_str().unwrap_or_default().to_string();
                let parents: Vec<String> = c["parent_ids"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let label = format!("c{}", cands.len());
                let acc = task.accuracy(&instruction);
                let parent_labels: Vec<String> = parents
                    .iter()
                    .map(|p| index.get(p).map_or(p.clone(), |&j| cands[j].label.clone()))
                    .collect();
                if !cands.is_empty() {
                    events.push(format!(
                        "r{done:>4}: + {label} {} of {}: facts {} acc {acc:.3}",
                        if parents.len() == 2 {
                            "merge"
                        } else {
                            "reflection"
                        },
                        parent_labels.join("+"),
                        task.fact_set(&instruction),
                    ));
                }
                index.insert(id.clone(), cands.len());
                cands.push(Cand {
                    label,
                    id,
                    instruction,
                    parents: parent_labels,
                    born_at: done,
                    acc,
                    status: status.clone(),
                    rollouts: 0,
                    rewards: 0,
                    avg: None,
                });
                cands.len() - 1
            }
        };
        let cand = &mut cands[i];
        cand.rollouts = c["rollout_count"].as_u64().unwrap_or(0);
        cand.rewards = c["reward_count"].as_u64().unwrap_or(0);
        cand.avg = c["avg_reward"].as_f64();
        if cand.status != status {
            events.push(format!(
                "r{done:>4}: {} {} -> {status} (acc {:.3}, {} rewards, mean {})",
                cand.label,
                cand.status,
                cand.acc,
                cand.rewards,
                cand.avg.map_or("-".into(), |a| format!("{a:.3}")),
            ));
            cand.status = status;
        }
    }
    events
}

async fn run_one(args: &Args, binary: &std::path::Path, seed: u64, policy: &str) -> Res<RunResult> {
    let task = Arc::new(Task::new(seed, args.facts, args.instances));
    let mock = Mock::start(task.clone(), seed).await?;
    let gw = Gateway::start(&GatewaySpec {
        binary,
        upstream_url: mock.url(),
        allocation: policy,
        warmup_rollouts: args.warmup_rollouts,
        explore_share: args.explore_share,
    })
    .await?;
    let result = drive(args, &gw, &mock, &task, seed, policy).await;
    result.map_err(|e| {
        format!(
            "{policy} seed {seed}: {e}\n--- gateway log (last 40 lines) ---\n{}",
            gw.log_tail(40)
        )
        .into()
    })
}

async fn drive(
    args: &Args,
    gw: &Gateway,
    mock: &Mock,
    task: &Task,
    seed: u64,
    policy: &str,
) -> Res<RunResult> {
    let started = Instant::now();
    let sid = gw
        .create_session(
            &Task::baseline(),
            &SessionSpec {
                min_rollouts: args.min_rollouts,
                max_candidates: args.max_candidates,
                prune_min_rollouts: args.prune_min_rollouts,
            },
        )
        .await?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00d1_ce5e_ed00);
    let mut cands: Vec<Cand> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut events = Vec::new();
    let v = gw.get_session(&sid).await?;
    absorb(&v, task, &mut cands, &mut index, 0);
    let (mut rewards, mut served_acc, mut active) = (vec![], vec![], vec![]);
    let mut track = ProposerTrack::default();
    let (mut pool_full, mut sync_timeouts) = (0usize, 0u32);
    let mut backoff_slept = Duration::ZERO;
    let mut best_id = None;
    let (mut best_checked, mut best_right) = (0usize, 0usize);
    let prune_min = v["settings"]["online_prune_min_rollouts"]
        .as_u64()
        .unwrap_or(0);

    for done in 1..=args.rollouts {
        let instance = rng.gen_range(0..task.instances.len());
        let (rollout, cid, content) = gw.chat(&sid, &task.question(instance)).await?;
        if !index.contains_key(&cid) {
            let v = gw.get_session(&sid).await?;
            events.extend(absorb(&v, task, &mut cands, &mut index, done - 1));
        }
        let served = index
            .get(&cid)
            .map(|&i| cands[i].acc)
            .ok_or_else(|| format!("candidate {cid} is not in GET session"))?;
        let ok = content.starts_with("ANSWER ok");
        let reward = if ok { 1.0 } else { 0.0 };
        let feedback = if ok {
            "correct".to_string()
        } else {
            task.wrong_feedback(instance)
        };
        gw.reward(
            &sid,
            &json!({"rollout_id": rollout, "candidate_id": cid,
                    "reward_info": {"outcome_reward": reward, "seed": instance,
                                    "feedback": feedback}}),
        )
        .await?;
        rewards.push(reward);
        served_acc.push(served);
        track.rewards_since_accept += 1;

        // Settle: a due proposal (or one the 1 s rescan started) is booked before the
        // next rollout.
        let mut v = gw.get_session(&sid).await?;
        // With a full pool the gateway proposes only if it can replace a judged candidate,
        // which the driver does not mirror: then it waits only for a proposal in flight.
        if let Some(best) = v["best_candidate_id"].as_str() {
            if track.last_best.as_deref() != Some(best) {
                track.last_best = Some(best.to_string());
                track.stagnation = 0;
            }
        }
        let due = track.rewards_since_accept >= args.min_rollouts << track.stagnation.min(4)
            && active_count(&v) < args.max_candidates as usize
            && track.backoff_until.is_none_or(|t| Instant::now() >= t);
        let t0 = Instant::now();
        loop {
            let booked = v["proposer"]["proposals"].as_u64().unwrap_or(0)
                + v["proposer"]["failures"].as_u64().unwrap_or(0);
            let settled = v["proposer"]["state"] != "proposing"
                && (!due || booked > track.proposals + track.failures);
            if settled {
                break;
            }
            if t0.elapsed() > Duration::from_secs(2) {
                sync_timeouts += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            v = gw.get_session(&sid).await?;
        }
        let new_events = absorb(&v, task, &mut cands, &mut index, done);
        let archived = new_events.iter().any(|e| e.contains("-> archived"));
        events.extend(new_events);
        if archived {
            let best = v["best_candidate_id"]
                .as_str()
                .and_then(|id| index.get(id))
                .map(|&i| &cands[i]);
            events.push(format!(
                "r{done:>4}:   (gateway best now: {})",
                best.map_or("none".into(), |c| format!(
                    "{} acc {:.3}, {} rewards, mean {}",
                    c.label,
                    c.acc,
                    c.rewards,
                    c.avg.map_or("-".into(), |a| format!("{a:.3}"))
                ))
            ));
        }
        let proposals = v["proposer"]["proposals"].as_u64().unwrap_or(0);
        let failures = v["proposer"]["failures"].as_u64().unwrap_or(0);
        if proposals > track.proposals {
            track.stagnation += (proposals - track.proposals) as u32;
            track.proposals = proposals;
            track.rewards_since_accept = 0;
            track.consecutive_failures = 0;
            track.backoff_until = None;
        }
        let last_error = v["proposer"]["last_error"].as_str().unwrap_or("");
        let rejected = last_error.contains("duplicate") || last_error.contains("empty");
        if failures > track.failures && rejected {
            // A rejected proposal (duplicate/empty) has no back-off; the gateway waits for
            // a fresh batch of rewards.
            track.stagnation += (failures - track.failures) as u32;
            track.failures = failures;
            track.rewards_since_accept = 0;
            events.push(format!("r{done:>4}: proposal rejected ({last_error})"));
        }
        if failures > track.failures {
            track.consecutive_failures += (failures - track.failures) as u32;
            track.failures = failures;
            let wait = backoff(track.consecutive_failures);
            track.backoff_until = Some(Instant::now() + wait);
            events.push(format!(
                "r{done:>4}: proposal failed ({}), back-off {}s",
                v["proposer"]["last_error"].as_str().unwrap_or("?"),
                wait.as_secs()
            ));
            if !args.no_wait_backoff && wait.as_secs() <= args.max_backoff_wait {
                let t = Instant::now();
                tokio::time::sleep(wait + Duration::from_millis(20)).await;
                backoff_slept += t.elapsed();
            }
        }
        let n_active = active_count(&v);
        if n_active >= args.max_candidates as usize {
            pool_full += 1;
        }
        active.push(n_active);
        best_id = v["best_candidate_id"].as_str().map(str::to_string);
        let eligible = cands
            .iter()
            .filter(|c| c.status == "active" && c.rewards >= 5)
            .map(|c| c.acc)
            .fold(f64::NAN, f64::max);
        if !eligible.is_nan() {
            let chosen = best_id
                .as_deref()
                .and_then(|id| index.get(id))
                .map_or(f64::NAN, |&i| cands[i].acc);
            best_checked += 1;
            if (chosen - eligible).abs() < 1e-12 {
                best_right += 1;
            }
        }
    }
    let errors = mock.errors();
    if !errors.is_empty() {
        return Err(format!("the mock could not parse some requests: {errors:?}").into());
    }
    if mock.task_calls() != args.rollouts as u64 {
        return Err(format!(
            "the mock saw {} task calls for {} rollouts",
            mock.task_calls(),
            args.rollouts
        )
        .into());
    }
    Ok(RunResult {
        policy: policy.to_string(),
        seed,
        rewards,
        served_acc,
        active,
        cands,
        events,
        proposals: track.proposals,
        failures: track.failures,
        pool_full,
        best_ok: best_right as f64 / best_checked.max(1) as f64,
        prune_min,
        best_id,
        sync_timeouts,
        backoff_slept,
        mock_proposals: mock.proposals(),
        elapsed: started.elapsed(),
    })
}

/// One table column: header, decimals, and the per-run value (averaged over runs).
type Column = (&'static str, usize, fn(&RunResult) -> f64);

const RESULT_COLUMNS: [Column; 6] = [
    ("first100", 3, RunResult::first100),
    ("last200", 3, RunResult::last200),
    ("regret", 1, RunResult::regret),
    ("regret95", 1, RunResult::regret_ceiling),
    ("created", 1, |r| r.created() as f64),
    ("best", 3, RunResult::oracle),
];

const DIAGNOSTIC_COLUMNS: [Column; 14] = [
    ("gw-best", 3, |r| {
        r.gateway_best().map_or(f64::NAN, |c| c.acc)
    }),
    ("bestok", 2, |r| r.best_ok),
    ("last200E", 3, RunResult::last200_expected),
    ("onbest", 2, RunResult::last200_on_best),
    ("props", 1, |r| r.proposals as f64),
    ("fail", 1, |r| r.failures as f64),
    ("arch", 1, |r| r.archived() as f64),
    ("archbest", 1, |r| r.archived_best() as f64),
    ("poolfull", 0, |r| r.pool_full as f64),
    ("lastnew", 0, |r| r.last_new() as f64),
    ("starved", 1, |r| r.starved() as f64),
    ("merges", 1, |r| r.merges() as f64),
    ("noop", 1, |r| r.noop_reflections() as f64),
    ("secs", 1, |r| r.elapsed.as_secs_f64()),
];

/// Per seed and policy, then the mean per policy.
fn table(out: &mut String, runs: &[RunResult], policies: &[String], columns: &[Column]) {
    let _ = write!(out, "{:<6} {:<9}", "seed", "policy");
    for (name, _, _) in columns {
        let _ = write!(out, " {name:>9}");
    }
    let _ = writeln!(out);
    let row = |out: &mut String, seed: &str, rs: &[&RunResult]| {
        let _ = write!(out, "{seed:<6} {:<9}", rs[0].policy);
        for (_, decimals, f) in columns {
            let mean = rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64;
            let _ = write!(out, " {mean:>9.decimals$}");
        }
        let _ = writeln!(out);
    };
    let mut seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
    seeds.dedup();
    for seed in &seeds {
        for p in policies {
            if let Some(r) = runs.iter().find(|r| r.seed == *seed && &r.policy == p) {
                row(out, &seed.to_string(), &[r]);
            }
        }
    }
    let _ = writeln!(out, "{}", "-".repeat(16 + 10 * columns.len()));
    for p in policies {
        let rs: Vec<&RunResult> = runs.iter().filter(|r| &r.policy == p).collect();
        if !rs.is_empty() {
            row(out, "mean", &rs);
        }
    }
}

fn series(out: &mut String, runs: &[&RunResult]) {
    let _ = write!(out, "{:<11}", "rollouts");
    for r in runs {
        let _ = write!(
            out,
            " | {:<9} {:>6} {:>7} {:>6}",
            r.policy, "reward", "E[acc]", "active"
        );
    }
    let _ = writeln!(out);
    let n = runs.iter().map(|r| r.rewards.len()).max().unwrap_or(0);
    for start in (0..n).step_by(100) {
        let end = (start + 100).min(n);
        let _ = write!(out, "{:<11}", format!("{}-{}", start + 1, end));
        for r in runs {
            let end = end.min(r.rewards.len());
            let _ = write!(
                out,
                " | {:<9} {:>6.2} {:>7.3} {:>6}",
                "",
                RunResult::mean(&r.rewards[start..end]),
                RunResult::mean(&r.served_acc[start..end]),
                r.active.get(end.saturating_sub(1)).copied().unwrap_or(0),
            );
        }
        let _ = writeln!(out);
    }
}

fn details(out: &mut String, r: &RunResult, task: &Task) {
    let _ = writeln!(
        out,
        "\n## {} seed {}: candidates (gateway best: {}){}",
        r.policy,
        r.seed,
        r.gateway_best().map_or("none".into(), |c| c.label.clone()),
        if r.stalled() {
            format!(" -- STALLED: no candidate after rollout {}", r.last_new())
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "{:<5} {:<9} {:>5} {:<15} {:>6} {:>8} {:>7} {:>6} {:<8}",
        "cand", "parents", "born", "facts", "acc", "rollouts", "rewards", "mean", "status"
    );
    for c in &r.cands {
        let _ = writeln!(
            out,
            "{:<5} {:<9} {:>5} {:<15} {:>6.3} {:>8} {:>7} {:>6} {:<8}",
            c.label,
            if c.parents.is_empty() {
                "-".to_string()
            } else {
                c.parents.join("+")
            },
            c.born_at,
            task.fact_set(&c.instruction),
            c.acc,
            c.rollouts,
            c.rewards,
            c.avg.map_or("-".into(), |a| format!("{a:.3}")),
            c.status
        );
    }
    let no_new = r
        .mock_proposals
        .iter()
        .filter(|p| !p.merge && p.feedback_new.is_empty())
        .count();
    let lost = r
        .mock_proposals
        .iter()
        .filter(|p| p.parent_facts.iter().any(|f| !p.result_facts.contains(f)))
        .count();
    let _ = writeln!(
        out,
        "proposer calls: {} ({} merges); reflections whose feedback named no new fact: {}; \
         proposals that lost an existing fact: {}",
        r.mock_proposals.len(),
        r.mock_proposals.iter().filter(|p| p.merge).count(),
        no_new,
        lost
    );
    let _ = writeln!(out, "events:");
    for e in &r.events {
        let _ = writeln!(out, "  {e}");
    }
}

fn timestamp() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]-[hour][minute][second]");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "now".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("simulate: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Res<()> {
    for p in &args.policies {
        if p != "thompson" && p != "uniform" {
            return Err(format!("--policies: unknown policy {p:?} (thompson, uniform)").into());
        }
    }
    if args.seeds.is_empty() || args.rollouts == 0 || args.instances == 0 {
        return Err("--seeds, --rollouts and --instances must not be empty / zero".into());
    }
    if !(1..=task::MAX_FACTS).contains(&args.facts) {
        return Err(format!("--facts must be 1..={}", task::MAX_FACTS).into());
    }
    let binary = gateway::locate_binary(args.gateway.clone(), args.build)?;
    let started = Instant::now();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut runs = Vec::new();
    for &seed in &args.seeds {
        for policy in &args.policies {
            let r = run_one(&args, &binary, seed, policy).await?;
            eprintln!(
                "seed {seed} {policy:<8}: first100 {:.3} last200 {:.3} regret {:.1} \
                 created {} best {:.3} ({:.1}s)",
                r.first100(),
                r.last200(),
                r.regret(),
                r.created(),
                r.oracle(),
                r.elapsed.as_secs_f64()
            );
            runs.push(r);
        }
    }
    let total = started.elapsed();

    let mut out = String::new();
    let _ = writeln!(out, "# gepa-gateway online-optimizer simulation");
    let _ = writeln!(out, "command: {command}");
    let _ = writeln!(out, "gateway: {}", binary.display());
    let _ = writeln!(
        out,
        "task: {} facts, {} instances (1-3 facts each), P(correct) = {} + {} * fraction of \
         the instance's facts in the system message; proposer drops new facts p={}, old p={}",
        args.facts,
        args.instances,
        task::FLOOR,
        task::GAIN,
        mock::P_DROP_NEW,
        mock::P_DROP_OLD
    );
    let _ = writeln!(
        out,
        "session: online_proposer_min_rollouts {}, online_proposer_max_candidates {}, \
         online_prune_min_rollouts {}, warmup_rollouts {}, explore_share {}, other settings \
         default; {} \
         rollouts per run, sequential{}",
        args.min_rollouts,
        args.max_candidates,
        args.prune_min_rollouts
            .map_or("default (20)".into(), |n| n.to_string()),
        args.warmup_rollouts
            .map_or("default (5)".into(), |n| n.to_string()),
        args.explore_share
            .map_or("default (0.5)".into(), |s| s.to_string()),
        args.rollouts,
        if args.no_wait_backoff {
            ", not waiting out proposer back-offs"
        } else {
            ", waiting out proposer back-offs"
        }
    );
    let _ = writeln!(out, "\n## Results");
    table(&mut out, &runs, &args.policies, &RESULT_COLUMNS);
    let _ = writeln!(
        out,
        "first100 / last200 = mean reward over the first 100 / last 200 rollouts; regret = \
         sum over rollouts of (true acc of the best candidate found in the run - true acc \
         of the candidate served); regret95 = the same against the best possible \
         instruction (every fact, acc 0.95), which also charges a run for never finding it; \
         created = candidates proposed; best = true acc of the best candidate found"
    );
    let _ = writeln!(out, "\n## Diagnostics");
    table(&mut out, &runs, &args.policies, &DIAGNOSTIC_COLUMNS);
    let _ = writeln!(
        out,
        "gw-best = true acc of the gateway's best_candidate_id at the end; bestok = share of \
         rollouts after which best_candidate_id had the highest true acc among the active \
         candidates with >= 5 rewards; last200E = mean true acc served over the last 200; \
         onbest = share of the last 200 served by a candidate with the run's best acc; \
         props / fail = proposals accepted / failed; arch = candidates archived; archbest = \
         archived candidates whose true acc was the run's best; poolfull = rollouts after \
         which the active pool was at max_candidates (a proposal then replaces the weakest judged candidate); lastnew = \
         rollout at which the last candidate was created; starved = active candidates at \
         the end with fewer rewards than online_prune_min_rollouts (the pruning rule cannot \
         archive them); merges = merge candidates; noop = reflections whose feedback named \
         no fact missing from the parent; secs = wall time of the run"
    );
    let sync_timeouts: u32 = runs.iter().map(|r| r.sync_timeouts).sum();
    let slept: Duration = runs.iter().map(|r| r.backoff_slept).sum();
    let _ = writeln!(
        out,
        "sync timeouts (a due proposal not booked within 2 s): {sync_timeouts}; \
         back-off sleeps: {:.1}s",
        slept.as_secs_f64()
    );

    let series_seed = args.series_seed.unwrap_or(args.seeds[0]);
    let chosen: Vec<&RunResult> = runs.iter().filter(|r| r.seed == series_seed).collect();
    if !chosen.is_empty() {
        let _ = writeln!(
            out,
            "\n## Time series, seed {series_seed} (mean reward, mean true acc served, active \
             candidates at the block's end)"
        );
        series(&mut out, &chosen);
    }
    for r in &runs {
        if args.verbose || r.seed == series_seed || r.stalled() {
            let task = Task::new(r.seed, args.facts, args.instances);
            details(&mut out, r, &task);
        }
    }
    let _ = writeln!(out, "\ntotal runtime: {:.1}s", total.as_secs_f64());

    print!("{out}");
    let path = match &args.out {
        Some(p) => p.clone(),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
            target
                .join("bench")
                .join(format!("simulate-{}.txt", timestamp()))
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, &out)?;
    eprintln!("written to {}", path.display());
    Ok(())
}
