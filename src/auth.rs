//! Who may call what: admin and reward tokens for the session API, client keys for the
//! proxy when the gateway spends its own upstream key. Tokens are compared in constant
//! time ([`Secret::matches`]) and never logged.

use std::net::IpAddr;

use crate::config::Secret;
use crate::errors::ApiError;
use crate::routes::Route;

/// The credentials a gateway checks, resolved from the config's environment variables.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub admin_tokens: Vec<Secret>,
    pub reward_tokens: Vec<Secret>,
    /// Required on proxy routes when non-empty (the gateway spends its own upstream key).
    pub client_keys: Vec<Secret>,
}

/// The request's `Authorization` header value, as the authorize functions take it.
pub fn authorization(headers: &http::HeaderMap) -> Option<&[u8]> {
    headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
}

/// What an authorized admin-API request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything: an admin token, or a loopback client when no admin token is configured.
    Admin,
    /// A reward-only token: rewards and prompt URLs, but not ending a session.
    RewardOnly,
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(authorization: Option<&[u8]>) -> Option<&[u8]> {
    let value = authorization?;
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn any_matches(secrets: &[Secret], token: Option<&[u8]>) -> bool {
    token.is_some_and(|t| Secret::matches_any(secrets, t))
}

fn is_loopback(ip: Option<IpAddr>) -> bool {
    match ip {
        Some(IpAddr::V4(v4)) => v4.is_loopback(),
        Some(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

impl Credentials {
    /// Admin routes: an admin token; reward and prompt-URL routes also take a reward
    /// token. With no admin token configured, loopback clients are let in.
    pub fn authorize_admin(
        &self,
        route: &Route<'_>,
        authorization: Option<&[u8]>,
        client_ip: Option<IpAddr>,
    ) -> Result<Access, ApiError> {
        let token = bearer_token(authorization);
        if any_matches(&self.admin_tokens, token) {
            return Ok(Access::Admin);
        }
        let reward_scope = matches!(route, Route::Reward(_) | Route::PromptUrls(_));
        if reward_scope && any_matches(&self.reward_tokens, token) {
            return Ok(Access::RewardOnly);
        }
        if self.admin_tokens.is_empty() && is_loopback(client_ip) {
            return Ok(Access::Admin);
        }
        let message = if self.admin_tokens.is_empty() {
            "no admin token is configured: the admin API answers loopback clients only"
        } else if token.is_none() {
            "missing `Authorization: Bearer <token>`"
        } else {
            "the bearer token is not valid for this route"
        };
        Err(ApiError::Unauthorized {
            message: message.into(),
        })
    }

    /// Proxy routes: when client keys are configured, one of them must be presented.
    pub fn authorize_proxy(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        if self.client_keys.is_empty()
            || any_matches(&self.client_keys, bearer_token(authorization))
        {
            return Ok(());
        }
        Err(ApiError::Unauthorized {
            message: "this gateway requires a client key: `Authorization: Bearer <client key>`"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            admin_tokens: vec![Secret::new("adm")],
            reward_tokens: vec![Secret::new("rwd")],
            client_keys: vec![],
        }
    }

    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some(b"Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(Some(b"bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(Some(b"Basic abc")), None);
        assert_eq!(bearer_token(Some(b"Bearer")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn admin_and_reward_scopes() {
        let c = creds();
        let id = "x";
        assert!(c
            .authorize_admin(&Route::Cancel(id), Some(b"Bearer adm"), REMOTE)
            .is_ok());
        assert!(c
            .authorize_admin(&Route::Cancel(id), Some(b"Bearer rwd"), REMOTE)
            .is_err());
        assert!(c
            .authorize_admin(&Route::Reward(id), Some(b"Bearer rwd"), REMOTE)
            .is_ok());
        assert!(c
            .authorize_admin(&Route::PromptUrls(id), Some(b"Bearer rwd"), REMOTE)
            .is_ok());
        assert!(
            c.authorize_admin(&Route::Cancel(id), None, LOCAL).is_err(),
            "token set: loopback needs it too"
        );
        assert_eq!(
            c.authorize_admin(&Route::Cancel(id), Some(b"Bearer nope"), REMOTE)
                .unwrap_err()
                .status(),
            401
        );
    }

    #[test]
    fn no_admin_token_means_loopback_only() {
        let c = Credentials::default();
        assert!(c
            .authorize_admin(&Route::CreateSession, None, LOCAL)
            .is_ok());
        let v6 = Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
        assert!(c.authorize_admin(&Route::CreateSession, None, v6).is_ok());
        assert!(c
            .authorize_admin(&Route::CreateSession, None, REMOTE)
            .is_err());
    }

    #[test]
    fn client_keys() {
        let open = Credentials::default();
        assert!(open.authorize_proxy(None).is_ok());
        let closed = Credentials {
            client_keys: vec![Secret::new("ck")],
            ..Default::default()
        };
        assert!(closed.authorize_proxy(Some(b"Bearer ck")).is_ok());
        assert!(closed.authorize_proxy(Some(b"Bearer sk-other")).is_err());
        assert!(closed.authorize_proxy(None).is_err());
    }
}
