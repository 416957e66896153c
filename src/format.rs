//! Small text formats shared by every layer: RFC 3339 times and hex.

use time::OffsetDateTime;

/// RFC 3339 in UTC, as every time in the API, the store and the access log.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Lower-case hex of `bytes` (rollout ids, and how the store keeps their key).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(&mut out, bytes);
    out
}

/// Appends the lower-case hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// The 32 bytes that 64 hex digits spell, or `None` for anything else.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte_at_any_length() {
        let bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        for len in [0, 1, 8, 16, 31, 32, 33, 64, 65, 512] {
            let expected: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex(&bytes[..len]), expected, "{len} bytes");
        }
    }

    #[test]
    fn unhex32_reads_back_what_hex_writes_and_nothing_else() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex32(&hex(&key)), Some(key));
        assert_eq!(unhex32(&hex(&key[..31])), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }
}
