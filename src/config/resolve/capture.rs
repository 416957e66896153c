//! `gateway.capture`: how much of each message's content a rollout keeps.

use super::validate::usize_in_range;
use super::Problems;
use crate::config::model::DEFAULT_CAPTURE_MAX_BYTES;
use crate::config::raw::RawCapture;

/// `max_bytes`, per captured message.
pub(super) fn resolve(raw: RawCapture, p: &mut Problems) -> Option<usize> {
    p.take(usize_in_range(
        "gateway.capture.max_bytes",
        raw.max_bytes.unwrap_or(DEFAULT_CAPTURE_MAX_BYTES),
        0,
        16_777_216,
    ))
}
