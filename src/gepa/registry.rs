//! The registry of all sessions.
//!
//! The registry ([`Sessions`]) is a sharded map, so lookups from many concurrent requests
//! never meet on one lock. Each session keeps its mutable state behind its own mutex,
//! held only for the few hundred nanoseconds of a bookkeeping step (never across I/O).

use dashmap::DashMap;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::env::SessionEnv;
use super::error::GepaError;
use super::session::Session;
use super::settings::NewSession;
use super::store::SessionRecord;

/// All sessions. Lookups are sharded; the ordered index serves listing only.
pub struct Sessions {
    by_id: DashMap<String, Arc<Session>>,
    by_age: RwLock<BTreeMap<u64, Arc<Session>>>,
    next_seq: AtomicU64,
    max_sessions: usize,
    env: Arc<SessionEnv>,
}

/// One page of the session list.
pub struct SessionPage {
    pub items: Vec<Arc<Session>>,
    pub next_cursor: Option<String>,
}

impl Sessions {
    pub fn new(max_sessions: usize, env: SessionEnv) -> Self {
        Sessions {
            by_id: DashMap::new(),
            by_age: RwLock::new(BTreeMap::new()),
            next_seq: AtomicU64::new(1),
            max_sessions,
            env: Arc::new(env),
        }
    }

    pub fn env(&self) -> &SessionEnv {
        &self.env
    }

    /// Every session, for the proposer's scan (a snapshot; no lock is held afterwards).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_id.iter().map(|s| s.value().clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.by_id.get(id).map(|s| s.value().clone())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn create(&self, new: NewSession) -> Result<Arc<Session>, GepaError> {
        if self.by_id.len() >= self.max_sessions {
            return Err(GepaError::SessionLimit(self.max_sessions));
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session::new(seq, new, self.env.clone()));
        self.env.store.session_created(&session.record())?;
        self.by_id.insert(session.id.to_string(), session.clone());
        self.by_age.write().insert(seq, session.clone());
        Ok(session)
    }

    /// Deletes a session from the store, then from memory: from then on its id is unknown
    /// everywhere, and its slot under `sessions.max_sessions` is free. `false`: no such
    /// session. A call already running under it finishes; the record it writes behind
    /// belongs to no session and is ignored at restore.
    pub fn delete(&self, id: &str) -> Result<bool, GepaError> {
        let Some(session) = self.get(id) else {
            return Ok(false);
        };
        self.env.store.session_deleted(&session.id)?;
        self.by_id.remove(id);
        self.by_age.write().remove(&session.seq);
        Ok(true)
    }

    /// Puts back the sessions the durable store kept (at start-up, before serving).
    /// Returns how many were restored.
    pub fn restore(&self, sessions: Vec<SessionRecord>) -> usize {
        let mut n = 0;
        for r in sessions {
            let Some(session) = Session::restore(r, self.env.clone()) else {
                continue;
            };
            let session = Arc::new(session);
            self.next_seq.fetch_max(session.seq + 1, Ordering::Relaxed);
            self.by_id.insert(session.id.to_string(), session.clone());
            self.by_age.write().insert(session.seq, session);
            n += 1;
        }
        n
    }

    /// Newest first. The cursor is the sequence number of the last item returned.
    pub fn list(&self, limit: usize, cursor: Option<u64>) -> SessionPage {
        let by_age = self.by_age.read();
        let upper = cursor.unwrap_or(u64::MAX);
        let mut items: Vec<Arc<Session>> = by_age
            .range(..upper)
            .rev()
            .take(limit + 1)
            .map(|(_, s)| s.clone())
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|s| s.seq.to_string())
        } else {
            None
        };
        SessionPage { items, next_cursor }
    }
}
