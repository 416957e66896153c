//! The writer thread: it owns the write connection, takes whatever changes and rollout
//! records have queued up, and commits them in one transaction (group commit).

use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::codec::encode_messages;
use super::err;
use super::restore::read_reward;
use crate::format::rfc3339;
use crate::gepa::store::{RewardCommit, RewardWrite, RolloutRecord, StoreError};
use crate::store::probe::StoreProbe;

/// Most queued writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How often the writer applies retention.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How soon rollout records of a failed batch are retried when nothing else arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Most rollout records kept for a retry while the database refuses writes (about 3 KiB
/// each); the oldest beyond are dropped, with an error in the log.
const MAX_RETAINED_ROLLOUTS: usize = 100_000;

/// An acknowledged change on its way to the writer: the requester waits for the commit.
pub(super) type WriteOp = (Change, Reply);

/// Rollout records waiting for the writer. Pushing one is all the request path does: the
/// writer collects them every `storage.write_behind_ms` (or with the next change) without
/// being woken for each, which would cost a futex wake-up and a context switch per call.
pub(super) type RolloutQueue = Arc<Mutex<Vec<RolloutRecord>>>;

pub(super) enum Change {
    /// Statements applied together or not at all; `what` names the change in errors.
    Statements {
        what: &'static str,
        statements: Vec<(&'static str, Vec<SqlValue>)>,
    },
    Reward(RewardWrite),
}

impl Change {
    fn what(&self) -> &'static str {
        match self {
            Change::Statements { what, .. } => what,
            Change::Reward(_) => "recording a reward",
        }
    }
}

pub(super) type Outcome = Result<RewardCommit, StoreError>;

/// Where the writer sends a change's outcome once its transaction has committed.
pub(super) enum Reply {
    Blocking(mpsc::SyncSender<Outcome>),
    Async(tokio::sync::oneshot::Sender<Outcome>),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        // A requester that went away (client disconnected) no longer needs the answer.
        let _ = match self {
            Reply::Blocking(tx) => tx.send(outcome).map_err(|_| ()),
            Reply::Async(tx) => tx.send(outcome).map_err(|_| ()),
        };
    }
}

/// The writer thread: its connection and what it reports.
pub(super) struct WriterJob {
    conn: Connection,
    /// Whether the connection is at `synchronous=FULL` (see [`WriterJob::commit`]).
    full_sync: bool,
    path: PathBuf,
    retention_days: u32,
    write_behind: Duration,
    probe: StoreProbe,
}

impl WriterJob {
    pub(super) fn new(
        conn: Connection,
        path: PathBuf,
        retention_days: u32,
        write_behind: Duration,
        probe: StoreProbe,
    ) -> Self {
        WriterJob {
            conn,
            full_sync: true,
            path,
            retention_days,
            write_behind,
            probe,
        }
    }

