//! The embedded durable store: SQLite (bundled) in WAL mode at `storage.path`.
//!
//! - One writer thread owns the write connection. Acknowledged changes (session created,
//!   status, reward, candidate added or archived) and write-behind rollout records are
//!   queued to it; it takes whatever has queued up and commits it in one transaction
//!   (`synchronous=FULL`: one fsync), then answers each change. A burst of concurrent
//!   rewards therefore shares commits (group commit), and what the API acknowledged
//!   survives a crash of the process or the machine. Each change runs in its own
//!   savepoint, so one failed change does not take the others with it.
//! - The request path never waits on the disk for rollout records; a crash loses at most
//!   the records still queued (their ids stay rewardable: see [`crate::gepa`]).
//! - A second connection serves reads: the restore at start-up, and lookups of rollouts
//!   that memory no longer holds.
//! - The schema is versioned (`meta.schema_version`); forward migrations run at start-up,
//!   and a database written by a newer version is refused with a clear message.
//! - The connections are opened with [`SqliteStore::open`] after Pingora has forked
//!   (`-d`); [`SqliteStore::check`] validates the path before that, without keeping one.
//! - Retention: once an hour (and at start-up) the writer drops the captured text of
//!   rollouts older than `storage.retention_days`; counts and statistics stay.
//!
//! Files: [`schema`] (the tables, their migrations, opening a connection), [`lock`] (one
//! gateway per database, and the hand-over during an upgrade), [`writer`] (the writer
//! thread and its group commit), [`restore`] (reading the state back at start-up) and
//! [`codec`] (how values are stored as SQL text).

mod codec;
mod lock;
mod restore;
mod schema;
mod writer;

pub use lock::check;
/// For the crate's tests, which build databases of older versions.
#[cfg(feature = "internals")]
pub use schema::{MIGRATIONS, SCHEMA_VERSION};

use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;
use time::OffsetDateTime;

use super::probe::StoreProbe;
use crate::config::StorageConfig;
use crate::format::rfc3339;
use crate::gepa::store::{
    CandidateRecord, RewardCommit, RewardWrite, RolloutRecord, SessionRecord, StateStore,
    StoreError, StoredRollout,
};
use crate::gepa::status::{ArchiveReason, CandidateStatus};
use crate::gepa::events::Event;
use crate::gepa::Status;
use codec::{insert_candidate, opt_text, text};
use lock::take_lock;
use restore::{
    read_candidates, read_events, read_reward, read_rewards, read_rollouts, read_sessions,
};
use schema::{connect, load_rollout_key};
use writer::{Change, Reply, RolloutQueue, WriteOp, WriterJob};

pub(crate) fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what} ({}): {e}", path.display()))
}

struct Open {
    reader: Mutex<Connection>,
    writer: mpsc::Sender<WriteOp>,
    rollouts: RolloutQueue,
    rollout_key: [u8; 32],
}

pub struct SqliteStore {
    path: PathBuf,
    /// `<path>.lock`, held (flock) while this process may acknowledge writes: a second,
    /// independent gateway on the same database is refused, and during an upgrade the
    /// new process restores only once the old one has handed over.
    lock: Mutex<Option<std::fs::File>>,
    /// Set once this process has handed the database over: acknowledged writes are then
    /// refused (write-behind rollout records still go in).
    handed_over: parking_lot::RwLock<bool>,
    retention_days: u32,
    /// Rollouts per session the restore brings back into memory.
    rollouts_in_memory: usize,
    /// How often the writer collects queued rollout records when no change wakes it
    /// sooner (`storage.write_behind_ms`).
    write_behind: Duration,
    probe: StoreProbe,
    open: OnceLock<Open>,
}

impl SqliteStore {
    pub fn new(config: &StorageConfig, probe: StoreProbe) -> Self {
        SqliteStore {
            path: config.path.clone(),
            lock: Mutex::new(None),
            handed_over: parking_lot::RwLock::new(false),
            retention_days: config.retention_days,
            rollouts_in_memory: config.rollouts_in_memory,
            write_behind: config.write_behind,
            probe,
            open: OnceLock::new(),
        }
    }

    /// Takes the database's lock, opens it (migrating it forward) and starts the writer
    /// thread. `take_over`: another process holding the lock is the one this process
    /// upgrades from, so wait for it to hand over instead of refusing to start.
    pub fn open(&self, take_over: bool) -> Result<(), StoreError> {
        if self.open.get().is_some() {
            return Ok(());
        }
        *self.lock.lock() = Some(take_lock(&self.path, take_over)?);
        if *self.handed_over.read() {
            // A hand-over began while this process was waiting for the lock.
            self.lock.lock().take();
        }
        let reader = connect(&self.path)?;
        let rollout_key = load_rollout_key(&reader, &self.path)?;
        let writer = connect(&self.path)?;
        let (tx, rx) = mpsc::channel();
        let rollouts = RolloutQueue::default();
        let job = WriterJob::new(
            writer,
            self.path.clone(),
            self.retention_days,
            self.write_behind,
            self.probe.clone(),
        );
        std::thread::Builder::new()
            .name("gepa-store-writer".into())
            .spawn({
                let rollouts = rollouts.clone();
                move || job.run(rx, rollouts)
            })
            .map_err(|e| err(&self.path, "starting the store writer", e))?;
        let _ = self.open.set(Open {
            reader: Mutex::new(reader),
            writer: tx,
            rollouts,
            rollout_key,
        });
        Ok(())
    }

