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
}