    /// Waits for work, takes everything that queued up meanwhile (up to [`MAX_BATCH`]),
    /// and commits it in one transaction. Rollout records of a batch that failed (a
    /// locked database, a full disk) are kept and retried with the next one, up to
    /// [`MAX_RETAINED_ROLLOUTS`]. Ends when the store is dropped.
    pub(super) fn run(mut self, rx: mpsc::Receiver<WriteOp>, rollouts: RolloutQueue) {
        let mut next_retention = Instant::now();
        let mut retained: Vec<RolloutRecord> = Vec::new();
        let mut stopping = false;
        while !stopping {
            if Instant::now() >= next_retention {
                self.apply_retention();
                next_retention = Instant::now() + RETENTION_EVERY;
            }
            let mut wait = next_retention.saturating_duration_since(Instant::now());
            wait = wait.min(if retained.is_empty() {
                self.write_behind
            } else {
                RETRY_EVERY
            });
            let changes;
            (changes, stopping) = take_changes(&rx, wait);
            let fresh = std::mem::take(&mut *rollouts.lock());
            self.probe
                .queue_depth
                .sub((fresh.len() + changes.len()) as i64);
            let mut rows = std::mem::take(&mut retained);
            rows.extend(fresh);
            if rows.is_empty() && changes.is_empty() {
                continue;
            }
            self.probe
                .batch_size
                .observe((rows.len() + changes.len()) as f64);
            let started = Instant::now();
            if let Err(e) = self.commit(&rows, changes) {
                log::error!(
                    "store ({}): a write batch failed, {} rollout records kept for a retry: {e}",
                    self.path.display(),
                    rows.len()
                );
                retained = rows;
                drop_oldest_beyond_bound(&mut retained);
            }
            self.probe
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Commits rollout records and changes in one transaction, then answers each change:
    /// its own outcome (a change that breaks a constraint fails alone), or, when the
    /// transaction as a whole failed, that error.
    fn commit(
        &mut self,
        rows: &[RolloutRecord],
        changes: Vec<(Change, Reply)>,
    ) -> rusqlite::Result<()> {
        let (changes, replies): (Vec<Change>, Vec<Reply>) = changes.into_iter().unzip();
        if let Err(e) = self.set_full_sync(!changes.is_empty()) {
            for reply in replies {
                reply.send(Err(err(&self.path, "configuring the database", &e)));
            }
            return Err(e);
        }
        match self.write_batch(rows, &changes) {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    reply.send(outcome);
                }
                Ok(())
            }
            Err(e) => {
                let failed = err(&self.path, "committing", &e);
                for reply in replies {
                    reply.send(Err(failed.clone()));
                }
                Err(e)
            }
        }
    }

    /// Acknowledged changes must survive a machine crash: their commit waits for the
    /// fsync. A batch of rollout records alone is written behind anyway (a crash may lose
    /// the last ones, and their ids stay rewardable), so it skips the fsync: in WAL mode
    /// `synchronous=NORMAL` still survives a crash of the process.
    fn set_full_sync(&mut self, full_sync: bool) -> rusqlite::Result<()> {
        if full_sync != self.full_sync {
            let mode = if full_sync { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", mode)?;
            self.full_sync = full_sync;
        }
        Ok(())
    }

    /// Writes the records and applies the changes in one transaction and commits it.
    /// `Ok` holds each change's own outcome; `Err` fails the whole batch.
    fn write_batch(
        &mut self,
        rows: &[RolloutRecord],
        changes: &[Change],
    ) -> rusqlite::Result<Vec<Outcome>> {
        // IMMEDIATE takes the write lock up front: a database locked by someone else
        // fails the batch once (after the busy timeout), not once per statement.
        let mut tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Looked up once per batch, not once per record (the cache hashes the SQL).
        let mut insert = tx.prepare_cached(INSERT_ROLLOUT)?;
        for row in rows {
            match insert_rollout(&mut insert, row) {
                Ok(()) => {}
                // The database refuses writes for now: retry the whole batch later.
                Err(e) if is_transient(&e) => return Err(e),
                // This record alone cannot be written (it would fail every retry and
                // every batch after it): drop it, keep the rest. Its id stays rewardable.
                Err(e) => log::error!(
                    "store ({}): rollout record {} dropped: {e}",
                    self.path.display(),
                    row.id
                ),
            }
        }
        drop(insert);
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            match apply_in_savepoint(&mut tx, change) {
                Ok(o) => outcomes.push(Ok(o)),
                Err(e) if is_constraint(&e) => {
                    outcomes.push(Err(err(&self.path, change.what(), e)))
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Drops the captured text of rollouts older than `retention_days` (0 keeps all).
    fn apply_retention(&mut self) {
        if self.retention_days == 0 {
            return;
        }
        let cutoff = OffsetDateTime::now_utc() - time::Duration::days(self.retention_days.into());
        let dropped = self.conn.execute(
            "UPDATE rollouts SET input = '[]', output = NULL \
             WHERE created_at < ?1 AND (input != '[]' OR output IS NOT NULL)",
            [rfc3339(cutoff)],
        );
        match dropped {
            Ok(0) => {}
            Ok(n) => log::info!("store: retention dropped the captured text of {n} rollouts"),
            Err(e) => log::error!(
                "store ({}): applying retention failed: {e}",
                self.path.display()
            ),
        }
    }
}

/// Waits up to `wait` for a change, then takes every change queued meanwhile (up to
/// [`MAX_BATCH`]). Also says whether the store is gone (the writer then stops after
/// writing what is left).
fn take_changes(rx: &mpsc::Receiver<WriteOp>, wait: Duration) -> (Vec<WriteOp>, bool) {
    let mut changes = Vec::new();
    let mut stopping = false;
    match rx.recv_timeout(wait) {
        Ok(op) => changes.push(op),
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        Err(mpsc::RecvTimeoutError::Disconnected) => stopping = true,
    }
    while changes.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => changes.push(op),
            Err(_) => break,
        }
    }
    (changes, stopping)
}

/// Keeps at most [`MAX_RETAINED_ROLLOUTS`] records of failed batches for a retry,
/// dropping the oldest.
fn drop_oldest_beyond_bound(retained: &mut Vec<RolloutRecord>) {
    if retained.len() > MAX_RETAINED_ROLLOUTS {
        let dropped = retained.len() - MAX_RETAINED_ROLLOUTS;
        retained.drain(..dropped);
        log::error!("store: {dropped} rollout records dropped (their ids stay rewardable)");
    }
}

/// Applies one change in its own savepoint: a change that fails is rolled back alone.
fn apply_in_savepoint(
    tx: &mut rusqlite::Transaction<'_>,
    change: &Change,
) -> rusqlite::Result<RewardCommit> {
    let sp = tx.savepoint()?;
    let outcome = match change {
        Change::Statements { statements, .. } => statements
            .iter()
            .try_for_each(|(sql, args)| {
                sp.execute(sql, rusqlite::params_from_iter(args.iter()))
                    .map(|_| ())
            })
            .map(|()| RewardCommit::Inserted),
        Change::Reward(w) => insert_reward(&sp, w),
    }?;
    // Dropping the savepoint on an error above rolled it back.
    sp.commit()?;
    Ok(outcome)
}

/// Errors that say the database cannot take writes right now, rather than that this
/// write is wrong.
fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | ReadOnly | OutOfMemory)
    )
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