    fn opened(&self) -> Result<&Open, StoreError> {
        self.open
            .get()
            .ok_or_else(|| StoreError("the store is not open yet".into()))
    }

    /// Every stored session, with what it needs to serve and to be rewarded again. One
    /// pass per table (not per session), so start-up time grows with the data, not with
    /// the number of sessions times the data.
    pub fn restore(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let conn = self.opened()?.reader.lock();
        let mut sessions = read_sessions(&conn, &self.path)?;
        let index: HashMap<String, usize> = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let keep = self.rollouts_in_memory;
        let counts = read_rollouts(&conn, &self.path, &index, keep, &mut sessions)?;
        read_candidates(&conn, &self.path, &index, &counts, &mut sessions)?;
        read_rewards(&conn, &self.path, &index, &mut sessions)?;
        read_events(&conn, &self.path, &index, &mut sessions)?;
        Ok(sessions)
    }

    /// Queues an acknowledged change, unless this process has handed over: the check and
    /// the send happen under the hand-over lock, so no change slips in behind the
    /// hand-over's final flush.
    fn enqueue_change(&self, change: Change, reply: Reply) -> Result<(), StoreError> {
        let handed_over = self.handed_over.read();
        if *handed_over {
            return Err(StoreError(
                "this gateway process has handed the database over to its successor".into(),
            ));
        }
        self.enqueue((change, reply))
    }

