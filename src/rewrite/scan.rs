//! Single-pass scanner for chat-completions bodies.
//!
//! [`scan`] checks that a body is JSON and, in the same pass, records what
//! [`super::ParsedChatBody`] needs: how often the top-level `messages` key
//! appears, the shape of the first `messages` value (the offsets of each
//! message's `content` and `tool_calls` values, its decoded `role`), and
//! whether the last top-level `stream` is `true`. Nothing is copied or
//! allocated except the list of messages to capture (and the rare key or role
//! written with escapes).
//!
//! # Same answers as serde_json
//!
//! The gateway used to parse bodies with serde_json (borrowed `RawValue`s
//! under a top-level map), and this scanner is written to accept and refuse
//! exactly the same inputs, with the same error message (serde_json's wording,
//! line and column): the differential test, `tests/rewrite_differential.rs`,
//! checks it against that implementation (kept as `tests/rewrite_oracle`). In
//! detail:
//!
//! * every value except the top-level object is checked like serde_json's
//!   `ignore_value`: numbers follow the JSON grammar but are never converted
//!   (`1e400` and `123456789012345678901234567890` are accepted), and a `\u`
//!   escape only needs four hex digits — lone surrogates are accepted;
//! * the top-level object follows serde_json's `MapAccess`: its keys are
//!   decoded strictly, so a top-level *key* with a lone surrogate escape is
//!   refused as invalid JSON (a quirk of serde_json kept on purpose: the
//!   accept/reject decision is the same as before, whatever the body);
//! * there is no depth limit: containers are tracked with an explicit stack of
//!   one bit per level, never by recursion (serde_json's recursion limit of 128
//!   never applied either, since values were skipped, not deserialized);
//! * UTF-8 is checked once for the whole body before the scan
//!   (`std::str::from_utf8`), so the scanner only ever cuts the body at ASCII
//!   delimiters.
//!
//! Semantic checks (`messages` missing or not an array, a bad message) never
//! stop the scan: the body must be valid JSON first, so a syntax error later in
//! the body always wins, as before.
//!
//! # Speed
//!
//! Most of a chat body is string contents, so strings are skipped 16 bytes at
//! a time (`find_first`: SSE2 compares and a `movemask` on x86_64, SWAR
//! words elsewhere), and the usual keys and roles (`"role"`, `"content"`,
//! `"user"`, …) are recognized by comparing a few bytes, without a string
//! scan. Errors travel as a zero-sized [`Stop`] (the details wait in the
//! scanner) so that every `Result` fits in registers.

use std::borrow::Cow;

/// A syntax error, with serde_json's wording and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SyntaxError {
    code: Code,
    /// The byte index serde_json computes the line and column from: the
    /// offending byte's index + 1 for a byte it peeked at, the index after the
    /// last byte it consumed otherwise.
    index: usize,
}

impl SyntaxError {
    /// `"<what> at line <l> column <c>"`, exactly as serde_json's `Display`;
    /// never quotes the body.
    pub(super) fn describe(&self, body: &[u8]) -> String {
        let index = self.index.min(body.len());
        let before = body.get(..index).unwrap_or(body);
        let line_start = memchr::memrchr(b'\n', before).map_or(0, |newline| newline + 1);
        let line = 1 + memchr::memchr_iter(b'\n', before.get(..line_start).unwrap_or(b"")).count();
        let column = index - line_start;
        format!("{} at line {line} column {column}", self.code.as_str())
    }
}

/// The serde_json error codes the scanner can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    EofWhileParsingList,
    EofWhileParsingObject,
    EofWhileParsingString,
    EofWhileParsingValue,
    ExpectedColon,
    ExpectedListCommaOrEnd,
    ExpectedObjectCommaOrEnd,
    ExpectedSomeIdent,
    ExpectedSomeValue,
    InvalidEscape,
    InvalidNumber,
    ControlCharacterWhileParsingString,
    KeyMustBeAString,
    LoneLeadingSurrogateInHexEscape,
    TrailingComma,
    TrailingCharacters,
    UnexpectedEndOfHexEscape,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::EofWhileParsingList => "EOF while parsing a list",
            Code::EofWhileParsingObject => "EOF while parsing an object",
            Code::EofWhileParsingString => "EOF while parsing a string",
            Code::EofWhileParsingValue => "EOF while parsing a value",
            Code::ExpectedColon => "expected `:`",
            Code::ExpectedListCommaOrEnd => "expected `,` or `]`",
            Code::ExpectedObjectCommaOrEnd => "expected `,` or `}`",
            Code::ExpectedSomeIdent => "expected ident",
            Code::ExpectedSomeValue => "expected value",
            Code::InvalidEscape => "invalid escape",
            Code::InvalidNumber => "invalid number",
            Code::ControlCharacterWhileParsingString => {
                "control character (\\u0000-\\u001F) found while parsing a string"
            }
            Code::KeyMustBeAString => "key must be a string",
            Code::LoneLeadingSurrogateInHexEscape => "lone leading surrogate in hex escape",
            Code::TrailingComma => "trailing comma",
            Code::TrailingCharacters => "trailing characters",
            Code::UnexpectedEndOfHexEscape => "unexpected end of hex escape",
        }
    }
}

