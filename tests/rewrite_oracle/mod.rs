//! The serde_json-based parser that the scanner (`src/rewrite/scan.rs`)
//! replaced, frozen as it was, as the oracle of the differential test
//! (`tests/rewrite_differential.rs`): `gepa_gateway::rewrite` must accept and
//! refuse the same bodies with the same errors and produce the same output.
//! It answers in the library's own types, so the two compare directly.

#![allow(dead_code)]

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;

use gepa_gateway::rewrite::{BodyError, CapturedMessage, RewrittenBody, TRUNCATION_MARKER};
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

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
    pending: Vec<PendingCapture<'a>>,
}

/// A non-system message, not yet decoded or capped.
#[derive(Debug)]
struct PendingCapture<'a> {
    role: Cow<'a, str>,
    content: Option<&'a RawValue>,
    tool_calls: Option<&'a RawValue>,
}

impl<'a> ParsedChatBody<'a> {
    /// Validates `body` and locates where the instruction goes. Never panics,
    /// whatever the input.
    pub fn parse(body: &'a [u8]) -> Result<Self, BodyError> {
        let text = std::str::from_utf8(body).map_err(|e| invalid_utf8(body, e.valid_up_to()))?;
        let top = parse_top_level(text)?;

        if top.messages_seen > 1 {
            return Err(BodyError::MessagesNotArray);
        }
        let messages = top.messages.ok_or(BodyError::MissingMessages)?;
        let stream = top
            .stream
            .is_some_and(|raw| raw.get().trim_matches(JSON_WS) == "true");

        let messages_pass = parse_messages(body, messages)?;
        let splice = match messages_pass.splice {
            Some(splice) => splice,
            None => splice_for_new_message(body, messages, messages_pass.index > 0)?,
        };
        let pending = messages_pass.pending;

        Ok(ParsedChatBody {
            body,
            splice,
            stream,
            pending,
        })
    }

    /// Top-level `"stream"` is literally `true`.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The body with `instruction` spliced in, plus the captured non-system
    /// messages, each content capped at `capture_max_bytes` bytes.
    pub fn rewrite(&self, instruction: &str, capture_max_bytes: usize) -> RewrittenBody {
        let captured = self
            .pending
            .iter()
            .map(|message| CapturedMessage {
                role: message.role.clone().into_owned(),
                content: capture_content(message.content, message.tool_calls, capture_max_bytes),
            })
            .collect();
        RewrittenBody {
            body: self.splice.apply(self.body, instruction),
            stream: self.stream,
            captured,
        }
    }
}

/// JSON insignificant whitespace (RFC 8259 §2).
const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

fn is_instruction_role(role: &str) -> bool {
    role == "system" || role == "developer"
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

    /// One allocation of the exact final size, three copies. `body` must be
    /// the body the splice was made for (bounds were checked in `new`).
    fn apply(self, body: &[u8], instruction: &str) -> Bytes {
        let before = body.get(..self.start).unwrap_or_default();
        let after = body.get(self.end..).unwrap_or_default();
        let middle = encode_instruction(self.prefix, instruction, self.suffix);

        let mut out = Vec::with_capacity(before.len() + middle.len() + after.len());
        out.extend_from_slice(before);
        out.extend_from_slice(&middle);
        out.extend_from_slice(after);
        Bytes::from(out)
    }
}

/// `prefix`, then `instruction` as a JSON string literal, then `suffix`.
fn encode_instruction(prefix: &str, instruction: &str, suffix: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + instruction.len() + 2 + suffix.len());
    out.extend_from_slice(prefix.as_bytes());
    // Serializing a `str` into a `Vec<u8>` cannot fail: serde_json's only
    // error path for strings is the writer, and writing to a Vec is infallible.
    // Should that ever change, fall back to an empty string rather than emit
    // broken JSON.
    if serde_json::to_writer(&mut out, instruction).is_err() {
        out.truncate(prefix.len());
        out.extend_from_slice(b"\"\"");
    }
    out.extend_from_slice(suffix.as_bytes());
    out
}

/// Splice for the first system/developer message: replace its `content`
/// value, or insert a `content` key right after its `{` — found by walking back
/// from its first key over whitespace.
fn splice_for_message(
    body: &[u8],
    content: Option<&RawValue>,
    first_key: Option<&RawValue>,
) -> Result<Splice, BodyError> {
    if let Some(content) = content {
        let (start, end) = span(body, content)?;
        return Splice::new(body, start, end, "", "");
    }
    let (key_start, _) = span(body, first_key.ok_or_else(internal_span_error)?)?;
    let before_key = body.get(..key_start).ok_or_else(internal_span_error)?;
    let ws = before_key
        .iter()
        .rev()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    let at = key_start - ws;
    if at == 0 || before_key.get(at - 1) != Some(&b'{') {
        return Err(internal_span_error());
    }
    // The object has at least its `role` key after `at`, hence the comma.
    Splice::new(body, at, at, "\"content\":", ",")
}

