//! The session API's request bodies, validated into the domain's requests. Every error
//! names the field at fault (`param`, and the message) and never echoes a secret.
//!
//! A body is parsed as JSON, then deserialized into the typed shapes below through
//! `serde_path_to_error`. A value serde refuses (a wrong type, a zero count, a blank model
//! name) becomes the error of its path, worded by [`create_type_error`] or
//! [`reward_type_error`]: serde's own wording never reaches the client. What a type cannot
//! say (a required field, a size limit, the one system message) is checked afterwards.
//! A body with several faults is refused for the first value serde refuses, walking each
//! object's keys in sorted order (serde_json's map is sorted), before any later check.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use serde_path_to_error::{Path, Segment};

use super::views::Warning;
use crate::config::GepaDefaults;
use crate::errors::ApiError;
use crate::gepa::{GepaSettings, NewSession, Reward, RewardRequest};

/// Largest accepted `metadata` object, serialized.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest accepted `reward_info.feedback`.
pub const MAX_FEEDBACK_BYTES: usize = 64 * 1024;
/// Longest accepted `proposer_model`, in bytes.
const MAX_MODEL_BYTES: usize = 256;

const INVALID_CONFIG: &str = "invalid_config";
const INVALID_REWARD: &str = "invalid_reward";
const PROMPT_LEARNING: &str = "config_body.prompt_learning";
const ALGORITHM: &str = "config_body.prompt_learning.algorithm";
const GEPA: &str = "config_body.prompt_learning.gepa";
const MODE: &str = "config_body.prompt_learning.gepa.mode";
const INITIAL_PROMPT: &str = "config_body.prompt_learning.initial_prompt";
const MSGS: &str = "config_body.prompt_learning.initial_prompt.messages";
const MUST_BE_GEPA: &str = "must be \"gepa\"";
const MUST_BE_ONLINE: &str = "must be \"online\"";
const MUST_HAVE_ROLE: &str = "must be an object with a string `role`";

// ---- the create-session body ----

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default, deserialize_with = "present")]
    config_body: Option<Object<ConfigBody>>,
    metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct ConfigBody {
    #[serde(default, deserialize_with = "present")]
    prompt_learning: Option<Object<PromptLearning>>,
}

#[derive(Deserialize)]
struct PromptLearning {
    /// `Some` when `algorithm` is "gepa", the one algorithm there is.
    #[serde(default, deserialize_with = "is_gepa")]
    algorithm: Option<()>,
    #[serde(default, deserialize_with = "present")]
    gepa: Option<Object<GepaConfig>>,
    #[serde(default, deserialize_with = "present")]
    initial_prompt: Option<Object<InitialPrompt>>,
}

#[derive(Deserialize)]
struct GepaConfig {
    /// `Some` when `mode` is "online", the one mode there is.
    #[serde(default, deserialize_with = "is_online")]
    mode: Option<()>,
    online_proposer_min_rollouts: Option<NonZeroU32>,
    online_proposer_max_candidates: Option<NonZeroU32>,
    online_prune_threshold: Option<Finite>,
    online_prune_min_rollouts: Option<NonZeroU32>,
    proposer_model: Option<ModelName>,
    /// Every other key: each is warned about, since a misspelt setting would otherwise
    /// be dropped without a word.
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct InitialPrompt {
    #[serde(default, deserialize_with = "present")]
    messages: Option<Vec<Object<Message>>>,
}

#[derive(Deserialize)]
struct Message {
    role: Option<String>,
    /// Only the system message's is read. The others (templates such as `{text}`) are
    /// passed over, so whatever they hold has always been accepted.
    pattern: Option<Deferred<String>>,
}

/// A proposer model name: not blank, at most [`MAX_MODEL_BYTES`].
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct ModelName(String);

impl TryFrom<String> for ModelName {
    type Error = &'static str;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        if name.trim().is_empty() || name.len() > MAX_MODEL_BYTES {
            return Err("not a model name");
        }
        Ok(ModelName(name))
    }
}

// ---- the reward body ----

