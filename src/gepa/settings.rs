//! What a session is created with: its baseline instruction and its GEPA settings.

use serde_json::Value;

/// Per-session GEPA settings, resolved from the create body over the config defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GepaSettings {
    pub online_proposer_min_rollouts: u32,
    pub online_proposer_max_candidates: u32,
    pub online_prune_threshold: f64,
    pub online_prune_min_rollouts: u32,
    pub proposer_model: String,
}

/// The immutable facts of a session, fixed at creation.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub baseline_instruction: String,
    pub settings: GepaSettings,
    pub metadata: Option<Value>,
}
