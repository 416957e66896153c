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
//!   the records still queued (their ids stay rewardable: see [`crate::sessions`]).
//! - A second connection serves reads: the restore at start-up, and lookups of rollouts
//!   that memory no longer holds.
//! - The schema is versioned (`meta.schema_version`); forward migrations run at start-up,
//!   and a database written by a newer version is refused with a clear message.
//! - The connections are opened with [`SqliteStore::open`] after Pingora has forked
//!   (`-d`); [`SqliteStore::check`] validates the path before that, without keeping one.
//! - Retention: once an hour (and at start-up) the writer drops the captured text of
//!   rollouts older than `storage.retention_days`; counts and statistics stay.

use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::{
    RestoredCandidate, RestoredReward, RestoredRollout, RestoredSession, RewardCommit, RewardWrite,
    StateStore, StoreError, StoreProbe, StoredRollout,
};
use crate::config::StorageConfig;
use crate::json_object::JsonObject;
use crate::rewrite::CapturedMessage;
use crate::sessions::{rfc3339, Candidate, GepaSettings, Reward, Rollout, Session, Status};

/// The schema this build writes. Each step of [`MIGRATIONS`] moves one version forward.
pub const SCHEMA_VERSION: i64 = 2;

/// `MIGRATIONS[i]` takes a database from version `i` to `i + 1`. Public so that tests can
/// build a database of an older version.
pub const MIGRATIONS: [&str; 2] = [
    r#"
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    settings TEXT NOT NULL,
    metadata TEXT
);
CREATE TABLE candidates (
    session_id TEXT NOT NULL,
    id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    instruction TEXT NOT NULL,
    parent_ids TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, id)
);
CREATE TABLE rollouts (
    session_id TEXT NOT NULL,
    id TEXT NOT NULL,
    candidate_id TEXT NOT NULL,
    correlation_id TEXT,
    created_at TEXT NOT NULL,
    calls_ok INTEGER NOT NULL,
    calls_failed INTEGER NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX rollouts_by_candidate ON rollouts (session_id, candidate_id);
CREATE TABLE rewards (
    session_id TEXT NOT NULL,
    rollout_id TEXT NOT NULL,
    candidate_id TEXT NOT NULL,
    outcome REAL NOT NULL,
    seed TEXT,
    feedback TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, rollout_id)
);
"#,
    // 2: the restore counts each candidate's rollouts during its scan of the table, so
    // this index only cost every rollout insert a second B-tree write.
    "DROP INDEX IF EXISTS rollouts_by_candidate;",
];

/// The page size of a database this build creates. Rollout records (about 1.5 KiB each
/// for a 1 KiB chat) are written twice in WAL mode, to the log and then to the database
/// by the checkpoint, each page by its own `pwrite`: 16 KiB pages take a quarter of the
/// system calls and WAL frames of SQLite's default 4 KiB, and cut the writer's CPU per
/// record by about a fifth (measured on an append of 1.5 KiB rows in batches of 100). A
/// database created with another page size keeps it: WAL mode cannot change it.
const PAGE_SIZE: i64 = 16 * 1024;
/// Most queued writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How often the writer applies retention.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How soon rollout records of a failed batch are retried when nothing else arrives.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Most rollout records kept for a retry while the database refuses writes (about 3 KiB
/// each); the oldest beyond are dropped, with an error in the log.
const MAX_RETAINED_ROLLOUTS: usize = 100_000;

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what} ({}): {e}", path.display()))
}

/// One rollout record on its way to the writer thread. Encoding it (JSON, timestamps) is
/// left to the writer, off the request path. The ids are shared with the session, not
/// copied: a copy would be allocated on a request thread and freed on the writer's.
struct RolloutRow {
    session_id: Arc<str>,
    id: Arc<str>,
    candidate: Arc<Candidate>,
    correlation_id: Option<String>,
    created_at: OffsetDateTime,
    calls_ok: u32,
    calls_failed: u32,
    input: Arc<[CapturedMessage]>,
    output: Option<String>,
}

/// An acknowledged change on its way to the writer: the requester waits for the commit.
type WriteOp = (Change, Reply);

/// Rollout records waiting for the writer. Pushing one is all the request path does: the
/// writer collects them every `storage.write_behind_ms` (or with the next change) without
/// being woken for each, which would cost a futex wake-up and a context switch per call.
type RolloutQueue = Arc<Mutex<Vec<RolloutRow>>>;

