//! A session's events: what the proposer and operators did to it, in order, for
//! `GET /sessions/{id}/events`. Each has a sequence number, a time, a type and its details.
//!
//! The newest [`MAX_EVENTS_IN_MEMORY`] of a session are kept in memory and served (and
//! restored at start-up); every event is also committed to the store, right after the
//! change it records.

use serde_json::{Map, Value};
use std::collections::VecDeque;
use time::OffsetDateTime;

/// Events per session kept in memory and served; older ones are dropped from memory (the
/// store keeps them).
pub const MAX_EVENTS_IN_MEMORY: usize = 1000;

/// One event of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// 1, 2, 3, … per session, in the order the events happened.
    pub seq: u64,
    pub at: OffsetDateTime,
    /// `proposal_accepted`, `proposal_rejected`, `proposal_failed`, `candidate_added`,
    /// `candidate_approved`, `candidate_archived`, `pinned`, `unpinned`, `status_changed`.
    pub kind: String,
    /// The event's details (a JSON object), e.g. `{"candidate_id", "reason"}`.
    pub detail: Map<String, Value>,
}

/// A session's bounded log of recent events.
#[derive(Debug, Default)]
pub struct EventLog {
    recent: VecDeque<Event>,
    last_seq: u64,
}

impl EventLog {
    /// Appends an event, dropping the oldest past the bound, and returns it.
    pub fn push(&mut self, kind: &str, detail: Map<String, Value>) -> Event {
        self.last_seq += 1;
        let event = Event {
            seq: self.last_seq,
            at: OffsetDateTime::now_utc(),
            kind: kind.to_string(),
            detail,
        };
        self.keep(event.clone());
        event
    }

    /// Puts back an event the store kept (at start-up, in order).
    pub fn restore(&mut self, event: Event) {
        self.last_seq = self.last_seq.max(event.seq);
        self.keep(event);
    }

    fn keep(&mut self, event: Event) {
        self.recent.push_back(event);
        while self.recent.len() > MAX_EVENTS_IN_MEMORY {
            self.recent.pop_front();
        }
    }

    /// Up to `limit` events after `since_seq`, and the `since_seq` to ask with next: the
    /// last one returned, or `since_seq` itself when there is nothing new.
    pub fn since(&self, since_seq: u64, limit: usize) -> (Vec<Event>, u64) {
        let items: Vec<Event> = self
            .recent
            .iter()
            .filter(|e| e.seq > since_seq)
            .take(limit)
            .cloned()
            .collect();
        let next = items.last().map_or(since_seq, |e| e.seq);
        (items, next)
    }
}

/// Details as a JSON object, from `(key, value)` pairs.
pub fn detail<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_numbered_paged_and_bounded() {
        let mut log = EventLog::default();
        for i in 0..(MAX_EVENTS_IN_MEMORY + 5) {
            log.push("pinned", detail([("n", json!(i))]));
        }
        let (first, next) = log.since(0, 3);
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8], "the oldest 5 left memory");
        assert_eq!(next, 8);
        let (rest, next) = log.since(next, usize::MAX);
        assert_eq!(rest.len(), MAX_EVENTS_IN_MEMORY - 3);
        assert_eq!(next, (MAX_EVENTS_IN_MEMORY + 5) as u64);
        let (none, same) = log.since(next, 10);
        assert!(none.is_empty());
        assert_eq!(same, next, "nothing new: ask again from the same place");
    }
}