/// Splice inserting a new system message right after the `[` of `messages`.
fn splice_for_new_message(
    body: &[u8],
    messages: &RawValue,
    non_empty: bool,
) -> Result<Splice, BodyError> {
    let (start, _) = span(body, messages)?;
    let raw = messages.get();
    let rest = raw.trim_start_matches(JSON_WS);
    if !rest.starts_with('[') {
        return Err(internal_span_error());
    }
    let at = start + (raw.len() - rest.len()) + 1;
    let suffix = if non_empty { "}," } else { "}" };
    Splice::new(body, at, at, "{\"role\":\"system\",\"content\":", suffix)
}

/// Byte range of `raw` inside `body`. Every `RawValue` here borrows from
/// `body`, so this only fails if that invariant is broken.
fn span(body: &[u8], raw: &RawValue) -> Result<(usize, usize), BodyError> {
    let text = raw.get();
    let start = (text.as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .ok_or_else(internal_span_error)?;
    let end = start
        .checked_add(text.len())
        .filter(|&end| end <= body.len())
        .ok_or_else(internal_span_error)?;
    Ok((start, end))
}

fn internal_span_error() -> BodyError {
    BodyError::InvalidJson("internal error: value outside of the request body".to_owned())
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// What the top-level object tells us.
struct TopLevel<'a> {
    messages: Option<&'a RawValue>,
    messages_seen: usize,
    stream: Option<&'a RawValue>,
}

fn parse_top_level(text: &str) -> Result<TopLevel<'_>, BodyError> {
    if !text.trim_start_matches(JSON_WS).starts_with('{') {
        // Either not JSON at all or some other JSON value.
        return match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(BodyError::NotAnObject),
            Err(e) => Err(json_error(&e)),
        };
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let top = (&mut de)
        .deserialize_map(TopLevelVisitor)
        .map_err(|e| json_error(&e))?;
    de.end().map_err(|e| json_error(&e))?;
    Ok(top)
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = TopLevel {
            messages: None,
            messages_seen: 0,
            stream: None,
        };
        // Never fail on semantics here: the whole body must be checked for
        // syntax first, so an invalid body is always reported as invalid JSON.
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "messages" => {
                    top.messages_seen += 1;
                    let raw: &'de RawValue = map.next_value()?;
                    if top.messages.is_none() {
                        top.messages = Some(raw);
                    }
                }
                "stream" => top.stream = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(top)
    }
}

/// What the pass over the `messages` array collects.
struct MessagesPass<'a> {
    body: &'a [u8],
    /// `messages` turned out to be an array.
    is_array: bool,
    /// Elements fully read so far, i.e. the index of the element being read.
    index: usize,
    /// Where the instruction goes, once the first system message was seen.
    splice: Option<Splice>,
    pending: Vec<PendingCapture<'a>>,
    /// Set when the pass stops for a reason other than "element `index` is
    /// invalid".
    failure: Option<BodyError>,
}

/// One pass over `messages` (already known to be valid JSON): checks every
/// element and records the splice and the messages to capture, without
/// re-parsing each element separately.
fn parse_messages<'a>(
    body: &'a [u8],
    messages: &'a RawValue,
) -> Result<MessagesPass<'a>, BodyError> {
    let mut pass = MessagesPass {
        body,
        is_array: false,
        index: 0,
        splice: None,
        pending: Vec::new(),
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_str(messages.get());
    let result = (&mut de)
        .deserialize_seq(MessagesVisitor { pass: &mut pass })
        .and_then(|()| de.end());
    match result {
        Ok(()) => Ok(pass),
        // The input is valid JSON, so any error is about its shape.
        Err(_) => Err(match pass.failure.take() {
            Some(failure) => failure,
            None if pass.is_array => BodyError::InvalidMessage { index: pass.index },
            None => BodyError::MessagesNotArray,
        }),
    }
}

struct MessagesVisitor<'p, 'a> {
    pass: &'p mut MessagesPass<'a>,
}

impl<'a> Visitor<'a> for MessagesVisitor<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        self.pass.is_array = true;
        while seq
            .next_element_seed(MessageSeed {
                pass: &mut *self.pass,
            })?
            .is_some()
        {
            self.pass.index += 1;
        }
        Ok(())
    }
}

