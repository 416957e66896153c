//! The database's tables, their versioned migrations, and opening a connection.

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::time::Duration;

use super::err;
use crate::format::{hex, unhex32};
use crate::gepa::store::StoreError;

/// The schema this build writes. Each step of [`MIGRATIONS`] moves one version forward.
pub const SCHEMA_VERSION: i64 = 3;

/// `MIGRATIONS[i]` takes a database from version `i` to `i + 1`. Public so that tests can
/// build a database of an older version.
pub const MIGRATIONS: [&str; 3] = [
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
    // 3: why a candidate was archived (NULL for those archived before: pruned or
    // replaced), whether it waits for an operator's approval, the pinned candidate, and
    // each session's events.
    "ALTER TABLE candidates ADD COLUMN archived_reason TEXT;
     ALTER TABLE candidates ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE sessions ADD COLUMN pinned_candidate_id TEXT;
     CREATE TABLE events (
         session_id TEXT NOT NULL,
         seq INTEGER NOT NULL,
         at TEXT NOT NULL,
         type TEXT NOT NULL,
         detail TEXT NOT NULL,
         PRIMARY KEY (session_id, seq)
     );",
];

/// The page size of a database this build creates. Rollout records (about 1.5 KiB each
/// for a 1 KiB chat) are written twice in WAL mode, to the log and then to the database
/// by the checkpoint, each page by its own `pwrite`: 16 KiB pages take a quarter of the
/// system calls and WAL frames of SQLite's default 4 KiB, and cut the writer's CPU per
/// record by about a fifth (measured on an append of 1.5 KiB rows in batches of 100). A
/// database created with another page size keeps it: WAL mode cannot change it.
const PAGE_SIZE: i64 = 16 * 1024;

/// The key rollout ids are authenticated with: created once, then kept in `meta`.
pub(super) fn load_rollout_key(conn: &Connection, path: &Path) -> Result<[u8; 32], StoreError> {
    let fresh: [u8; 32] = rand::random();
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('rollout_key', ?1)",
        [hex(&fresh)],
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

/// Opens a connection with the store's settings and brings the schema up to date. Called
/// with the lock held ([`take_lock`], which also created the directory).
pub(super) fn connect(path: &Path) -> Result<Connection, StoreError> {
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

pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
