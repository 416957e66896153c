//! `gateway.gepa`: the defaults of a new session's online optimizer.

use super::validate::at_least_one_u32;
use super::Problems;
use crate::config::error::Problem;
use crate::config::model::GepaDefaults;
use crate::config::model::{
    DEFAULT_EXPLORE_SHARE, DEFAULT_MAX_CANDIDATES, DEFAULT_MIN_ROLLOUTS,
    DEFAULT_PRUNE_MIN_ROLLOUTS, DEFAULT_PRUNE_THRESHOLD, DEFAULT_WARMUP_ROLLOUTS,
};
use crate::config::raw::RawGepa;

pub(super) fn resolve(raw: RawGepa, p: &mut Problems) -> Option<GepaDefaults> {
    let threshold = raw
        .online_prune_threshold
        .unwrap_or(DEFAULT_PRUNE_THRESHOLD);
    let threshold = p.take(if threshold.is_finite() {
        Ok(threshold)
    } else {
        Err(Problem::new(
            "gateway.gepa.online_prune_threshold",
            "must be a finite number",
        ))
    });
    let min_rollouts = p.take(at_least_one_u32(
        "gateway.gepa.online_proposer_min_rollouts",
        raw.online_proposer_min_rollouts
            .unwrap_or(DEFAULT_MIN_ROLLOUTS),
    ));
    let max_candidates = p.take(at_least_one_u32(
        "gateway.gepa.online_proposer_max_candidates",
        raw.online_proposer_max_candidates
            .unwrap_or(DEFAULT_MAX_CANDIDATES),
    ));
    let prune_min_rollouts = p.take(at_least_one_u32(
        "gateway.gepa.online_prune_min_rollouts",
        raw.online_prune_min_rollouts
            .unwrap_or(DEFAULT_PRUNE_MIN_ROLLOUTS),
    ));
    let warmup_rollouts = p.take(at_least_one_u32(
        "gateway.gepa.warmup_rollouts",
        raw.warmup_rollouts.unwrap_or(DEFAULT_WARMUP_ROLLOUTS),
    ));
    let allocation = p.take(raw.allocation.resolve("gateway.gepa.allocation"));
    let explore_share = raw.explore_share.unwrap_or(DEFAULT_EXPLORE_SHARE);
    let explore_share = p.take(if (0.0..=1.0).contains(&explore_share) {
        Ok(explore_share)
    } else {
        Err(Problem::new(
            "gateway.gepa.explore_share",
            "must be a number from 0 to 1",
        ))
    });
    Some(GepaDefaults {
        online_proposer_min_rollouts: min_rollouts?,
        online_proposer_max_candidates: max_candidates?,
        online_prune_threshold: threshold?,
        online_prune_min_rollouts: prune_min_rollouts?,
        warmup_rollouts: warmup_rollouts?,
        allocation: allocation?.unwrap_or_default(),
        explore_share: explore_share?,
    })
}