    /// Stops acknowledging writes, waits until everything queued has committed, and
    /// releases the database's lock, so a successor (`-u` upgrade) restores a state that
    /// includes every write this process acknowledged. Rollout records of calls still
    /// served go on being written behind.
    pub async fn hand_over(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut handed_over = self.handed_over.write();
            if *handed_over {
                return;
            }
            *handed_over = true;
            let flush = Change::Statements {
                what: "flushing before the hand-over",
                statements: vec![],
            };
            if self.enqueue((flush, Reply::Async(tx))).is_err() {
                // Not open yet (or the writer is gone): nothing was acknowledged through
                // it, so the lock can go at once; `open` also checks for a hand-over.
                self.lock.lock().take();
                return;
            }
        }
        if let Ok(Err(e)) = rx.await {
            log::error!("store: flushing before the hand-over failed: {}", e.0);
        }
        self.lock.lock().take();
        log::info!("store: handed {} over", self.path.display());
    }

    /// Commits the rollout records still queued and waits for that, at most `limit`. For
    /// the process's exit, which would lose them: a flush is a change, so the writer
    /// wakes at once and takes every queued record into the same transaction. Works after
    /// a hand-over too (write-behind records still go in then).
    pub fn flush_rollouts(&self, limit: Duration) {
        let (tx, rx) = mpsc::sync_channel(1);
        let flush = Change::Statements {
            what: "flushing the rollout records at exit",
            statements: vec![],
        };
        if self.enqueue((flush, Reply::Blocking(tx))).is_err() {
            return; // never opened: nothing was queued
        }
        match rx.recv_timeout(limit) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("store: {}", e.0),
            Err(_) => log::error!(
                "store: the rollout records queued at exit were not committed within {limit:?}"
            ),
        }
    }

    fn enqueue(&self, op: WriteOp) -> Result<(), StoreError> {
        let open = self.opened()?;
        self.probe.queue_depth.inc();
        open.writer.send(op).map_err(|_| {
            self.probe.queue_depth.dec();
            err(&self.path, "writing", "the store writer has stopped")
        })
    }

    /// Queues a change and blocks until it has committed. For the rare lifecycle and
    /// candidate changes, which are applied under the session's lock.
    fn commit_blocking(
        &self,
        what: &'static str,
        statements: Vec<(&'static str, Vec<SqlValue>)>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let change = Change::Statements { what, statements };
        self.enqueue_change(change, Reply::Blocking(tx))?;
        match rx.recv() {
            Ok(outcome) => outcome.map(|_| ()),
            Err(_) => Err(err(&self.path, what, "the store writer has stopped")),
        }
    }
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    fn rollout_key(&self) -> Option<[u8; 32]> {
        self.open.get().map(|o| o.rollout_key)
    }

    fn session_created(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let settings = serde_json::to_string(&session.settings)
            .map_err(|e| err(&self.path, "encoding session settings", e))?;
        let mut statements = vec![(
            "INSERT INTO sessions (id, seq, job_id, status, created_at, updated_at, settings, metadata) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            vec![
                text(&session.id),
                SqlValue::Integer(session.seq as i64),
                text(&session.job_id),
                text(session.status.as_str()),
                SqlValue::Text(rfc3339(session.created_at)),
                SqlValue::Text(rfc3339(session.updated_at)),
                SqlValue::Text(settings),
                opt_text(session.metadata.as_ref().map(|m| m.to_string()).as_deref()),
            ],
        )];
        statements.extend(
            session
                .candidates
                .iter()
                .map(|c| insert_candidate(&session.id, c)),
        );
        self.commit_blocking("recording a session", statements)
    }

    fn status_changed(&self, session_id: &str, status: Status) -> Result<(), StoreError> {
        self.commit_blocking(
            "recording a status change",
            vec![(
                "UPDATE sessions SET status = ?2, updated_at = ?3 WHERE id = ?1",
                vec![
                    text(session_id),
                    text(status.as_str()),
                    SqlValue::Text(rfc3339(OffsetDateTime::now_utc())),
                ],
            )],
        )
    }

    async fn reward_recorded(&self, write: RewardWrite) -> Result<RewardCommit, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue_change(Change::Reward(write), Reply::Async(tx))?;
        rx.await.unwrap_or_else(|_| {
            Err(err(
                &self.path,
                "recording a reward",
                "the store writer has stopped",
            ))
        })
    }

    fn lookup_rollout(
        &self,
        session_id: &str,
        rollout_id: &str,
    ) -> Result<Option<StoredRollout>, StoreError> {
        let what = "looking up a rollout";
        let conn = self.opened()?.reader.lock();
        let record = conn
            .query_row(
                "SELECT candidate_id, calls_ok FROM rollouts WHERE session_id = ?1 AND id = ?2",
                [session_id, rollout_id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)),
            )
            .optional()
            .map_err(|e| err(&self.path, what, e))?;
        let reward =
            read_reward(&conn, session_id, rollout_id).map_err(|e| err(&self.path, what, e))?;
        Ok(Some(StoredRollout { record, reward }))
    }

    fn candidate_added(
        &self,
        session_id: &str,
        candidate: &CandidateRecord,
    ) -> Result<(), StoreError> {
        self.commit_blocking(
            "recording a candidate",
            vec![insert_candidate(session_id, candidate)],
        )
    }

    fn candidate_status_changed(
        &self,
        session_id: &str,
        candidate_id: &str,
        status: CandidateStatus,
        reason: Option<ArchiveReason>,
    ) -> Result<(), StoreError> {
        let flag = |on: bool| SqlValue::Integer(i64::from(on));
        self.commit_blocking(
            "recording a candidate's status",
            vec![(
                "UPDATE candidates SET archived = ?3, pending = ?4, archived_reason = ?5 \
                 WHERE session_id = ?1 AND id = ?2",
                vec![
                    text(session_id),
                    text(candidate_id),
                    flag(status == CandidateStatus::Archived),
                    flag(status == CandidateStatus::Pending),
                    opt_text(reason.map(ArchiveReason::as_str)),
                ],
            )],
        )
    }

    fn session_deleted(&self, session_id: &str) -> Result<(), StoreError> {
        let statements = [
            "DELETE FROM rewards WHERE session_id = ?1",
            "DELETE FROM rollouts WHERE session_id = ?1",
            "DELETE FROM candidates WHERE session_id = ?1",
            "DELETE FROM events WHERE session_id = ?1",
            "DELETE FROM sessions WHERE id = ?1",
        ]
        .map(|sql| (sql, vec![text(session_id)]))
        .into();
        self.commit_blocking("deleting a session", statements)
    }

    fn event_recorded(&self, session_id: &str, event: &Event) {
        let detail = Value::Object(event.detail.clone()).to_string();
        let statements = vec![(
                "INSERT OR REPLACE INTO events (session_id, seq, at, type, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                vec![
                    text(session_id),
                    SqlValue::Integer(i64::try_from(event.seq).unwrap_or(i64::MAX)),
                    SqlValue::Text(rfc3339(event.at)),
                    text(&event.kind),
                    SqlValue::Text(detail),
                ],
            )];
        // Committed like the change it records (events are rare: proposals and operators'
        // changes), so that what the API answered is in the log after a crash too. A
        // failure here leaves the change, already committed, in place.
        if let Err(e) = self.commit_blocking("recording an event", statements) {
            log::error!("store: an event was not written: {}", e.0);
        }
    }

    fn pin_changed(&self, session_id: &str, candidate_id: Option<&str>) -> Result<(), StoreError> {
        self.commit_blocking(
            "recording a pin",
            vec![(
                "UPDATE sessions SET pinned_candidate_id = ?2 WHERE id = ?1",
                vec![text(session_id), opt_text(candidate_id)],
            )],
        )
    }

    fn rollout_finished(&self, rollout: RolloutRecord) {
        let Ok(open) = self.opened() else {
            log::error!("store: a rollout record was not written: the store is not open");
            return;
        };
        self.probe.queue_depth.inc();
        open.rollouts.lock().push(rollout);
    }
}
