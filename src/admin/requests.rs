//! The session API's request bodies, validated into the domain's requests. Every error
//! names the field at fault (`param`, and the message) and never echoes a secret.

use serde_json::{Map, Value};

use super::views::Warning;
use crate::config::GepaDefaults;
use crate::errors::ApiError;
use crate::gepa::{GepaSettings, NewSession, Reward, RewardRequest};

/// Largest accepted `metadata` object, serialized.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest accepted `reward_info.feedback`.
pub const MAX_FEEDBACK_BYTES: usize = 64 * 1024;

fn parse_json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest {
            code: "invalid_body",
            param: None,
            message: "the request body must be a JSON object".into(),
        }),
        Err(e) => Err(ApiError::BadRequest {
            code: "invalid_json",
            param: None,
            message: format!("the request body is not valid JSON: {e}"),
        }),
    }
}

fn invalid(code: &'static str, param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, param, message)
}

/// Looks up `key` in `obj` as an object, naming `path` when it is missing or not one.
fn object_at<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Map<String, Value>, ApiError> {
    match obj.get(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(invalid(
            "invalid_config",
            path,
            format!("`{path}` must be an object"),
        )),
        None => Err(invalid(
            "invalid_config",
            path,
            format!("`{path}` is required"),
        )),
    }
}

pub(super) fn warning(code: &'static str, message: String) -> Warning {
    Warning { code, message }
}

const GEPA: &str = "config_body.prompt_learning.gepa";

/// Validates a create-session body into the session to create and its warnings.
pub fn parse_create(
    body: &[u8],
    defaults: &GepaDefaults,
    default_model: &str,
) -> Result<(NewSession, Vec<Warning>), ApiError> {
    let top = parse_json_object(body)?;
    let config = object_at(&top, "config_body", "config_body")?;
    let pl = object_at(config, "prompt_learning", "config_body.prompt_learning")?;
    if pl.get("algorithm").and_then(Value::as_str) != Some("gepa") {
        return Err(invalid(
            "unsupported_algorithm",
            "config_body.prompt_learning.algorithm",
            "`config_body.prompt_learning.algorithm` must be \"gepa\"",
        ));
    }
    let gepa = object_at(pl, "gepa", GEPA)?;
    if gepa.get("mode").and_then(Value::as_str) != Some("online") {
        return Err(invalid(
            "unsupported_mode",
            "config_body.prompt_learning.gepa.mode",
            "`config_body.prompt_learning.gepa.mode` must be \"online\"",
        ));
    }
    let mut warnings = Vec::new();
    let settings = parse_gepa_settings(gepa, defaults, default_model, &mut warnings)?;
    let baseline = parse_initial_prompt(pl, &mut warnings)?;
    let metadata = match top.get("metadata") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            if v.to_string().len() > MAX_METADATA_BYTES {
                return Err(invalid(
                    "invalid_metadata",
                    "metadata",
                    format!("`metadata` must be at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            Some(v.clone())
        }
        Some(_) => {
            return Err(invalid(
                "invalid_metadata",
                "metadata",
                "`metadata` must be an object",
            ))
        }
    };
    Ok((
        NewSession {
            baseline_instruction: baseline,
            settings,
            metadata,
        },
        warnings,
    ))
}

fn positive_int(gepa: &Map<String, Value>, key: &str, default: u32) -> Result<u32, ApiError> {
    match gepa.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u32::MAX as u64).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                let path = format!("{GEPA}.{key}");
                invalid(
                    "invalid_config",
                    &path,
                    format!("`{path}` must be a positive integer"),
                )
            }),
    }
}

