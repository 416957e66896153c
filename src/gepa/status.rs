//! A session's lifecycle: its status and the transitions the API asks for.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Started,
    Paused,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Started => "started",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status a stored word names (the inverse of [`Status::as_str`]).
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "started" => Status::Started,
            "paused" => Status::Paused,
            "completed" => Status::Completed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled)
    }
}

/// A lifecycle request from the admin API (a reward's `stop` is [`Transition::Stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Pause,
    Resume,
    Cancel,
    Stop,
}

/// Why a candidate stopped being served (`archived_reason` in the API and the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveReason {
    /// Pruned: its reward's upper bound fell below the threshold or the best's lower bound.
    LowReward,
    /// Gave its place in a full pool to a new proposal.
    Replaced,
    /// Its calls failed upstream far more often than the other candidates' (see
    /// `session::failures`).
    UpstreamFailures,
}

impl ArchiveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveReason::LowReward => "low_reward",
            ArchiveReason::Replaced => "replaced",
            ArchiveReason::UpstreamFailures => "upstream_failures",
        }
    }

    /// The reason a stored word names (the inverse of [`ArchiveReason::as_str`]).
    pub fn parse(s: &str) -> Option<ArchiveReason> {
        Some(match s {
            "low_reward" => ArchiveReason::LowReward,
            "replaced" => ArchiveReason::Replaced,
            "upstream_failures" => ArchiveReason::UpstreamFailures,
            _ => return None,
        })
    }
}