#[derive(Deserialize)]
struct RewardBody {
    stop: Option<bool>,
    reward_info: Option<Object<RewardInfo>>,
    rollout_id: Option<String>,
    correlation_id: Option<String>,
    candidate_id: Option<String>,
}

#[derive(Deserialize)]
struct RewardInfo {
    outcome_reward: Option<Finite>,
    /// `seed` and `feedback` are checked only with an outcome: a bare `stop` has always
    /// ignored the rest of `reward_info`.
    seed: Option<Deferred<Seed>>,
    feedback: Option<Deferred<String>>,
}

/// An integer or a string naming the task instance.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seed {
    Unsigned(u64),
    Signed(i64),
    Text(String),
}

impl From<Seed> for Value {
    fn from(seed: Seed) -> Value {
        match seed {
            Seed::Unsigned(n) => n.into(),
            Seed::Signed(n) => n.into(),
            Seed::Text(s) => s.into(),
        }
    }
}

// ---- shapes shared by both ----

/// A finite number. JSON has no NaN or infinity and the parser refuses `1e999`, so this
/// guards the domain's arithmetic rather than the wire.
#[derive(Deserialize)]
#[serde(try_from = "f64")]
struct Finite(f64);

impl TryFrom<f64> for Finite {
    type Error = &'static str;

    fn try_from(x: f64) -> Result<Self, Self::Error> {
        if x.is_finite() {
            Ok(Finite(x))
        } else {
            Err("not a finite number")
        }
    }
}

/// A JSON object deserialized as `T`. A derived struct alone would also take an array
/// (its fields by position), which these bodies refuse.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A value checked later, once it is known to matter: it takes whatever the field holds.
#[derive(Deserialize)]
#[serde(untagged)]
enum Deferred<T> {
    Valid(T),
    Invalid(IgnoredAny),
}

impl<T> Deferred<T> {
    fn valid(self) -> Option<T> {
        match self {
            Deferred::Valid(v) => Some(v),
            Deferred::Invalid(_) => None,
        }
    }
}

/// With `#[serde(default)]`: absent is `None`, and unlike a plain `Option` a null is
/// refused as not a `T` (these fields never took null for absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn is_gepa<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    literal(d, "gepa")
}

fn is_online<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    literal(d, "online")
}

/// `Some(())` for the string `want`, an error for anything else (null included). Not a
/// unit enum: serde takes `{"gepa": null}` for one of those too.
fn literal<'de, D: Deserializer<'de>>(d: D, want: &str) -> Result<Option<()>, D::Error> {
    let got = String::deserialize(d)?;
    if got == want {
        Ok(Some(()))
    } else {
        Err(de::Error::invalid_value(de::Unexpected::Str(&got), &want))
    }
}

// ---- errors ----

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

/// Parses `body` and deserializes it as `T`; a value serde refuses becomes
/// `type_error(its path)`. The body is parsed into a `Value` first so that a syntax error
/// anywhere is `invalid_json` before any field is judged, and a repeated key keeps its
/// last value (a struct read straight from the bytes refuses it as a duplicate field).
fn deserialize<T: DeserializeOwned>(
    body: &[u8],
    type_error: fn(&Path) -> ApiError,
) -> Result<T, ApiError> {
    let object = parse_json_object(body)?;
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| type_error(e.path()))
}

/// A 400 for `param` whose message is "`param` <what>".
fn field_error(code: &'static str, param: &str, what: impl fmt::Display) -> ApiError {
    ApiError::bad_request(code, param, format!("`{param}` {what}"))
}

/// The key a path ends in; "" when it ends in an array index.
fn last_key(path: &Path) -> &str {
    match path.iter().next_back() {
        Some(Segment::Map { key }) => key,
        _ => "",
    }
}

