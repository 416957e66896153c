//! Consistent copies of a session's state, each read under the session's lock once: what
//! the API shows ([`SessionSummary`], [`SessionDetail`]) and what the metrics export
//! ([`SessionMetrics`]). The API's JSON is built from them at the edge
//! (`crate::admin::views`).

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use super::Session;
use crate::gepa::allocation::ArmStats;
use crate::gepa::candidate::Candidate;
use crate::gepa::optimizer::{self, ProposerSnapshot};
use crate::gepa::settings::GepaSettings;
use crate::gepa::status::Status;

/// What GET and list show of every session.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: Arc<str>,
    pub job_id: String,
    pub status: Status,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub rollout_count: u64,
    pub reward_count: u64,
    /// The best candidate and its score (see [`optimizer::best_candidate`]).
    pub best: Option<(Arc<str>, f64)>,
    pub metadata: Option<Value>,
    /// The candidate an operator pinned, if any.
    pub pinned: Option<Arc<str>>,
}

/// The full live state, for GET session.
#[derive(Debug, Clone)]
pub struct SessionDetail {
    pub summary: SessionSummary,
    /// In creation order; the first is the baseline.
    pub candidates: Vec<Arc<Candidate>>,
    pub settings: GepaSettings,
    pub proposer: ProposerSnapshot,
}

/// A session's figures for the metrics exposition.
#[derive(Debug, Clone)]
pub struct SessionMetrics {
    pub status: &'static str,
    /// How long ago a completed or cancelled session finished.
    pub finished_for: Option<Duration>,
    pub candidates: Vec<CandidateMetrics>,
    pub proposals: u64,
    pub failures: u64,
    /// `(prompt, completion)` tokens the proposer model reported.
    pub proposer_tokens: (u64, u64),
}

#[derive(Debug, Clone)]
pub struct CandidateMetrics {
    pub id: Arc<str>,
    pub active: bool,
    pub stats: ArmStats,
    /// Calls the upstream refused or broke.
    pub failures: u64,
}

impl Session {
    pub fn summary(&self) -> SessionSummary {
        let st = self.state.lock();
        self.summary_with(&st)
    }

    pub fn detail(&self) -> SessionDetail {
        let st = self.state.lock();
        SessionDetail {
            summary: self.summary_with(&st),
            candidates: st.candidates.clone(),
            settings: self.settings.clone(),
            proposer: st.optimizer.status.snapshot(
                st.status,
                self.env.optimizer.disabled_reason.as_deref(),
                self.env.optimizer.max_proposals,
            ),
        }
    }

    fn summary_with(&self, st: &super::SessionState) -> SessionSummary {
        SessionSummary {
            id: self.id.clone(),
            job_id: self.job_id.clone(),
            status: st.status,
            created_at: self.created_at,
            updated_at: st.updated_at,
            rollout_count: st.rollout_count,
            reward_count: st.reward_count,
            best: optimizer::best_candidate(&st.candidates).map(|(c, s)| (c.id.clone(), s)),
            metadata: self.metadata.clone(),
            pinned: st.pinned.as_ref().map(|c| c.id.clone()),
        }
    }

    pub fn metrics_snapshot(&self) -> SessionMetrics {
        let st = self.state.lock();
        let finished_for = st.status.is_finished().then(|| {
            let ago = OffsetDateTime::now_utc() - st.updated_at;
            Duration::from_secs_f64(ago.as_seconds_f64().max(0.0))
        });
        SessionMetrics {
            status: st.status.as_str(),
            finished_for,
            candidates: st
                .candidates
                .iter()
                .map(|c| CandidateMetrics {
                    id: c.id.clone(),
                    active: c.is_active(),
                    stats: c.stats(),
                    failures: c.calls().failed,
                })
                .collect(),
            proposals: st.optimizer.status.proposals(),
            failures: st.optimizer.status.failures(),
            proposer_tokens: st.optimizer.status.tokens(),
        }
    }
}
