//! Start-up restore time with a large database.
//!
//! `cargo run --release --example restore -- [--rollouts 1000000] [--rewards 200000]`
//!
//! Writes a database (in a temporary directory) with one session, 8 candidates, the given
//! number of rollouts (each with about 400 bytes of captured text) and rewards, using the
//! gateway's own schema; then times what start-up does after Pingora's fork: open the
//! store, read everything back, and rebuild the in-memory sessions (the newest
//! `storage.rollouts_in_memory` rollouts per session, every reward replayed into the
//! candidates' statistics and the optimizer's score table).

use clap::Parser;
use gepa_gateway::gateway::GatewayState;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    rollouts: usize,
    #[arg(long, default_value_t = 200_000)]
    rewards: usize,
}

const SESSION: &str = "00000000-0000-4000-8000-000000000001";

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("gepa.db");
    let yaml = format!(
        "gateway:\n  metrics:\n    listen: \"\"\n  storage:\n    path: \"{}\"\n",
        db.display()
    );
    let config = gepa_gateway::config::parse_str(&yaml, &|_| None).expect("config");
    gepa_gateway::store::sqlite::check(&db, false).expect("schema");

    let t = Instant::now();
    write_database(&db, &args);
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} rollouts and {} rewards ({:.0} MB) in {:.1} s",
        args.rollouts,
        args.rewards,
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let state = GatewayState::new(config.gateway).expect("state");
    let store = state.sqlite.clone().expect("sqlite store");
    let t = Instant::now();
    store.open(false).expect("open");
    let opened = t.elapsed();
    let restored = store.restore().expect("restore");
    let read = t.elapsed();
    let n = state.sessions.restore(restored);
    let total = t.elapsed();
    let session = state.sessions.get(SESSION).expect("the session");
    let summary = session.summary();
    println!(
        "restored {n} session(s): open {:.0} ms, read {:.0} ms, rebuild {:.0} ms, total {:.0} ms \
         (rollout_count {}, reward_count {})",
        opened.as_secs_f64() * 1000.0,
        (read - opened).as_secs_f64() * 1000.0,
        (total - read).as_secs_f64() * 1000.0,
        total.as_secs_f64() * 1000.0,
        summary.rollout_count,
        summary.reward_count,
    );
}

fn write_database(db: &std::path::Path, args: &Args) {
    let mut c = rusqlite::Connection::open(db).expect("open");
    c.pragma_update(None, "synchronous", "OFF").expect("pragma");
    let tx = c.transaction().expect("tx");
    let settings = r#"{"online_proposer_min_rollouts":10,"online_proposer_max_candidates":8,"online_prune_threshold":0.0,"online_prune_min_rollouts":20,"proposer_model":"gpt-4.1-mini"}"#;
    tx.execute(
        "INSERT INTO sessions VALUES (?1, 1, 'pl_bench', 'started', '2026-11-01T00:00:00Z', \
         '2026-11-01T00:00:00Z', ?2, NULL)",
        [SESSION, settings],
    )
    .expect("session");
    let candidates: Vec<String> = (0..8)
        .map(|i| {
            if i == 0 {
                "baseline".to_string()
            } else {
                format!("cand_{i:016x}")
            }
        })
        .collect();
    for (i, id) in candidates.iter().enumerate() {
        tx.execute(
            "INSERT INTO candidates VALUES (?1, ?2, ?3, ?4, '[]', 0, '2026-11-01T00:00:00Z')",
            rusqlite::params![SESSION, id, i as i64, format!("Instruction number {i}.")],
        )
        .expect("candidate");
    }
    let input = serde_json::json!([{"role": "user", "content": "x".repeat(300)}]).to_string();
    {
        let mut rollout = tx
            .prepare(
                "INSERT INTO rollouts VALUES (?1, ?2, ?3, NULL, '2026-11-01T00:00:00Z', 1, 0, ?4, ?5)",
            )
            .expect("prepare");
        let mut reward = tx
            .prepare(
                "INSERT INTO rewards VALUES (?1, ?2, ?3, ?4, ?5, NULL, '2026-11-01T00:00:00Z')",
            )
            .expect("prepare");
        let every = (args.rollouts / args.rewards.max(1)).max(1);
        let mut rewarded = 0;
        for i in 0..args.rollouts {
            let id = format!("ro_{i:032x}");
            let candidate = &candidates[i % candidates.len()];
            rollout
                .execute(rusqlite::params![
                    SESSION,
                    id,
                    candidate,
                    input,
                    "an answer"
                ])
                .expect("rollout");
            if i % every == 0 && rewarded < args.rewards {
                let outcome = (i % 10) as f64 / 10.0;
                let seed = (i % 500).to_string();
                reward
                    .execute(rusqlite::params![SESSION, id, candidate, outcome, seed])
                    .expect("reward");
                rewarded += 1;
            }
        }
    }
    tx.commit().expect("commit");
}
