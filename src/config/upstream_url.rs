//! [`UpstreamUrl`]: the `http://` / `https://` base URLs in the file (upstream, proposer,
//! public URL), parsed and normalized.
//!
//! `http::Uri` does the parsing (scheme, authority, path, and which characters may stand
//! where); this module adds what a base URL for the gateway must also satisfy (no query,
//! fragment or user info; a plain host name or IP address; a port 1-65535; a path that needs
//! no escaping) and says, by rule, what is wrong with a URL either of them refuses.

use std::fmt;
use std::net::Ipv6Addr;

use http::uri::{Authority, Scheme, Uri};

// What a bad URL is told. None of them quotes the URL: it could hold credentials.
const EMPTY: &str = "must not be empty";
const SCHEME: &str = "must start with http:// or https://";
const WHITESPACE: &str = "must not contain whitespace or control characters";
const FRAGMENT: &str = "must not contain a fragment (#...)";
const QUERY: &str = "must not contain a query string (?...)";
const USER_INFO: &str = "must not contain user info (user:password@); name an environment \
                         variable holding the key instead";
const NO_HOST: &str = "must have a host";
const UNTERMINATED_IPV6: &str = "has an unterminated IPv6 address ('[' without ']')";
const INVALID_IPV6: &str = "has an invalid IPv6 address";
const AFTER_IPV6: &str = "has unexpected characters after the IPv6 address";
const UNBRACKETED_IPV6: &str =
    "IPv6 addresses must be enclosed in brackets, e.g. http://[::1]:8080";
const INVALID_HOST: &str = "has an invalid host name";
const EMPTY_PORT: &str = "has an empty port after ':'";
const INVALID_PORT: &str = "has an invalid port (expected a number 1-65535)";
const PORT_RANGE: &str = "has a port out of range (expected 1-65535)";
const PATH_ESCAPES: &str = "has a path with characters that must be percent-encoded";
const TOO_LONG: &str = "is too long for a URL (at most 65534 bytes)";

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
    /// bracketed (`[::1]:8080`) as the Host header requires.
    pub host_header: String,
}

impl UpstreamUrl {
    /// Parses an `http://` or `https://` URL with a host, optional port and optional path.
    /// Query strings, fragments and user info are rejected. Error messages never echo the
    /// input (it could contain credentials).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        refuse_what_uri_allows(s)?;
        let uri: Uri = s.parse().map_err(|_| explain_rejected(s))?;
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let host = Host::parse(uri.authority().map_or("", Authority::as_str))?;
        if !valid_path(uri.path()) {
            return Err(PATH_ESCAPES.into());
        }
        let default_port = if tls { 443 } else { 80 };
        let port = host.port.unwrap_or(default_port);
        let bracketed = if host.ipv6 {
            format!("[{}]", host.name)
        } else {
            host.name.clone()
        };
        let host_header = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(UpstreamUrl {
            tls,
            host: host.name,
            port,
            base_path: uri.path().trim_end_matches('/').to_string(),
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

/// The refusals `http::Uri` does not make: it takes any scheme, a query, and a fragment
/// (which it drops without a word). Checked before it parses, so that these rules, not a
/// grammar error, name what is wrong.
fn refuse_what_uri_allows(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err(EMPTY);
    }
    let scheme = s.split_once("://").map(|(scheme, _)| scheme);
    if !scheme.is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")) {
        return Err(SCHEME);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(WHITESPACE);
    }
    if s.contains('#') {
        return Err(FRAGMENT);
    }
    if s.contains('?') {
        return Err(QUERY);
    }
    Ok(())
}

/// Why `http::Uri` refused `s`, an `http(s)://` URL that [`refuse_what_uri_allows`] let
/// through. Its error does not say which part was wrong, so the authority (up to the first
/// `/` after the scheme) and the path go through our own rules, which are stricter than its
/// grammar.
fn explain_rejected(s: &str) -> &'static str {
    let rest = s.split_once("://").map_or("", |(_, rest)| rest);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match Host::parse(authority) {
        Err(e) => e,
        Ok(_) if !valid_path(path) => PATH_ESCAPES,
        // Both parts pass; what is left of `http::Uri`'s rules is its length limit.
        Ok(_) => TOO_LONG,
    }
}

/// The host and port of a URL's authority.
struct Host {
    /// Lower-cased; an IPv6 address without its brackets.
    name: String,
    ipv6: bool,
    port: Option<u16>,
}

impl Host {
    /// Checks the authority: no user info; a bracketed IPv6 address, or a name of letters,
    /// digits, `-`, `.` and `_` (`http::Uri` also lets through `!`, `*`, `%`, ... which no
    /// upstream host has); then nothing, or `:` and a port 1-65535.
    fn parse(authority: &str) -> Result<Self, &'static str> {
        if authority.contains('@') {
            return Err(USER_INFO);
        }
        let (name, ipv6, after) = match authority.strip_prefix('[') {
            Some(inner) => {
                let close = inner.find(']').ok_or(UNTERMINATED_IPV6)?;
                let address = &inner[..close];
                if address.parse::<Ipv6Addr>().is_err() {
                    return Err(INVALID_IPV6);
                }
                (address, true, &inner[close + 1..])
            }
            None => {
                let (name, after) =
                    authority.split_at(authority.find(':').unwrap_or(authority.len()));
                if after.matches(':').count() > 1 {
                    return Err(UNBRACKETED_IPV6);
                }
                check_host_name(name)?;
                (name, false, after)
            }
        };
        let port = match after {
            "" => None,
            _ => Some(port(after.strip_prefix(':').ok_or(AFTER_IPV6)?)?),
        };
        Ok(Host {
            name: name.to_ascii_lowercase(),
            ipv6,
            port,
        })
    }
}

fn check_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err(NO_HOST);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(INVALID_HOST);
    }
    Ok(())
}

/// The text after `:`. `http::Uri` does not check it: its `port()` reads a bad one as none.
fn port(p: &str) -> Result<u16, &'static str> {
    if p.is_empty() {
        return Err(EMPTY_PORT);
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID_PORT);
    }
    match p.parse::<u16>() {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(PORT_RANGE),
    }
}

/// RFC 3986 path characters: visible ASCII minus the ones that must be escaped, and `%` only
/// as the start of a `%XX` escape. Stricter than `http::Uri`, which lets `"{|}\^` through (for
/// clients that send JSON in a path) and does not check escapes: requests are built on this
/// path, so it must be one that every server reads the same way.
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
