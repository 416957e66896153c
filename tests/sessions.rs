//! The session API over HTTP: create, list, get, lifecycle, rewards, prompt URLs, auth.

mod common;

use common::*;
use serde_json::{json, Value};

async fn call(gw: &Gateway, url: &str) -> (u16, String, String) {
    let (status, h, body) = post_chat(url, chat_body().to_string(), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let header = |n: &str| h[n].to_str().unwrap().to_string();
    let _ = gw;
    (
        status,
        header("x-gepa-rollout-id"),
        header("x-gepa-candidate-id"),
    )
}

fn reward(rollout: &str, x: f64) -> Value {
    json!({"rollout_id": rollout, "reward_info": {"outcome_reward": x, "seed": 123}})
}

#[tokio::test]
async fn create_returns_the_seed_fields_and_get_shows_live_state() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let body = json!({
        "config_body": {"prompt_learning": {
            "algorithm": "gepa",
            "gepa": {"mode": "online", "online_proposer_min_rollouts": 3, "online_mystery": 1},
            "initial_prompt": {"messages": [
                {"role": "system", "pattern": "You are a classifier"},
                {"role": "user", "pattern": "{input}"}]}}},
        "metadata": {"team": "support"}
    });
    let r = gw
        .admin(reqwest::Client::new().post(gw.url(SESSIONS)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let id = v["session_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    let job = v["job_id"].as_str().unwrap();
    assert!(
        job.starts_with("pl_")
            && job.len() == 19
            && job[3..].chars().all(|c| c.is_ascii_hexdigit()),
        "{job}"
    );
    assert_eq!(v["status"], "started");
    assert_eq!(v["mode"], "online");
    assert_eq!(v["proxy_url"], gw.public_url(&format!("/api/gepa/v1/{id}")));
    assert_eq!(
        v["chat_completions_url"],
        gw.public_url(&format!("/api/gepa/v1/{id}/chat/completions"))
    );
    assert_eq!(v["metadata"]["team"], "support");
    let codes: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"ignored_message") && codes.contains(&"unknown_setting"),
        "{codes:?}"
    );

    let (_, rollout, _) = call(&gw, &gw.chat_url(id)).await;
    let (status, _) = gw.reward(id, reward(&rollout, 0.75)).await;
    assert_eq!(status, 200);
    let g = gw.get_session(id).await;
    assert_eq!(g["rollout_count"], 1);
    assert_eq!(g["reward_count"], 1);
    assert!(
        g["best_candidate_id"].is_null(),
        "one reward does not crown a candidate"
    );
    assert!(g["best_score"].is_null());
    assert_eq!(g["settings"]["online_proposer_min_rollouts"], 3);
    let c = &g["candidates"][0];
    assert_eq!(c["candidate_id"], "baseline");
    assert_eq!(c["is_baseline"], true);
    assert_eq!(c["instruction"], "You are a classifier");
    assert_eq!(c["avg_reward"], 0.75);
    assert_eq!(c["rollout_count"], 1);
    assert_eq!(c["reward_count"], 1);
    assert_eq!(c["status"], "active");
    assert_eq!(c["parent_ids"], json!([]));
    assert!(c["parent_id"].is_null());
    assert_eq!(g["proposer"]["state"], "disabled");
    assert!(g["proposer"]["reason"].is_string());
    for t in ["created_at", "updated_at"] {
        assert!(time::OffsetDateTime::parse(
            g[t].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }
}

#[tokio::test]
async fn create_rejects_bad_configs_naming_the_field() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let cases = [
        (
            json!({"config_body": {"prompt_learning": {"algorithm": "mipro", "gepa": {"mode": "online"}}}}),
            "config_body.prompt_learning.algorithm",
        ),
        (
            json!({"config_body": {"prompt_learning": {"algorithm": "gepa", "gepa": {"mode": "offline"}}}}),
            "config_body.prompt_learning.gepa.mode",
        ),
        (
            json!({"config_body": {"prompt_learning": {"algorithm": "gepa", "gepa": {"mode": "online"},
            "initial_prompt": {"messages": [{"role": "system", "pattern": ""}]}}}}),
            "config_body.prompt_learning.initial_prompt.messages[0].pattern",
        ),
        (
            json!({"config_body": {"prompt_learning": {"algorithm": "gepa", "gepa": {"mode": "online"},
            "initial_prompt": {"messages": [{"role": "user", "pattern": "x"}]}}}}),
            "config_body.prompt_learning.initial_prompt.messages",
        ),
    ];
    for (body, param) in cases {
        let r = gw
            .admin(reqwest::Client::new().post(gw.url(SESSIONS)))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param);
        assert!(v["error"]["message"].as_str().unwrap().contains(param));
    }
    let r = gw
        .admin(reqwest::Client::new().post(gw.url(SESSIONS)))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let list = gw.list_sessions("").await;
    assert_eq!(list["items"], json!([]), "no session was created");
}

#[tokio::test]
async fn list_is_newest_first_and_paginated() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(
            gw.create_session(&format!("p{i}")).await["session_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let get = |q: String| {
        let gw = &gw;
        async move {
            let r = gw
                .admin(reqwest::Client::new().get(gw.url(&format!("{SESSIONS}{q}"))))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, p1) = get("?limit=2".into()).await;
    assert_eq!(status, 200);
    assert_eq!(p1["items"][0]["session_id"], ids[2]);
    assert_eq!(p1["items"][1]["session_id"], ids[1]);
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let (_, p2) = get(format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["items"][0]["session_id"], ids[0]);
    assert!(p2["next_cursor"].is_null());
    for bad in ["?limit=0", "?limit=501", "?limit=x", "?cursor=abc"] {
        assert_eq!(get(bad.into()).await.0, 400, "{bad}");
    }
}

#[tokio::test]
async fn reward_rules() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let (_, rollout, candidate) = call(&gw, &gw.chat_url(&id)).await;

    let mut first = reward(&rollout, 1.0);
    first["candidate_id"] = json!(candidate);
    let (status, v) = gw.reward(&id, first.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"session_id": id, "rollout_id": rollout, "candidate_id": "baseline",
                         "reward_count": 1, "status": "started", "duplicate": false})
    );
    // The same reward again is idempotent; a different one conflicts.
    let (status, v) = gw.reward(&id, first.clone()).await;
    assert_eq!(
        (status, v["duplicate"].as_bool(), v["reward_count"].as_u64()),
        (200, Some(true), Some(1))
    );
    let (status, v) = gw.reward(&id, reward(&rollout, 0.5)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("reward_conflict"))
    );
    // Unknown rollout, wrong candidate, no attribution, bad values.
    let (status, v) = gw
        .reward(&id, reward("ro_00000000000000000000000000000000", 1.0))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("unknown_rollout"))
    );
    let (_, r2, _) = call(&gw, &gw.chat_url(&id)).await;
    let mut wrong = reward(&r2, 1.0);
    wrong["candidate_id"] = json!("cand_deadbeef");
    let (status, v) = gw.reward(&id, wrong).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("candidate_mismatch"))
    );
    for (body, param) in [
        (json!({"reward_info": {"outcome_reward": 1}}), "rollout_id"),
        (json!({"rollout_id": r2}), "reward_info"),
        (
            json!({"rollout_id": r2, "reward_info": {"outcome_reward": "high"}}),
            "reward_info.outcome_reward",
        ),
        (
            json!({"rollout_id": r2, "reward_info": {"outcome_reward": 1, "seed": [1]}}),
            "reward_info.seed",
        ),
    ] {
        let (status, v) = gw.reward(&id, body.clone()).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}"
        );
    }
    let (status, v) = gw
        .reward("00000000-0000-4000-8000-000000000000", reward(&r2, 1.0))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("unknown_session"))
    );
    // None of the refused rewards counted.
    let g = gw.get_session(&id).await;
    assert_eq!(g["reward_count"], 1);
    assert_eq!(g["candidates"][0]["avg_reward"], 1.0);
}