/// What a syntactically valid body is.
#[derive(Debug)]
pub(super) enum Body<'a> {
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A JSON object.
    Object(TopLevel<'a>),
}

/// What the top-level object holds.
#[derive(Debug)]
pub(super) struct TopLevel<'a> {
    /// How many times the `messages` key appears.
    pub(super) messages_seen: usize,
    /// The first `messages` value.
    pub(super) messages: Option<Messages<'a>>,
    /// The last top-level `stream` value is literally `true`.
    pub(super) stream: bool,
}

/// The first `messages` value.
#[derive(Debug)]
pub(super) enum Messages<'a> {
    /// Any value but an array.
    NotArray,
    /// An array.
    Array(MessageList<'a>),
}

/// What the `messages` array holds, up to its first invalid element.
#[derive(Debug, Default)]
pub(super) struct MessageList<'a> {
    /// Index of the byte right after the array's `[`.
    pub(super) after_open: usize,
    /// Number of elements.
    pub(super) len: usize,
    /// Index of the first element that is not an object with exactly one
    /// string `role`, at most one `content` and decodable keys.
    pub(super) invalid: Option<usize>,
    /// Where the first system/developer message takes the instruction.
    pub(super) instruction: Option<InstructionSlot>,
    /// The other messages, in order.
    pub(super) pending: Vec<Pending<'a>>,
}

/// Where the instruction goes in the first system/developer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InstructionSlot {
    /// Replace the `content` value at `body[start..end]`.
    Content { start: usize, end: usize },
    /// No `content` key: insert one at this index, right after the `{`.
    Insert { at: usize },
}

/// A non-system message, not yet decoded or capped.
#[derive(Debug)]
pub(super) struct Pending<'a> {
    /// The decoded role.
    pub(super) role: Cow<'a, str>,
    /// Raw JSON of the `content` value, if the key is present.
    pub(super) content: Option<&'a str>,
    /// `content` is a string with escapes (else its text is the raw JSON
    /// between the quotes).
    pub(super) content_escaped: bool,
    /// Raw JSON of the last `tool_calls` value, if the key is present.
    pub(super) tool_calls: Option<&'a str>,
}

/// Scans `text`: either a syntax error (as serde_json would report it) or
/// what the body holds.
pub(super) fn scan(text: &str) -> Result<Body<'_>, SyntaxError> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        i: 0,
        error: None,
    };
    match scanner.body() {
        Ok(body) => Ok(body),
        // `Stop` is only ever returned after recording the error.
        Err(Stop) => Err(scanner.error.unwrap_or(SyntaxError {
            code: Code::ExpectedSomeValue,
            index: 0,
        })),
    }
}

/// Finds `choices[0].message.content` in a chat completion reply when it is a string, and
/// returns its span in `text` (quotes included), skipping every other member with the
/// same validating skips as the body scan. `None` for any other shape: content not a
/// string, a key on the way written with escapes, or a syntax error before the content.
/// What follows the content is not read.
pub(crate) fn completion_content_span(text: &str) -> Option<(usize, usize)> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        i: 0,
        error: None,
    };
    scanner.enter(b'{')?;
    scanner.member(b"choices")?;
    scanner.enter(b'[')?;
    scanner.enter(b'{')?;
    scanner.member(b"message")?;
    scanner.enter(b'{')?;
    scanner.member(b"content")?;
    (scanner.skip_ws()? == b'"').then_some(())?;
    let start = scanner.i;
    scanner.i += 1;
    scanner.lenient_str().ok()?;
    Some((start, scanner.i))
}

/// The scan stopped on a syntax error, recorded in [`Scanner::error`]. A
/// zero-sized error keeps every `Result` in the scanner small enough to be
/// returned in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stop;

/// A message key the scan cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Role,
    Content,
    ToolCalls,
    Other,
    /// A key whose escapes do not decode (lone surrogate).
    Undecodable,
}

/// A stack of open containers, one bit per level (1 = object), with no
/// allocation for the first 64 levels.
struct Frames {
    depth: usize,
    inline: u64,
    spill: Vec<u64>,
}

