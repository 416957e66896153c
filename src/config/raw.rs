//! The file as serde reads it: the YAML document, and the `gateway:` section mirrored in
//! structs where every key is optional (a key with no value means the default) and an
//! unknown key is an error naming its path.

use std::fmt;

use serde::de::{self, value::StrDeserializer, Deserializer};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::error::Problem;
use super::model::{Allocation, Review, StorageBackend, GATEWAY_KEY};

/// Parses the YAML text (with `<<` merge keys applied) into its top-level mapping; an empty
/// document is an empty mapping.
pub(super) fn top_level(yaml: &str) -> Result<Mapping, Problem> {
    let mut doc: Value = serde_yaml::from_str(yaml).map_err(yaml_syntax_error)?;
    doc.apply_merge()
        .map_err(|e| Problem::new("", format!("invalid YAML merge key (<<): {e}")))?;
    match doc {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(m) => Ok(m),
        _ => Err(Problem::new(
            "",
            "the top level must be a mapping of settings",
        )),
    }
}

fn yaml_syntax_error(e: serde_yaml::Error) -> Problem {
    // serde_yaml's message for syntax errors is libyaml's fixed problem description plus the
    // position; it does not quote the document.
    let mut msg = format!("invalid YAML: {e}");
    if let Some(loc) = e.location() {
        let marker = format!("line {}", loc.line());
        if !msg.contains(&marker) {
            msg.push_str(&format!(" at line {} column {}", loc.line(), loc.column()));
        }
    }
    Problem::new("", msg)
}

impl RawGateway {
    /// Reads the value of the `gateway:` key; errors name the full key path.
    pub(super) fn from_value(gateway: Value) -> Result<Self, Problem> {
        serde_path_to_error::deserialize(gateway).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                GATEWAY_KEY.to_string()
            } else {
                format!("{GATEWAY_KEY}.{path}")
            };
            Problem::new(path, e.inner().to_string())
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of gateway settings")]
pub(super) struct RawGateway {
    pub(super) listen: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) upstream: Option<RawUpstream>,
    pub(super) auth: Option<RawAuth>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) storage: Option<RawStorage>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) proposer: Option<RawProposer>,
    pub(super) gepa: Option<RawGepa>,
    pub(super) sessions: Option<RawSessions>,
    pub(super) capture: Option<RawCapture>,
    pub(super) limits: Option<RawLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawUpstream {
    pub(super) url: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) read_timeout_s: Option<u64>,
    pub(super) write_timeout_s: Option<u64>,
    pub(super) ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawAuth {
    pub(super) client_keys_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawAdmin {
    pub(super) token_env: Option<String>,
    pub(super) reward_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawStorage {
    #[serde(default)]
    pub(super) backend: Named<StorageBackend>,
    pub(super) path: Option<String>,
    pub(super) retention_days: Option<u32>,
    pub(super) rollouts_in_memory: Option<u64>,
    pub(super) write_behind_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawProposer {
    pub(super) model: Option<String>,
    pub(super) url: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) minibatch_size: Option<u64>,
    pub(super) merge: Option<bool>,
    pub(super) max_instruction_bytes: Option<u64>,
    pub(super) max_proposals: Option<u64>,
    pub(super) max_proposals_per_hour: Option<u64>,
    #[serde(default)]
    pub(super) review: Named<Review>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawGepa {
    pub(super) online_proposer_min_rollouts: Option<u64>,
    pub(super) online_proposer_max_candidates: Option<u64>,
    pub(super) online_prune_threshold: Option<f64>,
    pub(super) explore_share: Option<f64>,
    pub(super) online_prune_min_rollouts: Option<u64>,
    pub(super) warmup_rollouts: Option<u64>,
    #[serde(default)]
    pub(super) allocation: Named<Allocation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawSessions {
    pub(super) max_sessions: Option<u64>,
    pub(super) correlation_ttl_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawCapture {
    pub(super) max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub(super) struct RawLimits {
    pub(super) max_body_bytes: Option<u64>,
}

/// A key whose value names an enum variant (`backend: memory`). As for every other key, no
/// value or `""` means the default, and surrounding spaces are ignored; anything but a string
/// is a type error. An unknown name does not stop the read: it is kept, and its resolver
/// reports it with every other bad value.
#[derive(Debug)]
pub(super) struct Named<T>(Result<Option<T>, NameError>);

impl<T> Named<T> {
    /// The variant named (`None`: the default), or, at `key`, the names allowed.
    pub(super) fn resolve(self, key: &str) -> Result<Option<T>, Problem> {
        self.0.map_err(|e| Problem::new(key, e.0))
    }
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Ok(None))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Some(name) = Option::<String>::deserialize(d)? else {
            return Ok(Named::default());
        };
        Ok(Named(match name.trim() {
            "" => Ok(None),
            name => T::deserialize(StrDeserializer::<NameError>::new(name)).map(Some),
        }))
    }
}

/// Why a name is not one of an enum's variants. Unlike serde's own message it does not repeat
/// the name given: whatever was pasted into the file stays out of the error.
#[derive(Debug)]
struct NameError(String);

impl de::Error for NameError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        NameError(msg.to_string())
    }

    fn unknown_variant(_given: &str, expected: &'static [&'static str]) -> Self {
        let quoted: Vec<String> = expected.iter().map(|v| format!("\"{v}\"")).collect();
        let allowed = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => "nothing".to_string(),
        };
        NameError(format!("must be {allowed}"))
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}