/// The error for a create-body value serde refused at `path`: what that field must be.
/// The last key tells the field, since no two fields share a name.
fn create_type_error(path: &Path) -> ApiError {
    let param = path.to_string();
    let (code, what) = match last_key(path) {
        "algorithm" => ("unsupported_algorithm", MUST_BE_GEPA),
        "mode" => ("unsupported_mode", MUST_BE_ONLINE),
        "metadata" => ("invalid_metadata", "must be an object"),
        "config_body" | "prompt_learning" | "gepa" | "initial_prompt" => {
            (INVALID_CONFIG, "must be an object")
        }
        "messages" => (INVALID_CONFIG, "must be an array"),
        "online_proposer_min_rollouts"
        | "online_proposer_max_candidates"
        | "online_prune_min_rollouts" => (INVALID_CONFIG, "must be a positive integer"),
        "online_prune_threshold" => (INVALID_CONFIG, "must be a number"),
        "proposer_model" => (INVALID_CONFIG, "must be a non-empty model name"),
        // A message (`messages[1]`, the only array) or its `role`: the message is named.
        "" | "role" => {
            let message = param.strip_suffix(".role").unwrap_or(&param);
            return field_error(INVALID_CONFIG, message, MUST_HAVE_ROLE);
        }
        _ => (INVALID_CONFIG, "is invalid"),
    };
    field_error(code, &param, what)
}

/// The error for a reward-body value serde refused at `path`: what that field must be.
fn reward_type_error(path: &Path) -> ApiError {
    let what = match last_key(path) {
        "stop" => "must be a boolean",
        "reward_info" => "must be an object",
        "outcome_reward" => "must be a finite number",
        "rollout_id" | "correlation_id" | "candidate_id" => "must be a string",
        _ => "is invalid",
    };
    field_error(INVALID_REWARD, &path.to_string(), what)
}

pub(super) fn warning(code: &'static str, message: String) -> Warning {
    Warning { code, message }
}

// ---- create ----

/// Validates a create-session body into the session to create and its warnings.
pub fn parse_create(
    body: &[u8],
    defaults: &GepaDefaults,
    default_model: &str,
) -> Result<(NewSession, Vec<Warning>), ApiError> {
    let body: CreateBody = deserialize(body, create_type_error)?;
    let config = required(body.config_body, "config_body")?;
    let pl = required(config.prompt_learning, PROMPT_LEARNING)?;
    if pl.algorithm.is_none() {
        return Err(field_error(
            "unsupported_algorithm",
            ALGORITHM,
            MUST_BE_GEPA,
        ));
    }
    let gepa = required(pl.gepa, GEPA)?;
    if gepa.mode.is_none() {
        return Err(field_error("unsupported_mode", MODE, MUST_BE_ONLINE));
    }
    let mut warnings: Vec<Warning> = gepa
        .unknown
        .keys()
        .map(|key| {
            warning(
                "unknown_setting",
                format!("`{GEPA}.{key}` is not a known setting and is ignored"),
            )
        })
        .collect();
    let settings = gepa.settings(defaults, default_model);
    let baseline = parse_initial_prompt(pl.initial_prompt, &mut warnings)?;
    Ok((
        NewSession {
            baseline_instruction: baseline,
            settings,
            metadata: check_metadata(body.metadata)?,
        },
        warnings,
    ))
}

/// The object a required field holds, or "`path` is required" when it is absent.
fn required<T>(field: Option<Object<T>>, path: &str) -> Result<T, ApiError> {
    match field {
        Some(Object(value)) => Ok(value),
        None => Err(field_error(INVALID_CONFIG, path, "is required")),
    }
}

impl GepaConfig {
    /// The settings asked for, the gateway's defaults for the rest.
    fn settings(self, d: &GepaDefaults, default_model: &str) -> GepaSettings {
        let count = |n: Option<NonZeroU32>, default: u32| n.map_or(default, NonZeroU32::get);
        GepaSettings {
            online_proposer_min_rollouts: count(
                self.online_proposer_min_rollouts,
                d.online_proposer_min_rollouts,
            ),
            online_proposer_max_candidates: count(
                self.online_proposer_max_candidates,
                d.online_proposer_max_candidates,
            ),
            online_prune_threshold: self
                .online_prune_threshold
                .map_or(d.online_prune_threshold, |Finite(x)| x),
            online_prune_min_rollouts: count(
                self.online_prune_min_rollouts,
                d.online_prune_min_rollouts,
            ),
            proposer_model: self
                .proposer_model
                .map_or_else(|| default_model.to_string(), |ModelName(m)| m),
        }
    }
}

