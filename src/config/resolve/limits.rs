//! `gateway.limits`: the largest request body the gateway accepts.

use super::validate::usize_in_range;
use super::Problems;
use crate::config::model::DEFAULT_MAX_BODY_BYTES;
use crate::config::raw::RawLimits;

/// `max_body_bytes`.
pub(super) fn resolve(raw: RawLimits, p: &mut Problems) -> Option<usize> {
    p.take(usize_in_range(
        "gateway.limits.max_body_bytes",
        raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        1,
        1_073_741_824,
    ))
}
