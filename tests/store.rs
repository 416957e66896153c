//! The durable store: state survives `kill -9`, acknowledged rewards are never lost or
//! counted twice, and bad database files are refused at start-up with the path named.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Rollout records are written behind; waits (polling the database, read-only) until
/// `n` of them reached the disk.
async fn wait_for_flushed_rollouts(gw: &Gateway, n: i64) {
    for _ in 0..200 {
        let count = rusqlite::Connection::open_with_flags(
            gw.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM rollouts", [], |r| r.get::<_, i64>(0)))
        .unwrap_or(0);
        if count >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("rollouts were not flushed");
}

async fn call(gw: &Gateway, id: &str, corr: Option<&str>) -> String {
    let url = match corr {
        Some(c) => gw.url(&format!("/api/gepa/v1/{id}/{c}/chat/completions")),
        None => gw.chat_url(id),
    };
    let (status, h, _) = post_chat(&url, chat_body().to_string(), &[]).await;
    assert_eq!(status, 200);
    h["x-gepa-rollout-id"].to_str().unwrap().to_string()
}

fn reward(rollout: &str, x: f64, seed: u32) -> Value {
    json!({"rollout_id": rollout, "reward_info": {"outcome_reward": x, "seed": seed, "feedback": "fb"}})
}

#[tokio::test]
async fn a_restart_after_kill_9_keeps_sessions_rewards_and_rewardable_rollouts() {
    let mock = MockUpstream::start().await;
    let mut gw = Gateway::start(&mock).await;
    let a = gw.new_session("instruction A").await;
    let b = gw.new_session("instruction B").await;
    let r1 = call(&gw, &a, None).await;
    let r2 = call(&gw, &a, None).await;
    let r3 = call(&gw, &a, Some("conv-1")).await;
    assert_eq!(gw.reward(&a, reward(&r1, 1.0, 1)).await.0, 200);
    assert_eq!(gw.reward(&a, reward(&r2, 0.5, 2)).await.0, 200);
    assert_eq!(gw.admin_post(&format!("{SESSIONS}/{b}/pause")).await.0, 200);
    wait_for_flushed_rollouts(&gw, 3).await;
    let before = gw.get_session(&a).await;

    gw.kill9_and_restart().await;

    let after = gw.get_session(&a).await;
    for key in [
        "session_id",
        "job_id",
        "status",
        "created_at",
        "reward_count",
        "rollout_count",
        "metadata",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }
    assert_eq!(after["candidates"][0]["avg_reward"], 0.75);
    assert_eq!(after["candidates"][0]["instruction"], "instruction A");
    assert_eq!(gw.get_session(&b).await["status"], "paused");
    let list = gw.list_sessions("").await;
    assert_eq!(list["items"][0]["session_id"], b, "newest first, as before");

    // Duplicate detection works across the restart; a conflicting reward is refused.
    let (status, v) = gw.reward(&a, reward(&r1, 1.0, 1)).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(gw.reward(&a, reward(&r1, 0.0, 1)).await.0, 409);
    // A rollout served before the restart can be rewarded after it, once, also by its
    // correlation id.
    let (status, v) = gw
        .reward(
            &a,
            json!({"correlation_id": "conv-1", "reward_info": {"outcome_reward": 1.0}}),
        )
        .await;
    assert_eq!((status, v["rollout_id"].as_str()), (200, Some(r3.as_str())));
    assert_eq!(v["reward_count"], 3);
    // New sessions after the restart keep the list order and do not reuse ids.
    let c = gw.new_session("instruction C").await;
    let list = gw.list_sessions("?limit=2").await;
    assert_eq!(list["items"][0]["session_id"], c);
    assert_eq!(list["items"][1]["session_id"], b);
}

#[tokio::test]
async fn kill_9_under_concurrent_rewards_loses_no_acknowledged_reward_and_counts_none_twice() {
    let mock = MockUpstream::start().await;
    let mut gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let mut rollouts = Vec::new();
    for _ in 0..60 {
        rollouts.push(call(&gw, &id, None).await);
    }
    wait_for_flushed_rollouts(&gw, 60).await;

    // Post every reward concurrently and kill the gateway while they are in flight.
    let url = gw.url(&format!("{SESSIONS}/{id}/reward"));
    let token = gw.admin_token.clone().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, r) in rollouts.iter().enumerate() {
        let (url, token, body) = (url.clone(), token.clone(), reward(r, 1.0, i as u32));
        tasks.spawn(async move {
            let res = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await;
            matches!(res, Ok(r) if r.status() == 200)
        });
    }
    // Let some of them land first (the first acknowledgement), then SIGKILL.
    let mut acknowledged = 0;
    while let Some(ok) = tasks.join_next().await {
        if ok.unwrap() {
            acknowledged += 1;
            if acknowledged == 10 {
                break;
            }
        }
    }
    gw.kill9_and_restart().await;
    while let Some(ok) = tasks.join_next().await {
        if ok.unwrap() {
            acknowledged += 1;
        }
    }
    let counted = gw.get_session(&id).await["reward_count"].as_u64().unwrap();
    eprintln!("acknowledged {acknowledged}, counted after the restart {counted}");
    assert!(
        counted >= acknowledged,
        "{counted} counted < {acknowledged} acknowledged"
    );
    assert!(counted <= rollouts.len() as u64);

    // Retrying every reward after the restart: the counted ones are duplicates, the
    // rest count once; in the end each rollout counts exactly once.
    let mut duplicates = 0;
    for (i, r) in rollouts.iter().enumerate() {
        let (status, v) = gw.reward(&id, reward(r, 1.0, i as u32)).await;
        assert_eq!(status, 200, "{v}");
        if v["duplicate"] == true {
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, counted);
    assert_eq!(gw.get_session(&id).await["reward_count"], rollouts.len());
}

fn start_failure(dir: &std::path::Path, db: &std::path::Path) -> String {
    let conf = dir.join("g.yaml");
    std::fs::write(
        &conf,
        format!(
            "gateway:\n  listen: \"127.0.0.1:0\"\n  metrics:\n    listen: \"\"\n  storage:\n    path: \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(gateway_bin())
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the gateway must refuse to start"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_database_files_are_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // Written by a newer version.
    let newer = dir.path().join("newer.db");
    let c = rusqlite::Connection::open(&newer).unwrap();
    c.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES ('schema_version', '99');").unwrap();
    drop(c);
    let err = start_failure(dir.path(), &newer);
    assert!(err.contains("newer") && err.contains("newer.db"), "{err}");
    // Not a database at all.
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x5au8; 8192]).unwrap();
    let err = start_failure(dir.path(), &corrupt);
    assert!(err.contains("corrupt.db"), "{err}");
    // A path that cannot be created.
    let blocked = dir.path().join("a-file");
    std::fs::write(&blocked, b"x").unwrap();
    let err = start_failure(dir.path(), &blocked.join("sub/gepa.db"));
    assert!(err.contains("a-file/sub"), "{err}");
}

#[tokio::test]
async fn a_database_of_the_first_schema_version_is_migrated_and_served() {
    use gepa_gateway::store::sqlite::{MIGRATIONS, SCHEMA_VERSION};
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.storage_yaml = "    rollouts_in_memory: 1\n".into();
    let mut gw = Gateway::start_with(o).await;
    gw.kill9();
    let db = gw.db_path();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    // A database as version 1 wrote it: one session, its baseline, two rollouts (ids in
    // version 1's format), one rewarded.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); {} \
         INSERT INTO meta VALUES ('schema_version', '1');",
        MIGRATIONS[0]
    ))
    .unwrap();
    let settings = r#"{"online_proposer_min_rollouts":10,"online_proposer_max_candidates":8,"online_prune_threshold":0.0,"online_prune_min_rollouts":20,"proposer_model":"m"}"#;
    let t = "2026-11-01T00:00:00Z";
    c.execute(
        "INSERT INTO sessions VALUES ('s1', 1, 'pl_1', 'started', ?1, ?1, ?2, NULL)",
        [t, settings],
    )
    .unwrap();
    c.execute(
        "INSERT INTO candidates VALUES ('s1', 'baseline', 0, 'be v1', '[]', 0, ?1)",
        [t],
    )
    .unwrap();
    let (old, new) = (
        "ro_00000000000000000000000000000001",
        "ro_00000000000000000000000000000002",
    );
    for id in [old, new] {
        c.execute(
            "INSERT INTO rollouts VALUES ('s1', ?1, 'baseline', NULL, ?2, 1, 0, '[]', 'hi')",
            [id, t],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO rewards VALUES ('s1', ?1, 'baseline', 0.5, NULL, NULL, ?2)",
        [old, t],
    )
    .unwrap();
    drop(c);

    gw.restart().await;
    let s = gw.get_session("s1").await;
    assert_eq!(
        (s["rollout_count"].as_u64(), s["reward_count"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    assert_eq!(s["candidates"][0]["instruction"], "be v1");
    // The rewarded rollout is a duplicate; the other (beyond the one kept in memory: its
    // record is found in the store) counts once.
    let (status, v) = gw
        .reward(
            "s1",
            json!({"rollout_id": old, "reward_info": {"outcome_reward": 0.5}}),
        )
        .await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    let (status, v) = gw
        .reward(
            "s1",
            json!({"rollout_id": new, "reward_info": {"outcome_reward": 1.0}}),
        )
        .await;
    assert_eq!(
        (status, v["duplicate"].as_bool()),
        (200, Some(false)),
        "{v}"
    );
    // New traffic works on the migrated database.
    call(&gw, "s1", None).await;
    let c = rusqlite::Connection::open(&db).unwrap();
    let version: String = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
    let index: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'rollouts_by_candidate'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0, "version 2 dropped the index");
}

/// Deletes a rollout's record, as if the process had died before the writer flushed it.
fn forget_rollout_record(gw: &Gateway, rollout: &str) {
    let c = rusqlite::Connection::open(gw.db_path()).unwrap();
    let n = c
        .execute("DELETE FROM rollouts WHERE id = ?1", [rollout])
        .unwrap();
    assert_eq!(n, 1, "the record was there to delete");
}

#[tokio::test]
async fn a_rollout_answered_but_not_flushed_before_kill_9_can_be_rewarded_once() {
    let mock = MockUpstream::start().await;
    let mut gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let lost = call(&gw, &id, None).await;
    wait_for_flushed_rollouts(&gw, 1).await;
    // Killed the instant the response arrived: flushed or not, it must be rewardable.
    let racing = call(&gw, &id, None).await;
    gw.kill9();
    forget_rollout_record(&gw, &lost);
    gw.restart().await;

    let (status, v) = gw.reward(&id, reward(&lost, 0.8, 1)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["duplicate"].as_bool(), v["candidate_id"].as_str()),
        (Some(false), Some("baseline"))
    );
    let (status, v) = gw.reward(&id, reward(&racing, 0.6, 2)).await;
    assert_eq!(
        (status, v["duplicate"].as_bool()),
        (200, Some(false)),
        "{v}"
    );
    assert_eq!(v["reward_count"], 2);
    let (status, v) = gw.reward(&id, reward(&lost, 0.8, 1)).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(
        gw.reward(&id, reward(&lost, 0.1, 1)).await.0,
        409,
        "a different reward"
    );
    assert_eq!(gw.get_session(&id).await["reward_count"], 2);

    // The id is what vouches for the rollout: a forged or altered one is unknown.
    let mut forged = lost.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(gw.reward(&id, reward(&forged, 0.8, 1)).await.0, 404);
    // Another spelling of the same candidate position is another id, not a second way
    // to reward this rollout.
    let padded = lost.replacen("_0_", "_00_", 1);
    assert_eq!(gw.reward(&id, reward(&padded, 0.8, 1)).await.0, 404);
    let other_candidate = lost.replacen("_0_", "_1_", 1);
    assert_eq!(
        gw.reward(&id, reward(&other_candidate, 0.8, 1)).await.0,
        404
    );
    let mismatch = json!({"rollout_id": racing, "candidate_id": "cand_other",
        "reward_info": {"outcome_reward": 0.6, "seed": 2, "feedback": "fb"}});
    assert_eq!(gw.reward(&id, mismatch).await.0, 409);

    // After another restart both still count once, and the lost rollout is counted as
    // served again (its record was rebuilt with the reward).
    gw.kill9_and_restart().await;
    let (status, v) = gw.reward(&id, reward(&lost, 0.8, 1)).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    let s = gw.get_session(&id).await;
    assert_eq!(
        (s["reward_count"].as_u64(), s["rollout_count"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(s["candidates"][0]["avg_reward"], 0.7);
}

#[tokio::test]
async fn rewards_for_rollouts_memory_no_longer_holds_are_settled_by_the_store() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.storage_yaml = "    rollouts_in_memory: 3\n".into();
    let mut gw = Gateway::start_with(o).await;
    let id = gw.new_session("x").await;
    let (status, h, _) = post_chat(
        &gw.chat_url(&id),
        chat_body().to_string(),
        &[("x-mock", "status-500")],
    )
    .await;
    assert_eq!(status, 500);
    let failed = h["x-gepa-rollout-id"].to_str().unwrap().to_string();
    let oldest = call(&gw, &id, None).await;
    for _ in 0..4 {
        call(&gw, &id, None).await;
    }
    wait_for_flushed_rollouts(&gw, 6).await;

    let (status, v) = gw.reward(&id, reward(&oldest, 1.0, 1)).await;
    assert_eq!(
        (status, v["duplicate"].as_bool()),
        (200, Some(false)),
        "{v}"
    );
    let (status, v) = gw.reward(&id, reward(&oldest, 1.0, 1)).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(gw.reward(&id, reward(&oldest, 0.0, 1)).await.0, 409);
    let (status, v) = gw.reward(&id, reward(&failed, 1.0, 1)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("rollout_failed")),
        "{v}"
    );
    assert_eq!(gw.get_session(&id).await["reward_count"], 1);
    gw.kill9_and_restart().await;
    let (status, v) = gw.reward(&id, reward(&oldest, 1.0, 1)).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    let s = gw.get_session(&id).await;
    assert_eq!(
        (s["reward_count"].as_u64(), s["rollout_count"].as_u64()),
        (Some(1), Some(6))
    );

    // With the memory backend nothing beyond memory is kept: such a reward is a 404.
    let mut o = GatewayOptions::new(mock.url());
    o.storage_yaml = "    rollouts_in_memory: 3\n    backend: memory\n".into();
    let gw = Gateway::start_with(o).await;
    let id = gw.new_session("x").await;
    let oldest = call(&gw, &id, None).await;
    for _ in 0..3 {
        call(&gw, &id, None).await;
    }
    assert_eq!(gw.reward(&id, reward(&oldest, 1.0, 1)).await.0, 404);
}

#[tokio::test]
async fn concurrent_rewards_for_one_rollout_count_once() {
    let mock = MockUpstream::start().await;
    for backend in ["sqlite", "memory"] {
        let mut o = GatewayOptions::new(mock.url());
        o.storage_yaml = format!("    backend: {backend}\n");
        concurrent_rewards_count_once_on(Gateway::start_with(o).await).await;
    }
}

async fn concurrent_rewards_count_once_on(gw: Gateway) {
    let id = gw.new_session("x").await;
    let same = call(&gw, &id, None).await;
    let contested = call(&gw, &id, None).await;
    let url = gw.url(&format!("{SESSIONS}/{id}/reward"));
    let token = gw.admin_token.clone().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40u32 {
        // Half repeat one reward for `same`; half race different rewards for `contested`.
        let body = if i % 2 == 0 {
            reward(&same, 0.5, 1)
        } else {
            reward(&contested, f64::from(i) / 100.0, 2)
        };
        let (url, token) = (url.clone(), token.clone());
        tasks.spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (i % 2 == 0, status, v["duplicate"].as_bool())
        });
    }
    let (mut firsts, mut duplicates, mut contested_wins, mut conflicts) = (0, 0, 0, 0);
    while let Some(res) = tasks.join_next().await {
        match res.unwrap() {
            (true, 200, Some(false)) => firsts += 1,
            (true, 200, Some(true)) => duplicates += 1,
            (false, 200, Some(false)) => contested_wins += 1,
            (false, 409, _) => conflicts += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((firsts, duplicates), (1, 19));
    assert_eq!((contested_wins, conflicts), (1, 19));
    assert_eq!(gw.get_session(&id).await["reward_count"], 2);
}

#[tokio::test]
async fn a_database_in_a_directory_that_does_not_exist_yet_is_created_with_it() {
    // The shipped config's `data/gepa.db` on a fresh checkout: no `data/` yet.
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.db_file = "data/nested/gepa.db".into();
    let gw = Gateway::start_with(o).await;
    let s = gw.create_session("x").await;
    assert_eq!(s["status"], "started");
    assert!(gw.db_path().is_file(), "{}", gw.db_path().display());
    assert!(gw.dir.path().join("data/nested/gepa.db.lock").is_file());
}

#[tokio::test]
async fn a_second_gateway_on_the_same_database_is_refused() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let other = tempfile::tempdir().unwrap();
    let err = start_failure(other.path(), &gw.db_path());
    assert!(
        err.contains("another gateway process")
            && err.contains(&gw.db_path().display().to_string()),
        "{err}"
    );
    // The running one is unaffected.
    assert_eq!(gw.create_session("x").await["status"], "started");
}

#[tokio::test]
async fn retention_drops_old_captured_text_and_keeps_counts() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.storage_yaml = "    retention_days: 1\n".into();
    let mut gw = Gateway::start_with(o).await;
    let id = gw.new_session("x").await;
    let old = call(&gw, &id, None).await;
    let recent = call(&gw, &id, None).await;
    wait_for_flushed_rollouts(&gw, 2).await;
    gw.kill9();
    let c = rusqlite::Connection::open(gw.db_path()).unwrap();
    let aged = c
        .execute(
            "UPDATE rollouts SET created_at = '2020-01-01T00:00:00Z' WHERE id = ?1",
            [&old],
        )
        .unwrap();
    assert_eq!(aged, 1);
    drop(c);
    gw.restart().await; // the writer applies retention at start-up, then hourly

    let captured = |rollout: &str| -> (String, Option<String>) {
        let c = rusqlite::Connection::open(gw.db_path()).unwrap();
        c.query_row(
            "SELECT input, output FROM rollouts WHERE id = ?1",
            [rollout],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    for _ in 0..200 {
        if captured(&old).0 == "[]" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(captured(&old), ("[]".to_string(), None), "old text dropped");
    let (input, output) = captured(&recent);
    assert!(
        input.contains("user") && output.is_some(),
        "recent text kept"
    );
    // Counts stay, and the old rollout can still be rewarded.
    assert_eq!(gw.get_session(&id).await["rollout_count"], 2);
    assert_eq!(gw.reward(&id, reward(&old, 1.0, 1)).await.0, 200);
}

#[tokio::test]
async fn a_database_locked_by_another_program_gives_503_and_loses_nothing() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let r = call(&gw, &id, None).await;
    wait_for_flushed_rollouts(&gw, 1).await;

    // Another program takes the database's write lock and holds it.
    let db = gw.db_path();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        c.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    // Proxied traffic never waits on the disk; the record of this call cannot be written
    // yet and is kept for a retry.
    let during = call(&gw, &id, None).await;
    // An acknowledged write waits out the busy timeout, then fails: a 503 that counts
    // nothing.
    let (status, v) = gw.reward(&id, reward(&r, 1.0, 1)).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("gepa.db"),
        "{v}"
    );
    assert_eq!(gw.get_session(&id).await["reward_count"], 0);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    wait_for_flushed_rollouts(&gw, 2).await;

    let (status, v) = gw.reward(&id, reward(&r, 1.0, 1)).await;
    assert_eq!(
        (status, v["duplicate"].as_bool()),
        (200, Some(false)),
        "{v}"
    );
    assert_eq!(gw.reward(&id, reward(&during, 0.5, 2)).await.0, 200);
    assert_eq!(gw.get_session(&id).await["reward_count"], 2);
    assert!(
        gw.log().contains("1 rollout records kept for a retry"),
        "{}",
        gw.log()
    );
}

/// A call that finishes during a graceful shutdown's grace period, after the hand-over
/// flushed the store, is written before the process exits: its rollout record (queued
/// for a write-behind far longer than the grace period) and its access-log line.
#[tokio::test]
async fn a_call_finished_during_the_shutdown_grace_period_is_written_before_exit() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    // Far longer than the test config's 1 s grace period: only the exit can write it.
    o.storage_yaml = "    write_behind_ms: 10000\n".into();
    o.rust_log = "info".into();
    let mut gw = Gateway::start_with(o).await;
    let sid = gw.new_session("Be brief.").await;
    let mut resp = start_gated_stream(&gw, &sid).await;
    assert_eq!(resp.status(), 200);
    let rollout = resp.headers()["x-gepa-rollout-id"]
        .to_str()
        .unwrap()
        .to_string();
    resp.chunk().await.unwrap().expect("first event");

    // The call is in flight (the mock holds the rest of its stream) when the stop begins;
    // it ends only after the hand-over has committed what was queued then.
    gw.sigterm();
    for _ in 0..200 {
        if gw.log().contains("store: handed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gw.log().contains("store: handed"), "{}", gw.log());
    mock.release();
    while resp.chunk().await.unwrap().is_some() {}
    assert!(gw.wait_exit().await, "exit status 0; log:\n{}", gw.log());

    let stored: i64 = rusqlite::Connection::open_with_flags(
        gw.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
    .query_row(
        "SELECT COUNT(*) FROM rollouts WHERE session_id = ?1 AND id = ?2",
        [&sid, &rollout],
        |r| r.get(0),
    )
    .unwrap();
    assert_eq!(
        stored, 1,
        "the rollout record was committed before the exit"
    );
    let access_line = gw
        .log()
        .lines()
        .any(|l| l.contains("\"route\":\"proxy\"") && l.contains(&rollout));
    assert!(
        access_line,
        "its access-log line was written; log:\n{}",
        gw.log()
    );
}
