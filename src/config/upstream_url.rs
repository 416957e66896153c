//! [`UpstreamUrl`]: the `http://` / `https://` base URLs in the file (upstream, proposer,
//! public URL), parsed and normalized.

use std::fmt;
use std::net::Ipv6Addr;

/// A parsed `http://` / `https://` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    /// Lower-cased; IPv6 addresses without brackets.
    pub host: String,
    /// Explicit port, or 443 / 80 by scheme.
    pub port: u16,
    /// E.g. "/v1"; no trailing slash; "" for the root.
    pub base_path: String,
    /// "host", or "host:port" when the port is not the scheme's default; IPv6 hosts are
    /// bracketed ("[::1]:8080") as the Host header requires.
    pub host_header: String,
}

impl UpstreamUrl {
    /// Parses an `http://` or `https://` URL with a host, optional port and optional path.
    /// Query strings, fragments and user info are rejected. Error messages never echo the
    /// input (it could contain credentials).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let (tls, rest) = if let Some(rest) = strip_prefix_ci(s, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(s, "http://") {
            (false, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if tail.contains('#') {
            return Err("must not contain a fragment (#...)".into());
        }
        if tail.contains('?') {
            return Err("must not contain a query string (?...)".into());
        }
        if authority.contains('@') {
            return Err(
                "must not contain user info (user:password@); name an environment variable \
                 holding the key instead"
                    .into(),
            );
        }
        if authority.is_empty() {
            return Err("must have a host".into());
        }

        let (host, port, ipv6) = if let Some(r) = authority.strip_prefix('[') {
            let close = r
                .find(']')
                .ok_or("has an unterminated IPv6 address ('[' without ']')")?;
            let host = &r[..close];
            if host.parse::<Ipv6Addr>().is_err() {
                return Err("has an invalid IPv6 address".into());
            }
            let after = &r[close + 1..];
            let port = if after.is_empty() {
                None
            } else if let Some(p) = after.strip_prefix(':') {
                Some(p)
            } else {
                return Err("has unexpected characters after the IPv6 address".into());
            };
            (host.to_ascii_lowercase(), port, true)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => {
                    if p.contains(':') {
                        return Err(
                            "IPv6 addresses must be enclosed in brackets, e.g. http://[::1]:8080"
                                .into(),
                        );
                    }
                    (h, Some(p))
                }
                None => (authority, None),
            };
            if host.is_empty() {
                return Err("must have a host".into());
            }
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err("has an invalid host name".into());
            }
            (host.to_ascii_lowercase(), port, false)
        };

        let default_port = if tls { 443 } else { 80 };
        let port = match port {
            None => default_port,
            Some("") => return Err("has an empty port after ':'".into()),
            Some(p) => {
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("has an invalid port (expected a number 1-65535)".into());
                }
                match p.parse::<u16>() {
                    Ok(n) if n != 0 => n,
                    _ => return Err("has a port out of range (expected 1-65535)".into()),
                }
            }
        };

        if !valid_path(tail) {
            return Err("has a path with characters that must be percent-encoded".into());
        }
        let base_path = tail.trim_end_matches('/').to_string();

        let bracketed = if ipv6 {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let host_header = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(UpstreamUrl {
            tls,
            host,
            port,
            base_path,
            host_header,
        })
    }

    /// `base_path + "/chat/completions"`.
    pub fn chat_completions_path(&self) -> String {
        format!("{}/chat/completions", self.base_path)
    }

    pub(super) fn same_origin(&self, other: &UpstreamUrl) -> bool {
        self.tls == other.tls && self.host == other.host && self.port == other.port
    }
}

/// The normalized URL, e.g. `https://api.openai.com/v1` (default ports omitted).
impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header, self.base_path)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// RFC 3986 path characters: visible ASCII minus the ones that must be escaped, and `%` only
/// as the start of a `%XX` escape.
fn valid_path(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
            continue;
        }
        if !c.is_ascii_graphic() || b"\"<>\\^`{|}".contains(&c) {
            return false;
        }
        i += 1;
    }
    true
}