fn parse_gepa_settings(
    gepa: &Map<String, Value>,
    d: &GepaDefaults,
    default_model: &str,
    warnings: &mut Vec<Warning>,
) -> Result<GepaSettings, ApiError> {
    const KNOWN: [&str; 6] = [
        "mode",
        "online_proposer_min_rollouts",
        "online_proposer_max_candidates",
        "online_prune_threshold",
        "online_prune_min_rollouts",
        "proposer_model",
    ];
    for key in gepa.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        warnings.push(warning(
            "unknown_setting",
            format!("`{GEPA}.{key}` is not a known setting and is ignored"),
        ));
    }
    let threshold = match gepa.get("online_prune_threshold") {
        None | Some(Value::Null) => d.online_prune_threshold,
        Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
            let path = format!("{GEPA}.online_prune_threshold");
            invalid(
                "invalid_config",
                &path,
                format!("`{path}` must be a number"),
            )
        })?,
    };
    let model = match gepa.get("proposer_model") {
        None | Some(Value::Null) => default_model.to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 256 => s.clone(),
        Some(_) => {
            let path = format!("{GEPA}.proposer_model");
            return Err(invalid(
                "invalid_config",
                &path,
                format!("`{path}` must be a non-empty model name"),
            ));
        }
    };
    Ok(GepaSettings {
        online_proposer_min_rollouts: positive_int(
            gepa,
            "online_proposer_min_rollouts",
            d.online_proposer_min_rollouts,
        )?,
        online_proposer_max_candidates: positive_int(
            gepa,
            "online_proposer_max_candidates",
            d.online_proposer_max_candidates,
        )?,
        online_prune_threshold: threshold,
        online_prune_min_rollouts: positive_int(
            gepa,
            "online_prune_min_rollouts",
            d.online_prune_min_rollouts,
        )?,
        proposer_model: model,
    })
}

/// The single system message's `pattern` is the baseline; other messages are warned about.
fn parse_initial_prompt(
    pl: &Map<String, Value>,
    warnings: &mut Vec<Warning>,
) -> Result<String, ApiError> {
    const MSGS: &str = "config_body.prompt_learning.initial_prompt.messages";
    let ip = object_at(
        pl,
        "initial_prompt",
        "config_body.prompt_learning.initial_prompt",
    )?;
    let messages = match ip.get("messages") {
        Some(Value::Array(a)) => a,
        _ => {
            return Err(invalid(
                "invalid_config",
                MSGS,
                format!("`{MSGS}` must be an array"),
            ))
        }
    };
    let mut baseline: Option<String> = None;
    for (i, m) in messages.iter().enumerate() {
        let path = format!("{MSGS}[{i}]");
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                "invalid_config",
                &path,
                format!("`{path}` must be an object with a string `role`"),
            )
        })?;
        if role != "system" {
            warnings.push(warning(
                "ignored_message",
                format!(
                    "`{path}` (role {role:?}) is ignored: only the system message is optimized"
                ),
            ));
            continue;
        }
        if baseline.is_some() {
            return Err(invalid(
                "invalid_config",
                &path,
                format!("`{path}`: initial_prompt must hold exactly one system message"),
            ));
        }
        match m.get("pattern").and_then(Value::as_str) {
            Some(p) if !p.trim().is_empty() => baseline = Some(p.to_string()),
            _ => {
                let ppath = format!("{path}.pattern");
                return Err(invalid(
                    "invalid_config",
                    &ppath,
                    format!("`{ppath}` must be a non-empty string (the baseline instruction)"),
                ));
            }
        }
    }
    baseline.ok_or_else(|| {
        invalid(
            "invalid_config",
            MSGS,
            format!("`{MSGS}` must hold one system message with a `pattern`"),
        )
    })
}

fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(
            "invalid_reward",
            path,
            format!("`{path}` must be a string"),
        )),
    }
}

