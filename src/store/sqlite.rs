//! The embedded durable store: SQLite (bundled) in WAL mode at `storage.path`.
//!
//! - Acknowledged changes (session created, status, reward, candidate added or archived)
//!   are written in their own transaction before the change applies, with
//!   `synchronous=FULL`, so what the API acknowledged survives a crash of the process or
//!   the machine.
//! - Rollout records are written behind: the proxy hands them to a writer thread, which
//!   commits whatever has queued up in one transaction per batch. The request path never
//!   waits on the disk for them; a crash loses at most the last batch of rollout records
//!   (not rewards).
//! - The schema is versioned (`meta.schema_version`); forward migrations run at start-up,
//!   and a database written by a newer version is refused with a clear message.
//! - The connection is opened with [`SqliteStore::open`] after Pingora has forked (`-d`);
//!   [`SqliteStore::check`] validates the path before that, without keeping a connection.

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;
use time::OffsetDateTime;

use super::{
    RestoredCandidate, RestoredReward, RestoredRollout, RestoredSession, StateStore, StoreError,
};
use crate::rewrite::CapturedMessage;
use crate::sessions::{
    rfc3339, Candidate, GepaSettings, Reward, Rollout, Session, Status, MAX_ROLLOUTS_IN_MEMORY,
};

/// The schema this build writes. Each step of [`MIGRATIONS`] moves one version forward.
pub const SCHEMA_VERSION: i64 = 1;

/// `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
const MIGRATIONS: [&str; 1] = [r#"
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
"#];

/// Most rollout records committed in one write-behind transaction.
const MAX_BATCH: usize = 1024;

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what} ({}): {e}", path.display()))
}

/// One rollout record on its way to the writer thread.
struct RolloutRow {
    session_id: String,
    id: String,
    candidate_id: String,
    correlation_id: Option<String>,
    created_at: String,
    calls_ok: u32,
    calls_failed: u32,
    input: String,
    output: Option<String>,
}

struct Open {
    conn: Mutex<Connection>,
    rollouts: mpsc::Sender<RolloutRow>,
}

pub struct SqliteStore {
    path: PathBuf,
    open: OnceLock<Open>,
}

impl SqliteStore {
    pub fn new(path: PathBuf) -> Self {
        SqliteStore {
            path,
            open: OnceLock::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the database can be created or opened and is not from a newer version,
    /// without keeping a connection (safe before Pingora forks).
    pub fn check(&self) -> Result<(), StoreError> {
        connect(&self.path).map(|_| ())
    }

    /// Opens the database (migrating it forward) and starts the write-behind thread.
    pub fn open(&self) -> Result<(), StoreError> {
        if self.open.get().is_some() {
            return Ok(());
        }
        let conn = connect(&self.path)?;
        let writer = connect(&self.path)?;
        let (tx, rx) = mpsc::channel();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("gepa-store-writer".into())
            .spawn(move || write_behind(writer, rx, &path))
            .map_err(|e| err(&self.path, "starting the store writer", e))?;
        let _ = self.open.set(Open {
            conn: Mutex::new(conn),
            rollouts: tx,
        });
        Ok(())
    }

    fn conn(&self) -> Result<parking_lot::MutexGuard<'_, Connection>, StoreError> {
        self.open
            .get()
            .map(|o| o.conn.lock())
            .ok_or_else(|| StoreError("the store is not open yet".into()))
    }

    /// Every stored session, with what it needs to serve and to be rewarded again. One
    /// pass per table (not per session), so start-up time grows with the data, not with
    /// the number of sessions times the data.
    pub fn restore(&self) -> Result<Vec<RestoredSession>, StoreError> {
        let conn = self.conn()?;
        let mut sessions = read_sessions(&conn, &self.path)?;
        let index: HashMap<String, usize> = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        read_candidates(&conn, &self.path, &index, &mut sessions)?;
        read_rollouts(&conn, &self.path, &index, &mut sessions)?;
        read_rewards(&conn, &self.path, &index, &mut sessions)?;
        Ok(sessions)
    }

    fn execute(
        &self,
        what: &str,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(sql, args)
            .map(|_| ())
            .map_err(|e| err(&self.path, what, e))
    }

    /// Appends a candidate (its order is the next in the session). Called under the
    /// session's lock: it must not call back into the session.
    fn insert_candidate(&self, session: &Session, c: &Candidate) -> Result<(), StoreError> {
        let parents = serde_json::to_string(&c.parent_ids).unwrap_or_else(|_| "[]".into());
        self.execute(
            "recording a candidate",
            "INSERT OR IGNORE INTO candidates (session_id, id, ord, instruction, parent_ids, created_at) \
             VALUES (?1, ?2, (SELECT COALESCE(MAX(ord), -1) + 1 FROM candidates WHERE session_id = ?1), \
             ?3, ?4, ?5)",
            &[&session.id, &c.id, &&*c.instruction, &parents, &rfc3339(c.created_at)],
        )
    }
}

/// Opens a connection with the store's settings and brings the schema up to date.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(path, "creating the storage directory", e))?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| err(path, "opening the database", e))?;
    conn.busy_timeout(Duration::from_secs(5))
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

/// The write-behind loop: waits for a rollout record, drains what else queued up, and
/// commits the batch in one transaction. Ends when the store is dropped.
fn write_behind(mut conn: Connection, rx: mpsc::Receiver<RolloutRow>, path: &Path) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
        if let Err(e) = write_rollouts(&mut conn, &batch) {
            log::error!(
                "store ({}): writing {} rollout records failed: {e}",
                path.display(),
                batch.len()
            );
        }
    }
}

