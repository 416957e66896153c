//! The domain: sessions, their candidates, rollouts and rewards, and GEPA, the online
//! optimizer that proposes new candidates and shifts traffic to the winners.
//!
//! Nothing here speaks HTTP or touches a disk: failures are [`GepaError`]s, which the
//! edge maps to HTTP in one place, and every durable change goes through the
//! [`StateStore`] port, which [`crate::store`] implements.
//!
//! - [`registry`]: all sessions; [`env`]: what they share;
//! - [`settings`]: what a session is created with; [`reward`]: what a client reports;
//! - [`session`]: one session: calls, rewards, lifecycle, proposals, restore;
//! - [`candidate`]: one instruction and its statistics; [`rollout_id`]: self-verifying ids;
//! - [`status`]: the lifecycle table; [`error`]: the domain's errors; [`events`]: what
//!   happened to a session;
//! - [`store`]: the port to durable storage and its plain records;
//! - GEPA: [`allocation`] and [`selection`] (which candidate serves a call), [`pareto`]
//!   (per-instance score table and front), [`reflection`] (the proposer's prompts and
//!   replies), [`optimizer`] (the session's side: proposal jobs, pruning, the best),
//!   [`guard`] (what a proposal may not be).

pub mod allocation;
pub mod candidate;
pub mod env;
pub mod error;
pub mod events;
pub mod guard;
pub mod optimizer;
pub mod pareto;
pub mod reflection;
pub mod registry;
pub mod reward;
pub mod rollout_id;
pub mod selection;
pub mod session;
pub mod settings;
pub mod status;
pub mod store;

pub use env::SessionEnv;
pub use error::GepaError;
pub use optimizer::{OptimizerConfig, ProposalJob};
pub use registry::Sessions;
pub use reward::{Reward, RewardReply, RewardRequest};
pub use session::{
    CallOutcome, CallTicket, Session, SessionDetail, SessionMetrics,
    SessionSummary,
};
pub use settings::{GepaSettings, NewSession};
pub use status::{Status, Transition};
