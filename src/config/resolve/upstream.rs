//! `gateway.upstream`: where calls are proxied to, how long to wait, and the gateway's own
//! key for it.

use std::path::PathBuf;
use std::time::Duration;

use super::validate::{env_var_name, in_range, parse_url, single_secret, Env};
use super::{Problems, VarName};
use crate::config::error::Problem;
use crate::config::model::UpstreamConfig;
use crate::config::model::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_READ_TIMEOUT_S, DEFAULT_UPSTREAM_URL,
    DEFAULT_WRITE_TIMEOUT_S,
};
use crate::config::raw::RawUpstream;
use crate::config::secret::Secret;
use crate::config::upstream_url::UpstreamUrl;

const URL: &str = "gateway.upstream.url";
const KEY_ENV: &str = "gateway.upstream.api_key_env";

/// `gateway.upstream` but the key, which [`api_key`] reads once `auth` is resolved. Each
/// field is `None` when its key was bad.
pub(super) struct Upstream<'a> {
    url: Option<UpstreamUrl>,
    /// The variable `api_key_env` names (`Some(None)`: not configured).
    pub(super) key_var: Option<VarName<'a>>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    ca_file: Option<Option<PathBuf>>,
}

pub(super) fn resolve<'a>(
    raw: &'a RawUpstream,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Upstream<'a> {
    let url = p.take(url(raw.url.as_deref(), warnings));
    let connect_timeout = p.take(in_range(
        "gateway.upstream.connect_timeout_ms",
        raw.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        1,
        600_000,
    ));
    let read_timeout = p.take(in_range(
        "gateway.upstream.read_timeout_s",
        raw.read_timeout_s.unwrap_or(DEFAULT_READ_TIMEOUT_S),
        1,
        86_400,
    ));
    let write_timeout = p.take(in_range(
        "gateway.upstream.write_timeout_s",
        raw.write_timeout_s.unwrap_or(DEFAULT_WRITE_TIMEOUT_S),
        1,
        3_600,
    ));
    let ca_file = match raw.ca_file.as_deref().map(str::trim) {
        None | Some("") => Some(None),
        Some(path) => p
            .take(check_ca_file("gateway.upstream.ca_file", path))
            .map(Some),
    };
    let key_var = p.take(env_var_name(
        KEY_ENV,
        raw.api_key_env.as_deref().unwrap_or(""),
    ));
    Upstream {
        url,
        key_var,
        connect_timeout: connect_timeout.map(Duration::from_millis),
        read_timeout: read_timeout.map(Duration::from_secs),
        write_timeout: write_timeout.map(Duration::from_secs),
        ca_file,
    }
}

fn url(url: Option<&str>, warnings: &mut Vec<String>) -> Result<UpstreamUrl, Problem> {
    let url = parse_url(URL, url.unwrap_or(DEFAULT_UPSTREAM_URL))?;
    if url.base_path.ends_with("/chat/completions") {
        warnings.push(format!(
            "{URL}: is a base URL; /chat/completions is appended to it, so requests go to {}",
            url.chat_completions_path()
        ));
    }
    Ok(url)
}

/// A file that exists and holds at least one PEM certificate.
fn check_ca_file(key: &str, p: &str) -> Result<PathBuf, Problem> {
    let path = PathBuf::from(p);
    let bytes = std::fs::read(&path)
        .map_err(|e| Problem::new(key, format!("cannot read {}: {e}", path.display())))?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !bytes.windows(marker.len()).any(|w| w == marker) {
        return Err(Problem::new(
            key,
            format!("{} contains no PEM certificate", path.display()),
        ));
    }
    Ok(path)
}

/// The gateway's own upstream key (`None`: forward the client's). Read after `auth`, whose
/// rule guards this key, so that a file breaking that rule is told so first.
pub(super) fn api_key(
    key_var: Option<VarName<'_>>,
    env: Env<'_>,
    p: &mut Problems,
) -> Option<Option<Secret>> {
    let Some(var) = key_var? else {
        return Some(None);
    };
    let key = p.take(single_secret(KEY_ENV, var, env))?;
    p.take(
        key.map(Some)
            .ok_or_else(|| Problem::new(KEY_ENV, format!("environment variable {var} is not set"))),
    )
}

impl Upstream<'_> {
    /// The section, once every key in it is good.
    pub(super) fn config(self, api_key: Option<Option<Secret>>) -> Option<UpstreamConfig> {
        Some(UpstreamConfig {
            url: self.url?,
            api_key: api_key?,
            connect_timeout: self.connect_timeout?,
            read_timeout: self.read_timeout?,
            write_timeout: self.write_timeout?,
            ca_file: self.ca_file?,
        })
    }
}