/// Reads one `messages` element in place: a struct with `role: Cow<str>`,
/// `content: Option<&RawValue>` and `tool_calls: Option<&RawValue>`, other
/// fields ignored. Keys are read as raw values so that the element's `{` can
/// be found from its first key.
struct MessageSeed<'p, 'a> {
    pass: &'p mut MessagesPass<'a>,
}

impl<'a> DeserializeSeed<'a> for MessageSeed<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for MessageSeed<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let mut first_key: Option<&'a RawValue> = None;
        let mut role: Option<Cow<'a, str>> = None;
        // Present for any `content` key, including `"content": null`.
        let mut content: Option<&'a RawValue> = None;
        let mut tool_calls: Option<&'a RawValue> = None;
        while let Some(key) = map.next_key::<&'a RawValue>()? {
            first_key.get_or_insert(key);
            let name = key_name(key).ok_or_else(|| de::Error::custom("undecodable key"))?;
            match &*name {
                "role" => {
                    if role.is_some() {
                        return Err(de::Error::duplicate_field("role"));
                    }
                    role = Some(map.next_value::<Str<'a>>()?.0);
                }
                "content" => {
                    if content.is_some() {
                        return Err(de::Error::duplicate_field("content"));
                    }
                    content = Some(map.next_value()?);
                }
                "tool_calls" => tool_calls = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let role = role.ok_or_else(|| de::Error::missing_field("role"))?;
        if !is_instruction_role(&role) {
            self.pass.pending.push(PendingCapture {
                role,
                content,
                tool_calls,
            });
        } else if self.pass.splice.is_none() {
            match splice_for_message(self.pass.body, content, first_key) {
                Ok(splice) => self.pass.splice = Some(splice),
                Err(failure) => {
                    self.pass.failure = Some(failure);
                    return Err(de::Error::custom("internal error"));
                }
            }
        }
        Ok(())
    }
}

/// The decoded name of an object key read as a raw value.
fn key_name(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.contains('\\') {
        return text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .map(Cow::Borrowed);
    }
    serde_json::from_str::<Str<'_>>(text)
        .ok()
        .map(|name| name.0)
}

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

/// serde_json's description of a syntax error ("expected `,` or `}` at line 1
/// column 9"). Syntax messages never quote the input; data errors could, so
/// they are reduced to the position.
fn json_error(e: &serde_json::Error) -> BodyError {
    BodyError::InvalidJson(match e.classify() {
        serde_json::error::Category::Data => {
            format!("invalid JSON at line {} column {}", e.line(), e.column())
        }
        _ => e.to_string(),
    })
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
// Capture
// ---------------------------------------------------------------------------

fn capture_content(
    content: Option<&RawValue>,
    tool_calls: Option<&RawValue>,
    max_bytes: usize,
) -> String {
    let raw = content.map(|c| c.get().trim_matches(JSON_WS));
    match raw.and_then(|r| r.as_bytes().first()) {
        // Without escapes the text is the literal between the quotes.
        Some(b'"') if raw.is_some_and(|r| !r.contains('\\')) => capped(
            raw.and_then(|r| r.get(1..r.len().saturating_sub(1)))
                .unwrap_or(""),
            max_bytes,
        ),
        Some(b'"') => match raw.map(serde_json::from_str::<Str<'_>>) {
            Some(Ok(text)) => capped(&text.0, max_bytes),
            // Only reachable for strings serde_json skips but will not decode
            // (lone surrogate escapes); keep the raw JSON instead.
            _ => capped(raw.unwrap_or(""), max_bytes),
        },
        Some(b'[') => capture_parts(raw.unwrap_or("[]"), max_bytes),
        // Absent or `null` (the only JSON value starting with `n`).
        None | Some(b'n') => match tool_calls.map(|t| t.get().trim_matches(JSON_WS)) {
            Some(calls) if calls != "null" => capped(calls, max_bytes),
            _ => String::new(),
        },
        Some(_) => capped(raw.unwrap_or(""), max_bytes),
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
    truncate_in_place(&mut out, max_bytes);
    out
}

/// `text` cut to at most `max_bytes` bytes on a char boundary, plus
/// [`TRUNCATION_MARKER`] if anything was cut.
fn capped(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let end = floor_char_boundary(text, max_bytes);
    let mut out = String::with_capacity(end + TRUNCATION_MARKER.len());
    out.push_str(text.get(..end).unwrap_or(""));
    out.push_str(TRUNCATION_MARKER);
    out
}

fn truncate_in_place(text: &mut String, max_bytes: usize) {
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