/// Inserts a first reward, or finds the one the rollout already has (the primary key is
/// what makes a reward count once, whichever process or request got there first).
fn insert_reward(conn: &Connection, w: &RewardWrite) -> rusqlite::Result<RewardCommit> {
    let seed = w.reward.seed.as_ref().map(|s| s.to_string());
    let now = rfc3339(OffsetDateTime::now_utc());
    let inserted = conn.execute(
        "INSERT INTO rewards (session_id, rollout_id, candidate_id, outcome, seed, feedback, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        params![w.session_id, w.rollout_id, w.candidate_id, w.reward.outcome, seed, w.reward.feedback, now],
    )?;
    if inserted == 0 {
        // A conflict without a stored row cannot happen; never count what is not stored.
        return read_reward(conn, &w.session_id, &w.rollout_id)?
            .map(RewardCommit::Existing)
            .ok_or(rusqlite::Error::QueryReturnedNoRows);
    }
    if w.with_rollout_record {
        conn.execute(
            "INSERT OR IGNORE INTO rollouts (session_id, id, candidate_id, correlation_id, \
             created_at, calls_ok, calls_failed, input, output) \
             VALUES (?1, ?2, ?3, NULL, ?4, 1, 0, '[]', NULL)",
            params![w.session_id, w.rollout_id, w.candidate_id, now],
        )?;
    }
    Ok(RewardCommit::Inserted)
}

/// A rollout record; a later call of the same (correlated) rollout replaces it.
const INSERT_ROLLOUT: &str = "INSERT OR REPLACE INTO rollouts (session_id, id, candidate_id, \
     correlation_id, created_at, calls_ok, calls_failed, input, output) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

fn insert_rollout(
    insert: &mut rusqlite::CachedStatement<'_>,
    r: &RolloutRecord,
) -> rusqlite::Result<()> {
    insert.execute(params![
        &*r.session_id,
        &*r.id,
        &*r.candidate_id,
        r.correlation_id,
        rfc3339(r.created_at),
        r.calls_ok,
        r.calls_failed,
        encode_messages(&r.input),
        r.output
    ])?;
    Ok(())
}
