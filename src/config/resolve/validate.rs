//! Small checks the section resolvers share: ranges, listen addresses, environment variable
//! names and the secrets they hold.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{ConfigError, Secret};

/// How resolvers look up an environment variable (see [`crate::config::parse_str`]).
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn parse_listen(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            key,
            "must be an IP address and port such as 0.0.0.0:8080 or [::]:8080 (host names are \
             not accepted)",
        )
    })
}

pub(super) fn in_range(key: &str, v: u64, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    if v >= lo && v <= hi {
        Ok(v)
    } else if hi == u64::MAX {
        Err(ConfigError::new(
            key,
            format!("must be at least {lo} (got {v})"),
        ))
    } else {
        Err(ConfigError::new(
            key,
            format!("must be between {lo} and {hi} (got {v})"),
        ))
    }
}

pub(super) fn at_least_one_u32(key: &str, v: u64) -> Result<u32, ConfigError> {
    let v = in_range(key, v, 1, u64::MAX)?;
    u32::try_from(v)
        .map_err(|_| ConfigError::new(key, format!("must be at most {} (got {v})", u32::MAX)))
}

pub(super) fn to_usize(key: &str, v: u64) -> Result<usize, ConfigError> {
    usize::try_from(v).map_err(|_| ConfigError::new(key, "is too large for this platform"))
}

pub(super) fn check_ca_file(key: &str, p: &str) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(p);
    let bytes = std::fs::read(&path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !bytes.windows(marker.len()).any(|w| w == marker) {
        return Err(ConfigError::new(
            key,
            format!("{} contains no PEM certificate", path.display()),
        ));
    }
    Ok(path)
}

/// Validates an environment variable name; `""` means "not configured".
pub(super) fn env_var_name<'a>(key: &str, name: &'a str) -> Result<Option<&'a str>, ConfigError> {
    if name.is_empty() {
        return Ok(None);
    }
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(Some(name))
    } else {
        // Deliberately not echoed: someone may have pasted the secret itself here.
        Err(ConfigError::new(
            key,
            "must be the NAME of an environment variable ([A-Za-z_][A-Za-z0-9_]*), not a value",
        ))
    }
}

/// A secret must be usable in an HTTP header and compare against header values: visible ASCII.
fn header_safe(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// One secret from `var`; `None` when unset or empty (surrounding whitespace is trimmed).
pub(super) fn single_secret(
    key: &str,
    var: &str,
    env: Env<'_>,
) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if !header_safe(value) {
        return Err(ConfigError::new(
            key,
            format!(
                "environment variable {var} contains characters not allowed in an HTTP header \
                 (only visible ASCII)"
            ),
        ));
    }
    Ok(Some(Secret::new(value)))
}

/// Comma-separated secrets from `var`: split on ',', trim, drop empties. Empty when unset.
pub(super) fn secret_list(key: &str, var: &str, env: Env<'_>) -> Result<Vec<Secret>, ConfigError> {
    let Some(value) = env(var) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, item) in value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        if !header_safe(item) {
            return Err(ConfigError::new(
                key,
                format!(
                    "environment variable {var}: entry {} contains characters not allowed in an \
                     HTTP header (only visible ASCII)",
                    i + 1
                ),
            ));
        }
        out.push(Secret::new(item));
    }
    Ok(out)
}