impl Frames {
    fn new() -> Self {
        Frames {
            depth: 0,
            inline: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, object: bool) {
        let bit = u64::from(object) << (self.depth % 64);
        let mask = !(1u64 << (self.depth % 64));
        if self.depth < 64 {
            self.inline = (self.inline & mask) | bit;
        } else {
            let word = (self.depth - 64) / 64;
            if word == self.spill.len() {
                self.spill.push(0);
            }
            if let Some(slot) = self.spill.get_mut(word) {
                *slot = (*slot & mask) | bit;
            }
        }
        self.depth += 1;
    }

    /// The innermost open container: `Some(true)` for an object.
    fn top(&self) -> Option<bool> {
        let level = self.depth.checked_sub(1)?;
        let word = if level < 64 {
            self.inline
        } else {
            self.spill.get((level - 64) / 64).copied().unwrap_or(0)
        };
        Some(word >> (level % 64) & 1 == 1)
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Index of the next byte to read.
    i: usize,
    /// Why the scan stopped, once it has.
    error: Option<SyntaxError>,
}

impl<'a> Scanner<'a> {
    // -- positions and errors ---------------------------------------------

    /// An error about the byte just consumed (serde_json's `error`).
    #[cold]
    fn error(&mut self, code: Code) -> Stop {
        self.error = Some(SyntaxError {
            code,
            index: self.i.min(self.bytes.len()),
        });
        Stop
    }

    /// An error about the byte at `i`, not consumed (serde_json's
    /// `peek_error`).
    #[cold]
    fn peek_error(&mut self, code: Code) -> Stop {
        self.error = Some(SyntaxError {
            code,
            index: (self.i + 1).min(self.bytes.len()),
        });
        Stop
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    /// Skips whitespace and returns the next byte, not consumed.
    #[inline]
    fn skip_ws(&mut self) -> Option<u8> {
        loop {
            match self.bytes.get(self.i) {
                Some(b' ' | b'\n' | b'\t' | b'\r') => self.i += 1,
                other => return other.copied(),
            }
        }
    }

    /// `&text[start..end]`; every span the scanner takes lies between ASCII
    /// delimiters of a `str`, so this never comes back empty by mistake.
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.text.get(start..end).unwrap_or_default()
    }

    // -- the body -----------------------------------------------------------

    fn body(&mut self) -> Result<Body<'a>, Stop> {
        if self.skip_ws() != Some(b'{') {
            // Any other JSON value (or none): serde_json's `IgnoredAny`.
            self.skip_value()?;
            self.end()?;
            return Ok(Body::NotAnObject);
        }
        self.i += 1;
        let top = self.top_level()?;
        self.end()?;
        Ok(Body::Object(top))
    }

    /// Only whitespace may follow the top-level value.
    fn end(&mut self) -> Result<(), Stop> {
        match self.skip_ws() {
            Some(_) => Err(self.peek_error(Code::TrailingCharacters)),
            None => Ok(()),
        }
    }

    /// The members of the top-level object, `i` right after its `{`; leaves
    /// `i` after its `}`. Follows serde_json's `MapAccess` (not
    /// `ignore_value`), with keys decoded strictly.
    fn top_level(&mut self) -> Result<TopLevel<'a>, Stop> {
        let mut top = TopLevel {
            messages_seen: 0,
            messages: None,
            stream: false,
        };
        let mut first = true;
        loop {
            match self.skip_ws() {
                None => return Err(self.peek_error(Code::EofWhileParsingObject)),
                Some(b'}') => break,
                Some(b'"') if first => {}
                Some(_) if first => return Err(self.peek_error(Code::KeyMustBeAString)),
                Some(b',') => {
                    self.i += 1;
                    match self.skip_ws() {
                        Some(b'"') => {}
                        Some(b'}') => return Err(self.peek_error(Code::TrailingComma)),
                        Some(_) => return Err(self.peek_error(Code::KeyMustBeAString)),
                        None => return Err(self.peek_error(Code::EofWhileParsingValue)),
                    }
                }
                Some(_) => return Err(self.peek_error(Code::ExpectedObjectCommaOrEnd)),
            }
            first = false;

            self.i += 1;
            let start = self.i;
            let escaped = self.strict_str()?;
            let key = self.slice(start, self.i - 1);
            let key = if escaped {
                unescape(key)
            } else {
                Some(Cow::Borrowed(key))
            };
            self.colon()?;

            match key.as_deref() {
                Some("messages") => {
                    top.messages_seen += 1;
                    if top.messages.is_none() && self.skip_ws() == Some(b'[') {
                        self.i += 1;
                        let list = self.message_list()?;
                        top.messages = Some(Messages::Array(list));
                    } else {
                        self.skip_value()?;
                        top.messages.get_or_insert(Messages::NotArray);
                    }
                }
                Some("stream") => {
                    self.skip_ws();
                    let start = self.i;
                    self.skip_value()?;
                    top.stream = self.bytes.get(start..self.i) == Some(&b"true"[..]);
                }
                _ => self.skip_value()?,
            }
        }
        self.i += 1;
        Ok(top)
    }