/// The single system message's `pattern` is the baseline; other messages are warned about.
fn parse_initial_prompt(
    initial_prompt: Option<Object<InitialPrompt>>,
    warnings: &mut Vec<Warning>,
) -> Result<String, ApiError> {
    let messages = required(initial_prompt, INITIAL_PROMPT)?
        .messages
        .ok_or_else(|| field_error(INVALID_CONFIG, MSGS, "must be an array"))?;
    let mut baseline: Option<String> = None;
    for (i, Object(m)) in messages.into_iter().enumerate() {
        let path = format!("{MSGS}[{i}]");
        let role = m
            .role
            .ok_or_else(|| field_error(INVALID_CONFIG, &path, MUST_HAVE_ROLE))?;
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
            return Err(ApiError::bad_request(
                INVALID_CONFIG,
                &path,
                format!("`{path}`: initial_prompt must hold exactly one system message"),
            ));
        }
        match m.pattern.and_then(Deferred::valid) {
            Some(p) if !p.trim().is_empty() => baseline = Some(p),
            _ => {
                return Err(field_error(
                    INVALID_CONFIG,
                    &format!("{path}.pattern"),
                    "must be a non-empty string (the baseline instruction)",
                ))
            }
        }
    }
    baseline.ok_or_else(|| {
        field_error(
            INVALID_CONFIG,
            MSGS,
            "must hold one system message with a `pattern`",
        )
    })
}

fn check_metadata(metadata: Option<Map<String, Value>>) -> Result<Option<Value>, ApiError> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let metadata = Value::Object(metadata);
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(field_error(
            "invalid_metadata",
            "metadata",
            format_args!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    Ok(Some(metadata))
}

// ---- reward ----

/// Validates a reward body.
pub fn parse_reward(body: &[u8]) -> Result<RewardRequest, ApiError> {
    let body: RewardBody = deserialize(body, reward_type_error)?;
    let stop = body.stop.unwrap_or(false);
    let reward = match body.reward_info {
        Some(Object(RewardInfo {
            outcome_reward: Some(Finite(outcome)),
            seed,
            feedback,
        })) => Some(reward(outcome, seed, feedback)?),
        _ if stop => None,
        Some(_) => {
            return Err(field_error(
                INVALID_REWARD,
                "reward_info.outcome_reward",
                "is required (a finite number)",
            ))
        }
        None => return Err(field_error(INVALID_REWARD, "reward_info", "is required")),
    };
    Ok(RewardRequest {
        rollout_id: body.rollout_id,
        correlation_id: body.correlation_id,
        candidate_id: body.candidate_id,
        reward,
        stop,
    })
}

fn reward(
    outcome: f64,
    seed: Option<Deferred<Seed>>,
    feedback: Option<Deferred<String>>,
) -> Result<Reward, ApiError> {
    let seed = checked(seed, "reward_info.seed", "must be an integer or a string")?;
    let feedback = checked(feedback, "reward_info.feedback", "must be a string")?;
    if feedback
        .as_ref()
        .is_some_and(|f| f.len() > MAX_FEEDBACK_BYTES)
    {
        return Err(field_error(
            INVALID_REWARD,
            "reward_info.feedback",
            format_args!("must be at most {MAX_FEEDBACK_BYTES} bytes"),
        ));
    }
    Ok(Reward {
        outcome,
        seed: seed.map(Value::from),
        feedback,
    })
}

/// A deferred reward field, checked now: absent (or null) is `None`, and a value that is
/// not a `T` is refused as `param`.
fn checked<T>(field: Option<Deferred<T>>, param: &str, what: &str) -> Result<Option<T>, ApiError> {
    field
        .map(|f| {
            f.valid()
                .ok_or_else(|| field_error(INVALID_REWARD, param, what))
        })
        .transpose()
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
            explore_share: 0.5,
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