enum Change {
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

type Outcome = Result<RewardCommit, StoreError>;

/// Where the writer sends a change's outcome once its transaction has committed.
enum Reply {
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

    pub fn path(&self) -> &Path {
        &self.path
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
        let job = WriterJob {
            conn: writer,
            full_sync: true,
            path: self.path.clone(),
            retention_days: self.retention_days,
            write_behind: self.write_behind,
            probe: self.probe.clone(),
        };
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
    pub fn restore(&self) -> Result<Vec<RestoredSession>, StoreError> {
        let conn = self.opened()?.reader.lock();
        let mut sessions = read_sessions(&conn, &self.path)?;
        let index: HashMap<String, usize> = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let keep = self.rollouts_in_memory;
        let issued = read_rollouts(&conn, &self.path, &index, keep, &mut sessions)?;
        read_candidates(&conn, &self.path, &index, &issued, &mut sessions)?;
        read_rewards(&conn, &self.path, &index, &mut sessions)?;
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

/// Checks that the database at `path` can be created or opened, is not from a newer
/// version and (unless `take_over`) is not in use by another gateway, without keeping a
/// connection or the lock (safe before Pingora forks).
pub fn check(path: &Path, take_over: bool) -> Result<(), StoreError> {
    if take_over {
        // The database is in use by the process this one takes over from: do not migrate
        // it under that process's feet. `open` checks it once the lock is ours.
        return Ok(());
    }
    // The lock first: a gateway already using the database must not see it migrated.
    let _lock = take_lock(path, false)?;
    connect(path).map(|_| ())
}

/// Takes `<path>.lock` (flock; the kernel releases it when the process dies, even by
/// `kill -9`). Held by another process: an error, or with `take_over` a wait until that
/// process hands over or exits.
fn take_lock(path: &Path, take_over: bool) -> Result<std::fs::File, StoreError> {
    // The lock file sits beside the database, and is taken before any connection: the
    // database's directory is created here.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(path, "creating the storage directory", e))?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err(&lock_path, "opening the database's lock file", e))?;
    let mut waiting_since: Option<Instant> = None;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if take_over => {
                let since = *waiting_since.get_or_insert_with(|| {
                    log::info!(
                        "store: waiting for the previous gateway process to hand over {}",
                        path.display()
                    );
                    Instant::now()
                });
                if since.elapsed() > Duration::from_secs(600) {
                    return Err(err(path, "taking over the database", "the previous gateway process did not hand it over within 10 minutes"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err(
                    path,
                    "refusing the database",
                    "another gateway process is using it; stop that one, or start this one with -u to take over from it",
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(err(&lock_path, "locking the database", e))
            }
        }
    }
}

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_string())
}

fn opt_text(s: Option<&str>) -> SqlValue {
    s.map_or(SqlValue::Null, text)
}

/// Appends a candidate (its order is the next in the session).
fn insert_candidate(session_id: &str, c: &Candidate) -> (&'static str, Vec<SqlValue>) {
    let parents = serde_json::to_string(&c.parent_ids).unwrap_or_else(|_| "[]".into());
    (
        "INSERT OR IGNORE INTO candidates (session_id, id, ord, instruction, parent_ids, created_at) \
         VALUES (?1, ?2, (SELECT COALESCE(MAX(ord), -1) + 1 FROM candidates WHERE session_id = ?1), \
         ?3, ?4, ?5)",
        vec![
            text(session_id),
            text(&c.id),
            text(&c.instruction),
            SqlValue::Text(parents),
            SqlValue::Text(rfc3339(c.created_at)),
        ],
    )
}

/// The key rollout ids are authenticated with: created once, then kept in `meta`.
fn load_rollout_key(conn: &Connection, path: &Path) -> Result<[u8; 32], StoreError> {
    let fresh: [u8; 32] = rand::random();
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('rollout_key', ?1)",
        [crate::sessions::rollout_id::hex(&fresh)],
    )
    .map_err(|e| err(path, "creating the rollout key", e))?;
    let stored: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'rollout_key'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| err(path, "reading the rollout key", e))?;
    unhex32(&stored).ok_or_else(|| err(path, "reading the rollout key", "it is malformed"))
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Opens a connection with the store's settings and brings the schema up to date. Called
/// with the lock held ([`take_lock`], which also created the directory).
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| err(path, "opening the database", e))?;
    // Only this process's two connections (and, during an upgrade, the old process's
    // write-behind) contend for the database; a lock held longer means something else
    // holds it, and the write should fail (503) rather than hang the request.
    conn.busy_timeout(Duration::from_secs(2))
        .map_err(|e| err(path, "configuring the database", e))?;
    // Takes effect only on a database that has no table yet (a new one), and must come
    // before WAL mode is set.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(|e| err(path, "configuring the database", e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| err(path, "enabling WAL (is this a SQLite database?)", e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| err(path, "configuring the database", e))?;
    migrate(&conn, path)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        [],
    )
    .map_err(|e| {
        err(
            path,
            "reading the schema version (is this a SQLite database?)",
            e,
        )
    })?;
    let version: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(|e| err(path, "reading the schema version", e))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(err(
            path,
            "refusing the database",
            format!(
                "it was written by a newer gepa-gateway (schema {version}, this build knows up to {SCHEMA_VERSION})"
            ),
        ));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = from as i64 + 1;
        let batch = format!(
            "BEGIN; {sql} INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{to}'); COMMIT;"
        );
        conn.execute_batch(&batch)
            .map_err(|e| err(path, &format!("migrating the schema to version {to}"), e))?;
    }
    Ok(())
}