    /// `:` between a key and its value (`ignore_value` and `MapAccess` agree).
    #[inline]
    fn colon(&mut self) -> Result<(), Stop> {
        match self.skip_ws() {
            Some(b':') => {
                self.i += 1;
                Ok(())
            }
            Some(_) => Err(self.peek_error(Code::ExpectedColon)),
            None => Err(self.peek_error(Code::EofWhileParsingObject)),
        }
    }

    /// Steps into the object (`{`) or array (`[`) that starts here, for
    /// [`completion_content_span`].
    fn enter(&mut self, open: u8) -> Option<()> {
        (self.skip_ws()? == open).then(|| self.i += 1)
    }

    /// Inside an object, at its first member: moves to the value of the first member
    /// named `name` (a key written with escapes ends the search), skipping the others.
    fn member(&mut self, name: &[u8]) -> Option<()> {
        loop {
            let (start, escaped) = self.key().ok()?;
            let key = self.bytes.get(start..self.i - 1)?;
            if escaped {
                return None;
            }
            self.colon().ok()?;
            if key == name {
                return Some(());
            }
            self.skip_value().ok()?;
            (self.skip_ws()? == b',').then(|| self.i += 1)?;
        }
    }

    /// The elements of the first `messages` array, `i` right after its `[`;
    /// leaves `i` after its `]`. Syntax as in `ignore_value`.
    fn message_list(&mut self) -> Result<MessageList<'a>, Stop> {
        let mut list = MessageList {
            after_open: self.i,
            ..MessageList::default()
        };
        let mut accept_comma = false;
        loop {
            match self.skip_ws() {
                Some(b',') if accept_comma => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(list);
                }
                Some(_) if accept_comma => {
                    return Err(self.peek_error(Code::ExpectedListCommaOrEnd))
                }
                Some(_) => {}
                None => return Err(self.peek_error(Code::EofWhileParsingList)),
            }
            if self.skip_ws() == Some(b'{') {
                self.i += 1;
                self.message(&mut list)?;
            } else {
                self.skip_value()?;
                list.invalid.get_or_insert(list.len);
            }
            list.len += 1;
            accept_comma = true;
        }
    }

    /// One message object, `i` right after its `{`; leaves `i` after its `}`.
    /// Syntax as in `ignore_value`; the message itself is only looked at
    /// while every earlier one was valid.
    fn message(&mut self, list: &mut MessageList<'a>) -> Result<(), Stop> {
        let open = self.i;
        let tracking = list.invalid.is_none();
        let mut bad = false;
        // Span of the role string's contents, and whether it has escapes.
        let mut role: Option<(usize, usize, bool)> = None;
        let mut content: Option<(usize, usize, bool)> = None;
        let mut tool_calls: Option<(usize, usize)> = None;

        let mut accept_comma = false;
        loop {
            match self.skip_ws() {
                Some(b',') if accept_comma => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                Some(_) if accept_comma => {
                    return Err(self.peek_error(Code::ExpectedObjectCommaOrEnd))
                }
                Some(_) => {}
                None => return Err(self.peek_error(Code::EofWhileParsingObject)),
            }
            let field = self.message_key(tracking)?;
            self.colon()?;

            match field {
                Field::Role => {
                    bad |= role.is_some();
                    if self.skip_ws() == Some(b'"') {
                        self.i += 1;
                        let start = self.i;
                        let known = self.skip_known(b"user\"")
                            || self.skip_known(b"assistant\"")
                            || self.skip_known(b"system\"")
                            || self.skip_known(b"developer\"")
                            || self.skip_known(b"tool\"");
                        let escaped = if known { false } else { self.lenient_str()? };
                        role = Some((start, self.i - 1, escaped));
                    } else {
                        self.skip_value()?;
                        bad = true;
                    }
                }
                Field::Content => {
                    bad |= content.is_some();
                    content = Some(self.value_span()?);
                }
                Field::ToolCalls => {
                    let (start, end, _) = self.value_span()?;
                    tool_calls = Some((start, end));
                }
                Field::Other => self.skip_value()?,
                Field::Undecodable => {
                    bad = true;
                    self.skip_value()?;
                }
            }
            accept_comma = true;
        }
        if !tracking {
            return Ok(());
        }

        let role = match role {
            Some((start, end, escaped)) if !bad => {
                let raw = self.slice(start, end);
                if escaped {
                    unescape(raw)
                } else {
                    Some(Cow::Borrowed(raw))
                }
            }
            _ => None,
        };
        let Some(role) = role else {
            list.invalid = Some(list.len);
            return Ok(());
        };
        if role == "system" || role == "developer" {
            if list.instruction.is_none() {
                list.instruction = Some(match content {
                    Some((start, end, _)) => InstructionSlot::Content { start, end },
                    None => InstructionSlot::Insert { at: open },
                });
            }
        } else {
            list.pending.push(Pending {
                role,
                content: content.map(|(start, end, _)| self.slice(start, end)),
                content_escaped: content.is_some_and(|(_, _, escaped)| escaped),
                tool_calls: tool_calls.map(|(start, end)| self.slice(start, end)),
            });
        }
        Ok(())
    }

    /// A key of a message object (`ignore_value` syntax) and which field it
    /// names; `Other` for every key when the message is not looked at.
    #[inline]
    fn message_key(&mut self, tracking: bool) -> Result<Field, Stop> {
        match self.skip_ws() {
            Some(b'"') => self.i += 1,
            Some(_) => return Err(self.peek_error(Code::KeyMustBeAString)),
            None => return Err(self.peek_error(Code::EofWhileParsingObject)),
        }
        let start = self.i;
        let field = if self.skip_known(b"role\"") {
            Field::Role
        } else if self.skip_known(b"content\"") {
            Field::Content
        } else if self.skip_known(b"tool_calls\"") {
            Field::ToolCalls
        } else {
            let escaped = self.lenient_str()?;
            classify(self.slice(start, self.i - 1), escaped)
        };
        Ok(if tracking { field } else { Field::Other })
    }

    /// If the bytes at `i` are `known` (the rest of a string up to and
    /// including its closing quote, with no `\\` or control character), skips
    /// them: a shortcut past the string scan for the usual keys and roles.
    #[inline(always)]
    fn skip_known<const N: usize>(&mut self, known: &[u8; N]) -> bool {
        // Compared as arrays, so that it compiles to a few integer compares.
        let found = self
            .bytes
            .get(self.i..self.i + N)
            .and_then(|bytes| <&[u8; N]>::try_from(bytes).ok())
            .is_some_and(|bytes| bytes == known);
        if found {
            self.i += N;
        }
        found
    }

    /// A key inside an `ignore_value` object: `"` then a string; returns the
    /// index of the key's first content byte and whether it has escapes.
    #[inline]
    fn key(&mut self) -> Result<(usize, bool), Stop> {
        match self.skip_ws() {
            Some(b'"') => self.i += 1,
            Some(_) => return Err(self.peek_error(Code::KeyMustBeAString)),
            None => return Err(self.peek_error(Code::EofWhileParsingObject)),
        }
        let start = self.i;
        let escaped = self.lenient_str()?;
        Ok((start, escaped))
    }

    /// Skips one value and returns its span (without surrounding whitespace)
    /// and whether it is a string with escapes.
    #[inline]
    fn value_span(&mut self) -> Result<(usize, usize, bool), Stop> {
        let first = self.skip_ws();
        let start = self.i;
        let escaped = if first == Some(b'"') {
            // The usual case, without the container machinery.
            self.i += 1;
            self.lenient_str()?
        } else {
            self.skip_value()?;
            false
        };
        Ok((start, self.i, escaped))
    }

    // -- values -------------------------------------------------------------

    /// Skips whitespace and one JSON value, exactly like serde_json's
    /// `ignore_value` (same checks, same errors), without recursion.
    fn skip_value(&mut self) -> Result<(), Stop> {
        let mut frames = Frames::new();
        loop {
            let opened = match self.skip_ws() {
                None => return Err(self.peek_error(Code::EofWhileParsingValue)),
                Some(b'"') => {
                    self.i += 1;
                    self.lenient_str()?;
                    None
                }
                Some(b'n') => {
                    self.i += 1;
                    self.ident(b"ull")?;
                    None
                }
                Some(b't') => {
                    self.i += 1;
                    self.ident(b"rue")?;
                    None
                }
                Some(b'f') => {
                    self.i += 1;
                    self.ident(b"alse")?;
                    None
                }
                Some(b'-') => {
                    self.i += 1;
                    self.number()?;
                    None
                }
                Some(b'0'..=b'9') => {
                    self.number()?;
                    None
                }
                Some(open @ (b'[' | b'{')) => {
                    self.i += 1;
                    Some(open == b'{')
                }
                Some(_) => return Err(self.peek_error(Code::ExpectedSomeValue)),
            };

            let (mut accept_comma, mut object) = match opened {
                Some(object) => {
                    frames.push(object);
                    (false, object)
                }
                None => match frames.top() {
                    Some(object) => (true, object),
                    None => return Ok(()),
                },
            };

            loop {
                match self.skip_ws() {
                    Some(b',') if accept_comma => {
                        self.i += 1;
                        break;
                    }
                    Some(b']') if !object => {}
                    Some(b'}') if object => {}
                    Some(_) if accept_comma => {
                        return Err(self.peek_error(if object {
                            Code::ExpectedObjectCommaOrEnd
                        } else {
                            Code::ExpectedListCommaOrEnd
                        }));
                    }
                    Some(_) => break,
                    None => {
                        return Err(self.peek_error(if object {
                            Code::EofWhileParsingObject
                        } else {
                            Code::EofWhileParsingList
                        }));
                    }
                }
                // A closing bracket.
                self.i += 1;
                frames.pop();
                object = match frames.top() {
                    Some(object) => object,
                    None => return Ok(()),
                };
                accept_comma = true;
            }

            if object {
                self.key()?;
                self.colon()?;
            }
        }
    }

    /// The rest of `null` / `true` / `false` after its first byte.
    fn ident(&mut self, rest: &[u8]) -> Result<(), Stop> {
        for &expected in rest {
            match self.peek() {
                None => return Err(self.error(Code::EofWhileParsingValue)),
                Some(byte) => {
                    self.i += 1;
                    if byte != expected {
                        return Err(self.error(Code::ExpectedSomeIdent));
                    }
                }
            }
        }
        Ok(())
    }

    /// A number after its optional `-`: `0` or `[1-9][0-9]*`, then an optional
    /// fraction and exponent. Never converted, so never out of range.
    fn number(&mut self) -> Result<(), Stop> {
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(self.peek_error(Code::InvalidNumber));
                }
            }
            Some(b'1'..=b'9') => {
                self.i += 1;
                self.digits();
            }
            Some(_) => {
                self.i += 1;
                return Err(self.error(Code::InvalidNumber));
            }
            None => return Err(self.error(Code::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.peek_error(Code::InvalidNumber));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            match self.peek() {
                Some(b'0'..=b'9') => self.i += 1,
                Some(_) => {
                    self.i += 1;
                    return Err(self.error(Code::InvalidNumber));
                }
                None => return Err(self.error(Code::InvalidNumber)),
            }
            self.digits();
        }
        Ok(())
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }

    // -- strings ------------------------------------------------------------

    /// The rest of a string after its opening `"`, like serde_json's
    /// `ignore_str`: escapes are checked for syntax only (a `\u` escape needs
    /// four hex digits, surrogates need not pair). Leaves `i` after the
    /// closing `"` and tells whether the string has escapes.
    #[inline]
    fn lenient_str(&mut self) -> Result<bool, Stop> {
        self.string_rest(false)
    }

    /// Like [`Scanner::lenient_str`], but checks surrogate escapes the way
    /// serde_json does when it decodes a string (`parse_str`), for top-level
    /// keys.
    fn strict_str(&mut self) -> Result<bool, Stop> {
        self.string_rest(true)
    }

    /// The two string scans differ only in how strictly escapes are checked and
    /// in where a control character is reported (`parse_str` consumes it first).
    #[inline]
    fn string_rest(&mut self, strict: bool) -> Result<bool, Stop> {
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(self.i..).unwrap_or_default();
            self.i += find_special(rest);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    self.i += 1;
                    escaped = true;
                    self.escape(strict)?;
                }
                Some(_) => {
                    if strict {
                        self.i += 1;
                    }
                    return Err(self.error(Code::ControlCharacterWhileParsingString));
                }
                None => return Err(self.error(Code::EofWhileParsingString)),
            }
        }
    }

    /// One escape after its `\`.
    fn escape(&mut self, strict: bool) -> Result<(), Stop> {
        let Some(byte) = self.peek() else {
            return Err(self.error(Code::EofWhileParsingString));
        };
        self.i += 1;
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' if !strict => self.hex_escape().map(drop),
            b'u' => self.strict_unicode_escape(),
            _ => Err(self.error(Code::InvalidEscape)),
        }
    }

    /// The four hex digits of a `\u` escape (serde_json's
    /// `decode_hex_escape`).
    fn hex_escape(&mut self) -> Result<u16, Stop> {
        match self.bytes.get(self.i..self.i + 4) {
            Some(digits) => {
                self.i += 4;
                hex4(digits).ok_or_else(|| self.error(Code::InvalidEscape))
            }
            None => {
                self.i = self.bytes.len();
                Err(self.error(Code::EofWhileParsingString))
            }
        }
    }

    /// A `\u` escape as serde_json's `parse_unicode_escape` checks it when
    /// decoding: a surrogate must be a leading one followed by `\u` and a
    /// trailing one.
    fn strict_unicode_escape(&mut self) -> Result<(), Stop> {
        let first = self.hex_escape()?;
        if (0xDC00..=0xDFFF).contains(&first) {
            return Err(self.error(Code::LoneLeadingSurrogateInHexEscape));
        }
        if !(0xD800..=0xDBFF).contains(&first) {
            return Ok(());
        }
        for expected in [b'\\', b'u'] {
            match self.peek() {
                None => return Err(self.error(Code::EofWhileParsingString)),
                Some(byte) => {
                    self.i += 1;
                    if byte != expected {
                        return Err(self.error(Code::UnexpectedEndOfHexEscape));
                    }
                }
            }
        }
        let second = self.hex_escape()?;
        if !(0xDC00..=0xDFFF).contains(&second) {
            return Err(self.error(Code::LoneLeadingSurrogateInHexEscape));
        }
        Ok(())
    }
}

