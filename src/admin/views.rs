//! The session API's response bodies, as `Serialize` structs built from the domain's
//! snapshots. Field names and meanings are the contract's (docs/api.md).

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::errors::ApiError;

use crate::format::rfc3339;
use crate::gepa::candidate::Candidate;
use crate::gepa::events::Event;
use crate::gepa::optimizer::ProposerSnapshot;
use crate::gepa::{GepaSettings, RewardReply, SessionDetail, SessionSummary};
use crate::routes::PublicUrls;

/// What GET, list, create and the lifecycle routes show of a session.
#[derive(Serialize)]
pub struct SessionView<'a> {
    session_id: &'a str,
    job_id: &'a str,
    status: &'static str,
    mode: &'static str,
    created_at: String,
    updated_at: String,
    rollout_count: u64,
    reward_count: u64,
    best_candidate_id: Option<&'a str>,
    best_score: Option<f64>,
    proxy_url: String,
    chat_completions_url: String,
    metadata: &'a Option<Value>,
    pinned_candidate_id: Option<&'a str>,
}

impl<'a> SessionView<'a> {
    pub fn new(s: &'a SessionSummary, urls: &PublicUrls) -> Self {
        SessionView {
            session_id: &s.id,
            job_id: &s.job_id,
            status: s.status.as_str(),
            mode: "online",
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
            rollout_count: s.rollout_count,
            reward_count: s.reward_count,
            best_candidate_id: s.best.as_ref().map(|(id, _)| &**id),
            best_score: s.best.as_ref().map(|(_, score)| *score),
            proxy_url: urls.proxy_url(&s.id, None),
            chat_completions_url: urls.chat_completions_url(&s.id, None),
            metadata: &s.metadata,
            pinned_candidate_id: s.pinned.as_deref(),
        }
    }
}

/// A created session: its view plus the warnings about what the body asked for.
#[derive(Serialize)]
pub struct CreatedView<'a> {
    #[serde(flatten)]
    pub session: SessionView<'a>,
    pub warnings: Vec<Warning>,
}

/// Something in a request the gateway accepted but did not do as asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

/// One page of the session list.
#[derive(Serialize)]
pub struct SessionPageView<'a> {
    pub items: Vec<SessionView<'a>>,
    pub next_cursor: Option<String>,
}

/// GET session: the summary plus candidates, settings and the proposer.
#[derive(Serialize)]
pub struct SessionDetailView<'a> {
    #[serde(flatten)]
    session: SessionView<'a>,
    candidates: Vec<CandidateView<'a>>,
    settings: &'a GepaSettings,
    proposer: ProposerView<'a>,
}

impl<'a> SessionDetailView<'a> {
    pub fn new(d: &'a SessionDetail, urls: &PublicUrls) -> Self {
        SessionDetailView {
            session: SessionView::new(&d.summary, urls),
            candidates: d.candidates.iter().map(|c| CandidateView::new(c)).collect(),
            settings: &d.settings,
            proposer: ProposerView::new(&d.proposer),
        }
    }
}

/// One candidate: the same object in GET session, the candidates page and every
/// candidate route's answer.
#[derive(Serialize)]
pub struct CandidateView<'a> {
    candidate_id: &'a str,
    instruction: &'a str,
    is_baseline: bool,
    parent_id: Option<&'a String>,
    parent_ids: &'a [String],
    status: &'static str,
    /// Why it stopped being served: `pruned`, `replaced`, `upstream_failures` or
    /// `operator`.
    archived_reason: Option<&'static str>,
    rollout_count: u64,
    reward_count: u64,
    avg_reward: Option<f64>,
    /// Its calls the upstream refused or broke (429s and abandoned calls not counted).
    failure_count: u64,
    created_at: String,
}

impl<'a> CandidateView<'a> {
    pub fn new(c: &'a Candidate) -> Self {
        let stats = c.stats();
        CandidateView {
            candidate_id: &c.id,
            instruction: &c.instruction,
            is_baseline: c.is_baseline(),
            parent_id: c.parent_ids.first(),
            parent_ids: &c.parent_ids,
            status: c.status().as_str(),
            archived_reason: c.archived_reason().map(|r| r.as_str()),
            rollout_count: stats.issued,
            reward_count: stats.rewards,
            avg_reward: (stats.rewards > 0).then(|| stats.reward_sum / stats.rewards as f64),
            failure_count: c.calls().failed,
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Serialize)]
struct ProposerView<'a> {
    state: &'static str,
    reason: Option<&'a str>,
    proposals: u64,
    failures: u64,
    last_error: Option<&'a str>,
    /// Tokens the proposer model reported for this session (since the process started).
    tokens: TokensView,
}

#[derive(Serialize)]
struct TokensView {
    prompt: u64,
    completion: u64,
}

impl<'a> ProposerView<'a> {
    fn new(p: &'a ProposerSnapshot) -> Self {
        ProposerView {
            state: p.state.as_str(),
            reason: p.reason.as_deref(),
            proposals: p.proposals,
            failures: p.failures,
            last_error: p.last_error.as_deref(),
            tokens: TokensView {
                prompt: p.prompt_tokens,
                completion: p.completion_tokens,
            },
        }
    }
}

/// One page of a session's candidates.
#[derive(Serialize)]
pub struct CandidatePageView<'a> {
    pub items: Vec<CandidateView<'a>>,
    pub next_cursor: Option<String>,
}

/// One event of a session: its number, type and time, and its details beside them.
#[derive(Serialize)]
pub struct EventView<'a> {
    seq: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    at: String,
    #[serde(flatten)]
    detail: &'a serde_json::Map<String, Value>,
}

impl<'a> EventView<'a> {
    pub fn new(e: &'a Event) -> Self {
        EventView {
            seq: e.seq,
            kind: &e.kind,
            at: rfc3339(e.at),
            detail: &e.detail,
        }
    }
}

/// A page of a session's events.
#[derive(Serialize)]
pub struct EventPageView<'a> {
    pub items: Vec<EventView<'a>>,
    /// Pass as `since_seq` to get the events after these.
    pub next_since_seq: u64,
}

/// The answer to a reward.
#[derive(Serialize)]
pub struct RewardView<'a> {
    session_id: &'a str,
    rollout_id: Option<&'a str>,
    candidate_id: Option<&'a str>,
    reward_count: u64,
    status: &'static str,
    duplicate: bool,
}

impl<'a> RewardView<'a> {
    pub fn new(r: &'a RewardReply) -> Self {
        RewardView {
            session_id: &r.session_id,
            rollout_id: r.rollout_id.as_deref(),
            candidate_id: r.candidate_id.as_deref(),
            reward_count: r.reward_count,
            status: r.status.as_str(),
            duplicate: r.duplicate,
        }
    }
}

/// The answer to `DELETE /sessions/{id}`.
#[derive(Serialize)]
pub struct DeletedView<'a> {
    pub session_id: &'a str,
    pub deleted: bool,
}

/// The proxy URLs of a session, for one correlation id or none.
#[derive(Serialize)]
pub struct PromptUrlsView<'a> {
    pub session_id: &'a str,
    pub correlation_id: Option<&'a str>,
    pub proxy_url: String,
    pub chat_completions_url: String,
}

/// A response body as JSON. Serializing these views cannot fail (string keys, no maps
/// with other keys); the error arm answers a 500 rather than trusting that.
pub(super) fn to_json(view: &impl Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(view)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal {
            message: format!("encoding the response: {e}"),
        })
}