/// The writer thread: its connection and what it reports.
struct WriterJob {
    conn: Connection,
    /// Whether the connection is at `synchronous=FULL` (see [`WriterJob::commit`]).
    full_sync: bool,
    path: PathBuf,
    retention_days: u32,
    write_behind: Duration,
    probe: StoreProbe,
}

impl WriterJob {
    /// Waits for work, takes everything that queued up meanwhile (up to [`MAX_BATCH`]),
    /// and commits it in one transaction. Rollout records of a batch that failed (a
    /// locked database, a full disk) are kept and retried with the next one, up to
    /// [`MAX_RETAINED_ROLLOUTS`]. Ends when the store is dropped.
    fn run(mut self, rx: mpsc::Receiver<WriteOp>, rollouts: RolloutQueue) {
        let mut next_retention = Instant::now();
        let mut retained: Vec<RolloutRow> = Vec::new();
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
            let mut changes = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(op) => changes.push(op),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The store is gone: write what is left, then stop.
                Err(mpsc::RecvTimeoutError::Disconnected) => stopping = true,
            }
            while changes.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => changes.push(op),
                    Err(_) => break,
                }
            }
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
                if retained.len() > MAX_RETAINED_ROLLOUTS {
                    let dropped = retained.len() - MAX_RETAINED_ROLLOUTS;
                    retained.drain(..dropped);
                    log::error!(
                        "store: {dropped} rollout records dropped (their ids stay rewardable)"
                    );
                }
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
        rows: &[RolloutRow],
        changes: Vec<(Change, Reply)>,
    ) -> rusqlite::Result<()> {
        let (changes, replies): (Vec<Change>, Vec<Reply>) = changes.into_iter().unzip();
        // Acknowledged changes must survive a machine crash: their commit waits for the
        // fsync. A batch of rollout records alone is written behind anyway (a crash may
        // lose the last ones, and their ids stay rewardable), so it skips the fsync: in
        // WAL mode `synchronous=NORMAL` still survives a crash of the process.
        let full_sync = !changes.is_empty();
        if full_sync != self.full_sync {
            let mode = if full_sync { "FULL" } else { "NORMAL" };
            if let Err(e) = self.conn.pragma_update(None, "synchronous", mode) {
                for reply in replies {
                    reply.send(Err(err(&self.path, "configuring the database", &e)));
                }
                return Err(e);
            }
            self.full_sync = full_sync;
        }
        let mut outcomes = Vec::with_capacity(changes.len());
        let committed = (|| -> rusqlite::Result<()> {
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
                    // every batch after it): drop it, keep the rest. Its id stays
                    // rewardable.
                    Err(e) => log::error!(
                        "store ({}): rollout record {} dropped: {e}",
                        self.path.display(),
                        row.id
                    ),
                }
            }
            drop(insert);
            for change in &changes {
                match apply_in_savepoint(&mut tx, change) {
                    Ok(o) => outcomes.push(Ok(o)),
                    Err(e) if is_constraint(&e) => {
                        outcomes.push(Err(err(&self.path, change.what(), e)))
                    }
                    Err(e) => return Err(e),
                }
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
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

fn read_reward(
    conn: &Connection,
    session_id: &str,
    rollout_id: &str,
) -> rusqlite::Result<Option<Reward>> {
    conn.query_row(
        "SELECT outcome, seed, feedback FROM rewards WHERE session_id = ?1 AND rollout_id = ?2",
        [session_id, rollout_id],
        |r| reward_at(r, 0),
    )
    .optional()
}

/// A reward from the columns `outcome, seed, feedback`, starting at column `first`.
fn reward_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Reward> {
    Ok(Reward {
        outcome: r.get(first)?,
        seed: r
            .get::<_, Option<String>>(first + 1)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        feedback: r.get(first + 2)?,
    })
}

/// A rollout record; a later call of the same (correlated) rollout replaces it.
const INSERT_ROLLOUT: &str = "INSERT OR REPLACE INTO rollouts (session_id, id, candidate_id, \
     correlation_id, created_at, calls_ok, calls_failed, input, output) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

fn insert_rollout(
    insert: &mut rusqlite::CachedStatement<'_>,
    r: &RolloutRow,
) -> rusqlite::Result<()> {
    insert.execute(params![
        &*r.session_id,
        &*r.id,
        r.candidate.id,
        r.correlation_id,
        rfc3339(r.created_at),
        r.calls_ok,
        r.calls_failed,
        encode_messages(&r.input),
        r.output
    ])?;
    Ok(())
}

fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn parse_status(s: &str) -> Option<Status> {
    Some(match s {
        "started" => Status::Started,
        "paused" => Status::Paused,
        "completed" => Status::Completed,
        "cancelled" => Status::Cancelled,
        _ => return None,
    })
}

fn read_sessions(conn: &Connection, p: &Path) -> Result<Vec<RestoredSession>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT id, seq, job_id, status, created_at, updated_at, settings, metadata \
             FROM sessions ORDER BY seq",
        )
        .map_err(|e| err(p, "reading sessions", e))?;
    let mut rows = stmt.query([]).map_err(|e| err(p, "reading sessions", e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| err(p, "reading a session", e))? {
        let field = |e| err(p, "reading a session", e);
        let status: String = r.get(3).map_err(field)?;
        let settings: String = r.get(6).map_err(field)?;
        out.push(RestoredSession {
            id: r.get(0).map_err(field)?,
            seq: u64::try_from(r.get::<_, i64>(1).map_err(field)?).unwrap_or_default(),
            job_id: r.get(2).map_err(field)?,
            status: parse_status(&status).ok_or_else(|| err(p, "decoding a status", &status))?,
            created_at: parse_time(&r.get::<_, String>(4).map_err(field)?),
            updated_at: parse_time(&r.get::<_, String>(5).map_err(field)?),
            settings: serde_json::from_str::<GepaSettings>(&settings)
                .map_err(|e| err(p, "decoding session settings", e))?,
            metadata: r
                .get::<_, Option<String>>(7)
                .map_err(field)?
                .and_then(|m| serde_json::from_str(&m).ok()),
            candidates: vec![],
            rollouts: vec![],
            rewards: vec![],
        });
    }
    Ok(out)
}

fn read_candidates(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    issued: &[HashMap<String, u64>],
    sessions: &mut [RestoredSession],
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT session_id, id, instruction, parent_ids, archived, created_at \
             FROM candidates ORDER BY session_id, ord",
        )
        .map_err(|e| err(p, "reading candidates", e))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| err(p, "reading candidates", e))?;
    while let Some(r) = rows.next().map_err(|e| err(p, "reading candidates", e))? {
        let field = |e| err(p, "reading a candidate", e);
        let sid: String = r.get(0).map_err(field)?;
        let Some(&i) = index.get(&sid) else { continue };
        let id: String = r.get(1).map_err(field)?;
        sessions[i].candidates.push(RestoredCandidate {
            issued: issued[i].get(&id).copied().unwrap_or(0),
            id,
            instruction: r.get(2).map_err(field)?,
            parent_ids: serde_json::from_str(&r.get::<_, String>(3).map_err(field)?)
                .unwrap_or_default(),
            archived: r.get::<_, i64>(4).map_err(field)? != 0,
            created_at: parse_time(&r.get::<_, String>(5).map_err(field)?),
        });
    }
    Ok(())
}

