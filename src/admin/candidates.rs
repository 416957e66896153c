//! The operator routes of the session API: candidates (list, read, add, approve,
//! archive) and the session's events.

use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;

use super::params::{page_params, query_pairs};
use super::views::{to_json, CandidatePageView, CandidateView, EventPageView, EventView};
use crate::errors::ApiError;
use crate::gepa::candidate::Candidate;
use crate::gepa::status::CandidateStatus;
use crate::gepa::Session;

/// `GET /sessions/{id}/candidates?status=&limit=&cursor=`, in creation order.
pub(super) fn list_candidates(session: &Session, query: &str) -> Result<Bytes, ApiError> {
        let (limit, cursor) = page_params(query)?;
        let status = match query_pairs(query).find(|(k, _)| *k == "status") {
            None | Some((_, "")) => None,
            Some((_, v)) => Some(CandidateStatus::parse(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    "status",
                    "`status` must be active, pending or archived",
                )
            })?),
        };
        let cursor = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let (items, next) = session.candidates_page(status, limit, cursor);
        to_json(&CandidatePageView {
            items: items.iter().map(|c| CandidateView::new(c)).collect(),
            next_cursor: next.map(|n| n.to_string()),
        })
}

/// `POST /sessions/{id}/candidates {"instruction": "..."}`: a hand-written candidate.
pub(super) fn create_candidate(session: &Session, body: &[u8]) -> Result<Bytes, ApiError> {
    let instruction = parse_new_candidate(body)?;
    candidate_json(&session.add_candidate(&instruction)?)
}

/// `GET /sessions/{id}/events?since_seq=&limit=`: the events after `since_seq` (0: from the
/// oldest kept).
pub(super) fn list_events(session: &Session, query: &str) -> Result<Bytes, ApiError> {
    let (limit, _) = page_params(query)?;
    let since_seq = match query_pairs(query).find(|(k, _)| *k == "since_seq") {
        None | Some((_, "")) => 0,
        Some((_, v)) => v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_parameter",
                "since_seq",
                "`since_seq` must be a non-negative integer (a `next_since_seq`)",
            )
        })?,
    };
    let (events, next_since_seq) = session.events(since_seq, limit);
    to_json(&EventPageView {
        items: events.iter().map(EventView::new).collect(),
        next_since_seq,
    })
}

/// One candidate, as every candidate route answers.
pub(super) fn candidate_json(candidate: &Arc<Candidate>) -> Result<Bytes, ApiError> {
    to_json(&CandidateView::new(candidate))
}

#[derive(Deserialize)]
struct NewCandidate {
    instruction: Option<serde_json::Value>,
}

/// The instruction of a hand-written candidate's body.
fn parse_new_candidate(body: &[u8]) -> Result<String, ApiError> {
    let invalid = |message: &str| ApiError::bad_request("invalid_candidate", "instruction", message);
    let parsed: NewCandidate = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value(v).map_err(|_| invalid("`instruction` must be a string"))?
        }
        Ok(_) => {
            return Err(ApiError::BadRequest {
                code: "invalid_body",
                param: None,
                message: "the request body must be a JSON object".into(),
            })
        }
        Err(e) => {
            return Err(ApiError::BadRequest {
                code: "invalid_json",
                param: None,
                message: format!("the request body is not valid JSON: {e}"),
            })
        }
    };
    match parsed.instruction {
        Some(serde_json::Value::String(s)) => Ok(s),
        None | Some(serde_json::Value::Null) => Err(invalid("`instruction` is required")),
        Some(_) => Err(invalid("`instruction` must be a string")),
    }
}
