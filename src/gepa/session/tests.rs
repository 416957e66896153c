//! The session's unit tests: lifecycle, rewards, pins, eviction, store failures and
//! proposals.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use super::*;
use crate::errors::ApiError;
use crate::gepa::candidate::CallVerdict;
use crate::gepa::optimizer::{OptimizerConfig, MIN_REWARDS_FOR_BEST};
use crate::gepa::status::{ArchiveReason, CandidateStatus};
use crate::gepa::reward::{Reward, RewardRequest};
use crate::gepa::selection::CandidateSelector;
use crate::gepa::settings::{GepaSettings, NewSession};
use crate::gepa::store::{
    CandidateRecord, RewardCommit, RewardWrite, RolloutRecord, SessionRecord, StateStore,
    StoreError, StoredRollout,
};
use crate::gepa::Sessions;
use crate::store::MemoryStore;

/// GET session's body for `s`, as the admin API renders it.
fn detail_json(s: &Session) -> serde_json::Value {
    let detail = s.detail();
    let urls = crate::routes::PublicUrls::new("http://x");
    serde_json::to_value(crate::admin::views::SessionDetailView::new(&detail, &urls)).unwrap()
}

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
            max_instruction_bytes: 8192,
            review: crate::config::Review::Auto,
            max_proposals: None,
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
            verdict: CallVerdict::Succeeded,
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
            verdict: CallVerdict::Failed,
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
        assert!(detail_json(&s)["best_candidate_id"].is_null(), "{i}");
        let t = ok_call(&s, None);
        s.reward(reward(&t.rollout_id, 1.0)).await.unwrap();
    }
    let v = detail_json(&s);
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
    fn candidate_status_changed(
        &self,
        _: &str,
        _: &str,
        _: CandidateStatus,
        _: Option<ArchiveReason>,
    ) -> Result<(), StoreError> {
        Err(StoreError("disk full".into()))
    }
    fn session_deleted(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn event_recorded(&self, _: &str, _: &crate::gepa::events::Event) {}
    fn pin_changed(&self, _: &str, _: Option<&str>) -> Result<(), StoreError> {
        Ok(())
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
    fn candidate_status_changed(
        &self,
        _: &str,
        _: &str,
        _: CandidateStatus,
        _: Option<ArchiveReason>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    fn session_deleted(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn event_recorded(&self, _: &str, _: &crate::gepa::events::Event) {}
    fn pin_changed(&self, _: &str, _: Option<&str>) -> Result<(), StoreError> {
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
    let reply = tokio::time::timeout(Duration::from_secs(5), s.reward(reward(&t.rollout_id, 0.5)))
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
            let dup = s.finish_proposal(&job, Ok("be helpful".into()), None);
            assert!(
                dup.is_none(),
                "an exact duplicate of the baseline is rejected"
            );
            let v = detail_json(&s);
            assert_eq!(v["proposer"]["failures"], 1);
            assert!(v["proposer"]["last_error"]
                .as_str()
                .unwrap()
                .contains("duplicate"));
        }
    }
}

/// Adds an active candidate to `s`, as an accepted proposal would.
fn add_candidate(s: &Session, id: &str, instruction: &str) -> Arc<Candidate> {
    let c = Arc::new(Candidate::new(id.into(), instruction.into(), vec![]));
    s.state.lock().candidates.push(c.clone());
    c
}

/// Serves one call and ends it as `verdict_for` says for the candidate that served it.
fn serve(s: &Session, verdict_for: &dyn Fn(&str) -> CallVerdict) -> CallTicket {
    let t = s.begin_call(None).unwrap();
    let verdict = verdict_for(&t.candidate_id);
    let output = (verdict == CallVerdict::Succeeded).then(|| "hi".to_string());
    s.finish_call(
        &t.rollout_id,
        CallOutcome {
            verdict,
            input: vec![],
            output,
        },
    );
    t
}

fn failing(id: &'static str) -> impl Fn(&str) -> CallVerdict {
    move |served| {
        if served == id {
            CallVerdict::Failed
        } else {
            CallVerdict::Succeeded
        }
    }
}

#[test]
fn a_candidate_the_upstream_refuses_is_served_at_most_five_times_then_archived() {
    let s = session();
    let bad = add_candidate(&s, "cand_bad", "trips the upstream's filter");
    let mut bad_calls = 0;
    for _ in 0..200 {
        if &*serve(&s, &failing("cand_bad")).candidate_id == "cand_bad" {
            bad_calls += 1;
        }
    }
    assert_eq!(bad_calls, 5, "the warm-up sent it every call until it was suspended");
    assert_eq!(bad.archived_reason(), Some(ArchiveReason::UpstreamFailures));
    assert!(!bad.is_active());
    assert_eq!(bad.calls().failed, 5);
    let v = detail_json(&s);
    assert_eq!(v["candidates"][1]["archived_reason"], "upstream_failures");
    assert_eq!(v["candidates"][1]["failure_count"], 5);
    assert_eq!(v["candidates"][0]["failure_count"], 0);
    assert!(v["candidates"][0]["archived_reason"].is_null());
}

#[test]
fn an_outage_that_fails_every_candidate_archives_none() {
    let s = session();
    let proposal = add_candidate(&s, "cand_p", "a proposal");
    for _ in 0..200 {
        serve(&s, &|_| CallVerdict::Failed);
    }
    let baseline = s.candidates()[0].clone();
    assert!(proposal.is_active() && baseline.is_active(), "nothing archived");
    assert!(proposal.calls().failed + baseline.calls().failed == 200);
    // When the upstream comes back, both serve and succeed.
    for _ in 0..20 {
        serve(&s, &|_| CallVerdict::Succeeded);
    }
    assert!(proposal.is_active() && baseline.is_active());
    assert!(proposal.calls().succeeded > 0 && baseline.calls().succeeded > 0);
}

#[test]
fn a_rate_limit_or_an_abandoned_call_counts_against_no_candidate() {
    let s = session();
    let proposal = add_candidate(&s, "cand_p", "a proposal");
    for _ in 0..50 {
        serve(&s, &|served: &str| {
            if served == "cand_p" {
                CallVerdict::Inconclusive
            } else {
                CallVerdict::Succeeded
            }
        });
    }
    assert!(proposal.is_active());
    assert_eq!(proposal.calls().failed, 0);
}

#[test]
fn a_candidate_that_fails_far_more_often_than_the_others_is_archived() {
    let s = session();
    let flaky = add_candidate(&s, "cand_flaky", "fails two calls in three");
    let flaky_calls = std::cell::Cell::new(0u32);
    for _ in 0..2000 {
        if !flaky.is_active() {
            break;
        }
        serve(&s, &|served: &str| {
            if served != "cand_flaky" {
                return CallVerdict::Succeeded;
            }
            flaky_calls.set(flaky_calls.get() + 1);
            if flaky_calls.get().is_multiple_of(3) {
                CallVerdict::Succeeded
            } else {
                CallVerdict::Failed
            }
        });
    }
    let flaky_calls = flaky_calls.get();
    assert_eq!(flaky.archived_reason(), Some(ArchiveReason::UpstreamFailures));
    assert!(flaky_calls >= 20, "judged on its rate, not a streak: {flaky_calls} calls");
}

#[test]
fn the_last_active_candidate_is_never_archived_for_failures() {
    let s = session();
    for _ in 0..50 {
        serve(&s, &|_| CallVerdict::Failed);
    }
    let baseline = s.candidates()[0].clone();
    assert!(baseline.is_active());
    assert_eq!(baseline.calls().failed, 50);
}

#[tokio::test]
async fn a_pin_stops_proposals_in_auto_review() {
    let s = session();
    for _ in 0..10 {
        let t = ok_call(&s, None);
        s.reward(reward(&t.rollout_id, 0.5)).await.unwrap();
    }
    let due = |s: &Session| s.proposal_due(&s.state.lock(), Instant::now());
    assert!(due(&s), "ten rewards make a proposal due");
    s.pin("baseline").unwrap();
    assert!(!due(&s), "pinned: no proposals in auto review");
    assert!(s.take_proposal_job(Instant::now()).is_none());
    s.unpin().unwrap();
    assert!(due(&s));
}

#[tokio::test]
async fn a_session_at_its_proposal_limit_proposes_no_more() {
    let mut env = env_with(Duration::from_secs(60), Arc::new(MemoryStore::new()));
    env.optimizer.max_proposals = Some(1);
    let s = Sessions::new(10, env).create(new_session("be helpful")).unwrap();
    let due = |s: &Session| s.proposal_due(&s.state.lock(), Instant::now());
    for round in 0..2 {
        for _ in 0..40 {
            let t = ok_call(&s, None);
            s.reward(reward(&t.rollout_id, 0.5)).await.unwrap();
        }
        if round == 0 {
            let job = s.take_proposal_job(Instant::now()).expect("the first is due");
            s.finish_proposal(&job, Ok(format!("proposal {round}")), None);
        }
    }
    assert!(!due(&s), "one call made: the limit is reached");
    assert!(s.take_proposal_job(Instant::now()).is_none());
    assert_eq!(s.detail().proposer.state.as_str(), "limited");
}