/// Validates a reward body.
pub fn parse_reward(body: &[u8]) -> Result<RewardRequest, ApiError> {
    let top = parse_json_object(body)?;
    let stop = match top.get("stop") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(invalid(
                "invalid_reward",
                "stop",
                "`stop` must be a boolean",
            ))
        }
    };
    let info = match top.get("reward_info") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            return Err(invalid(
                "invalid_reward",
                "reward_info",
                "`reward_info` must be an object",
            ))
        }
    };
    let reward = match info.map(|i| (i, i.get("outcome_reward"))) {
        Some((i, Some(v))) if !v.is_null() => Some(parse_reward_info(i, v)?),
        _ if stop => None,
        Some(_) => {
            return Err(invalid(
                "invalid_reward",
                "reward_info.outcome_reward",
                "`reward_info.outcome_reward` is required (a finite number)",
            ))
        }
        None => {
            return Err(invalid(
                "invalid_reward",
                "reward_info",
                "`reward_info` is required",
            ))
        }
    };
    Ok(RewardRequest {
        rollout_id: optional_string(&top, "rollout_id", "rollout_id")?,
        correlation_id: optional_string(&top, "correlation_id", "correlation_id")?,
        candidate_id: optional_string(&top, "candidate_id", "candidate_id")?,
        reward,
        stop,
    })
}

