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

/// Whether a candidate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateStatus {
    Active,
    /// A proposal waiting for an operator's approval (`proposer.review: manual`): never
    /// served until approved.
    Pending,
    Archived,
}

impl CandidateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateStatus::Active => "active",
            CandidateStatus::Pending => "pending",
            CandidateStatus::Archived => "archived",
        }
    }

    /// The status a word names (the inverse of [`CandidateStatus::as_str`]).
    pub fn parse(s: &str) -> Option<CandidateStatus> {
        Some(match s {
            "active" => CandidateStatus::Active,
            "pending" => CandidateStatus::Pending,
            "archived" => CandidateStatus::Archived,
            _ => return None,
        })
    }
}

/// Why a candidate stopped being served (`archived_reason` in the API and the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveReason {
    /// Pruned: its reward's upper bound fell below the threshold or the best's lower bound.
    Pruned,
    /// Gave its place in a full pool to a new proposal.
    Replaced,
    /// Its calls failed upstream far more often than the other candidates' (see
    /// `session::failures`).
    UpstreamFailures,
    /// An operator archived it (or rejected it while it was pending).
    Operator,
}

impl ArchiveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveReason::Pruned => "pruned",
            ArchiveReason::Replaced => "replaced",
            ArchiveReason::UpstreamFailures => "upstream_failures",
            ArchiveReason::Operator => "operator",
        }
    }

    /// The reason a stored word names (the inverse of [`ArchiveReason::as_str`]).
    pub fn parse(s: &str) -> Option<ArchiveReason> {
        Some(match s {
            "pruned" => ArchiveReason::Pruned,
            "replaced" => ArchiveReason::Replaced,
            "upstream_failures" => ArchiveReason::UpstreamFailures,
            "operator" => ArchiveReason::Operator,
            _ => return None,
        })
    }
}