/// Which message field a key names; `raw` is the key between its quotes.
#[inline]
fn classify(raw: &str, escaped: bool) -> Field {
    let name = if escaped {
        match unescape(raw) {
            Some(name) => name,
            None => return Field::Undecodable,
        }
    } else {
        Cow::Borrowed(raw)
    };
    match &*name {
        "role" => Field::Role,
        "content" => Field::Content,
        "tool_calls" => Field::ToolCalls,
        _ => Field::Other,
    }
}

/// Index of the first `"`, `\` or control character (U+0000..U+001F) in
/// `bytes`, or `bytes.len()`.
#[inline]
fn find_special(bytes: &[u8]) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        find_first(bytes, is_special, |chunk| {
            // SAFETY: `sse2::special_bits` only requires SSE2, which the cfg
            // above guarantees for the whole build (it is part of the x86_64
            // baseline).
            unsafe { sse2::special_bits(chunk) }
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        find_first(bytes, is_special, |chunk| swar_bits(chunk, special_mask))
    }
}

/// Index of the first `\` in `bytes`, or `bytes.len()`.
#[inline]
fn find_backslash(bytes: &[u8]) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        find_first(
            bytes,
            |b| b == b'\\',
            |chunk| {
                // SAFETY: as in `find_special`.
                unsafe { sse2::byte_bits(chunk, b'\\') }
            },
        )
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        find_first(
            bytes,
            |b| b == b'\\',
            |chunk| swar_bits(chunk, |v| zero_lanes(v ^ (ONES * u64::from(b'\\')))),
        )
    }
}

