//! A reward as the application reports it, and the answer it gets.

use serde_json::Value;

use super::status::Status;

/// A reward as reported by the client (compared field by field for idempotency).
#[derive(Debug, Clone, PartialEq)]
pub struct Reward {
    pub outcome: f64,
    /// Integer or string naming the task instance.
    pub seed: Option<Value>,
    pub feedback: Option<String>,
}

/// What the admin API asks of [`Session::reward`].
#[derive(Debug, Clone, PartialEq)]
pub struct RewardRequest {
    pub rollout_id: Option<String>,
    pub correlation_id: Option<String>,
    pub candidate_id: Option<String>,
    pub reward: Option<Reward>,
    pub stop: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RewardReply {
    pub session_id: String,
    pub rollout_id: Option<String>,
    pub candidate_id: Option<String>,
    pub reward_count: u64,
    pub status: Status,
    pub duplicate: bool,
}
