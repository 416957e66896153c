//! How values are kept as SQL text: strings, times, candidates and captured messages.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use time::OffsetDateTime;

use crate::format::rfc3339;
use crate::gepa::status::CandidateStatus;
use crate::gepa::store::CandidateRecord;
use crate::json_object::JsonObject;
use crate::rewrite::CapturedMessage;

pub(super) fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_string())
}

pub(super) fn opt_text(s: Option<&str>) -> SqlValue {
    s.map_or(SqlValue::Null, text)
}

/// Appends a candidate (its order is the next in the session).
pub(super) fn insert_candidate(
    session_id: &str,
    c: &CandidateRecord,
) -> (&'static str, Vec<SqlValue>) {
    let parents = serde_json::to_string(&c.parent_ids).unwrap_or_else(|_| "[]".into());
    (
        "INSERT OR IGNORE INTO candidates (session_id, id, ord, instruction, parent_ids, created_at, \
         pending) \
         VALUES (?1, ?2, (SELECT COALESCE(MAX(ord), -1) + 1 FROM candidates WHERE session_id = ?1), \
         ?3, ?4, ?5, ?6)",
        vec![
            text(session_id),
            text(&c.id),
            text(&c.instruction),
            SqlValue::Text(parents),
            SqlValue::Text(rfc3339(c.created_at)),
            SqlValue::Integer(i64::from(c.status == CandidateStatus::Pending)),
        ],
    )
}

pub(super) fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The captured messages as the JSON array `[{"role":…,"content":…},…]`, byte for byte
/// what `serde_json` writes. Written with [`JsonObject`] (a SIMD string escaper) because
/// this runs once per proxied call on the store's writer thread, where serde_json's
/// byte-at-a-time escaping of the captured text was a quarter of the writer's work
/// (callgrind).
pub(super) fn encode_messages(messages: &[CapturedMessage]) -> String {
    let text: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum();
    let mut out = Vec::with_capacity(2 + text + 24 * messages.len());
    out.push(b'[');
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut object = JsonObject::new(&mut out);
        object.str("role", Some(&m.role));
        object.str("content", Some(&m.content));
        object.end();
    }
    out.push(b']');
    // Escaping keeps UTF-8 valid; the fallback is never taken.
    String::from_utf8(out).unwrap_or_else(|_| "[]".into())
}

pub(super) fn decode_messages(s: &str) -> Vec<CapturedMessage> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(s) else {
        return vec![];
    };
    items
        .iter()
        .map(|m| CapturedMessage {
            role: m["role"].as_str().unwrap_or_default().to_string(),
            content: m["content"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> CapturedMessage {
        CapturedMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn encoded_messages_are_what_serde_json_writes_and_decode_back() {
        let mut texts: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote \" backslash \\ slash / newline \n tab \t cr \r".into(),
            "controls \u{0} \u{1} \u{8} \u{b} \u{c} \u{1f} del \u{7f}".into(),
            "unicode é 漢字 🎉 \u{2028} \u{2029}".into(),
            "x".repeat(5000) + "\"" + &"y\n".repeat(300),
        ];
        // Every byte value below 0x80 at every offset of a 40-byte window, so the SIMD
        // kernel's block boundaries meet each kind of character.
        for c in 0u8..0x80 {
            for at in 0..40 {
                let mut t = "a".repeat(40);
                t.replace_range(at..at + 1, &char::from(c).to_string());
                texts.push(t);
            }
        }
        for (i, t) in texts.iter().enumerate() {
            let tail: String = t.chars().rev().take(7).collect();
            let messages = vec![message("user", t), message("assistant", &tail)];
            let expected = serde_json::to_string(&messages).unwrap();
            assert_eq!(encode_messages(&messages), expected, "text {i}");
            assert_eq!(decode_messages(&expected), messages, "text {i}");
        }
        assert_eq!(encode_messages(&[]), "[]");
    }
}
