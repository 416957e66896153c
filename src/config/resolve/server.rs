//! Pingora's own server keys: everything at the top level of the file except `gateway:`.

use pingora_core::server::configuration::ServerConf;
use serde_yaml::{Mapping, Value};

use super::Problems;
use crate::config::error::Problem;
use crate::config::model::GATEWAY_KEY;

/// Reads the top-level keys into Pingora's `ServerConf`; a type error stops here, as serde
/// stops at its first.
pub(in crate::config) fn read(
    top: Mapping,
    warnings: &mut Vec<String>,
) -> Result<ServerConf, Problem> {
    warn_unknown_server_keys(&top, warnings);
    serde_path_to_error::deserialize(Value::Mapping(top))
        .map_err(|e| Problem::new(root_path(e.path()), e.inner().to_string()))
}

/// Runs Pingora's own checks on what [`read`] read.
pub(in crate::config) fn resolve(server: ServerConf, p: &mut Problems) -> Option<ServerConf> {
    p.take(server.validate().map_err(|e| {
        let detail = match &e.context {
            Some(c) => c.as_str().to_string(),
            None => e.to_string(),
        };
        Problem::new("", format!("invalid server setting: {detail}"))
    }))
}

fn root_path(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

/// Pingora ignores unknown top-level keys; a typo there (`thread: 4`) would otherwise go
/// unnoticed, so it becomes a warning.
fn warn_unknown_server_keys(top: &Mapping, warnings: &mut Vec<String>) {
    let Ok(Value::Mapping(known)) = serde_yaml::to_value(ServerConf::default()) else {
        return;
    };
    for key in top.keys() {
        if known.contains_key(key) {
            continue;
        }
        match key.as_str() {
            Some(k) => warnings.push(format!(
                "{k}: unknown top-level key is ignored (gateway settings belong under `{GATEWAY_KEY}:`)"
            )),
            None => warnings.push("a non-string top-level key is ignored".to_string()),
        }
    }
}