/// The newest `keep` rollouts of each session, in the order their records were last
/// written (a rollout written again by a later call of its conversation moves to the end:
/// the order of last activity), and how many rollouts
/// each candidate served (per session, by candidate id): one backward scan of the table
/// in insertion order (no sort, no index).
fn read_rollouts(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    keep: usize,
    sessions: &mut [RestoredSession],
) -> Result<Vec<HashMap<String, u64>>, StoreError> {
    let mut issued: Vec<HashMap<String, u64>> = vec![HashMap::new(); sessions.len()];
    let mut stmt = conn
        .prepare(
            "SELECT session_id, id, candidate_id, correlation_id, created_at, calls_ok, \
             calls_failed, input, output FROM rollouts NOT INDEXED ORDER BY rowid DESC",
        )
        .map_err(|e| err(p, "reading rollouts", e))?;
    let mut rows = stmt.query([]).map_err(|e| err(p, "reading rollouts", e))?;
    while let Some(r) = rows.next().map_err(|e| err(p, "reading rollouts", e))? {
        let field = |e| err(p, "reading a rollout", e);
        // Borrowed: most rows of a long history are skipped, so do not allocate for them.
        let sid = r
            .get_ref(0)
            .map_err(field)?
            .as_str()
            .map_err(|e| err(p, "reading a rollout", e))?;
        let Some(&i) = index.get(sid) else { continue };
        let candidate = r
            .get_ref(2)
            .map_err(field)?
            .as_str()
            .map_err(|e| err(p, "reading a rollout", e))?;
        match issued[i].get_mut(candidate) {
            Some(n) => *n += 1,
            None => {
                issued[i].insert(candidate.to_string(), 1);
            }
        }
        if sessions[i].rollouts.len() >= keep {
            continue;
        }
        sessions[i].rollouts.push(RestoredRollout {
            id: r.get(1).map_err(field)?,
            candidate_id: r.get(2).map_err(field)?,
            correlation_id: r.get(3).map_err(field)?,
            created_at: parse_time(&r.get::<_, String>(4).map_err(field)?),
            calls_ok: r.get(5).map_err(field)?,
            calls_failed: r.get(6).map_err(field)?,
            input: decode_messages(&r.get::<_, String>(7).map_err(field)?),
            output: r.get(8).map_err(field)?,
        });
    }
    for s in sessions.iter_mut() {
        s.rollouts.reverse();
    }
    Ok(issued)
}

