//! Reward throughput and its effect on proxied traffic, for `benches/store.sh`.
//!
//! `rewardgen --gateway http://127.0.0.1:PORT --rewards 4000 --clients 16 --proxy-rate 200`
//!
//! 1. Creates a session (the admin API must admit loopback clients: no admin token set)
//!    and makes `--rewards` proxied calls to collect rollout ids.
//! 2. Baseline: proxied calls alone at `--proxy-rate` per second (open loop) for as long
//!    as step 3 will take, recording their latency.
//! 3. Burst: `--clients` closed-loop clients post one reward per rollout as fast as the
//!    gateway acknowledges them, while the same proxied load runs on the same session.
//!
//! Reported: rewards/s, reward latency p50/p99, and proxied-call latency p50/p99/max
//! without and during the burst (what a burst of rewards costs the session's traffic).
//! The last line is machine-readable (`REWARDGEN k=v ...`).

use clap::Parser;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// The gateway's base URL.
    #[arg(long)]
    gateway: String,
    #[arg(long, default_value_t = 4000)]
    rewards: usize,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Proxied calls per second alongside the rewards (open loop).
    #[arg(long, default_value_t = 200.0)]
    proxy_rate: f64,
    #[arg(long, default_value = "run")]
    label: String,
}

const SESSIONS: &str = "/api/prompt-learning/online/gepa/sessions";

fn chat_body() -> String {
    json!({"model": "gpt-4.1-mini", "messages": [
        {"role": "system", "content": "replaced"},
        {"role": "user", "content": "Where is my card? It was sent two weeks ago."}]})
    .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn proxied_call(client: &reqwest::Client, url: &str) -> Option<String> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(chat_body())
        .send()
        .await
        .ok()?;
    let id = r
        .headers()
        .get("x-gepa-rollout-id")?
        .to_str()
        .ok()?
        .to_string();
    r.bytes().await.ok()?;
    Some(id)
}

/// Proxied calls at `rate`/s until `stop` is set; returns their latencies.
async fn proxy_load(url: String, rate: f64, stop: Arc<AtomicUsize>) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut n = 0u32;
    while stop.load(Ordering::SeqCst) == 0 {
        let due = start + interval * n;
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            proxied_call(&client, &url).await.map(|_| t.elapsed())
        });
        n += 1;
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(d)) = r {
            out.push(d);
        }
    }
    out.sort();
    out
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}{SESSIONS}", args.gateway))
        .json(
            &json!({"config_body": {"prompt_learning": {"algorithm": "gepa",
            "gepa": {"mode": "online"},
            "initial_prompt": {"messages": [{"role": "system", "pattern": "Be brief."}]}}}}),
        )
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("a session");
    let session = created["session_id"]
        .as_str()
        .expect("session_id")
        .to_string();
    let chat_url = format!("{}/api/gepa/v1/{session}/chat/completions", args.gateway);
    let reward_url = format!("{}{SESSIONS}/{session}/reward", args.gateway);

    // 1. Rollouts to reward.
    let next = Arc::new(AtomicUsize::new(0));
    let mut collectors = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, next, n) = (client.clone(), chat_url.clone(), next.clone(), args.rewards);
        collectors.spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < n {
                ids.push(proxied_call(&client, &url).await.expect("a proxied call"));
            }
            ids
        });
    }
    let mut rollouts = Vec::new();
    while let Some(ids) = collectors.join_next().await {
        rollouts.extend(ids.expect("collector"));
    }
    let rollouts = Arc::new(rollouts);

    // 3 first (its length sets the baseline's), then 2.
    let stop = Arc::new(AtomicUsize::new(0));
    let during = tokio::spawn(proxy_load(chat_url.clone(), args.proxy_rate, stop.clone()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (client, url, next, rollouts) = (
            client.clone(),
            reward_url.clone(),
            next.clone(),
            rollouts.clone(),
        );
        clients.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(rollout) = rollouts.get(i) else {
                    return (latencies, failures);
                };
                let body = json!({"rollout_id": rollout,
                    "reward_info": {"outcome_reward": (i % 7) as f64 / 7.0, "seed": i % 50}});
                let t = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => failures += 1,
                }
            }
        });
    }
    let mut reward_latency = Vec::new();
    let mut failures = 0;
    while let Some(r) = clients.join_next().await {
        let (l, f) = r.expect("client");
        reward_latency.extend(l);
        failures += f;
    }
    let burst = started.elapsed();
    stop.store(1, Ordering::SeqCst);
    let during = during.await.expect("proxy load");
    reward_latency.sort();

    let stop = Arc::new(AtomicUsize::new(0));
    let baseline = tokio::spawn(proxy_load(chat_url, args.proxy_rate, stop.clone()));
    tokio::time::sleep(burst.max(Duration::from_secs(2))).await;
    stop.store(1, Ordering::SeqCst);
    let baseline = baseline.await.expect("proxy load");

    let rate = reward_latency.len() as f64 / burst.as_secs_f64();
    println!(
        "{}: {} rewards in {:.2} s = {:.0} rewards/s ({} failed); reward latency p50 {:.2} ms p99 {:.2} ms",
        args.label,
        reward_latency.len(),
        burst.as_secs_f64(),
        rate,
        failures,
        percentile(&reward_latency, 0.5),
        percentile(&reward_latency, 0.99),
    );
    for (name, l) in [("alone", &baseline), ("during the burst", &during)] {
        println!(
            "{}: proxied calls {name}: {} at {}/s, p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            args.label,
            l.len(),
            args.proxy_rate,
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 1.0),
        );
    }
    println!(
        "REWARDGEN label={} rewards_per_s={:.0} failed={} reward_p50_ms={:.3} reward_p99_ms={:.3} \
         proxy_alone_p50_ms={:.3} proxy_alone_p99_ms={:.3} proxy_burst_p50_ms={:.3} proxy_burst_p99_ms={:.3}",
        args.label,
        rate,
        failures,
        percentile(&reward_latency, 0.5),
        percentile(&reward_latency, 0.99),
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
    );
}
