//! Request-body rewriting for OpenAI chat-completions calls.
//!
//! This module owns everything the gateway does to a `/v1/chat/completions`
//! request body before it goes upstream:
//!
//! 1. **validation** — the body must be a JSON object with a `messages` array
//!    whose elements are objects with a string `role`; anything else is
//!    refused with a [`BodyError`] that maps to an HTTP 400;
//! 2. **system-prompt replacement** — the content of the first `system` /
//!    `developer` message is replaced by the optimizer's instruction (or a
//!    system message is inserted when there is none);
//! 3. **capture** — a size-capped copy of the other messages is extracted for
//!    logging and for the prompt optimizer;
//! 4. **stream detection** — whether the top-level `"stream"` is `true`.
//!
//! [`ParsedChatBody::parse`] does the validation (so a bad body is refused
//! before any rollout is assigned) and [`ParsedChatBody::rewrite`] the rest;
//! [`rewrite_chat_body`] does both in one call.
//!
//! # Why bytes are spliced
//!
//! The body is *not* round-tripped through `serde_json::Value`. A round trip
//! would reorder keys, reformat numbers (`1.0e10`, `-0`, integers beyond
//! `u64`), re-escape strings, drop duplicate keys and lose whitespace — and the
//! upstream provider (and anyone comparing request hashes) would see a
//! different request than the client sent. Instead one pass of a hand-written
//! scanner (`scan`) checks the whole body and records the exact byte span of
//! every value we care about, and the output is assembled from three slices:
//! the bytes before the span, the new JSON-encoded instruction, and the bytes
//! after it. Every other byte reaches the upstream unchanged, and the output
//! buffer is allocated once, at its exact final size.
//!
//! # Why a hand-written scanner
//!
//! This runs on every proxied request, before the first upstream byte. The
//! scanner checks UTF-8 once for the whole body (`std::str::from_utf8`), then
//! walks the JSON once with an explicit stack (no recursion, no depth limit),
//! skipping string contents 16 bytes at a time (SSE2 on x86_64); it allocates
//! nothing but the list of messages to capture. It accepts and refuses exactly
//! the bodies the previous serde_json-based parser did, with the same error
//! messages — see `scan` for the details, and `tests/rewrite_differential.rs`
//! for the check against that parser, which the tests keep as
//! `tests/rewrite_oracle`.

mod scan;

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

pub(crate) use scan::completion_content_span;
use scan::InstructionSlot;

pub use crate::format::TRUNCATION_MARKER;
use crate::format::{capped, truncate_marked};

/// Why a body was refused; each maps to HTTP 400 with [`BodyError::code`] and
/// [`BodyError::param`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not valid JSON (message includes serde_json's line/column description,
    /// never body content). Invalid UTF-8 is reported here too.
    InvalidJson(String),
    /// Valid JSON but the top level is not an object.
    NotAnObject,
    /// No `messages` key at the top level.
    MissingMessages,
    /// `messages` is present but not an array, or is given twice.
    MessagesNotArray,
    /// `messages[index]` is not a JSON object, or its `role` is missing or not
    /// a string, or its `role` / `content` key appears more than once
    /// (ambiguous: we could not tell what the upstream will read).
    InvalidMessage {
        /// Position of the offending element in the `messages` array.
        index: usize,
    },
}

impl BodyError {
    /// Machine-readable error code for the OpenAI-style error body.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::InvalidJson(_) => "invalid_json",
            BodyError::NotAnObject => "invalid_body",
            BodyError::MissingMessages => "missing_messages",
            BodyError::MessagesNotArray | BodyError::InvalidMessage { .. } => "invalid_messages",
        }
    }

    /// The offending request parameter, if the error is about one.
    pub fn param(&self) -> Option<String> {
        match self {
            BodyError::InvalidJson(_) | BodyError::NotAnObject => None,
            BodyError::MissingMessages | BodyError::MessagesNotArray => Some("messages".to_owned()),
            BodyError::InvalidMessage { index } => Some(format!("messages[{index}]")),
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::InvalidJson(detail) => {
                write!(f, "request body is not valid JSON: {detail}")
            }
            BodyError::NotAnObject => f.write_str("request body must be a JSON object"),
            BodyError::MissingMessages => f.write_str("`messages` is required"),
            BodyError::MessagesNotArray => {
                f.write_str("`messages` must be an array and must be given exactly once")
            }
            BodyError::InvalidMessage { index } => {
                write!(
                    f,
                    "`messages[{index}]` must be an object with a string `role`"
                )
            }
        }
    }
}

impl std::error::Error for BodyError {}

/// One non-system message kept for the optimizer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CapturedMessage {
    /// The message's `role`, decoded.
    pub role: String,
    /// The message's text, at most `capture_max_bytes` bytes plus
    /// [`TRUNCATION_MARKER`] when it was cut (see [`rewrite_chat_body`]).
    pub content: String,
}

/// Result of [`rewrite_chat_body`] / [`ParsedChatBody::rewrite`].
#[derive(Debug)]
pub struct RewrittenBody {
    /// The new body to send upstream.
    pub body: Bytes,
    /// Top-level `"stream"` is literally `true`.
    pub stream: bool,
    /// Every message whose role is not `"system"`/`"developer"`, in order.
    pub captured: Vec<CapturedMessage>,
}