fn read_rewards(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    sessions: &mut [RestoredSession],
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT session_id, rollout_id, candidate_id, outcome, seed, feedback FROM rewards \
             ORDER BY rowid",
        )
        .map_err(|e| err(p, "reading rewards", e))?;
    let mut rows = stmt.query([]).map_err(|e| err(p, "reading rewards", e))?;
    while let Some(r) = rows.next().map_err(|e| err(p, "reading rewards", e))? {
        let field = |e| err(p, "reading a reward", e);
        let sid: String = r.get(0).map_err(field)?;
        let Some(&i) = index.get(&sid) else { continue };
        sessions[i].rewards.push(RestoredReward {
            rollout_id: r.get(1).map_err(field)?,
            candidate_id: r.get(2).map_err(field)?,
            reward: reward_at(r, 3).map_err(field)?,
        });
    }
    Ok(())
}

/// The captured messages as the JSON array `[{"role":…,"content":…},…]`, byte for byte
/// what `serde_json` writes. Written with [`JsonObject`] (a SIMD string escaper) because
/// this runs once per proxied call on the store's writer thread, where serde_json's
/// byte-at-a-time escaping of the captured text was a quarter of the writer's work
/// (callgrind).
fn encode_messages(messages: &[CapturedMessage]) -> String {
    let text: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum();
    let mut out = Vec::with_capacity(2 + text + 24 * messages.len());
    out.push(b'[');
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut object = JsonObject::new(&mut out);
        object.str("role", Some(&m.role));
        object.str("content", Some(&m.content));
        object.end();
    }
    out.push(b']');
    // Escaping keeps UTF-8 valid; the fallback is never taken.
    String::from_utf8(out).unwrap_or_else(|_| "[]".into())
}

