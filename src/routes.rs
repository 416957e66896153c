//! The route table: one function from (method, path) to a [`Route`].
//!
//! Everything the gateway serves on its main listener is named here. Paths are matched on
//! their raw bytes (no percent-decoding): session ids are UUIDs and correlation ids are a
//! restricted ASCII set, so there is nothing to decode, and an encoded path is simply
//! unknown.

use http::Method;

const SESSIONS_PREFIX: &str = "/api/prompt-learning/online/gepa/sessions";
const PROXY_PREFIX: &str = "/api/gepa/v1/";

/// The longest correlation id accepted (contract: 1 to 128 characters).
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// What a request asks for. Borrowed ids point into the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Ready,
    CreateSession,
    ListSessions,
    GetSession(&'a str),
    DeleteSession(&'a str),
    Pause(&'a str),
    Resume(&'a str),
    Cancel(&'a str),
    Reward(&'a str),
    PromptUrls(&'a str),
    ListCandidates(&'a str),
    CreateCandidate(&'a str),
    GetCandidate(&'a str, &'a str),
    ApproveCandidate(&'a str, &'a str),
    ArchiveCandidate(&'a str, &'a str),
    PinCandidate(&'a str, &'a str),
    Unpin(&'a str),
    Events(&'a str),
    Proxy {
        session_id: &'a str,
        correlation_id: Option<&'a str>,
    },
    /// Known path, wrong method; `allowed` is the `Allow` header value.
    MethodNotAllowed {
        allowed: &'static str,
    },
    NotFound,
}

impl Route<'_> {
    /// A short stable name for logs and metrics (never contains ids).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::CreateSession => "create_session",
            Route::ListSessions => "list_sessions",
            Route::GetSession(_) => "get_session",
            Route::DeleteSession(_) => "delete_session",
            Route::Pause(_) => "pause",
            Route::Resume(_) => "resume",
            Route::Cancel(_) => "cancel",
            Route::Reward(_) => "reward",
            Route::PromptUrls(_) => "prompt",
            Route::ListCandidates(_) => "list_candidates",
            Route::CreateCandidate(_) => "create_candidate",
            Route::GetCandidate(..) => "get_candidate",
            Route::ApproveCandidate(..) => "approve_candidate",
            Route::ArchiveCandidate(..) => "archive_candidate",
            Route::PinCandidate(..) => "pin_candidate",
            Route::Unpin(_) => "unpin",
            Route::Events(_) => "events",
            Route::Proxy { .. } => "proxy",
            Route::MethodNotAllowed { .. } => "method_not_allowed",
            Route::NotFound => "not_found",
        }
    }

    /// The session a session-API route names.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Route::GetSession(id)
            | Route::DeleteSession(id)
            | Route::Pause(id)
            | Route::Resume(id)
            | Route::Cancel(id)
            | Route::Reward(id)
            | Route::PromptUrls(id)
            | Route::ListCandidates(id)
            | Route::CreateCandidate(id)
            | Route::GetCandidate(id, _)
            | Route::ApproveCandidate(id, _)
            | Route::ArchiveCandidate(id, _)
            | Route::PinCandidate(id, _)
            | Route::Unpin(id)
            | Route::Events(id) => Some(id),
            _ => None,
        }
    }

    /// Routes of the admin API (they need admin or reward credentials).
    pub fn is_admin(&self) -> bool {
        !matches!(
            self,
            Route::Health
                | Route::Ready
                | Route::Proxy { .. }
                | Route::MethodNotAllowed { .. }
                | Route::NotFound
        )
    }
}

/// Builds the URLs the API hands out (`proxy_url`, `chat_completions_url`) from
/// `gateway.public_url` and the proxy route above, so the two cannot disagree.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    base: String,
}

impl PublicUrls {
    pub fn new(public_url: &str) -> Self {
        PublicUrls {
            base: public_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn proxy_url(&self, session_id: &str, correlation_id: Option<&str>) -> String {
        match correlation_id {
            Some(c) => format!("{}{PROXY_PREFIX}{session_id}/{c}", self.base),
            None => format!("{}{PROXY_PREFIX}{session_id}", self.base),
        }
    }

    pub fn chat_completions_url(&self, session_id: &str, correlation_id: Option<&str>) -> String {
        format!(
            "{}/chat/completions",
            self.proxy_url(session_id, correlation_id)
        )
    }
}

/// Whether `path` is under one of GEPA's prefixes (the session API, the proxy): the paths
/// a proxy that embeds GEPA hands to it. Every other path is the host's.
pub fn is_gepa_path(path: &str) -> bool {
    path.starts_with(SESSIONS_PREFIX) || path.starts_with(PROXY_PREFIX)
}

/// Is `s` a valid correlation id: 1..=128 of `[A-Za-z0-9._:-]`, and not the literal `v1`.
pub fn is_valid_correlation_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CORRELATION_ID_LEN
        && s != "v1"
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Maps a request to its route. `path` excludes the query string.
pub fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let (route, allowed) = match_path(path);
    match route {
        None => Route::NotFound,
        Some(_) if !allowed.split(", ").any(|m| m == method.as_str()) => {
            Route::MethodNotAllowed { allowed }
        }
        // One path, two routes: the sessions collection, and a session's candidates.
        Some(Route::CreateSession) if method == Method::GET => Route::ListSessions,
        Some(Route::CreateCandidate(id)) if method == Method::GET => Route::ListCandidates(id),
        Some(Route::GetSession(id)) if method == Method::DELETE => Route::DeleteSession(id),
        Some(r) => r,
    }
}

/// Returns the route a path names and the methods it accepts.
fn match_path(path: &str) -> (Option<Route<'_>>, &'static str) {
    match path {
        "/healthz" => return (Some(Route::Health), "GET"),
        "/readyz" => return (Some(Route::Ready), "GET"),
        SESSIONS_PREFIX => return (Some(Route::CreateSession), "GET, POST"),
        _ => {}
    }
    if let Some(rest) = path
        .strip_prefix(SESSIONS_PREFIX)
        .and_then(|r| r.strip_prefix('/'))
    {
        return match_session_path(rest);
    }
    if let Some(rest) = path.strip_prefix(PROXY_PREFIX) {
        return (match_proxy_path(rest), "POST");
    }
    (None, "")
}

/// `{id}`, `{id}/{action}`, or `{id}/candidates[/{cid}[/{action}]]` under the sessions
/// prefix.
fn match_session_path(rest: &str) -> (Option<Route<'_>>, &'static str) {
    let mut parts = rest.split('/');
    let id = parts.next().unwrap_or("");
    let action = parts.next();
    if id.is_empty() {
        return (None, "");
    }
    if action == Some("candidates") {
        return match_candidate_path(id, parts);
    }
    if parts.next().is_some() {
        return (None, "");
    }
    match action {
        None => (Some(Route::GetSession(id)), "GET, DELETE"),
        Some("pause") => (Some(Route::Pause(id)), "POST"),
        Some("resume") => (Some(Route::Resume(id)), "POST"),
        Some("cancel") => (Some(Route::Cancel(id)), "POST"),
        Some("reward") => (Some(Route::Reward(id)), "POST"),
        Some("prompt") => (Some(Route::PromptUrls(id)), "GET"),
        Some("unpin") => (Some(Route::Unpin(id)), "POST"),
        Some("events") => (Some(Route::Events(id)), "GET"),
        Some(_) => (None, ""),
    }
}

/// What follows `{id}/candidates`: nothing (list, create), `/{cid}`, or `/{cid}/{action}`.
fn match_candidate_path<'a>(
    id: &'a str,
    mut parts: impl Iterator<Item = &'a str>,
) -> (Option<Route<'a>>, &'static str) {
    let (cid, action, extra) = (parts.next(), parts.next(), parts.next());
    match (cid, action, extra) {
        (None, _, _) => (Some(Route::CreateCandidate(id)), "GET, POST"),
        (Some(""), _, _) | (_, _, Some(_)) => (None, ""),
        (Some(cid), None, _) => (Some(Route::GetCandidate(id, cid)), "GET"),
        (Some(cid), Some("approve"), _) => (Some(Route::ApproveCandidate(id, cid)), "POST"),
        (Some(cid), Some("archive"), _) => (Some(Route::ArchiveCandidate(id, cid)), "POST"),
        (Some(cid), Some("pin"), _) => (Some(Route::PinCandidate(id, cid)), "POST"),
        _ => (None, ""),
    }
}

/// `{id}[/{correlation_id}][/v1]/chat/completions` under the proxy prefix.
fn match_proxy_path(rest: &str) -> Option<Route<'_>> {
    // At most five segments; split into a fixed array, as this runs on every call.
    let mut parts = [""; 5];
    let mut count = 0;
    for part in rest.split('/') {
        *parts.get_mut(count)? = part;
        count += 1;
    }
    let (session_id, correlation_id) = match &parts[..count] {
        [id, "chat", "completions"] | [id, "v1", "chat", "completions"] => (*id, None),
        [id, corr, "chat", "completions"] | [id, corr, "v1", "chat", "completions"] => {
            (*id, Some(*corr))
        }
        _ => return None,
    };
    if session_id.is_empty() {
        return None;
    }
    if let Some(c) = correlation_id {
        if !is_valid_correlation_id(c) {
            return None;
        }
    }
    Some(Route::Proxy {
        session_id,
        correlation_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "50b3f96d-916e-4780-a86c-37d6456e90fc";

    fn post(p: &str) -> Route<'_> {
        route(&Method::POST, p)
    }

    fn get(p: &str) -> Route<'_> {
        route(&Method::GET, p)
    }

    #[test]
    fn proxy_forms() {
        let plain = format!("/api/gepa/v1/{ID}/chat/completions");
        assert_eq!(
            post(&plain),
            Route::Proxy {
                session_id: ID,
                correlation_id: None
            }
        );
        let v1 = format!("/api/gepa/v1/{ID}/v1/chat/completions");
        assert_eq!(
            post(&v1),
            Route::Proxy {
                session_id: ID,
                correlation_id: None
            }
        );
        let corr = format!("/api/gepa/v1/{ID}/conv-1:a.b_c/chat/completions");
        assert_eq!(
            post(&corr),
            Route::Proxy {
                session_id: ID,
                correlation_id: Some("conv-1:a.b_c")
            }
        );
        let corr_v1 = format!("/api/gepa/v1/{ID}/c9/v1/chat/completions");
        assert_eq!(
            post(&corr_v1),
            Route::Proxy {
                session_id: ID,
                correlation_id: Some("c9")
            }
        );
    }

    #[test]
    fn proxy_paths_with_extra_segments_are_404() {
        for tail in [
            "c/v1/chat/completions/x",
            "c/v1/chat/completions/x/y",
            "c/d/v1/chat/completions",
            "chat/completions/",
        ] {
            assert_eq!(
                post(&format!("/api/gepa/v1/{ID}/{tail}")),
                Route::NotFound,
                "{tail}"
            );
        }
    }

    #[test]
    fn bad_correlation_ids_are_404() {
        for c in ["bad%20id", "a b", "é", "a/b", "v1"] {
            let p = format!("/api/gepa/v1/{ID}/{c}/x/chat/completions");
            assert_eq!(post(&p), Route::NotFound, "{c}");
        }
        let long = "a".repeat(129);
        assert_eq!(
            post(&format!("/api/gepa/v1/{ID}/{long}/chat/completions")),
            Route::NotFound
        );
        let ok = "a".repeat(128);
        assert!(matches!(
            post(&format!("/api/gepa/v1/{ID}/{ok}/chat/completions")),
            Route::Proxy { .. }
        ));
        assert_eq!(
            post(&format!("/api/gepa/v1/{ID}/bad id/chat/completions")),
            Route::NotFound
        );
        assert_eq!(
            post(&format!("/api/gepa/v1/{ID}/a*b/chat/completions")),
            Route::NotFound
        );
    }

    #[test]
    fn v1_literal_is_not_a_correlation_id() {
        // "/{id}/v1/chat/completions" is the /v1 form, never correlation "v1".
        let p = format!("/api/gepa/v1/{ID}/v1/chat/completions");
        assert_eq!(
            post(&p),
            Route::Proxy {
                session_id: ID,
                correlation_id: None
            }
        );
        assert!(!is_valid_correlation_id("v1"));
        assert!(is_valid_correlation_id("V1"));
    }

    #[test]
    fn proxy_unknown_shapes_are_404() {
        for p in [
            "/api/gepa/v1/",
            "/api/gepa/v1//chat/completions",
            &format!("/api/gepa/v1/{ID}"),
            &format!("/api/gepa/v1/{ID}/completions"),
            &format!("/api/gepa/v1/{ID}/chat/completions/"),
            &format!("/api/gepa/v1/{ID}/a/b/chat/completions"),
            &format!("/api/gepa/v1/{ID}/embeddings"),
        ] {
            assert_eq!(post(p), Route::NotFound, "{p}");
        }
    }

    #[test]
    fn wrong_method_is_405() {
        let p = format!("/api/gepa/v1/{ID}/chat/completions");
        assert_eq!(get(&p), Route::MethodNotAllowed { allowed: "POST" });
        assert_eq!(post("/healthz"), Route::MethodNotAllowed { allowed: "GET" });
        let s = format!("{SESSIONS_PREFIX}/{ID}/pause");
        assert_eq!(get(&s), Route::MethodNotAllowed { allowed: "POST" });
        assert_eq!(
            route(&Method::DELETE, SESSIONS_PREFIX),
            Route::MethodNotAllowed {
                allowed: "GET, POST"
            }
        );
    }

    #[test]
    fn admin_routes() {
        assert_eq!(post(SESSIONS_PREFIX), Route::CreateSession);
        assert_eq!(get(SESSIONS_PREFIX), Route::ListSessions);
        assert_eq!(
            get(&format!("{SESSIONS_PREFIX}/{ID}")),
            Route::GetSession(ID)
        );
        assert_eq!(
            post(&format!("{SESSIONS_PREFIX}/{ID}/pause")),
            Route::Pause(ID)
        );
        assert_eq!(
            post(&format!("{SESSIONS_PREFIX}/{ID}/resume")),
            Route::Resume(ID)
        );
        assert_eq!(
            post(&format!("{SESSIONS_PREFIX}/{ID}/cancel")),
            Route::Cancel(ID)
        );
        assert_eq!(
            post(&format!("{SESSIONS_PREFIX}/{ID}/reward")),
            Route::Reward(ID)
        );
        assert_eq!(
            get(&format!("{SESSIONS_PREFIX}/{ID}/prompt")),
            Route::PromptUrls(ID)
        );
        assert_eq!(
            get(&format!("{SESSIONS_PREFIX}/{ID}/other")),
            Route::NotFound
        );
        assert_eq!(
            get(&format!("{SESSIONS_PREFIX}/{ID}/pause/x")),
            Route::NotFound
        );
        assert_eq!(get(&format!("{SESSIONS_PREFIX}/")), Route::NotFound);
        assert_eq!(get("/"), Route::NotFound);
        assert_eq!(get("/metrics"), Route::NotFound);
        assert_eq!(get("/healthz"), Route::Health);
        assert_eq!(get("/readyz"), Route::Ready);
    }
}