/// Validates `body`, puts `instruction` in place of the first system/developer
/// message's content (or inserts `{"role":"system","content":instruction}` as
/// the first message), and captures the other messages, each content capped at
/// `capture_max_bytes` bytes.
///
/// Same as [`ParsedChatBody::parse`] followed by [`ParsedChatBody::rewrite`];
/// see there for the exact rules. Never panics, whatever the input.
pub fn rewrite_chat_body(
    body: &[u8],
    instruction: &str,
    capture_max_bytes: usize,
) -> Result<RewrittenBody, BodyError> {
    ParsedChatBody::parse(body).map(|parsed| parsed.rewrite(instruction, capture_max_bytes))
}

/// A validated chat body, ready to take an instruction.
///
/// Parsing and rewriting are split so that the proxy can refuse an invalid
/// body *before* it picks the instruction (assigning a rollout), and splice
/// only afterwards. Borrows the body; holds only offsets and borrowed slices.
///
/// Splicing rules ([`ParsedChatBody::rewrite`]):
/// * the first message (in array order) whose role is `"system"` or
///   `"developer"` gets its `content` value replaced by the JSON-encoded
///   instruction; its role and other fields stay as they are. If it has no
///   `content` key, `"content":<instruction>,` is inserted right after its `{`;
///   a `"content": null` value is replaced like any other value;
/// * later system/developer messages are left untouched (and not captured);
/// * with no system/developer message, `{"role":"system","content":…}` is
///   inserted right after the `[` of `messages`, followed by `,` when the
///   array is not empty.
///
/// Capture rules, per non-system message: a string content is decoded; an
/// array content (multimodal parts) becomes the `text` of its `"type":"text"`
/// parts joined with `"\n"`; a null/absent content becomes the raw JSON of
/// `tool_calls` (or `""` without tool calls); any other value is kept as raw
/// JSON. The result is cut to at most `capture_max_bytes` bytes on a UTF-8
/// character boundary and, if it was cut, [`TRUNCATION_MARKER`] is appended
/// (the marker is not counted against the cap).
///
/// Duplicate keys: a second top-level `messages` is refused
/// ([`BodyError::MessagesNotArray`]); a duplicated `role` or `content` inside a
/// message is refused ([`BodyError::InvalidMessage`]); for a duplicated
/// top-level `stream` the last value wins, like in most JSON parsers.
#[derive(Debug)]
pub struct ParsedChatBody<'a> {
    body: &'a [u8],
    /// Where the instruction goes; `start <= end <= body.len()` by construction.
    splice: Splice,
    stream: bool,
    /// The non-system messages, decoded lazily by `rewrite`.
    pending: Vec<scan::Pending<'a>>,
}

impl<'a> ParsedChatBody<'a> {
    /// Validates `body` and locates where the instruction goes. Never panics,
    /// whatever the input.
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let text = std::str::from_utf8(body).map_err(|e| invalid_utf8(body, e.valid_up_to()))?;
        // Syntax first: a body that is not JSON is refused as such, whatever
        // else is wrong with it.
        let top = match scan::scan(text) {
            Ok(scan::Body::Object(top)) => top,
            Ok(scan::Body::NotAnObject) => return Err(BodyError::NotAnObject),
            Err(e) => return Err(BodyError::InvalidJson(e.describe(body))),
        };
        if top.messages_seen > 1 {
            return Err(BodyError::MessagesNotArray);
        }
        let list = match top.messages {
            None => return Err(BodyError::MissingMessages),
            Some(scan::Messages::NotArray) => return Err(BodyError::MessagesNotArray),
            Some(scan::Messages::Array(list)) => list,
        };
        if let Some(index) = list.invalid {
            return Err(BodyError::InvalidMessage { index });
        }

        let splice = match list.instruction {
            Some(InstructionSlot::Content { start, end }) => Splice::new(body, start, end, "", "")?,
            // The message has at least its `role` key after `at`, hence the comma.
            Some(InstructionSlot::Insert { at }) => Splice::new(body, at, at, "\"content\":", ",")?,
            None => {
                let suffix = if list.len > 0 { "}," } else { "}" };
                let at = list.after_open;
                Splice::new(body, at, at, "{\"role\":\"system\",\"content\":", suffix)?
            }
        };

        Ok(ParsedChatBody {
            body,
            splice,
            stream: top.stream,
            pending: list.pending,
        })
    }

    /// Top-level `"stream"` is literally `true`.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The body with `instruction` spliced in, plus the captured non-system
    /// messages, each content capped at `capture_max_bytes` bytes.
    pub fn rewrite(&self, instruction: &str, capture_max_bytes: usize) -> RewrittenBody {
        // Roles first, then contents: the allocator gets the small role
        // strings and the larger contents as two runs rather than
        // interleaved, which it frees and reuses measurably faster (a few
        // percent of the whole rewrite on the 100 KB bench body, glibc malloc).
        let mut captured: Vec<CapturedMessage> = self
            .pending
            .iter()
            .map(|message| CapturedMessage {
                role: message.role.clone().into_owned(),
                content: String::new(),
            })
            .collect();
        for (out, message) in captured.iter_mut().zip(&self.pending) {
            out.content = capture_content(message, capture_max_bytes);
        }
        RewrittenBody {
            body: self.splice.apply(self.body, instruction),
            stream: self.stream,
            captured,
        }
    }
}

