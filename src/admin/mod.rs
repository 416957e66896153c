//! The session API: thin handlers that call into [`crate::gepa`]. Nothing here touches the
//! network; the HTTP layer passes a route, a query string and a body, and gets a JSON body
//! or an [`ApiError`] back.
//!
//! - [`requests`]: request bodies validated into the domain's requests;
//! - [`views`]: response bodies built from the domain's snapshots.

mod candidates;
mod params;
use candidates::{candidate_json, create_candidate, list_candidates, list_events};
use params::{page_params, query_pairs};
pub mod requests;
pub mod views;

use bytes::Bytes;
use std::sync::Arc;

use crate::auth::Access;
use crate::config::GepaDefaults;
use crate::errors::ApiError;
use crate::gepa::{Session, Sessions, Transition};
use crate::routes::{is_valid_correlation_id, PublicUrls, Route};
use requests::{parse_create, parse_reward, warning};
use views::{
    to_json, DeletedView,
    CreatedView, PromptUrlsView, RewardView, SessionDetailView, SessionPageView, SessionView,
};


/// Serves the admin routes of [`Route`].
pub struct AdminApi {
    pub sessions: Arc<Sessions>,
    pub urls: PublicUrls,
    pub defaults: GepaDefaults,
    pub default_proposer_model: String,
}

impl AdminApi {
    /// Handles one admin route. `Ok` is always a 200 with this JSON body.
    pub async fn handle(
        &self,
        route: &Route<'_>,
        query: &str,
        body: &[u8],
        access: Access,
    ) -> Result<Bytes, ApiError> {
        match route {
            Route::CreateSession => self.create(body),
            Route::ListSessions => self.list(query),
            Route::GetSession(id) => {
                let detail = self.session(id)?.detail();
                to_json(&SessionDetailView::new(&detail, &self.urls))
            }
            Route::DeleteSession(id) => {
                if !self.sessions.delete(id)? {
                    return Err(ApiError::unknown_session(id));
                }
                to_json(&DeletedView {
                    session_id: id,
                    deleted: true,
                })
            }
            Route::Pause(id) => self.transition(id, Transition::Pause),
            Route::Resume(id) => self.transition(id, Transition::Resume),
            Route::Cancel(id) => self.transition(id, Transition::Cancel),
            Route::Reward(id) => {
                let session = self.session(id)?;
                let req = parse_reward(body)?;
                if req.stop && access != Access::Admin {
                    // Ending a session is an operator's decision (contract: 403, and the
                    // reward in the same request is not recorded either).
                    return Err(ApiError::Forbidden {
                        message: "`stop` ends the session and needs the admin token; the \
                                  reward-only token may only report rewards"
                            .into(),
                    });
                }
                to_json(&RewardView::new(&session.reward(req).await?))
            }
            Route::PromptUrls(id) => self.prompt_urls(id, query),
            Route::ListCandidates(id) => list_candidates(&*self.session(id)?, query),
            Route::CreateCandidate(id) => create_candidate(&*self.session(id)?, body),
            Route::GetCandidate(id, cid) => candidate_json(&self.session(id)?.candidate(cid)?),
            Route::ApproveCandidate(id, cid) => candidate_json(&self.session(id)?.approve(cid)?),
            Route::PinCandidate(id, cid) => {
                let session = self.session(id)?;
                session.pin(cid)?;
                to_json(&SessionView::new(&session.summary(), &self.urls))
            }
            Route::Events(id) => list_events(&*self.session(id)?, query),
            Route::Unpin(id) => {
                let session = self.session(id)?;
                session.unpin()?;
                to_json(&SessionView::new(&session.summary(), &self.urls))
            }
            Route::ArchiveCandidate(id, cid) => {
                candidate_json(&self.session(id)?.archive_by_operator(cid)?)
            }
            _ => Err(ApiError::route_not_found()),
        }
    }

    fn session(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        self.sessions
            .get(id)
            .ok_or_else(|| ApiError::unknown_session(id))
    }

    fn create(&self, body: &[u8]) -> Result<Bytes, ApiError> {
        let (new, mut warnings) = parse_create(body, &self.defaults, &self.default_proposer_model)?;
        if let Some(reason) = &self.sessions.env().optimizer.disabled_reason {
            warnings.push(warning(
                "proposer_disabled",
                format!("the reflective proposer is disabled ({reason}); traffic and rewards work"),
            ));
        }
        let summary = self.sessions.create(new)?.summary();
        to_json(&CreatedView {
            session: SessionView::new(&summary, &self.urls),
            warnings,
        })
    }

    fn list(&self, query: &str) -> Result<Bytes, ApiError> {
        let (limit, cursor) = page_params(query)?;
        let page = self.sessions.list(limit, cursor);
        let summaries: Vec<_> = page.items.iter().map(|s| s.summary()).collect();
        to_json(&SessionPageView {
            items: summaries
                .iter()
                .map(|s| SessionView::new(s, &self.urls))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    fn transition(&self, id: &str, t: Transition) -> Result<Bytes, ApiError> {
        let session = self.session(id)?;
        session.transition(t)?;
        to_json(&SessionView::new(&session.summary(), &self.urls))
    }

    fn prompt_urls(&self, id: &str, query: &str) -> Result<Bytes, ApiError> {
        let session = self.session(id)?;
        let corr = query_pairs(query)
            .find(|(k, _)| *k == "correlation_id")
            .map(|(_, v)| v);
        if let Some(c) = corr {
            if !is_valid_correlation_id(c) {
                return Err(ApiError::bad_request(
                    "invalid_correlation_id",
                    "correlation_id",
                    "`correlation_id` must be 1 to 128 characters of [A-Za-z0-9._:-] and not `v1`",
                ));
            }
        }
        to_json(&PromptUrlsView {
            session_id: &session.id,
            correlation_id: corr,
            proxy_url: self.urls.proxy_url(&session.id, corr),
            chat_completions_url: self.urls.chat_completions_url(&session.id, corr),
        })
    }
}