/// Index of the first byte of `bytes` for which `hit` holds, or
/// `bytes.len()`: 16 bytes per step, `bits` telling which of them hit (bit
/// `i` for byte `i`), so there is no branch per byte. Short strings — most
/// keys and values — are where this pays: a call to `memchr` costs more than
/// the search.
#[inline(always)]
fn find_first(bytes: &[u8], hit: impl Fn(u8) -> bool, bits: impl Fn(&[u8; 16]) -> u32) -> usize {
    let mut chunks = bytes.chunks_exact(16);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut block = [0u8; 16];
        block.copy_from_slice(chunk);
        let found = bits(&block);
        if found != 0 {
            return offset + found.trailing_zeros() as usize;
        }
        offset += 16;
    }
    let rest = chunks.remainder();
    offset + rest.iter().position(|&b| hit(b)).unwrap_or(rest.len())
}

/// SSE2 versions of the 16-byte tests: three compares and a `movemask`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_set_epi64x,
    };

    #[inline]
    #[target_feature(enable = "sse2")]
    fn load(chunk: &[u8; 16]) -> __m128i {
        let mut low = [0u8; 8];
        let mut high = [0u8; 8];
        low.copy_from_slice(&chunk[..8]);
        high.copy_from_slice(&chunk[8..]);
        // Two halves instead of a pointer load, to stay in safe code; the
        // compiler merges them into one unaligned load.
        _mm_set_epi64x(i64::from_le_bytes(high), i64::from_le_bytes(low))
    }

    /// Bit `i` set when `chunk[i]` is `"`, `\\` or below 0x20.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn special_bits(chunk: &[u8; 16]) -> u32 {
        let v = load(chunk);
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `b < 0x20` is `max(b, 0x1f) == 0x1f`.
        let below = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, below), below);
        let any = _mm_or_si128(_mm_or_si128(quote, backslash), control);
        _mm_movemask_epi8(any) as u32
    }

    /// Bit `i` set when `chunk[i] == byte`.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn byte_bits(chunk: &[u8; 16], byte: u8) -> u32 {
        let v = load(chunk);
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u32
    }
}