// ---------------------------------------------------------------------------
// Splicing
// ---------------------------------------------------------------------------

/// Replace `body[start..end]` with `prefix + json(instruction) + suffix`.
#[derive(Debug, Clone, Copy)]
struct Splice {
    start: usize,
    end: usize,
    prefix: &'static str,
    suffix: &'static str,
}

impl Splice {
    /// A splice of `body[start..end]`, checked to lie inside `body`.
    fn new(
        body: &[u8],
        start: usize,
        end: usize,
        prefix: &'static str,
        suffix: &'static str,
    ) -> Result<Self, BodyError> {
        if start > end || end > body.len() {
            return Err(internal_span_error());
        }
        Ok(Splice {
            start,
            end,
            prefix,
            suffix,
        })
    }

    /// One allocation of the exact final size. `body` must be the body the
    /// splice was made for (bounds were checked in `new`).
    fn apply(self, body: &[u8], instruction: &str) -> Bytes {
        let before = body.get(..self.start).unwrap_or_default();
        let after = body.get(self.end..).unwrap_or_default();
        let middle = self.prefix.len() + encoded_len(instruction) + self.suffix.len();

        let mut out = Vec::with_capacity(before.len() + middle + after.len());
        out.extend_from_slice(before);
        out.extend_from_slice(self.prefix.as_bytes());
        let at = out.len();
        // Serializing a `str` into a `Vec<u8>` cannot fail: serde_json's only
        // error path for strings is the writer, and writing to a Vec is
        // infallible. Should that ever change, fall back to an empty string
        // rather than emit broken JSON.
        if serde_json::to_writer(&mut out, instruction).is_err() {
            out.truncate(at);
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(self.suffix.as_bytes());
        out.extend_from_slice(after);
        Bytes::from(out)
    }
}

/// Length in bytes of `instruction` once it is spliced into a body: a JSON
/// string literal exactly as serde_json writes it — quotes, two-byte escapes
/// for `"`, `\\` and `\b \f \n \r \t`, `\u00XX` for the other control
/// characters, everything else verbatim.
///
/// The instruction's value takes exactly this many bytes of a rewritten body,
/// and [`ParsedChatBody::rewrite`] sizes its output with it, so that the body
/// is allocated once, at its final size.
pub fn encoded_len(instruction: &str) -> usize {
    let escapes: usize = instruction
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0x00..=0x1f => 5,
            _ => 0,
        })
        .sum();
    instruction.len() + 2 + escapes
}

fn internal_span_error() -> BodyError {
    BodyError::InvalidJson("internal error: value outside of the request body".to_owned())
}

fn invalid_utf8(body: &[u8], valid_up_to: usize) -> BodyError {
    let valid = body.get(..valid_up_to).unwrap_or(body);
    let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
    let line_start = valid
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let column = valid_up_to.saturating_sub(line_start) + 1;
    BodyError::InvalidJson(format!("invalid UTF-8 at line {line} column {column}"))
}

// ---------------------------------------------------------------------------
// Multimodal content parts (decoded with serde_json, for capture only)
// ---------------------------------------------------------------------------

/// One multimodal content part; only text parts matter.
struct ContentPart<'a> {
    kind: Option<Cow<'a, str>>,
    text: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for ContentPart<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartVisitor;

        impl<'de> Visitor<'de> for PartVisitor {
            type Value = ContentPart<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a content part object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut part = ContentPart {
                    kind: None,
                    text: None,
                };
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "type" => part.kind = Some(map.next_value::<Str<'de>>()?.0),
                        "text" => part.text = Some(map.next_value::<Str<'de>>()?.0),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(part)
            }
        }

        deserializer.deserialize_map(PartVisitor)
    }
}

