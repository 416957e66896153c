//! Prometheus metrics: served on `metrics.listen` only, in a format promtool accepts, with
//! the request, overhead, upstream-error, rejection and per-session series.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

async fn scrape(gw: &Gateway) -> String {
    let r = reqwest::get(format!("http://{}/metrics", gw.metrics_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    r.text().await.unwrap()
}

/// Scrapes until `ready` holds for the exposition (or 10 s pass). Request metrics are booked
/// in Pingora's logging phase, which runs just after the response reached the client, so a
/// scrape sent the moment a response arrives may precede its booking.
async fn scrape_when(gw: &Gateway, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(gw).await;
        if ready(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The value of the first sample whose line starts with `prefix` (name plus labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_cover_requests_sessions_and_pass_promtool() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let (_, h, _) = post_chat(&gw.chat_url(&id), chat_body().to_string(), &[]).await;
    let rollout = h["x-gepa-rollout-id"].to_str().unwrap().to_string();
    let (status, _) = gw
        .reward(
            &id,
            json!({"rollout_id": rollout, "reward_info": {"outcome_reward": 0.75}}),
        )
        .await;
    assert_eq!(status, 200);
    post_chat(&gw.chat_url(&id), "{bad".to_string(), &[]).await;
    post_chat(
        &gw.chat_url(&id),
        chat_body().to_string(),
        &[("x-mock", "status-500")],
    )
    .await;

    let proxy_requests = |text: &str| -> f64 {
        ["2xx", "4xx", "5xx"]
            .iter()
            .filter_map(|class| {
                sample(
                    text,
                    &format!(r#"gepa_requests_total{{route="proxy",status_class="{class}"}}"#),
                )
            })
            .sum()
    };
    // Each request's series are updated one after the other: wait for the last one of
    // each of the three requests.
    let text = scrape_when(&gw, |t| {
        proxy_requests(t) >= 3.0
            && sample(t, r#"gepa_upstream_errors_total{kind="5xx"}"#).is_some()
            && sample(t, r#"gepa_body_rejections_total{reason="invalid_json"}"#).is_some()
            && sample(t, "gepa_gateway_overhead_seconds_count") >= Some(2.0)
            // The store's writer books a commit just after answering it.
            && sample(t, "gepa_store_commit_seconds_count") >= Some(2.0)
    })
    .await;
    assert_eq!(proxy_requests(&text), 3.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"gepa_requests_total{route="proxy",status_class="2xx"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"gepa_requests_total{route="proxy",status_class="4xx"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"gepa_body_rejections_total{reason="invalid_json"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"gepa_upstream_errors_total{kind="5xx"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gepa_gateway_overhead_seconds_count"),
        Some(2.0)
    );
    assert!(
        text.contains("gepa_gateway_overhead_seconds_bucket{le=\"0.00001\"}"),
        "fine buckets"
    );
    let sc = format!(r#"{{candidate="baseline",session="{id}"}}"#);
    assert_eq!(
        sample(&text, &format!("gepa_rollouts_total{sc}")),
        Some(2.0)
    );
    assert_eq!(sample(&text, &format!("gepa_rewards_total{sc}")), Some(1.0));
    assert_eq!(
        sample(&text, &format!("gepa_candidate_mean_reward{sc}")),
        Some(0.75)
    );
    assert_eq!(
        sample(&text, r#"gepa_sessions{status="started"}"#),
        Some(1.0)
    );
    assert!(!text.contains("ro_"), "no rollout ids in labels");
    // The durable store's writer reports its commits (the session and the reward).
    assert!(sample(&text, "gepa_store_commit_seconds_count").is_some_and(|n| n >= 2.0));
    assert!(sample(&text, "gepa_store_batch_writes_sum").is_some_and(|n| n >= 2.0));
    assert!(text.contains("gepa_store_queue_depth "), "{text}");

    // promtool (Debian's prometheus package; .ci/run installs it) must accept the exposition.
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus; .ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let r = reqwest::get(format!("http://{}/other", gw.metrics_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(gw.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 404, "never on the main listener");
}

/// Every metric the Grafana dashboard queries is one the gateway defines, so the
/// dashboard cannot drift from the exposition silently.
#[test]
fn the_dashboard_queries_only_metrics_the_gateway_defines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("conf/grafana/gepa-gateway.json")).unwrap(),
    )
    .unwrap();
    let sources = ["src/metrics.rs", "src/store/probe.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
        .collect::<String>();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            for (i, _) in expr.match_indices("gepa_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    sources.contains(&format!("\"{family}\"")),
                    "panel {:?} queries {name}, which the gateway does not define",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 20,
        "the dashboard's queries were read ({checked})"
    );
}