/// The portable 16-byte test: two SWAR words. Only the lowest hit is
/// reported (all `find_first` needs): SWAR lanes above a hit may be spurious.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline(always)]
fn swar_bits(chunk: &[u8; 16], mask: impl Fn(u64) -> u64) -> u32 {
    let (low, high) = chunk.split_at(8);
    let low = mask(word(low));
    let high = mask(word(high));
    let lanes = |m: u64| -> u32 {
        if m == 0 {
            0
        } else {
            1 << (m.trailing_zeros() / 8)
        }
    };
    lanes(low) | if low == 0 { lanes(high) << 8 } else { 0 }
}

/// `"`, `\` or a control character: where a string scan must stop.
#[inline(always)]
fn is_special(b: u8) -> bool {
    (b == b'"') | (b == b'\\') | (b < 0x20)
}

/// `0x0101…01`.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
const ONES: u64 = u64::MAX / 255;

/// Eight bytes as a little-endian word (`eight` has exactly 8 bytes).
#[inline(always)]
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn word(eight: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(eight);
    u64::from_le_bytes(word)
}

/// The high bit of a lane is set for the lowest zero byte of `v`; lanes above
/// it may be set too (borrows), so only the lowest set bit is meaningful.
#[inline(always)]
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn zero_lanes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & (ONES * 0x80)
}

