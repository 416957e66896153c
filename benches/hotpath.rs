//! Per-request steps of the proxy path other than the body rewrite (`benches/rewrite.rs`):
//! routing a path, choosing a candidate among 2 and 32 (Thompson sampling over their
//! statistics), and issuing and verifying a self-verifying rollout id.
//!
//! `cargo bench --bench hotpath`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use gepa_gateway::gepa::allocation::{AllocationPolicy, ArmStats};
use gepa_gateway::gepa::candidate::Candidate;
use gepa_gateway::gepa::rollout_id;
use gepa_gateway::gepa::selection::CandidateSelector;
use gepa_gateway::gepa::store::CandidateRecord;
use gepa_gateway::routes::route;
use http::Method;
use rand::SeedableRng;

// The gateway's allocator (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let paths = [
        (
            "proxy",
            "/api/gepa/v1/4f9c2d3e-8a7b-4c1d-9e2f-0a1b2c3d4e5f/chat/completions",
        ),
        (
            "proxy_correlated_v1",
            "/api/gepa/v1/4f9c2d3e-8a7b-4c1d-9e2f-0a1b2c3d4e5f/conv-42/v1/chat/completions",
        ),
        (
            "reward",
            "/api/prompt-learning/online/gepa/sessions/4f9c2d3e-8a7b-4c1d-9e2f-0a1b2c3d4e5f/reward",
        ),
        ("unknown", "/v1/embeddings"),
    ];
    for (name, path) in paths {
        group.bench_function(name, |b| {
            b.iter(|| black_box(route(&Method::POST, black_box(path))))
        });
    }
    group.finish();
}

/// Arms with rewards spread around 0.5, as a session some hundreds of rollouts in.
fn arms(n: usize) -> Vec<ArmStats> {
    (0..n)
        .map(|i| {
            let rewards = 40 + i as u64;
            let mean = 0.4 + 0.2 * (i as f64 / n as f64);
            ArmStats {
                issued: rewards + 5,
                rewards,
                reward_sum: mean * rewards as f64,
                reward_sum_sq: (mean * mean + 0.04) * rewards as f64,
            }
        })
        .collect()
}

fn bench_selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_candidate");
    let policy = AllocationPolicy { min_rollouts: 5 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for n in [2, 32] {
        let stats = arms(n);
        group.bench_function(format!("thompson_{n}_arms"), |b| {
            b.iter(|| black_box(policy.choose(black_box(&stats), &mut rng)))
        });
        // The whole step as begin_call runs it: read each candidate's statistics, then
        // choose (these candidates are past warm-up but have no rewards yet).
        let candidates: Vec<Arc<Candidate>> = (0..n)
            .map(|i| {
                Arc::new(Candidate::restored(CandidateRecord {
                    id: format!("cand_{i:016x}").into(),
                    instruction: format!("instruction {i}").into(),
                    parent_ids: vec![],
                    created_at: time::OffsetDateTime::UNIX_EPOCH,
                    status: gepa_gateway::gepa::status::CandidateStatus::Active,
                    archived_reason: None,
                    issued: 100,
                    calls_failed: 0,
                }))
            })
            .collect();
        let selector = CandidateSelector::new(5);
        group.bench_function(format!("selector_{n}_candidates"), |b| {
            b.iter(|| black_box(selector.choose(black_box(&candidates), &mut rng)))
        });
    }
    group.finish();
}

fn bench_rollout_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("rollout_id");
    let key = [7u8; 32];
    let session = "4f9c2d3e-8a7b-4c1d-9e2f-0a1b2c3d4e5f";
    group.bench_function("issue", |b| {
        b.iter(|| black_box(rollout_id::issue(&key, session, 3)))
    });
    let id = rollout_id::issue(&key, session, 3);
    group.bench_function("verify", |b| {
        b.iter(|| black_box(rollout_id::verify(&key, session, black_box(&id))))
    });
    group.finish();
}

criterion_group!(benches, bench_routing, bench_selection, bench_rollout_ids);
criterion_main!(benches);