/// A JSON string that borrows from the input when it has no escapes.
/// (`Cow<str>`'s own `Deserialize` impl always allocates.)
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a str>);

        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(StrVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------

/// The captured text of one message.
fn capture_content(message: &scan::Pending<'_>, max_bytes: usize) -> String {
    match message.content {
        Some(raw) if raw.starts_with('"') => {
            let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
            if !message.content_escaped {
                return capped(inner, max_bytes);
            }
            match scan::unescape(inner) {
                // Without escapes the text is the literal between the quotes.
                Some(Cow::Borrowed(text)) => capped(text, max_bytes),
                Some(Cow::Owned(mut text)) => {
                    truncate_marked(&mut text, max_bytes);
                    text
                }
                // A lone surrogate escape cannot be decoded into a `str`
                // (serde_json refuses it too): keep the raw JSON instead.
                None => capped(raw, max_bytes),
            }
        }
        Some(raw) if raw.starts_with('[') => capture_parts(raw, max_bytes),
        Some(raw) if raw != "null" => capped(raw, max_bytes),
        // Absent or `null`.
        _ => match message.tool_calls {
            Some(calls) if calls != "null" => capped(calls, max_bytes),
            _ => String::new(),
        },
    }
}

/// Text parts of a multimodal content array joined with `"\n"`. Stops
/// decoding once the cap is exceeded.
fn capture_parts(raw: &str, max_bytes: usize) -> String {
    let Ok(parts) = serde_json::from_str::<Vec<&RawValue>>(raw) else {
        return String::new();
    };
    let mut out = String::new();
    let mut first = true;
    for part in parts {
        if out.len() > max_bytes {
            break;
        }
        let Ok(part) = serde_json::from_str::<ContentPart<'_>>(part.get()) else {
            continue;
        };
        let (Some(kind), Some(text)) = (part.kind, part.text) else {
            continue;
        };
        if kind != "text" {
            continue;
        }
        if !first {
            out.push('\n');
        }
        first = false;
        out.push_str(&text);
    }
    truncate_marked(&mut out, max_bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const INSTR: &str = "Be brief.";
    const INSTR_JSON: &str = "\"Be brief.\"";

    fn rewrite(body: &str) -> RewrittenBody {
        match rewrite_chat_body(body.as_bytes(), INSTR, 1024) {
            Ok(out) => out,
            Err(e) => panic!("unexpected error {e:?} for {body}"),
        }
    }

    fn out_str(out: &RewrittenBody) -> &str {
        std::str::from_utf8(&out.body).expect("output is UTF-8")
    }

    fn err(body: &[u8]) -> BodyError {
        match rewrite_chat_body(body, INSTR, 1024) {
            Ok(out) => panic!("expected an error, got {:?}", out_str(&out)),
            Err(e) => e,
        }
    }

    fn cap(role: &str, content: &str) -> CapturedMessage {
        CapturedMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }

    #[test]
    fn replaces_system_content() {
        let out = rewrite(
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"old prompt"},{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(
            out_str(&out),
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}"#
        );
        assert!(!out.stream);
        assert_eq!(out.captured, vec![cap("user", "hi")]);
    }

    #[test]
    fn parse_then_rewrite_matches_one_shot() {
        let body = br#"{"stream":true,"messages":[{"role":"system","content":"old"},{"role":"user","content":"hello"}]}"#;
        let parsed = ParsedChatBody::parse(body).expect("valid");
        assert!(parsed.stream());
        for instruction in ["first", "second \"one\""] {
            let two_phase = parsed.rewrite(instruction, 3);
            let one_shot = rewrite_chat_body(body, instruction, 3).expect("valid");
            assert_eq!(two_phase.body, one_shot.body);
            assert_eq!(two_phase.captured, one_shot.captured);
            assert_eq!(two_phase.captured, vec![cap("user", "hel…")]);
            assert!(two_phase.stream && one_shot.stream);
        }
        assert_eq!(
            ParsedChatBody::parse(b"{}").map(|_| ()),
            Err(BodyError::MissingMessages)
        );
    }

    #[test]
    fn replaces_developer_content_and_keeps_role() {
        let out = rewrite(
            r#"{"messages":[{"role":"user","content":"q"},{"content":["old"],"role":"developer","name":"d"}]}"#,
        );
        assert_eq!(
            out_str(&out),
            r#"{"messages":[{"role":"user","content":"q"},{"content":"Be brief.","role":"developer","name":"d"}]}"#
        );
        assert_eq!(out.captured, vec![cap("user", "q")]);
    }

    #[test]
    fn replaces_null_system_content() {
        let out = rewrite(r#"{"messages":[{"role":"system","content":null}]}"#);
        assert_eq!(
            out_str(&out),
            r#"{"messages":[{"role":"system","content":"Be brief."}]}"#
        );
    }

    #[test]
    fn inserts_system_message_into_non_empty_array() {
        let out = rewrite(r#"{"messages": [ {"role":"user","content":"hi"} ], "model":"m"}"#);
        assert_eq!(
            out_str(&out),
            r#"{"messages": [{"role":"system","content":"Be brief."}, {"role":"user","content":"hi"} ], "model":"m"}"#
        );
        assert_eq!(out.captured, vec![cap("user", "hi")]);
    }

    #[test]
    fn inserts_system_message_into_empty_array() {
        let out = rewrite(r#"{"messages":[]}"#);
        assert_eq!(
            out_str(&out),
            r#"{"messages":[{"role":"system","content":"Be brief."}]}"#
        );
        assert!(out.captured.is_empty());

        let out = rewrite("{\"messages\" :\n [ \n ] }");
        assert_eq!(
            out_str(&out),
            "{\"messages\" :\n [{\"role\":\"system\",\"content\":\"Be brief.\"} \n ] }"
        );
    }

    #[test]
    fn inserts_content_into_system_message_without_content() {
        let out = rewrite(
            r#"{"messages":[ {"role":"system","name":"x"},{"role":"user","content":"u"}]}"#,
        );
        assert_eq!(
            out_str(&out),
            r#"{"messages":[ {"content":"Be brief.","role":"system","name":"x"},{"role":"user","content":"u"}]}"#
        );
    }

    #[test]
    fn inserts_content_after_brace_with_whitespace_inside() {
        let out = rewrite("{\"messages\":[{ \n \"name\":\"x\" ,\t\"role\":\"developer\"\n}]}");
        assert_eq!(
            out_str(&out),
            "{\"messages\":[{\"content\":\"Be brief.\", \n \"name\":\"x\" ,\t\"role\":\"developer\"\n}]}"
        );
    }

    #[test]
    fn replaces_only_first_system_message() {
        let out = rewrite(
            r#"{"messages":[{"role":"user","content":"a"},{"role":"system","content":"one"},{"role":"developer","content":"two"},{"role":"system","content":"three"},{"role":"assistant","content":"b"}]}"#,
        );
        assert_eq!(
            out_str(&out),
            r#"{"messages":[{"role":"user","content":"a"},{"role":"system","content":"Be brief."},{"role":"developer","content":"two"},{"role":"system","content":"three"},{"role":"assistant","content":"b"}]}"#
        );
        assert_eq!(out.captured, vec![cap("user", "a"), cap("assistant", "b")]);
    }

    #[test]
    fn escapes_instruction() {
        let instruction = "Say \"hi\"\nthen \\stop\\\t</script><script>alert(1)</script> é 日本 🦀 \u{0} \u{1f} \u{2028}";
        for body in [
            r#"{"messages":[{"role":"system","content":"x"}]}"#,
            r#"{"messages":[{"role":"system"}]}"#,
            r#"{"messages":[]}"#,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
        ] {
            let out = rewrite_chat_body(body.as_bytes(), instruction, 10).expect("valid");
            let value: Value = serde_json::from_slice(&out.body).expect("output is JSON");
            assert_eq!(
                value["messages"][0]["content"],
                json!(instruction),
                "{body}"
            );
            assert_eq!(value["messages"][0]["role"], json!("system"));
            let encoded = serde_json::to_string(instruction).expect("encode");
            assert!(out_str(&out).contains(&encoded));
        }
    }

    #[test]
    fn preserves_every_other_byte() {
        let prefix = concat!(
            "\r\n\t { \"model\"\t:\"gpt-4o\" ,\"temperature\": 1.0e10, \"seed\" : -0 ,",
            "\"big\":12345678901234567890123,\"x\":-1.5E-7,\"name\":\"caf\\u00e9 \\ud83e\\udd80 \\/ é\",",
            "\"unknown\":{\"nested\":[1,2,{\"a\":null}],\"t\":true}, \"stream\" :  true ,",
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}}],",
            "\n  \"messages\" : [\n    { \"role\" : \"user\", \"content\" : \"caf\\u00e9\" },\n",
            "    {\"name\":\"sys\", \"role\":\"system\" ,\"content\" :  ",
        );
        let old = "\"old \\\"system\\\" prompt \\u00e9\"";
        let suffix = concat!(
            " , \"extra\": [1.0, 2e3] },\n",
            "    {\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}\n",
            "  ],\"max_tokens\":100\t}\n\n",
        );
        let body = format!("{prefix}{old}{suffix}");
        let out = rewrite(&body);
        assert_eq!(out_str(&out), format!("{prefix}{INSTR_JSON}{suffix}"));
        assert!(out.stream);
        assert_eq!(
            out.captured,
            vec![
                cap("user", "café"),
                cap(
                    "assistant",
                    r#"[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]"#
                ),
            ]
        );
    }

    #[test]
    fn stream_flag() {
        let cases = [
            (r#"{"messages":[],"stream":true}"#, true),
            ("{\"messages\":[],\"stream\" : \n true \n}", true),
            (r#"{"messages":[],"stream":false}"#, false),
            (r#"{"messages":[],"stream":"true"}"#, false),
            (r#"{"messages":[],"stream":1}"#, false),
            (r#"{"messages":[],"stream":null}"#, false),
            (r#"{"messages":[]}"#, false),
            (r#"{"messages":[],"x":{"stream":true}}"#, false),
            (r#"{"messages":[],"stream":false,"stream":true}"#, true),
        ];
        for (body, stream) in cases {
            assert_eq!(rewrite(body).stream, stream, "{body}");
        }
    }

    #[test]
    fn invalid_json_errors() {
        for body in [
            &b""[..],
            b"   ",
            b"{",
            b"{\"messages\":[]",
            b"{\"messages\":[]} x",
            b"{\"messages\":[],}",
            b"{'messages':[]}",
            b"[1,",
            b"nul",
            b"{\"messages\":[{\"role\":\"user\",\"content\":\"a\x01b\"}]}",
            b"{\"messages\":[\"\xff\"]}",
            b"\xef\xbb\xbf{\"messages\":[]}",
            b"{\"messages\":[{\"role\":\"user\"}], \"messages\": }",
            b"[{\"a\":1}, 2, ]",
            // Invalid JSON wins over an earlier shape error.
            b"{\"messages\":[1],\"x\":tru}",
            b"{\"messages\":\"no\",\"x\":[}",
        ] {
            let e = err(body);
            assert!(matches!(e, BodyError::InvalidJson(_)), "{body:?} -> {e:?}");
            assert_eq!(e.code(), "invalid_json");
            assert_eq!(e.param(), None);
        }
    }

    #[test]
    fn invalid_json_message_has_position_not_content() {
        let e = err(b"{\"messages\":[{\"role\":\"user\",\"content\":\"SECRET\"}] SECRET2}");
        let BodyError::InvalidJson(message) = &e else {
            panic!("{e:?}");
        };
        assert!(message.contains("line 1 column"), "{message}");
        assert!(!message.contains("SECRET"), "{message}");
        assert!(!e.to_string().contains("SECRET"));

        let e = err(b"{\"messages\":[],\n\"x\":\"ok\xc3(\"}");
        assert_eq!(
            e,
            BodyError::InvalidJson("invalid UTF-8 at line 2 column 8".to_owned())
        );
    }

    #[test]
    fn not_an_object() {
        for body in [
            "[]",
            " [{\"messages\":[]}] ",
            "\"messages\"",
            "1",
            "null",
            "true",
        ] {
            let e = err(body.as_bytes());
            assert_eq!(e, BodyError::NotAnObject, "{body}");
            assert_eq!(e.code(), "invalid_body");
            assert_eq!(e.param(), None);
        }
    }

    #[test]
    fn missing_messages() {
        for body in [
            "{}",
            r#"{"model":"m","message":[]}"#,
            r#"{"x":{"messages":[]}}"#,
        ] {
            let e = err(body.as_bytes());
            assert_eq!(e, BodyError::MissingMessages, "{body}");
            assert_eq!(e.code(), "missing_messages");
            assert_eq!(e.param().as_deref(), Some("messages"));
        }
    }

    #[test]
    fn messages_not_array() {
        for body in [
            r#"{"messages":{}}"#,
            r#"{"messages":"hi"}"#,
            r#"{"messages":null}"#,
            r#"{"messages":3}"#,
            r#"{"messages":[],"messages":[]}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"messages":"x"}"#,
        ] {
            let e = err(body.as_bytes());
            assert_eq!(e, BodyError::MessagesNotArray, "{body}");
            assert_eq!(e.code(), "invalid_messages");
            assert_eq!(e.param().as_deref(), Some("messages"));
        }
    }

    #[test]
    fn invalid_message() {
        let ok = r#"{"role":"user","content":"a"}"#;
        for (bad, index) in [
            ("\"hello\"", 0),
            ("[\"role\",\"user\"]", 0),
            ("null", 0),
            (r#"{"role":1}"#, 0),
            (r#"{"role":null,"content":"x"}"#, 0),
            (r#"{"content":"x"}"#, 0),
            (r#"{"role":["system"]}"#, 0),
            (r#"{"role":"user","role":"system"}"#, 0),
            (r#"{"role":"system","content":"a","content":"b"}"#, 0),
        ] {
            let body = format!(r#"{{"messages":[{bad}]}}"#);
            assert_eq!(
                err(body.as_bytes()),
                BodyError::InvalidMessage { index },
                "{body}"
            );
            let body = format!(r#"{{"messages":[{ok},{ok},{ok},{bad},{ok}]}}"#);
            let e = err(body.as_bytes());
            assert_eq!(e, BodyError::InvalidMessage { index: 3 }, "{body}");
            assert_eq!(e.code(), "invalid_messages");
            assert_eq!(e.param().as_deref(), Some("messages[3]"));
            assert_eq!(
                e.to_string(),
                "`messages[3]` must be an object with a string `role`"
            );
        }
    }

    #[test]
    fn error_codes_params_and_messages() {
        let cases = [
            (
                BodyError::InvalidJson("expected value at line 1 column 1".into()),
                "invalid_json",
                None,
                "request body is not valid JSON: expected value at line 1 column 1",
            ),
            (
                BodyError::NotAnObject,
                "invalid_body",
                None,
                "request body must be a JSON object",
            ),
            (
                BodyError::MissingMessages,
                "missing_messages",
                Some("messages"),
                "`messages` is required",
            ),
            (
                BodyError::MessagesNotArray,
                "invalid_messages",
                Some("messages"),
                "`messages` must be an array and must be given exactly once",
            ),
            (
                BodyError::InvalidMessage { index: 3 },
                "invalid_messages",
                Some("messages[3]"),
                "`messages[3]` must be an object with a string `role`",
            ),
        ];
        for (e, code, param, display) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.param().as_deref(), param);
            assert_eq!(e.to_string(), display);
        }
    }

    #[test]
    fn escaped_keys_and_roles_are_decoded() {
        let out = rewrite(
            r#"{"messag\u0065s":[{"r\u006fle":"syst\u0065m","c\u006fntent":"old"},{"role":"us\u0065r","content":"tab\there"}]}"#,
        );
        assert_eq!(
            out_str(&out),
            r#"{"messag\u0065s":[{"r\u006fle":"syst\u0065m","c\u006fntent":"Be brief."},{"role":"us\u0065r","content":"tab\there"}]}"#
        );
        assert_eq!(out.captured, vec![cap("user", "tab\there")]);
    }

    #[test]
    fn captures_string_content() {
        let out = rewrite(
            r#"{"messages":[{"role":"user","content":"line1\nline2 \"q\" \u00e9"},{"role":"tool","tool_call_id":"c","content":"42"}]}"#,
        );
        assert_eq!(
            out.captured,
            vec![cap("user", "line1\nline2 \"q\" é"), cap("tool", "42")]
        );
    }

    #[test]
    fn captures_multimodal_text_parts() {
        let out = rewrite(
            r#"{"messages":[{"role":"user","content":[
                {"type":"text","text":"look at"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
                {"text":"this","type":"text"},
                {"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}},
                "stray", 7, {"type":"text"}, {"type":"text","text":5},
                {"type":"text","text":"caf\u00e9"}
            ]},{"role":"user","content":[]}]}"#,
        );
        assert_eq!(
            out.captured,
            vec![cap("user", "look at\nthis\ncafé"), cap("user", "")]
        );
    }

    #[test]
    fn captures_tool_calls_and_other_values() {
        let out = rewrite(
            r#"{"messages":[
                {"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
                {"role":"assistant","tool_calls":[]},
                {"role":"assistant","content":null},
                {"role":"assistant"},
                {"role":"assistant","content":null,"tool_calls":null},
                {"role":"user","content":{"weird": 1.50}},
                {"role":"user","content":12.0},
                {"role":"user","content":true}
            ]}"#,
        );
        assert_eq!(
            out.captured,
            vec![
                cap(
                    "assistant",
                    r#"[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]"#
                ),
                cap("assistant", "[]"),
                cap("assistant", ""),
                cap("assistant", ""),
                cap("assistant", ""),
                cap("user", r#"{"weird": 1.50}"#),
                cap("user", "12.0"),
                cap("user", "true"),
            ]
        );
    }

    #[test]
    fn truncates_captures_on_char_boundary() {
        // "aé日🦀" = 1 + 2 + 3 + 4 bytes
        let body = r#"{"messages":[{"role":"user","content":"aé日🦀"}]}"#;
        let expect = [
            (0, "…"),
            (1, "a…"),
            (2, "a…"),
            (3, "aé…"),
            (4, "aé…"),
            (5, "aé…"),
            (6, "aé日…"),
            (9, "aé日…"),
            (10, "aé日🦀"),
            (100, "aé日🦀"),
        ];
        for (max, content) in expect {
            let out = rewrite_chat_body(body.as_bytes(), INSTR, max).expect("valid");
            assert_eq!(out.captured, vec![cap("user", content)], "max {max}");
        }

        let out = rewrite_chat_body(
            r#"{"messages":[{"role":"user","content":""}]}"#.as_bytes(),
            INSTR,
            0,
        )
        .expect("valid");
        assert_eq!(out.captured, vec![cap("user", "")]);

        // Escaped string, multimodal parts and raw JSON are capped the same way.
        let body = r#"{"messages":[
            {"role":"user","content":"\u00e9\u00e9\u00e9"},
            {"role":"user","content":[{"type":"text","text":"ab"},{"type":"text","text":"cd"},{"type":"text","text":"ef"}]},
            {"role":"assistant","tool_calls":[{"id":"x"}]}
        ]}"#;
        let out = rewrite_chat_body(body.as_bytes(), INSTR, 5).expect("valid");
        assert_eq!(
            out.captured,
            vec![
                cap("user", "éé…"),
                cap("user", "ab\ncd…"),
                cap("assistant", "[{\"id…"),
            ]
        );
    }

    #[test]
    fn never_panics_on_hostile_input() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"s\u00e9"},{"role":"user","content":[{"type":"text","text":"t"}]},{"role":"assistant","tool_calls":[{"id":"1"}]}],"stream":true}"#;
        // Every prefix, and every single-byte corruption with a few bytes.
        for end in 0..=body.len() {
            let _ = rewrite_chat_body(&body[..end], INSTR, 3);
        }
        for i in 0..body.len() {
            for b in [
                b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', 0xff, b' ', b'0',
            ] {
                let mut corrupted = body.to_vec();
                corrupted[i] = b;
                if let Ok(out) = rewrite_chat_body(&corrupted, INSTR, 3) {
                    serde_json::from_slice::<Value>(&out.body).expect("output stays JSON");
                }
            }
        }
        // Pseudo-random bytes.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (next(&mut seed) % 64) as usize;
            let alphabet = b"{}[]\":,  \\nultrfase0123-.e\xc3\xa9\xff";
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next(&mut seed) % alphabet.len() as u64) as usize])
                .collect();
            let _ = rewrite_chat_body(&bytes, INSTR, 3);
        }
        // Deep nesting inside and outside of messages.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = format!(r#"{{"messages":[{{"role":"user","content":[{deep}]}}],"x":{deep}}}"#);
        let out = rewrite_chat_body(body.as_bytes(), INSTR, 3).expect("valid");
        assert_eq!(out.captured, vec![cap("user", "")]);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":{deep}}}]}}]}}"#
        );
        assert!(rewrite_chat_body(body.as_bytes(), INSTR, 3).is_ok());
        assert!(rewrite_chat_body(deep.as_bytes(), INSTR, 3).is_err());
        // A lone surrogate is skipped by the parser but cannot be decoded.
        let out = rewrite(r#"{"messages":[{"role":"user","content":"\ud800"}]}"#);
        assert_eq!(out.captured, vec![cap("user", r#""\ud800""#)]);
    }

    fn next(seed: &mut u64) -> u64 {
        // xorshift64*
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(seed: &mut u64, items: &[&'a str]) -> &'a str {
        items[(next(seed) % items.len() as u64) as usize]
    }

    /// A random but valid chat body, with random whitespace and key order.
    fn generated_body(seed: &mut u64) -> String {
        let ws = |seed: &mut u64| pick(seed, &["", "", " ", "\n  ", "\t", " \r\n "]).to_owned();
        let roles = [
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "user",
            "assistant",
        ];
        let contents = [
            r#""plain""#,
            r#""esc \"q\" \\ \n \u00e9 \ud83e\udd80""#,
            r#""日本語 🦀""#,
            "null",
            "[]",
            r#"[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}}]"#,
            r#"{"k":[1.0e10,-0,12345678901234567890123]}"#,
            "0.10",
        ];
        let n = (next(seed) % 6) as usize;
        let mut messages = Vec::new();
        for _ in 0..n {
            let mut fields = vec![format!("\"role\":{}\"{}\"", ws(seed), pick(seed, &roles))];
            if !next(seed).is_multiple_of(4) {
                fields.push(format!("\"content\":{}{}", ws(seed), pick(seed, &contents)));
            }
            if next(seed).is_multiple_of(3) {
                fields.push(r#""name":"n\u00e9""#.to_owned());
            }
            if next(seed).is_multiple_of(4) {
                fields.push(r#""tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]"#.to_owned());
            }
            // Rotate for a random key order.
            let rotate = (next(seed) % fields.len() as u64) as usize;
            fields.rotate_left(rotate);
            let sep = format!("{},{}", ws(seed), ws(seed));
            messages.push(format!("{{{}{}{}}}", ws(seed), fields.join(&sep), ws(seed)));
        }
        let sep = format!("{},{}", ws(seed), ws(seed));
        let mut top = [
            format!(
                "\"messages\"{}:{}[{}{}{}]",
                ws(seed),
                ws(seed),
                ws(seed),
                messages.join(&sep),
                ws(seed)
            ),
            r#""model":"gpt-4o""#.to_owned(),
            format!(
                "\"temperature\":{}",
                pick(seed, &["1.0e10", "-0", "0.7", "12345678901234567890123"])
            ),
            format!("\"stream\":{}", pick(seed, &["true", "false", "null"])),
            r#""tools":[{"type":"function","function":{"name":"f","parameters":{}}}]"#.to_owned(),
            r#""metadata":{"z":"\u00e9","a":[]}"#.to_owned(),
        ];
        let rotate = (next(seed) % top.len() as u64) as usize;
        top.rotate_left(rotate);
        format!(
            "{}{{{}{}{}}}{}",
            ws(seed),
            ws(seed),
            top.join(&sep),
            ws(seed),
            ws(seed)
        )
    }

    #[test]
    fn rewrite_only_changes_the_system_message() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let instruction = "New \"instruction\"\n✓";
        for _ in 0..500 {
            let body = generated_body(&mut seed);
            let out = rewrite_chat_body(body.as_bytes(), instruction, 8)
                .unwrap_or_else(|e| panic!("{e:?} for {body}"));
            let mut before: Value = serde_json::from_str(&body).expect("generated JSON");
            let mut after: Value = serde_json::from_slice(&out.body).expect("output JSON");

            let messages = before["messages"].as_array_mut().expect("array");
            let system_at = messages
                .iter()
                .position(|m| m["role"] == "system" || m["role"] == "developer");
            let expected_captures = messages
                .iter()
                .filter(|m| m["role"] != "system" && m["role"] != "developer")
                .count();
            let mut original_system = None;
            if let Some(i) = system_at {
                original_system = Some(messages.remove(i));
            }
            let after_messages = after["messages"].as_array_mut().expect("array");
            let mut rewritten = after_messages.remove(system_at.unwrap_or(0));
            assert_eq!(rewritten["content"], json!(instruction), "{body}");
            assert_eq!(before, after, "{body}");
            assert_eq!(out.stream, before["stream"] == json!(true), "{body}");
            assert_eq!(out.captured.len(), expected_captures, "{body}");

            // The rewritten message only differs in `content`.
            let rewritten = rewritten.as_object_mut().expect("object");
            rewritten.remove("content");
            match original_system {
                Some(Value::Object(mut original)) => {
                    original.remove("content");
                    assert_eq!(&original, rewritten, "{body}");
                }
                _ => assert_eq!(rewritten.get("role"), Some(&json!("system"))),
            }
        }
    }
}