#[tokio::test]
async fn correlated_calls_share_a_rollout_until_rewarded() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let conv = gw.url(&format!("/api/gepa/v1/{id}/conv-7/chat/completions"));
    let (_, a, _) = call(&gw, &conv).await;
    let (_, b, _) = call(
        &gw,
        &gw.url(&format!("/api/gepa/v1/{id}/conv-7/v1/chat/completions")),
    )
    .await;
    assert_eq!(a, b, "one conversation is one rollout");
    let (_, other, _) = call(
        &gw,
        &gw.url(&format!("/api/gepa/v1/{id}/conv-8/chat/completions")),
    )
    .await;
    assert_ne!(a, other);
    let (status, v) = gw
        .reward(
            &id,
            json!({"correlation_id": "conv-7", "reward_info": {"outcome_reward": 1}}),
        )
        .await;
    assert_eq!((status, v["rollout_id"].as_str()), (200, Some(a.as_str())));
    let (_, c, _) = call(&gw, &conv).await;
    assert_ne!(
        c, a,
        "the reward closed the rollout; the next call opens a new one"
    );
    let (status, _) = gw
        .reward(
            &id,
            json!({"correlation_id": "never-used", "reward_info": {"outcome_reward": 1}}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(gw.get_session(&id).await["rollout_count"], 3);
}

#[tokio::test]
async fn lifecycle_transitions_and_what_each_status_serves() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("the baseline").await;
    let action = |a: &str| format!("{SESSIONS}/{id}/{a}");

    let (status, v) = gw.admin_post(&action("pause")).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("paused")));
    let (status, v) = gw.admin_post(&action("pause")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("paused")),
        "repeat: no change"
    );
    // Paused: traffic flows and rewards are accepted.
    let (_, r, cand) = call(&gw, &gw.chat_url(&id)).await;
    assert_eq!(cand, "baseline");
    assert_eq!(mock.last().json()["messages"][0]["content"], "the baseline");
    assert_eq!(gw.reward(&id, reward(&r, 1.0)).await.0, 200);
    let (status, v) = gw.admin_post(&action("resume")).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("started")));
    let (status, _) = gw.admin_post(&action("resume")).await;
    assert_eq!(status, 200);
    let (status, v) = gw.admin_post(&action("cancel")).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("cancelled")));
    assert_eq!(gw.admin_post(&action("cancel")).await.0, 200);
    for a in ["pause", "resume"] {
        let (status, v) = gw.admin_post(&action(a)).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (409, Some("session_finished")),
            "{a}"
        );
    }
    // Cancelled: the baseline still serves, rewards are refused.
    let (_, r, cand) = call(&gw, &gw.chat_url(&id)).await;
    assert_eq!(cand, "baseline");
    assert_eq!(gw.reward(&id, reward(&r, 1.0)).await.0, 409);
    assert_eq!(
        gw.reward(&id, json!({"stop": true})).await.0,
        409,
        "leaving cancelled is a 409"
    );
    let (status, v) = gw
        .admin_post(&format!(
            "{SESSIONS}/00000000-0000-4000-8000-000000000000/pause"
        ))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("unknown_session"))
    );
}

