//! The gateway's own keys directly under `gateway:`: `listen` and `public_url`.

use std::net::SocketAddr;

use super::validate::{parse_listen, parse_url};
use super::Problems;
use crate::config::model::{DEFAULT_LISTEN, DEFAULT_PUBLIC_URL};
use crate::config::raw::RawGateway;

/// The listen address and the public URL (no trailing slash).
pub(super) fn resolve(raw: &RawGateway, p: &mut Problems) -> (Option<SocketAddr>, Option<String>) {
    let listen = p.take(parse_listen(
        "gateway.listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
    ));
    let public_url = raw
        .public_url
        .as_deref()
        .unwrap_or(DEFAULT_PUBLIC_URL)
        .trim();
    let public_url = p.take(
        parse_url("gateway.public_url", public_url)
            .map(|_| public_url.trim_end_matches('/').to_string()),
    );
    (listen, public_url)
}