fn parse_reward_info(info: &Map<String, Value>, outcome: &Value) -> Result<Reward, ApiError> {
    let outcome = outcome.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
        invalid(
            "invalid_reward",
            "reward_info.outcome_reward",
            "`reward_info.outcome_reward` must be a finite number",
        )
    })?;
    let seed = match info.get("seed") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(_)) => Some(v.clone()),
        Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
        Some(_) => {
            return Err(invalid(
                "invalid_reward",
                "reward_info.seed",
                "`reward_info.seed` must be an integer or a string",
            ))
        }
    };
    let feedback = optional_string(info, "feedback", "reward_info.feedback")?;
    if feedback
        .as_ref()
        .is_some_and(|f| f.len() > MAX_FEEDBACK_BYTES)
    {
        return Err(invalid(
            "invalid_reward",
            "reward_info.feedback",
            format!("`reward_info.feedback` must be at most {MAX_FEEDBACK_BYTES} bytes"),
        ));
    }
    Ok(Reward {
        outcome,
        seed,
        feedback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> GepaDefaults {
        GepaDefaults {
            online_proposer_min_rollouts: 10,
            online_proposer_max_candidates: 8,
            online_prune_threshold: 0.0,
            online_prune_min_rollouts: 20,
            warmup_rollouts: 5,
            allocation: crate::config::Allocation::Thompson,
        }
    }

    fn create(body: Value) -> Result<(NewSession, Vec<Warning>), ApiError> {
        parse_create(body.to_string().as_bytes(), &defaults(), "gpt-4.1-mini")
    }

    fn good() -> Value {
        json!({"config_body": {"prompt_learning": {
            "algorithm": "gepa",
            "gepa": {"mode": "online", "online_proposer_min_rollouts": 3},
            "initial_prompt": {"messages": [{"role": "system", "pattern": "You are a classifier"}]}
        }}})
    }

    fn param_of(e: ApiError) -> String {
        match e {
            ApiError::BadRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn create_good_and_defaults() {
        let (n, w) = create(good()).unwrap();
        assert_eq!(n.baseline_instruction, "You are a classifier");
        assert_eq!(n.settings.online_proposer_min_rollouts, 3);
        assert_eq!(n.settings.online_prune_min_rollouts, 20);
        assert_eq!(n.settings.proposer_model, "gpt-4.1-mini");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn create_errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), ""),
            (json!({}), "config_body"),
            (json!({"config_body": {}}), "config_body.prompt_learning"),
            (
                json!({"config_body": {"prompt_learning": {"algorithm": "mipro"}}}),
                "config_body.prompt_learning.algorithm",
            ),
            (
                json!({"config_body": {"prompt_learning": {"algorithm": "gepa", "gepa": {"mode": "offline"}}}}),
                "config_body.prompt_learning.gepa.mode",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(create(body.clone()).unwrap_err()), param, "{body}");
        }
        let mut b = good();
        b["config_body"]["prompt_learning"]["initial_prompt"]["messages"][0]["pattern"] =
            json!("  ");
        assert_eq!(
            param_of(create(b).unwrap_err()),
            "config_body.prompt_learning.initial_prompt.messages[0].pattern"
        );
        let mut b = good();
        b["config_body"]["prompt_learning"]["gepa"]["online_proposer_min_rollouts"] = json!(0);
        assert_eq!(
            param_of(create(b).unwrap_err()),
            "config_body.prompt_learning.gepa.online_proposer_min_rollouts"
        );
        let mut b = good();
        b["config_body"]["prompt_learning"]["initial_prompt"]["messages"] =
            json!([{"role": "user", "pattern": "x"}]);
        assert_eq!(
            param_of(create(b).unwrap_err()),
            "config_body.prompt_learning.initial_prompt.messages"
        );
        let mut b = good();
        b["metadata"] = json!("x");
        assert_eq!(param_of(create(b).unwrap_err()), "metadata");
        assert_eq!(create_raw(b"{not json").unwrap_err().code(), "invalid_json");
    }

    fn create_raw(b: &[u8]) -> Result<(NewSession, Vec<Warning>), ApiError> {
        parse_create(b, &defaults(), "m")
    }

    #[test]
    fn create_warns_about_ignored_messages_and_unknown_settings() {
        let mut b = good();
        b["config_body"]["prompt_learning"]["initial_prompt"]["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "pattern": "{text}"}));
        b["config_body"]["prompt_learning"]["gepa"]["online_foo"] = json!(1);
        let (_, w) = create(b).unwrap();
        let codes: Vec<&str> = w.iter().map(|w| w.code).collect();
        assert!(codes.contains(&"ignored_message"));
        assert!(codes.contains(&"unknown_setting"));
    }

    #[test]
    fn reward_parsing() {
        let r = parse_reward(br#"{"reward_info":{"outcome_reward":1.0,"seed":123},"rollout_id":"ro_1","candidate_id":"baseline"}"#).unwrap();
        assert_eq!(r.reward.unwrap().seed, Some(json!(123)));
        let stop = parse_reward(br#"{"stop":true}"#).unwrap();
        assert!(stop.stop && stop.reward.is_none());
        for (body, param) in [
            (&br#"{"rollout_id":"x"}"#[..], "reward_info"),
            (br#"{"reward_info":{}}"#, "reward_info.outcome_reward"),
            (
                br#"{"reward_info":{"outcome_reward":"1"}}"#,
                "reward_info.outcome_reward",
            ),
            (
                br#"{"reward_info":{"outcome_reward":1,"seed":1.5}}"#,
                "reward_info.seed",
            ),
            (
                br#"{"reward_info":{"outcome_reward":1,"feedback":3}}"#,
                "reward_info.feedback",
            ),
            (
                br#"{"reward_info":{"outcome_reward":1},"stop":"yes"}"#,
                "stop",
            ),
            (
                br#"{"reward_info":{"outcome_reward":1},"rollout_id":5}"#,
                "rollout_id",
            ),
        ] {
            assert_eq!(
                param_of(parse_reward(body).unwrap_err()),
                param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_reward(br#"{"reward_info":{"outcome_reward":1e999}}"#)
                .unwrap_err()
                .code(),
            "invalid_json"
        );
    }

    /// `e` is a 400 with `code` and `param`, and its message names the field and says `what`.
    fn assert_refused(e: ApiError, (code, param, what): (&str, &str, &str), case: &str) {
        assert_eq!(e.code(), code, "{case}");
        let message = e.message();
        assert!(message.contains(&format!("`{param}`")), "{case}: {message}");
        assert!(message.contains(what), "{case}: {message}");
        assert_eq!(param_of(e), param, "{case}");
    }

    /// `good()`, plus a user message, with one edit: `pointer=json` sets the value there, a
    /// bare `pointer` removes it. `pl/` abbreviates `/config_body/prompt_learning/`.
    fn edited(edit: &str) -> Value {
        let (pointer, value) = match edit.split_once('=') {
            Some((p, v)) => (p, Some(serde_json::from_str::<Value>(v).unwrap())),
            None => (edit, None),
        };
        let pointer = match pointer.strip_prefix("pl/") {
            Some(rest) => format!("/config_body/prompt_learning/{rest}"),
            None => pointer.to_string(),
        };
        let mut body = good();
        body["config_body"]["prompt_learning"]["initial_prompt"]["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "pattern": "{text}"}));
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match (body.pointer_mut(parent).unwrap(), value) {
            (Value::Object(m), None) => drop(m.remove(key)),
            (Value::Array(a), Some(v)) => a[key.parse::<usize>().unwrap()] = v,
            (p, Some(v)) => p[key] = v,
            (p, None) => panic!("cannot remove from {p}"),
        }
        body
    }

    const CONFIG: &str = "invalid_config";
    const AN_OBJECT: &str = "must be an object";
    const AT_PL: &str = "config_body.prompt_learning";
    const AT_GEPA: &str = "config_body.prompt_learning.gepa";
    const AT_PROMPT: &str = "config_body.prompt_learning.initial_prompt";
    const AT_MESSAGES: &str = "config_body.prompt_learning.initial_prompt.messages";

    /// Each edit of `good()` is refused with `(code, param, what the message says)`.
    fn assert_edits_refused(expected: (&str, &str, &str), edits: &[&str]) {
        for edit in edits {
            assert_refused(create(edited(edit)).unwrap_err(), expected, edit);
        }
    }

    #[test]
    fn create_refuses_bad_objects_naming_them() {
        // An array too: serde alone would read a struct from one, field by position.
        let config = (CONFIG, "config_body", AN_OBJECT);
        assert_edits_refused(config, &["/config_body=null", r#"/config_body=[{"x":{}}]"#]);
        assert_edits_refused(
            (CONFIG, AT_PL, AN_OBJECT),
            &[r#"/config_body/prompt_learning=1"#],
        );
        assert_edits_refused((CONFIG, AT_GEPA, "is required"), &["pl/gepa"]);
        assert_edits_refused((CONFIG, AT_GEPA, AN_OBJECT), &["pl/gepa=[]"]);
        assert_edits_refused((CONFIG, AT_PROMPT, "is required"), &["pl/initial_prompt"]);
        assert_edits_refused((CONFIG, AT_PROMPT, AN_OBJECT), &["pl/initial_prompt=[]"]);
        let messages = (CONFIG, AT_MESSAGES, "must be an array");
        assert_edits_refused(
            messages,
            &[
                "pl/initial_prompt/messages",
                "pl/initial_prompt/messages={}",
            ],
        );
        assert_edits_refused(
            ("invalid_metadata", "metadata", AN_OBJECT),
            &["/metadata=[]"],
        );
        let mut b = good();
        b["metadata"] = json!({"k": "v".repeat(MAX_METADATA_BYTES)});
        let too_big = (
            "invalid_metadata",
            "metadata",
            "must be at most 16384 bytes of JSON",
        );
        assert_refused(create(b).unwrap_err(), too_big, "big metadata");
    }

    #[test]
    fn create_refuses_other_algorithms_and_modes() {
        // `{"gepa": null}`: a unit enum would take it.
        let algorithm = (
            "unsupported_algorithm",
            "config_body.prompt_learning.algorithm",
            r#"must be "gepa""#,
        );
        assert_edits_refused(
            algorithm,
            &[
                "pl/algorithm",
                "pl/algorithm=null",
                "pl/algorithm=1",
                r#"pl/algorithm={"gepa":null}"#,
            ],
        );
        let mode = (
            "unsupported_mode",
            "config_body.prompt_learning.gepa.mode",
            r#"must be "online""#,
        );
        assert_edits_refused(mode, &["pl/gepa/mode", r#"pl/gepa/mode={"online":null}"#]);
    }

    #[test]
    fn create_refuses_bad_settings_naming_them() {
        const INT: &str = "must be a positive integer";
        let setting = |key: &str| format!("pl/gepa/{key}");
        for (key, bad) in [
            ("online_proposer_max_candidates", "0"),
            ("online_prune_min_rollouts", "-1"),
            ("online_proposer_min_rollouts", "4294967296"),
            ("online_proposer_min_rollouts", "3.0"),
            ("online_proposer_min_rollouts", r#""3""#),
            ("online_prune_threshold", r#""0.5""#),
            ("proposer_model", r#"" \t""#),
            ("proposer_model", "5"),
        ] {
            let what = match key {
                "online_prune_threshold" => "must be a number",
                "proposer_model" => "must be a non-empty model name",
                _ => INT,
            };
            let param = format!("{AT_GEPA}.{key}");
            assert_edits_refused(
                (CONFIG, &param, what),
                &[&format!("{}={bad}", setting(key))],
            );
        }
        let mut b = good();
        b["config_body"]["prompt_learning"]["gepa"]["proposer_model"] = json!("m".repeat(257));
        let model = format!("{AT_GEPA}.proposer_model");
        assert_refused(
            create(b).unwrap_err(),
            (CONFIG, &model, "model name"),
            "257 bytes",
        );
    }

    #[test]
    fn create_refuses_bad_messages_naming_them() {
        let (m0, m1) = (format!("{AT_MESSAGES}[0]"), format!("{AT_MESSAGES}[1]"));
        let role = (
            CONFIG,
            m0.as_str(),
            "must be an object with a string `role`",
        );
        let edits = [
            r#"pl/initial_prompt/messages/0="system""#,
            r#"pl/initial_prompt/messages/0=["system","x"]"#,
            "pl/initial_prompt/messages/0/role",
            "pl/initial_prompt/messages/0/role=1",
        ];
        assert_edits_refused(role, &edits);
        let second = (CONFIG, m1.as_str(), "exactly one system message");
        assert_edits_refused(
            second,
            &[r#"pl/initial_prompt/messages/1={"role":"system","pattern":"again"}"#],
        );
        let pattern = format!("{m0}.pattern");
        let blank = (CONFIG, pattern.as_str(), "must be a non-empty string");
        assert_edits_refused(
            blank,
            &[
                "pl/initial_prompt/messages/0/pattern",
                "pl/initial_prompt/messages/0/pattern=5",
            ],
        );
    }

    #[test]
    fn create_accepts_nulls_limits_and_any_non_system_pattern() {
        let mut b = edited("pl/initial_prompt/messages/1/pattern=5");
        let gepa = &mut b["config_body"]["prompt_learning"]["gepa"];
        gepa["online_proposer_min_rollouts"] = json!(null);
        gepa["online_prune_threshold"] = json!(null);
        gepa["online_prune_min_rollouts"] = json!(u32::MAX);
        gepa["proposer_model"] = json!("m".repeat(256));
        b["metadata"] = json!(null);
        let (n, w) = create(b).unwrap();
        assert_eq!(n.settings.online_proposer_min_rollouts, 10);
        assert_eq!(n.settings.online_prune_threshold, 0.0);
        assert_eq!(n.settings.online_prune_min_rollouts, u32::MAX);
        assert_eq!(n.settings.proposer_model.len(), 256);
        assert!(n.metadata.is_none());
        assert_eq!(w.len(), 1, "{w:?}");
        // A repeated key keeps its last value, as parsing into a `Value` always did.
        let raw = br#"{"config_body":{"prompt_learning":{"algorithm":"x","algorithm":"gepa",
            "gepa":{"mode":"online"},"initial_prompt":{"messages":[{"role":"system","pattern":"p"}]}}}}"#;
        assert_eq!(create_raw(raw).unwrap().0.baseline_instruction, "p");
    }

    #[test]
    fn create_warning_texts() {
        let mut b = edited("pl/gepa/zz_typo=1");
        b["config_body"]["prompt_learning"]["gepa"]["aa_typo"] = json!(null);
        let (_, w) = create(b).unwrap();
        let texts: Vec<(&str, &str)> = w.iter().map(|w| (w.code, w.message.as_str())).collect();
        assert_eq!(
            texts,
            [
                ("unknown_setting", "`config_body.prompt_learning.gepa.aa_typo` is not a known setting and is ignored"),
                ("unknown_setting", "`config_body.prompt_learning.gepa.zz_typo` is not a known setting and is ignored"),
                ("ignored_message", "`config_body.prompt_learning.initial_prompt.messages[1]` (role \"user\") is ignored: only the system message is optimized"),
            ]
        );
    }

    /// Each body is refused as `invalid_reward` with `param`, its message saying `what`.
    fn assert_rewards_refused(param: &str, what: &str, bodies: &[&str]) {
        for body in bodies {
            let e = parse_reward(body.as_bytes()).unwrap_err();
            assert_refused(e, ("invalid_reward", param, what), body);
        }
    }

    #[test]
    fn reward_refusals_name_code_param_and_field() {
        let info = "reward_info";
        let object = [r#"{"reward_info":[]}"#, r#"{"reward_info":5,"stop":true}"#];
        assert_rewards_refused(info, "must be an object", &object);
        assert_rewards_refused(info, "is required", &[r#"{"reward_info":null}"#]);
        let outcome = "reward_info.outcome_reward";
        let missing = r#"{"reward_info":{"outcome_reward":null}}"#;
        assert_rewards_refused(outcome, "is required (a finite number)", &[missing]);
        let not_numbers = [
            r#"{"reward_info":{"outcome_reward":true}}"#,
            r#"{"reward_info":{"outcome_reward":"x"},"stop":true}"#,
        ];
        assert_rewards_refused(outcome, "must be a finite number", &not_numbers);
        let with = |field: &str, v: &str| {
            format!(r#"{{"reward_info":{{"outcome_reward":1,"{field}":{v}}}}}"#)
        };
        let seeds = ["true", "[1]", "1.0"].map(|v| with("seed", v));
        let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
        assert_rewards_refused("reward_info.seed", "must be an integer or a string", &seeds);
        let long = with(
            "feedback",
            &format!("\"{}\"", "f".repeat(MAX_FEEDBACK_BYTES + 1)),
        );
        assert_rewards_refused("reward_info.feedback", "at most 65536 bytes", &[&long]);
        let ok = r#""reward_info":{"outcome_reward":1}"#;
        for (field, bad, what) in [
            ("correlation_id", "5", "must be a string"),
            ("candidate_id", "[]", "must be a string"),
            ("stop", "1", "must be a boolean"),
        ] {
            assert_rewards_refused(field, what, &[&format!(r#"{{{ok},"{field}":{bad}}}"#)]);
        }
    }

    #[test]
    fn reward_accepts_seeds_nulls_and_a_bare_stop() {
        let reward = |body: Value| parse_reward(body.to_string().as_bytes()).unwrap();
        for seed in [json!("s"), json!(-5), json!(u64::MAX)] {
            let r = reward(json!({"reward_info": {"outcome_reward": 1, "seed": seed}}));
            assert_eq!(r.reward.unwrap().seed, Some(seed));
        }
        let fb = "f".repeat(MAX_FEEDBACK_BYTES);
        let r = reward(json!({"reward_info": {"outcome_reward": 1, "feedback": fb}}));
        assert_eq!(
            r.reward.unwrap().feedback.map(|f| f.len()),
            Some(MAX_FEEDBACK_BYTES)
        );
        let r = reward(
            json!({"reward_info": {"outcome_reward": 1, "seed": null, "feedback": null},
            "rollout_id": null, "correlation_id": null, "candidate_id": null, "stop": null}),
        );
        assert_eq!(r.reward.unwrap().seed, None);
        assert!(!r.stop && r.rollout_id.is_none());
        // A stop without an outcome ignores the rest of `reward_info`, as it always has.
        let r = reward(json!({"stop": true, "reward_info": {"seed": 1.5, "feedback": 3}}));
        assert!(r.stop && r.reward.is_none());
        let r = reward(json!({"stop": true, "reward_info": {"outcome_reward": 0.5}}));
        assert!(r.stop && r.reward.unwrap().outcome == 0.5);
    }
}
