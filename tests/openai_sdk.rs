//! The official OpenAI Python SDK against the gateway: one plain and one streamed call,
//! headers read with `with_raw_response`, as the README shows. `.ci/run` installs the SDK.

mod common;

use common::*;
use serde_json::Value;

const SCRIPT: &str = r#"
import json, sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sk-client-key", max_retries=0)
msgs = [{"role": "user", "content": "When will my card arrive?"}]

raw = client.chat.completions.with_raw_response.create(model="gpt-4.1-mini", messages=msgs)
plain = raw.parse()
out = {"plain": {"content": plain.choices[0].message.content,
                 "rollout": raw.headers.get("x-gepa-rollout-id"),
                 "candidate": raw.headers.get("x-gepa-candidate-id")}}

raw = client.chat.completions.with_raw_response.create(
    model="gpt-4.1-mini", messages=msgs, stream=True, extra_headers={"x-mock": "sse"})
text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
out["stream"] = {"content": text,
                 "rollout": raw.headers.get("x-gepa-rollout-id"),
                 "candidate": raw.headers.get("x-gepa-candidate-id")}
print(json.dumps(out))
"#;

#[tokio::test]
async fn official_python_sdk_plain_and_streamed() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock).await;
    let session = gw.create_session("You are a support agent.").await;
    // The proxy URL the API handed out, on the gateway's address (see `PUBLIC_URL`).
    let proxy_path = session["proxy_url"]
        .as_str()
        .unwrap()
        .strip_prefix(PUBLIC_URL)
        .unwrap();
    let proxy_url = gw.url(proxy_path);
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&proxy_url)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the SDK script failed (is the `openai` package installed? `.ci/run` installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plain"]["content"], MOCK_REPLY);
    assert_eq!(v["stream"]["content"], "Hello world");
    for call in ["plain", "stream"] {
        assert_eq!(v[call]["candidate"], "baseline");
        assert!(v[call]["rollout"].as_str().unwrap().starts_with("ro_"));
    }
    assert_ne!(v["plain"]["rollout"], v["stream"]["rollout"]);
    let sent = mock.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].json()["messages"][0]["content"],
        "You are a support agent."
    );
    assert_eq!(sent[1].json()["stream"], true);
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer sk-client-key")
    );
}
