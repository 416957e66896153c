//! Pingora's zero-downtime upgrade (`-u`, then SIGQUIT to the running process) with the
//! durable store: under a steady stream of rewards, no acknowledged reward is lost or
//! counted twice, the old process sends the session API to its successor (503 and
//! `Connection: close`), and the new process serves a state that includes everything
//! the old one acknowledged.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 exchange on a kept-alive connection: (status, lower-cased head, body).
/// Status 0: the connection was closed before a response.
async fn exchange(conn: &mut TcpStream, request: &str) -> (u16, String, String) {
    if conn.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new(), String::new());
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return (0, String::new(), String::new()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    (status, head, body)
}

fn reward_request(gw: &Gateway, session: &str, body: &Value) -> String {
    let body = body.to_string();
    format!(
        "POST {SESSIONS}/{session}/reward HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        gw.addr,
        gw.admin_token.as_deref().unwrap(),
        body.len()
    )
}

#[tokio::test]
async fn an_upgrade_under_reward_load_loses_no_reward_and_counts_none_twice() {
    let mock = MockUpstream::start().await;
    let mut gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    const N: usize = 160;
    let mut rollouts = Vec::new();
    for _ in 0..=N {
        let (status, h, _) = post_chat(&gw.chat_url(&id), chat_body().to_string(), &[]).await;
        assert_eq!(status, 200);
        rollouts.push(h["x-gepa-rollout-id"].to_str().unwrap().to_string());
    }
    // The last rollout is rewarded over one kept-alive connection to the old process.
    let probe_rollout = rollouts.pop().unwrap();
    let probe_body = json!({"rollout_id": probe_rollout, "reward_info": {"outcome_reward": 1.0}});
    let mut old_conn = TcpStream::connect(gw.addr).await.unwrap();
    let (status, _, _) = exchange(&mut old_conn, &reward_request(&gw, &id, &probe_body)).await;
    assert_eq!(status, 200);

    // The load: 4 clients reward the rollouts one by one, each reward retried (new
    // connection) until acknowledged; `ack_count` counts the acknowledgements.
    let (ack_count, mut ack_count_rx) = tokio::sync::watch::channel(0usize);
    let ack_count = Arc::new(ack_count);
    let next = Arc::new(AtomicUsize::new(0));
    let rollouts = Arc::new(rollouts);
    let url = gw.url(&format!("{SESSIONS}/{id}/reward"));
    let token = gw.admin_token.clone().unwrap();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (next, rollouts, url, token, ack_count) = (
            next.clone(),
            rollouts.clone(),
            url.clone(),
            token.clone(),
            ack_count.clone(),
        );
        workers.spawn(async move {
            let mut acks = Vec::new(); // (index, duplicate, retries)
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= rollouts.len() {
                    return acks;
                }
                let body = json!({"rollout_id": rollouts[i],
                    "reward_info": {"outcome_reward": (i % 10) as f64 / 10.0, "seed": i}});
                let mut retries = 0;
                loop {
                    let res = reqwest::Client::new()
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(r) = res {
                        if r.status() == 200 {
                            let v: Value = r.json().await.unwrap();
                            acks.push((i, v["duplicate"].as_bool().unwrap(), retries));
                            ack_count.send_modify(|n| *n += 1);
                            break;
                        }
                        assert_eq!(r.status(), 503, "only a hand-over refuses a reward");
                    }
                    retries += 1;
                    assert!(retries < 1000, "reward {i} was never acknowledged");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
    }
    // The upgrade starts once the load is under way (an eighth of the rewards acknowledged
    // by the old process), so most of it runs across the hand-over.
    tokio::time::timeout(
        Duration::from_secs(30),
        ack_count_rx.wait_for(|n| *n >= N / 8),
    )
    .await
    .expect("the load gets under way")
    .unwrap();
    let mut old = gw.upgrade().await;

    // Once the old process has handed over, an admin write on a connection it still
    // serves gets 503 and `Connection: close`.
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, head, body) =
            exchange(&mut old_conn, &reward_request(&gw, &id, &probe_body)).await;
        answers.push(status);
        if status == 503 {
            assert!(head.contains("connection: close"), "{head}");
            assert!(head.contains("retry-after:"), "{head}");
            assert!(body.contains("handed over"), "{body}");
            break;
        }
        assert_eq!(status, 200, "until the hand-over: {answers:?}");
        assert!(Instant::now() < deadline, "no hand-over within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.wait_ready().await;

    let mut first_acks = 0;
    let mut acked = [false; N];
    while let Some(acks) = workers.join_next().await {
        for (i, duplicate, _) in acks.unwrap() {
            acked[i] = true;
            if !duplicate {
                first_acks += 1;
            }
        }
    }
    assert!(acked.iter().all(|a| *a), "every reward was acknowledged");
    let old_exit = tokio::task::spawn_blocking(move || old.wait().unwrap())
        .await
        .unwrap();
    eprintln!("old process exited: {old_exit}; first acknowledgements: {first_acks} of {N}");

    // The new process counts every reward once, including all the old one acknowledged,
    // with the values posted (plus the probe's 1.0).
    let s = gw.get_session(&id).await;
    assert_eq!(s["reward_count"], N + 1, "{s}");
    let expected_mean =
        ((0..N).map(|i| (i % 10) as f64 / 10.0).sum::<f64>() + 1.0) / (N + 1) as f64;
    let mean = s["candidates"][0]["avg_reward"].as_f64().unwrap();
    assert!(
        (mean - expected_mean).abs() < 1e-9,
        "{mean} vs {expected_mean}"
    );
    assert!(first_acks <= N, "none counted twice");
    // Re-posting every reward: all are duplicates, nothing changes.
    for (i, r) in rollouts.iter().enumerate() {
        let body = json!({"rollout_id": r,
            "reward_info": {"outcome_reward": (i % 10) as f64 / 10.0, "seed": i}});
        let (status, v) = gw.reward(&id, body).await;
        assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    }
    assert_eq!(gw.get_session(&id).await["reward_count"], N + 1);
}
