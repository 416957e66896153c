//! Reading the stored state back at start-up: one pass per table, not per session.

use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::codec::{decode_messages, parse_time};
use super::err;
use crate::gepa::store::{CandidateRecord, RewardRecord, RolloutRecord, SessionRecord, StoreError};
use crate::gepa::events::{Event, MAX_EVENTS_IN_MEMORY};
use crate::gepa::status::{ArchiveReason, CandidateStatus};
use crate::gepa::{GepaSettings, Reward, Status};

pub(super) fn read_reward(
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
pub(super) fn reward_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Reward> {
    Ok(Reward {
        outcome: r.get(first)?,
        seed: r
            .get::<_, Option<String>>(first + 1)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        feedback: r.get(first + 2)?,
    })
}

pub(super) fn read_sessions(conn: &Connection, p: &Path) -> Result<Vec<SessionRecord>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT id, seq, job_id, status, created_at, updated_at, settings, metadata, \
             pinned_candidate_id FROM sessions ORDER BY seq",
        )
        .map_err(|e| err(p, "reading sessions", e))?;
    let mut rows = stmt.query([]).map_err(|e| err(p, "reading sessions", e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| err(p, "reading a session", e))? {
        let field = |e| err(p, "reading a session", e);
        let status: String = r.get(3).map_err(field)?;
        let settings: String = r.get(6).map_err(field)?;
        out.push(SessionRecord {
            id: r.get(0).map_err(field)?,
            seq: u64::try_from(r.get::<_, i64>(1).map_err(field)?).unwrap_or_default(),
            job_id: r.get(2).map_err(field)?,
            status: Status::parse(&status).ok_or_else(|| err(p, "decoding a status", &status))?,
            created_at: parse_time(&r.get::<_, String>(4).map_err(field)?),
            updated_at: parse_time(&r.get::<_, String>(5).map_err(field)?),
            settings: serde_json::from_str::<GepaSettings>(&settings)
                .map_err(|e| err(p, "decoding session settings", e))?,
            metadata: r
                .get::<_, Option<String>>(7)
                .map_err(field)?
                .and_then(|m| serde_json::from_str(&m).ok()),
            pinned_candidate_id: r.get(8).map_err(field)?,
            events: vec![],
            candidates: vec![],
            rollouts: vec![],
            rewards: vec![],
        });
    }
    Ok(out)
}

pub(super) fn read_candidates(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    counts: &[HashMap<String, CandidateCounts>],
    sessions: &mut [SessionRecord],
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT session_id, id, instruction, parent_ids, archived, created_at, \
             archived_reason, pending FROM candidates ORDER BY session_id, ord",
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
        let counts = counts[i].get(&id).copied().unwrap_or_default();
        sessions[i].candidates.push(CandidateRecord {
            issued: counts.issued,
            calls_failed: counts.calls_failed,
            archived_reason: r
                .get::<_, Option<String>>(6)
                .map_err(field)?
                .and_then(|reason| ArchiveReason::parse(&reason)),
            id: id.into(),
            instruction: r.get::<_, String>(2).map_err(field)?.into(),
            parent_ids: serde_json::from_str(&r.get::<_, String>(3).map_err(field)?)
                .unwrap_or_default(),
            status: candidate_status(
                r.get::<_, i64>(4).map_err(field)? != 0,
                r.get::<_, i64>(7).map_err(field)? != 0,
            ),
            created_at: parse_time(&r.get::<_, String>(5).map_err(field)?),
        });
    }
    Ok(())
}

/// What a session's rollout records say of each of its candidates.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CandidateCounts {
    /// Rollouts it served.
    pub issued: u64,
    /// Their failed calls.
    pub calls_failed: u64,
}

/// The newest `keep` rollouts of each session, in the order their records were last
/// written (a rollout written again by a later call of its conversation moves to the end:
/// the order of last activity), and what the records count of each candidate (per
/// session, by candidate id): one backward scan of the table in insertion order (no
/// sort, no index).
pub(super) fn read_rollouts(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    keep: usize,
    sessions: &mut [SessionRecord],
) -> Result<Vec<HashMap<String, CandidateCounts>>, StoreError> {
    let mut counts: Vec<HashMap<String, CandidateCounts>> = vec![HashMap::new(); sessions.len()];
    let session_ids: Vec<Arc<str>> = sessions.iter().map(|s| s.id.as_str().into()).collect();
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
        let calls_failed: u64 = r.get(6).map_err(field)?;
        let entry = match counts[i].get_mut(candidate) {
            Some(entry) => entry,
            None => counts[i].entry(candidate.to_string()).or_default(),
        };
        entry.issued += 1;
        entry.calls_failed += calls_failed;
        if sessions[i].rollouts.len() >= keep {
            continue;
        }
        sessions[i].rollouts.push(RolloutRecord {
            session_id: session_ids[i].clone(),
            id: r.get::<_, String>(1).map_err(field)?.into(),
            candidate_id: r.get::<_, String>(2).map_err(field)?.into(),
            correlation_id: r.get(3).map_err(field)?,
            created_at: parse_time(&r.get::<_, String>(4).map_err(field)?),
            calls_ok: r.get(5).map_err(field)?,
            calls_failed: r.get(6).map_err(field)?,
            input: decode_messages(&r.get::<_, String>(7).map_err(field)?).into(),
            output: r.get(8).map_err(field)?,
        });
    }
    for s in sessions.iter_mut() {
        s.rollouts.reverse();
    }
    Ok(counts)
}

pub(super) fn read_rewards(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    sessions: &mut [SessionRecord],
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
        sessions[i].rewards.push(RewardRecord {
            rollout_id: r.get(1).map_err(field)?,
            candidate_id: r.get(2).map_err(field)?,
            reward: reward_at(r, 3).map_err(field)?,
        });
    }
    Ok(())
}

/// A candidate's status from its `archived` and `pending` flags.
fn candidate_status(archived: bool, pending: bool) -> CandidateStatus {
    if archived {
        CandidateStatus::Archived
    } else if pending {
        CandidateStatus::Pending
    } else {
        CandidateStatus::Active
    }
}

/// The newest [`MAX_EVENTS_IN_MEMORY`] events of each session, in order.
pub(super) fn read_events(
    conn: &Connection,
    p: &Path,
    index: &HashMap<String, usize>,
    sessions: &mut [SessionRecord],
) -> Result<(), StoreError> {
    let what = "reading events";
    let mut stmt = conn
        .prepare(
            "SELECT session_id, seq, at, type, detail FROM (SELECT *, ROW_NUMBER() OVER \
             (PARTITION BY session_id ORDER BY seq DESC) AS age FROM events) \
             WHERE age <= ?1 ORDER BY session_id, seq",
        )
        .map_err(|e| err(p, what, e))?;
    let keep = i64::try_from(MAX_EVENTS_IN_MEMORY).unwrap_or(i64::MAX);
    let mut rows = stmt.query([keep]).map_err(|e| err(p, what, e))?;
    while let Some(r) = rows.next().map_err(|e| err(p, what, e))? {
        let field = |e| err(p, "reading an event", e);
        let sid: String = r.get(0).map_err(field)?;
        let Some(&i) = index.get(&sid) else { continue };
        let detail = match serde_json::from_str(&r.get::<_, String>(4).map_err(field)?) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        sessions[i].events.push(Event {
            seq: u64::try_from(r.get::<_, i64>(1).map_err(field)?).unwrap_or_default(),
            at: parse_time(&r.get::<_, String>(2).map_err(field)?),
            kind: r.get(3).map_err(field)?,
            detail,
        });
    }
    Ok(())
}
