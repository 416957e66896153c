//! [`Secret`]: a key or token read from the environment, which never prints.

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret string that never prints: Debug and Display show `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret's value. Only call this where the value is actually needed (e.g. to build an
    /// upstream `Authorization` header); never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (different lengths -> false without comparing bytes).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate))
    }

    /// True when `candidate` equals any secret in `secrets`. Every entry is compared (no early
    /// exit), so timing does not reveal which entry matched.
    pub fn matches_any(secrets: &[Secret], candidate: &[u8]) -> bool {
        let mut hit = subtle::Choice::from(0u8);
        for s in secrets {
            hit |= s.0.as_bytes().ct_eq(candidate);
        }
        bool::from(hit)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
