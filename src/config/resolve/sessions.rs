//! `gateway.sessions`: how many sessions are kept, and how long a served prompt can be
//! matched to a reward.

use std::time::Duration;

use super::validate::{in_range, usize_in_range};
use super::Problems;
use crate::config::model::{DEFAULT_CORRELATION_TTL_S, DEFAULT_MAX_SESSIONS};
use crate::config::raw::RawSessions;

/// `(max_sessions, correlation_ttl)`.
pub(super) fn resolve(raw: RawSessions, p: &mut Problems) -> Option<(usize, Duration)> {
    let max_sessions = p.take(usize_in_range(
        "gateway.sessions.max_sessions",
        raw.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
        1,
        u64::MAX,
    ));
    let correlation_ttl_s = p.take(in_range(
        "gateway.sessions.correlation_ttl_s",
        raw.correlation_ttl_s.unwrap_or(DEFAULT_CORRELATION_TTL_S),
        1,
        u64::MAX,
    ));
    Some((max_sessions?, Duration::from_secs(correlation_ttl_s?)))
}