#[tokio::test]
async fn stop_completes_the_session() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let (_, r, _) = call(&gw, &gw.chat_url(&id)).await;
    let mut body = reward(&r, 0.5);
    body["stop"] = json!(true);
    let (status, v) = gw.reward(&id, body.clone()).await;
    assert_eq!(
        (status, v["status"].as_str(), v["reward_count"].as_u64()),
        (200, Some("completed"), Some(1))
    );
    let (status, v) = gw.reward(&id, json!({"stop": true})).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("completed")),
        "bare stop: no change"
    );
    let (_, r2, cand) = call(&gw, &gw.chat_url(&id)).await;
    assert_eq!(
        cand, "baseline",
        "a completed session with no chosen best serves the baseline"
    );
    assert_eq!(gw.reward(&id, reward(&r2, 1.0)).await.0, 409);
    for a in ["pause", "resume", "cancel"] {
        assert_eq!(
            gw.admin_post(&format!("{SESSIONS}/{id}/{a}")).await.0,
            409,
            "{a}"
        );
    }
}

#[tokio::test]
async fn prompt_urls() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let id = gw.new_session("x").await;
    let get = |q: &str| {
        let url = gw.url(&format!("{SESSIONS}/{id}/prompt{q}"));
        let gw = &gw;
        async move {
            let r = gw
                .admin(reqwest::Client::new().get(url))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = get("").await;
    assert_eq!(status, 200);
    assert_eq!(v["proxy_url"], gw.public_url(&format!("/api/gepa/v1/{id}")));
    let (status, v) = get("?correlation_id=user-42").await;
    assert_eq!(status, 200);
    assert_eq!(
        v["chat_completions_url"],
        gw.public_url(&format!("/api/gepa/v1/{id}/user-42/chat/completions"))
    );
    for bad in [
        "?correlation_id=v1",
        "?correlation_id=a%20b",
        "?correlation_id=",
    ] {
        let (status, v) = get(bad).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some("correlation_id")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn admin_auth() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.reward_token = Some("reward-only".into());
    let gw = Gateway::start_with(o).await;
    let id = gw.new_session("x").await;
    let client = reqwest::Client::new();
    let get = gw.url(&format!("{SESSIONS}/{id}"));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dGVzdA=="),
        Some("Bearer reward-only"),
    ] {
        let mut req = client.get(&get);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    // The reward token may post rewards and read prompt URLs, nothing else.
    let (_, rollout, _) = call(&gw, &gw.chat_url(&id)).await;
    let r = client
        .post(gw.url(&format!("{SESSIONS}/{id}/reward")))
        .bearer_auth("reward-only")
        .json(&reward(&rollout, 1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(gw.url(&format!("{SESSIONS}/{id}/prompt")))
        .bearer_auth("reward-only")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(gw.url(&format!("{SESSIONS}/{id}/cancel")))
        .bearer_auth("reward-only")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .delete(gw.url(&format!("{SESSIONS}/{id}")))
        .bearer_auth("reward-only")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a reward token cannot delete a session");
    assert_eq!(gw.get_session(&id).await["status"], "started");
    // Ending the session is the admin's: a stop with the reward token is a 403 that changes
    // nothing, neither the status nor the reward the same request carries.
    let (_, second, _) = call(&gw, &gw.chat_url(&id)).await;
    for body in [
        json!({"stop": true}),
        json!({"stop": true, "rollout_id": second, "reward_info": {"outcome_reward": 0.5}}),
    ] {
        let r = client
            .post(gw.url(&format!("{SESSIONS}/{id}/reward")))
            .bearer_auth("reward-only")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "forbidden");
        assert!(v["error"]["message"].as_str().unwrap().contains("`stop`"));
    }
    let after = gw.get_session(&id).await;
    assert_eq!(
        (after["status"].clone(), after["reward_count"].clone()),
        (json!("started"), json!(1)),
        "nothing changed"
    );
    // The admin token may stop it, with the reward the reward token could not post.
    let stop = json!({"stop": true, "rollout_id": second, "reward_info": {"outcome_reward": 0.5}});
    let (status, v) = gw.reward(&id, stop).await;
    assert_eq!(
        (status, v["status"].clone(), v["reward_count"].clone()),
        (200, json!("completed"), json!(2))
    );
    // /healthz needs no auth.
    assert_eq!(
        client
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client.get(gw.url("/readyz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn without_an_admin_token_loopback_clients_are_admitted() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.admin_token = None;
    let gw = Gateway::start_with(o).await;
    // Our test client is on loopback: admitted. (Remote refusal is unit-tested in auth.rs.)
    let v = gw.create_session("x").await;
    assert_eq!(v["status"], "started");
    assert!(
        gw.log().contains("loopback"),
        "the gateway warns at start-up:\n{}",
        gw.log()
    );
}

/// `DELETE /sessions/{id}` with the admin token: (status, body).
async fn delete_session(gw: &Gateway, id: &str) -> (u16, Value) {
    let url = gw.url(&format!("{SESSIONS}/{id}"));
    let r = gw
        .admin(reqwest::Client::new().delete(url))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_deleted_session_is_gone_everywhere_frees_its_slot_and_stays_gone_after_a_crash() {
    let mock = MockUpstream::start().await;
    let mut o = GatewayOptions::new(mock.url());
    o.extra_gateway_yaml = "  sessions:\n    max_sessions: 1\n".into();
    let mut gw = Gateway::start_with(o).await;
    let id = gw.new_session("be brief").await;
    let (_, rollout, _) = call(&gw, &gw.chat_url(&id)).await;
    assert_eq!(gw.reward(&id, reward(&rollout, 1.0)).await.0, 200);
    let r = gw
        .admin(reqwest::Client::new().post(gw.url(SESSIONS)))
        .json(
            &json!({"config_body": {"prompt_learning": {"algorithm": "gepa",
            "gepa": {"mode": "online"},
            "initial_prompt": {"messages": [{"role": "system", "pattern": "x"}]}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "one session is the limit");

    let (status, v) = delete_session(&gw, &id).await;
    assert_eq!(
        (status, v),
        (200, json!({"session_id": id, "deleted": true}))
    );
    let upstream_calls = mock.count();
    for (status, what) in [
        (
            gw_get(&gw, &format!("{SESSIONS}/{id}")).await,
            "GET session",
        ),
        (
            post_chat(&gw.chat_url(&id), chat_body().to_string(), &[])
                .await
                .0,
            "a proxied call",
        ),
        (gw.reward(&id, reward(&rollout, 1.0)).await.0, "a reward"),
        (delete_session(&gw, &id).await.0, "deleting it again"),
    ] {
        assert_eq!(status, 404, "{what}");
    }
    assert_eq!(mock.count(), upstream_calls, "nothing reached the upstream");
    assert!(gw.list_sessions("").await["items"]
        .as_array()
        .unwrap()
        .is_empty());
    // Its slot is free, and it does not come back after a crash.
    let other = gw.new_session("be brief").await;
    gw.kill9_and_restart().await;
    assert_eq!(gw_get(&gw, &format!("{SESSIONS}/{id}")).await, 404);
    let items = gw.list_sessions("").await["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["session_id"], other.as_str());
}

/// The status of an admin GET.
async fn gw_get(gw: &Gateway, path: &str) -> u16 {
    let r = gw
        .admin(reqwest::Client::new().get(gw.url(path)))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}
