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
