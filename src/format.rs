//! Small text formats shared by every layer: RFC 3339 times, hex, and text cut to a byte
//! bound.

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

/// Marks text that was cut to a byte bound.
pub const TRUNCATION_MARKER: &str = "…";

/// `text` cut to at most `max_bytes` bytes on a char boundary, plus [`TRUNCATION_MARKER`]
/// if anything was cut.
pub fn capped(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let end = floor_char_boundary(text, max_bytes);
    let mut out = String::with_capacity(end + TRUNCATION_MARKER.len());
    out.push_str(text.get(..end).unwrap_or(""));
    out.push_str(TRUNCATION_MARKER);
    out
}

/// [`capped`] in place.
pub fn truncate_marked(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        let end = floor_char_boundary(text, max_bytes);
        text.truncate(end);
        text.push_str(TRUNCATION_MARKER);
    }
}

/// Largest char boundary `<= index` (index 0 is always a boundary).
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut end = index.min(text.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    end
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

    fn capped_owned(mut s: String, max: usize) -> String {
        truncate_marked(&mut s, max);
        s
    }

    #[test]
    fn caps_on_char_boundary() {
        assert_eq!(capped_owned("héllo".into(), 2), "h…");
        assert_eq!(capped_owned("abc".into(), 3), "abc");
        assert_eq!(capped_owned("abcd".into(), 0), "…");
    }

    #[test]
    fn capped_and_truncate_marked_agree() {
        for (text, max) in [("héllo", 2), ("abc", 3), ("abcd", 0), ("漢字", 4), ("", 0)] {
            assert_eq!(
                capped(text, max),
                capped_owned(text.into(), max),
                "{text} {max}"
            );
        }
    }
}
