//! What every session shares: the store, the optimizer's settings, the selector, and
//! the proposer's wake-up signal.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use super::optimizer::OptimizerConfig;
use super::selection::CandidateSelector;
use super::store::StateStore;

/// What every session shares: the store, the optimizer's settings, the selector, and
/// the proposer's wake-up signal.
pub struct SessionEnv {
    pub correlation_ttl: Duration,
    /// Rollouts per session kept in memory (with their captured text: a few KiB each).
    /// Beyond this the oldest leave memory; with the durable store a reward for one of
    /// them is looked up there, with the memory store it is a 404.
    pub rollouts_in_memory: usize,
    pub store: Arc<dyn StateStore>,
    pub optimizer: OptimizerConfig,
    pub selector: CandidateSelector,
    /// Notified when a reward makes a proposal due.
    pub proposer_wake: Arc<Notify>,
}

impl std::fmt::Debug for SessionEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEnv")
            .field("correlation_ttl", &self.correlation_ttl)
            .field("optimizer", &self.optimizer)
            .finish_non_exhaustive()
    }
}
