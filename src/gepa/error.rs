//! Why the domain refused a request, in the domain's own terms.
//!
//! The domain knows nothing of HTTP: the edge maps each variant to a status, a stable
//! code and an OpenAI-shaped body in one place (`From<GepaError> for ApiError` in
//! [`crate::errors`]). The `Display` text is the message the client reads, so it names the
//! field or state at fault and never carries a secret.

use std::fmt;

use super::status::{CandidateStatus, Status};
use super::store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub enum GepaError {
    /// No rollout of this session matches; the text says what was looked for.
    UnknownRollout(&'static str),
    /// A reward names neither `rollout_id` nor `correlation_id`.
    MissingRollout,
    /// The rollout already holds a different reward.
    RewardConflict,
    /// The reward names another candidate than the one that served the rollout.
    CandidateMismatch { served: String, named: String },
    /// None of the rollout's upstream calls succeeded.
    RolloutFailed,
    /// A lifecycle change asked of a completed or cancelled session.
    SessionFinished(Status),
    /// A reward for a completed or cancelled session.
    RewardsClosed(Status),
    /// `sessions.max_sessions` sessions exist already.
    SessionLimit(usize),
    /// No candidate of this session has that id.
    UnknownCandidate,
    /// Only a pending candidate can be approved.
    CandidateNotPending(CandidateStatus),
    /// The session's last active candidate cannot be archived: nothing would serve.
    LastActiveCandidate,
    /// The pinned candidate cannot be archived: unpin it first.
    CandidatePinned,
    /// A hand-written instruction that cannot serve; the text says why.
    InvalidInstruction(String),
    /// The session already has a candidate with that instruction.
    DuplicateCandidate,
    /// The state store is not open yet (start-up or hand-over): retry shortly.
    StoreNotOpen,
    /// The state store refused to record the change; nothing was applied.
    Store(StoreError),
    /// A bug or an unexpected internal state.
    Internal(String),
}

impl fmt::Display for GepaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GepaError::UnknownRollout(what) => f.write_str(what),
            GepaError::MissingRollout => {
                f.write_str("a reward needs `rollout_id` or `correlation_id`")
            }
            GepaError::RewardConflict => f.write_str("this rollout already has a different reward"),
            GepaError::CandidateMismatch { served, named } => {
                write!(f, "rollout was served by candidate {served}, not {named}")
            }
            GepaError::RolloutFailed => f.write_str(
                "none of this rollout's upstream calls succeeded; an outage says nothing \
                 about a prompt",
            ),
            GepaError::SessionFinished(status) => write!(
                f,
                "the session is {} and cannot change state",
                status.as_str()
            ),
            GepaError::RewardsClosed(status) => write!(
                f,
                "the session is {}: rewards are no longer accepted",
                status.as_str()
            ),
            GepaError::SessionLimit(max) => write!(
                f,
                "the gateway already holds sessions.max_sessions = {max} sessions"
            ),
            GepaError::UnknownCandidate => {
                f.write_str("this session has no candidate with that candidate_id")
            }
            GepaError::CandidateNotPending(status) => write!(
                f,
                "the candidate is {}: only a pending candidate can be approved",
                status.as_str()
            ),
            GepaError::LastActiveCandidate => f.write_str(
                "the candidate is the session's last active one: archiving it would leave \
                 nothing to serve",
            ),
            GepaError::CandidatePinned => {
                f.write_str("the candidate is pinned: unpin the session before archiving it")
            }
            GepaError::InvalidInstruction(why) => write!(f, "`instruction` {why}"),
            GepaError::DuplicateCandidate => {
                f.write_str("the session already has a candidate with this instruction")
            }
            GepaError::StoreNotOpen => f.write_str("the state store is not open yet"),
            GepaError::Store(e) => {
                write!(f, "the state store could not record the change: {}", e.0)
            }
            GepaError::Internal(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for GepaError {}

impl From<StoreError> for GepaError {
    fn from(e: StoreError) -> Self {
        GepaError::Store(e)
    }
}