fn write_rollouts(conn: &mut Connection, batch: &[RolloutRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO rollouts (session_id, id, candidate_id, correlation_id, \
             created_at, calls_ok, calls_failed, input, output) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in batch {
            stmt.execute(params![
                r.session_id,
                r.id,
                r.candidate_id,
                r.correlation_id,
                r.created_at,
                r.calls_ok,
                r.calls_failed,
                r.input,
                r.output
            ])?;
        }
    }
    tx.commit()
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
    sessions: &mut [RestoredSession],
) -> Result<(), StoreError> {
    // How many rollouts each candidate served (index-only: rollouts_by_candidate).
    let mut issued: HashMap<(String, String), u64> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT session_id, candidate_id, COUNT(*) FROM rollouts GROUP BY session_id, candidate_id")
        .map_err(|e| err(p, "counting rollouts", e))?;
    let mut rows = stmt.query([]).map_err(|e| err(p, "counting rollouts", e))?;
    while let Some(r) = rows.next().map_err(|e| err(p, "counting rollouts", e))? {
        let field = |e| err(p, "counting rollouts", e);
        let n = u64::try_from(r.get::<_, i64>(2).map_err(field)?).unwrap_or_default();
        issued.insert((r.get(0).map_err(field)?, r.get(1).map_err(field)?), n);
    }
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
            issued: issued.get(&(sid, id.clone())).copied().unwrap_or(0),
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

/// The newest [`MAX_ROLLOUTS_IN_MEMORY`] rollouts of each session, in creation order: one
/// backward scan of the table in insertion order (no sort, no index).
fn read_rollouts(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    sessions: &mut [RestoredSession],
) -> Result<(), StoreError> {
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
        if sessions[i].rollouts.len() >= MAX_ROLLOUTS_IN_MEMORY {
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
    Ok(())
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
            reward: Reward {
                outcome: r.get(3).map_err(field)?,
                seed: r
                    .get::<_, Option<String>>(4)
                    .map_err(field)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
                feedback: r.get(5).map_err(field)?,
            },
        });
    }
    Ok(())
}

fn encode_messages(messages: &[CapturedMessage]) -> String {
    serde_json::to_string(messages).unwrap_or_else(|_| "[]".into())
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

impl StateStore for SqliteStore {
    fn session_created(&self, session: &Session) -> Result<(), StoreError> {
        let settings = serde_json::to_string(&session.settings)
            .map_err(|e| err(&self.path, "encoding session settings", e))?;
        let metadata = session.metadata.as_ref().map(|m| m.to_string());
        let now = rfc3339(session.created_at);
        self.execute(
            "recording a session",
            "INSERT INTO sessions (id, seq, job_id, status, created_at, updated_at, settings, metadata) \
             VALUES (?1, ?2, ?3, 'started', ?4, ?4, ?5, ?6)",
            &[&session.id, &(session.seq as i64), &session.job_id, &now, &settings, &metadata],
        )?;
        for c in session.candidates() {
            self.insert_candidate(session, &c)?;
        }
        Ok(())
    }

    fn status_changed(&self, session: &Session, status: Status) -> Result<(), StoreError> {
        self.execute(
            "recording a status change",
            "UPDATE sessions SET status = ?2, updated_at = ?3 WHERE id = ?1",
            &[
                &session.id,
                &status.as_str(),
                &rfc3339(OffsetDateTime::now_utc()),
            ],
        )
    }

    fn reward_recorded(
        &self,
        session: &Session,
        rollout_id: &str,
        candidate_id: &str,
        reward: &Reward,
    ) -> Result<(), StoreError> {
        let seed = reward.seed.as_ref().map(|s| s.to_string());
        self.execute(
            "recording a reward",
            "INSERT INTO rewards (session_id, rollout_id, candidate_id, outcome, seed, feedback, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &[
                &session.id,
                &rollout_id,
                &candidate_id,
                &reward.outcome,
                &seed,
                &reward.feedback,
                &rfc3339(OffsetDateTime::now_utc()),
            ],
        )
    }

    fn candidate_added(&self, session: &Session, candidate: &Candidate) -> Result<(), StoreError> {
        self.insert_candidate(session, candidate)
    }

    fn candidate_archived(&self, session: &Session, candidate_id: &str) -> Result<(), StoreError> {
        self.execute(
            "archiving a candidate",
            "UPDATE candidates SET archived = 1 WHERE session_id = ?1 AND id = ?2",
            &[&session.id, &candidate_id],
        )
    }

    fn rollout_finished(&self, session: &Session, rollout_id: &str, rollout: &Rollout) {
        let Some(open) = self.open.get() else { return };
        let row = RolloutRow {
            session_id: session.id.clone(),
            id: rollout_id.to_string(),
            candidate_id: rollout.candidate.id.clone(),
            correlation_id: rollout.correlation_id.clone(),
            created_at: rfc3339(rollout.created_at),
            calls_ok: rollout.calls_ok,
            calls_failed: rollout.calls_failed,
            input: encode_messages(&rollout.input),
            output: rollout.output.clone(),
        };
        if open.rollouts.send(row).is_err() {
            log::error!(
                "store ({}): the rollout writer has stopped",
                self.path.display()
            );
        }
    }
}
