//! Small checks the section resolvers share: ranges, listen addresses, environment variable
//! names and the secrets they hold.

use std::net::SocketAddr;

use crate::config::error::Problem;
use crate::config::secret::Secret;
use crate::config::upstream_url::UpstreamUrl;

/// How resolvers look up an environment variable (see [`crate::config::parse_str`]).
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A listen address: an IP address and port, no host name (nothing resolves it).
pub(super) fn parse_listen(key: &str, s: &str) -> Result<SocketAddr, Problem> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        Problem::new(
            key,
            "must be an IP address and port such as 0.0.0.0:8080 or [::]:8080 (host names are \
             not accepted)",
        )
    })
}

/// `v` if it is within `lo..=hi` (`hi` = `u64::MAX`: no upper bound).
pub(super) fn in_range(key: &str, v: u64, lo: u64, hi: u64) -> Result<u64, Problem> {
    if v >= lo && v <= hi {
        Ok(v)
    } else if hi == u64::MAX {
        Err(Problem::new(
            key,
            format!("must be at least {lo} (got {v})"),
        ))
    } else {
        Err(Problem::new(
            key,
            format!("must be between {lo} and {hi} (got {v})"),
        ))
    }
}

/// A count of at least one, held as `u32`.
pub(super) fn at_least_one_u32(key: &str, v: u64) -> Result<u32, Problem> {
    let v = in_range(key, v, 1, u64::MAX)?;
    u32::try_from(v)
        .map_err(|_| Problem::new(key, format!("must be at most {} (got {v})", u32::MAX)))
}

/// An `http(s)://` URL.
pub(super) fn parse_url(key: &str, s: &str) -> Result<UpstreamUrl, Problem> {
    UpstreamUrl::parse(s).map_err(|m| Problem::new(key, m))
}

/// [`in_range`], for a count or size held as `usize`.
pub(super) fn usize_in_range(key: &str, v: u64, lo: u64, hi: u64) -> Result<usize, Problem> {
    let v = in_range(key, v, lo, hi)?;
    usize::try_from(v).map_err(|_| Problem::new(key, "is too large for this platform"))
}

/// Validates an environment variable name; `""` means "not configured".
pub(super) fn env_var_name<'a>(key: &str, name: &'a str) -> Result<Option<&'a str>, Problem> {
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
        Err(Problem::new(
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
pub(super) fn single_secret(key: &str, var: &str, env: Env<'_>) -> Result<Option<Secret>, Problem> {
    let Some(value) = env(var) else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if !header_safe(value) {
        return Err(Problem::new(
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
fn secret_list(key: &str, var: &str, env: Env<'_>) -> Result<Vec<Secret>, Problem> {
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
            return Err(Problem::new(
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

/// The comma-separated secrets in the variable an `*_env` key names, with that variable;
/// neither when the key is empty (not configured). Empty when the variable is not set.
pub(super) fn named_secret_list<'a>(
    key: &str,
    name: &'a str,
    env: Env<'_>,
) -> Result<(Option<&'a str>, Vec<Secret>), Problem> {
    let Some(var) = env_var_name(key, name)? else {
        return Ok((None, Vec::new()));
    };
    Ok((Some(var), secret_list(key, var, env)?))
}
