//! Why the domain refused a request, in the domain's own terms.
//!
//! The domain knows nothing of HTTP: the edge maps each variant to a status, a stable
//! code and an OpenAI-shaped body in one place (`From<GepaError> for ApiError` in
//! [`crate::errors`]). The `Display` text is the message the client reads, so it names the
//! field or state at fault and never carries a secret.

use std::fmt;

use super::status::Status;
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