fn decode_messages(s: &str) -> Vec<CapturedMessage> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s) else {
        return vec![];
    };
    items
        .iter()
        .map(|m| CapturedMessage {
            role: m["role"].as_str().unwrap_or_default().to_string(),
            content: m["content"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    fn rollout_key(&self) -> Option<[u8; 32]> {
        self.open.get().map(|o| o.rollout_key)
    }

    fn session_created(&self, session: &Session) -> Result<(), StoreError> {
        let settings = serde_json::to_string(&session.settings)
            .map_err(|e| err(&self.path, "encoding session settings", e))?;
        let now = rfc3339(session.created_at);
        let mut statements = vec![(
            "INSERT INTO sessions (id, seq, job_id, status, created_at, updated_at, settings, metadata) \
             VALUES (?1, ?2, ?3, 'started', ?4, ?4, ?5, ?6)",
            vec![
                text(&session.id),
                SqlValue::Integer(session.seq as i64),
                text(&session.job_id),
                SqlValue::Text(now),
                SqlValue::Text(settings),
                opt_text(session.metadata.as_ref().map(|m| m.to_string()).as_deref()),
            ],
        )];
        statements.extend(
            session
                .candidates()
                .iter()
                .map(|c| insert_candidate(&session.id, c)),
        );
        self.commit_blocking("recording a session", statements)
    }

    fn status_changed(&self, session: &Session, status: Status) -> Result<(), StoreError> {
        self.commit_blocking(
            "recording a status change",
            vec![(
                "UPDATE sessions SET status = ?2, updated_at = ?3 WHERE id = ?1",
                vec![
                    text(&session.id),
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

    fn candidate_added(&self, session: &Session, candidate: &Candidate) -> Result<(), StoreError> {
        self.commit_blocking(
            "recording a candidate",
            vec![insert_candidate(&session.id, candidate)],
        )
    }

    fn candidate_archived(&self, session: &Session, candidate_id: &str) -> Result<(), StoreError> {
        self.commit_blocking(
            "archiving a candidate",
            vec![(
                "UPDATE candidates SET archived = 1 WHERE session_id = ?1 AND id = ?2",
                vec![text(&session.id), text(candidate_id)],
            )],
        )
    }

    fn rollout_finished(&self, session: &Session, rollout_id: &Arc<str>, rollout: &Rollout) {
        let row = RolloutRow {
            session_id: session.id.clone(),
            id: rollout_id.clone(),
            candidate: rollout.candidate.clone(),
            correlation_id: rollout.correlation_id.clone(),
            created_at: rollout.created_at,
            calls_ok: rollout.calls_ok,
            calls_failed: rollout.calls_failed,
            input: rollout.input.clone(),
            output: rollout.output.clone(),
        };
        let Ok(open) = self.opened() else {
            log::error!("store: a rollout record was not written: the store is not open");
            return;
        };
        self.probe.queue_depth.inc();
        open.rollouts.lock().push(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> CapturedMessage {
        CapturedMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    fn page_size(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_16_kib_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        connect(&fresh).unwrap();
        assert_eq!(page_size(&fresh), PAGE_SIZE);

        let old = dir.path().join("old.db");
        let conn = Connection::open(&old).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 4096; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        drop(conn);
        let conn = connect(&old).unwrap();
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 1);
        drop(conn);
        assert_eq!(page_size(&old), 4096);
    }

    #[test]
    fn encoded_messages_are_what_serde_json_writes_and_decode_back() {
        let mut texts: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote \" backslash \\ slash / newline \n tab \t cr \r".into(),
            "controls \u{0} \u{1} \u{8} \u{b} \u{c} \u{1f} del \u{7f}".into(),
            "unicode é 漢字 🎉 \u{2028} \u{2029}".into(),
            "x".repeat(5000) + "\"" + &"y\n".repeat(300),
        ];
        // Every byte value below 0x80 at every offset of a 40-byte window, so the SIMD
        // kernel's block boundaries meet each kind of character.
        for c in 0u8..0x80 {
            for at in 0..40 {
                let mut t = "a".repeat(40);
                t.replace_range(at..at + 1, &char::from(c).to_string());
                texts.push(t);
            }
        }
        for (i, t) in texts.iter().enumerate() {
            let tail: String = t.chars().rev().take(7).collect();
            let messages = vec![message("user", t), message("assistant", &tail)];
            let expected = serde_json::to_string(&messages).unwrap();
            assert_eq!(encode_messages(&messages), expected, "text {i}");
            assert_eq!(decode_messages(&expected), messages, "text {i}");
        }
        assert_eq!(encode_messages(&[]), "[]");
    }
}