/// [`zero_lanes`] for the bytes of `v` where [`is_special`] holds.
#[inline(always)]
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn special_mask(v: u64) -> u64 {
    // A lane below 0x20 borrows into its high bit, as a zero lane does.
    let control = v.wrapping_sub(ONES * 0x20) & !v & (ONES * 0x80);
    zero_lanes(v ^ (ONES * u64::from(b'"'))) | zero_lanes(v ^ (ONES * u64::from(b'\\'))) | control
}

/// The value of four hex digits.
fn hex4(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |value, &digit| {
        let nibble = char::from(digit).to_digit(16)?;
        Some(value << 4 | nibble as u16)
    })
}

/// Decodes the contents of a JSON string (between its quotes) that the
/// scanner accepted. `None` when a `\u` escape is a lone surrogate, which
/// serde_json refuses to decode into a `str` too. Borrows when there is no
/// escape.
pub(super) fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    let bytes = raw.as_bytes();
    let first = find_backslash(bytes);
    if first == bytes.len() {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    out.push_str(raw.get(..first)?);
    let mut i = first;
    loop {
        // `bytes[i]` is a backslash.
        let kind = *bytes.get(i + 1)?;
        i += 2;
        match kind {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let unit = hex4(bytes.get(i..i + 4)?)?;
                i += 4;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        if bytes.get(i..i + 2) != Some(b"\\u") {
                            return None;
                        }
                        let low = hex4(bytes.get(i + 2..i + 6)?)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        i += 6;
                        0x1_0000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => u32::from(unit),
                };
                out.push(char::from_u32(code)?);
            }
            _ => return None,
        }
        let next = find_backslash(bytes.get(i..)?);
        out.push_str(raw.get(i..i + next)?);
        i += next;
        if i == bytes.len() {
            return Some(Cow::Owned(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_deep() {
        let mut frames = Frames::new();
        let pattern = |level: usize| level.is_multiple_of(3) || level % 7 == 1;
        for level in 0..1000 {
            frames.push(pattern(level));
            assert_eq!(frames.top(), Some(pattern(level)));
        }
        for level in (0..1000).rev() {
            assert_eq!(frames.top(), Some(pattern(level)));
            frames.pop();
        }
        assert_eq!(frames.top(), None);
    }

    /// The 16-byte tests (SSE2 where built, portable SWAR everywhere) find
    /// the same first byte as a plain loop, for every byte value in every
    /// position.
    #[test]
    fn find_first_matches_a_plain_loop() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let plain = |bytes: &[u8], hit: &dyn Fn(u8) -> bool| {
            bytes.iter().position(|&b| hit(b)).unwrap_or(bytes.len())
        };
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 100] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    cases.push(bytes);
                }
            }
            cases.push(vec![b'a'; len]);
        }
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            cases.push((0..len).map(|_| (next() % 256) as u8).collect());
        }
        for bytes in &cases {
            assert_eq!(find_special(bytes), plain(bytes, &is_special), "{bytes:?}");
            assert_eq!(
                find_backslash(bytes),
                plain(bytes, &|b| b == b'\\'),
                "{bytes:?}"
            );
            for chunk in bytes.chunks_exact(16) {
                let mut block = [0u8; 16];
                block.copy_from_slice(chunk);
                let expect = plain(chunk, &is_special);
                let portable = swar_bits(&block, special_mask);
                assert_eq!(
                    (portable != 0).then(|| portable.trailing_zeros() as usize),
                    (expect < 16).then_some(expect),
                    "{chunk:?}"
                );
            }
        }
    }

    #[test]
    fn unescape_matches_serde() {
        for raw in [
            "",
            "plain",
            r"a\nb",
            r#"\"\\\/\b\f\n\r\t"#,
            r"\u00e9\u65e5\ud83e\udd80x",
            r"\uD83E\uDD80",
            r"\ud800",
            r"\udc00",
            r"\ud800\u0041",
            r"\ud800\n",
            r"\ud800x",
            r"é\u00e9é",
        ] {
            let quoted = format!("\"{raw}\"");
            let serde = serde_json::from_str::<String>(&quoted).ok();
            assert_eq!(unescape(raw).map(Cow::into_owned), serde, "{raw}");
        }
    }
}
