//! Every error a client can see, and the one place that maps it to an HTTP status and an
//! OpenAI-shaped JSON body:
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! Handlers return [`ApiError`]; the HTTP layer calls [`ApiError::status`] and
//! [`ApiError::body`] and never invents a status of its own.

use bytes::Bytes;
use serde_json::json;

use crate::gepa::GepaError;

/// A client-visible failure. The variant decides the HTTP status; `code` is the stable
/// snake_case word documented in docs/api.md; `message` names the field at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400: the request is malformed. `param` is the JSON path of the bad field, if any.
    BadRequest {
        code: &'static str,
        param: Option<String>,
        message: String,
    },
    /// 401: missing or wrong credentials.
    Unauthorized { message: String },
    /// 403: the credentials are valid but do not allow this request.
    Forbidden { message: String },
    /// 404: unknown session, rollout or route.
    NotFound { code: &'static str, message: String },
    /// 405: the path exists but not for this method.
    MethodNotAllowed { allowed: &'static str },
    /// 409: the request conflicts with the current state.
    Conflict { code: &'static str, message: String },
    /// 413: the body is larger than `limits.max_body_bytes`.
    PayloadTooLarge { limit: usize },
    /// 502: the upstream could not be reached or broke the exchange.
    BadGateway { code: &'static str, message: String },
    /// 503: temporarily unable; the client should retry after `retry_after_s`.
    Unavailable { message: String, retry_after_s: u32 },
    /// 504: the upstream did not answer in time.
    GatewayTimeout { message: String },
    /// 500: a bug or an unexpected internal state; the message carries no secrets.
    Internal { message: String },
}

impl ApiError {
    pub fn bad_request(
        code: &'static str,
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::BadRequest {
            code,
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn unknown_session(id: &str) -> Self {
        // The id is echoed only when it looks like one of ours, so a log-injection attempt
        // in the path does not end up in the body.
        let shown = if uuid::Uuid::try_parse(id).is_ok() {
            id
        } else {
            "(malformed id)"
        };
        ApiError::not_found("unknown_session", format!("no session with id {shown}"))
    }

    pub fn route_not_found() -> Self {
        ApiError::not_found("unknown_route", "no such route")
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest { .. } => 400,
            ApiError::Unauthorized { .. } => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotFound { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Conflict { .. } => 409,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::Internal { .. } => 500,
            ApiError::BadGateway { .. } => 502,
            ApiError::Unavailable { .. } => 503,
            ApiError::GatewayTimeout { .. } => 504,
        }
    }

    /// The stable machine-readable cause.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::BadGateway { code, .. } => code,
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "body_too_large",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::GatewayTimeout { .. } => "upstream_timeout",
            ApiError::Internal { .. } => "internal_error",
        }
    }

    /// OpenAI's error `type` family for this status.
    fn error_type(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "authentication_error",
            ApiError::Forbidden { .. } => "permission_error",
            ApiError::Internal { .. }
            | ApiError::BadGateway { .. }
            | ApiError::Unavailable { .. }
            | ApiError::GatewayTimeout { .. } => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest { message, .. }
            | ApiError::Unauthorized { message }
            | ApiError::Forbidden { message }
            | ApiError::NotFound { message, .. }
            | ApiError::Conflict { message, .. }
            | ApiError::BadGateway { message, .. }
            | ApiError::Unavailable { message, .. }
            | ApiError::GatewayTimeout { message }
            | ApiError::Internal { message } => message.clone(),
            ApiError::MethodNotAllowed { allowed } => {
                format!("method not allowed on this path; allowed: {allowed}")
            }
            ApiError::PayloadTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// Extra response headers this error needs (`Allow`, `Retry-After`, `WWW-Authenticate`).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ApiError::MethodNotAllowed { allowed } => vec![("allow", (*allowed).to_string())],
            ApiError::Unavailable { retry_after_s, .. } => {
                vec![("retry-after", retry_after_s.to_string())]
            }
            ApiError::Unauthorized { .. } => vec![("www-authenticate", "Bearer".to_string())],
            _ => vec![],
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Bytes {
        let value = json!({
            "error": {
                "message": self.message(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        });
        Bytes::from(value.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status(), self.code(), self.message())
    }
}

impl std::error::Error for ApiError {}

/// The domain's refusals, in HTTP terms: the one place that decides their status and code.
impl From<GepaError> for ApiError {
    fn from(e: GepaError) -> Self {
        let message = e.to_string();
        match e {
            GepaError::UnknownRollout(_) => ApiError::not_found("unknown_rollout", message),
            GepaError::MissingRollout => {
                ApiError::bad_request("missing_rollout", "rollout_id", message)
            }
            GepaError::RewardConflict => ApiError::conflict("reward_conflict", message),
            GepaError::CandidateMismatch { .. } => {
                ApiError::conflict("candidate_mismatch", message)
            }
            GepaError::RolloutFailed => ApiError::conflict("rollout_failed", message),
            GepaError::SessionFinished(_) | GepaError::RewardsClosed(_) => {
                ApiError::conflict("session_finished", message)
            }
            GepaError::SessionLimit(_) => ApiError::conflict("session_limit", message),
            GepaError::UnknownCandidate => ApiError::not_found("unknown_candidate", message),
            GepaError::CandidateNotPending(_) => {
                ApiError::conflict("candidate_not_pending", message)
            }
            GepaError::LastActiveCandidate => {
                ApiError::conflict("last_active_candidate", message)
            }
            GepaError::InvalidInstruction(_) => {
                ApiError::bad_request("invalid_candidate", "instruction", message)
            }
            GepaError::DuplicateCandidate => ApiError::conflict("duplicate_candidate", message),
            GepaError::CandidatePinned => ApiError::conflict("candidate_pinned", message),
            GepaError::StoreNotOpen | GepaError::Store(_) => ApiError::Unavailable {
                message,
                retry_after_s: 1,
            },
            GepaError::Internal(_) => ApiError::Internal { message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::bad_request(
            "invalid_reward",
            "reward_info.outcome_reward",
            "must be a number",
        );
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(e.status(), 400);
        assert_eq!(v["error"]["code"], "invalid_reward");
        assert_eq!(v["error"]["param"], "reward_info.outcome_reward");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "must be a number");
    }

    #[test]
    fn statuses_and_codes() {
        assert_eq!(ApiError::PayloadTooLarge { limit: 5 }.status(), 413);
        assert_eq!(
            ApiError::PayloadTooLarge { limit: 5 }.code(),
            "body_too_large"
        );
        assert_eq!(ApiError::MethodNotAllowed { allowed: "GET" }.status(), 405);
        assert_eq!(
            ApiError::MethodNotAllowed { allowed: "GET" }.extra_headers(),
            vec![("allow", "GET".to_string())]
        );
        assert_eq!(
            ApiError::GatewayTimeout {
                message: "x".into()
            }
            .status(),
            504
        );
        let v: serde_json::Value = serde_json::from_slice(
            &ApiError::Unauthorized {
                message: "no".into(),
            }
            .body(),
        )
        .unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn unknown_session_does_not_echo_garbage() {
        let e = ApiError::unknown_session("<script>");
        assert!(!e.message().contains("<script>"));
        let id = "50b3f96d-916e-4780-a86c-37d6456e90fc";
        assert!(ApiError::unknown_session(id).message().contains(id));
    }
}
