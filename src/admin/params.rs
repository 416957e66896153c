//! Query parameters of the session API: `key=value` pairs and the paging of lists.

use crate::errors::ApiError;

/// Items per page when `limit` is not given.
const DEFAULT_PAGE: usize = 50;
/// The largest `limit`.
const MAX_PAGE: usize = 500;

/// `a=1&b=2` pairs, undecoded (every value we accept is plain ASCII).
/// `limit` (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]) and `cursor` (a `next_cursor`
/// from the page before) of a paged list.
pub(super) fn page_params(query: &str) -> Result<(usize, Option<u64>), ApiError> {
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    for (k, v) in query_pairs(query) {
        match k {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_parameter",
                            "limit",
                            format!("`limit` must be an integer from 1 to {MAX_PAGE}"),
                        )
                    })?
            }
            "cursor" => {
                cursor = Some(v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        "cursor",
                        "`cursor` must be a value returned as `next_cursor`",
                    )
                })?)
            }
            _ => {}
        }
    }
    Ok((limit, cursor))
}

pub(super) fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}
