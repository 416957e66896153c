//! Capturing the assistant's reply text from an upstream response, for the rollout record.
//!
//! The response reaches the client untouched and unbuffered; this module only keeps a copy
//! of the bytes (up to [`MAX_RAW_BYTES`]) and extracts the text once the exchange is over,
//! off the latency path. It understands a JSON chat completion and an SSE stream of chunks
//! (reassembling `choices[0].delta.content`), in any content coding a client may ask for
//! (gzip, deflate, br, zstd, identity): the OpenAI SDKs ask for gzip and often br or zstd.

use flate2::read::{GzDecoder, ZlibDecoder};
use serde_json::Value;
use std::io::Read;

/// The most response bytes kept for capture; a longer response is captured as `None`.
pub const MAX_RAW_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
    Unsupported,
}

/// Accumulates one response for capture.
#[derive(Debug)]
pub struct ReplyCapture {
    is_sse: bool,
    encoding: Encoding,
    raw: Vec<u8>,
    overflowed: bool,
    max_text_bytes: usize,
}

impl ReplyCapture {
    /// `content_type` and `content_encoding` are the upstream response's header values.
    pub fn new(content_type: &str, content_encoding: &str, max_text_bytes: usize) -> Self {
        let encoding = match content_encoding.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Encoding::Identity,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            _ => Encoding::Unsupported,
        };
        ReplyCapture {
            is_sse: content_type
                .to_ascii_lowercase()
                .starts_with("text/event-stream"),
            encoding,
            raw: Vec::new(),
            overflowed: false,
            max_text_bytes,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.overflowed || self.encoding == Encoding::Unsupported {
            return;
        }
        if self.raw.len() + chunk.len() > MAX_RAW_BYTES {
            self.overflowed = true;
            self.raw = Vec::new();
            return;
        }
        self.raw.extend_from_slice(chunk);
    }

    /// The reply text, capped at `max_text_bytes`; `None` when it cannot be told.
    pub fn finish(self) -> Option<String> {
        if self.overflowed {
            return None;
        }
        let decoded = decode(self.encoding, self.raw)?;
        let text = if self.is_sse {
            sse_reply_text(&decoded)
        } else {
            json_reply_text(&decoded)
        }?;
        Some(cap_text(text, self.max_text_bytes))
    }
}

/// The response body without its content coding (the identity coding's bytes as they are).
fn decode(encoding: Encoding, raw: Vec<u8>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    // Bounded, so a decompression bomb cannot blow up memory.
    let limit = MAX_RAW_BYTES as u64 * 4;
    let res = match encoding {
        Encoding::Identity => return Some(raw),
        Encoding::Gzip => GzDecoder::new(&raw[..]).take(limit).read_to_end(&mut out),
        Encoding::Deflate => ZlibDecoder::new(&raw[..]).take(limit).read_to_end(&mut out),
        Encoding::Brotli => brotli::Decompressor::new(&raw[..], 16 * 1024)
            .take(limit)
            .read_to_end(&mut out),
        Encoding::Zstd => zstd::stream::read::Decoder::new(&raw[..])
            .and_then(|d| d.take(limit).read_to_end(&mut out)),
        Encoding::Unsupported => return None,
    };
    res.ok().map(|_| out)
}

/// The part of a chat completion the capture reads. Typed, so that everything else in
/// the reply is skipped rather than built into a `Value` (this runs on every call).
#[derive(serde::Deserialize)]
struct Completion<'a> {
    #[serde(borrow, default)]
    choices: Vec<CompletionChoice<'a>>,
}

#[derive(serde::Deserialize)]
struct CompletionChoice<'a> {
    #[serde(borrow)]
    message: Option<CompletionMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct CompletionMessage<'a> {
    #[serde(borrow)]
    content: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a serde_json::value::RawValue>,
}

/// `choices[0].message.content`, or the tool calls as JSON when there is no content.
fn json_reply_text(body: &[u8]) -> Option<String> {
    quick_content(body).or_else(|| typed_reply_text(body))
}

/// [`json_reply_text`] by a typed parse of the whole reply.
fn typed_reply_text(body: &[u8]) -> Option<String> {
    let completion: Completion<'_> = serde_json::from_slice(body).ok()?;
    let msg = completion.choices.into_iter().next()?.message?;
    if let Some(content) = msg.content {
        if let Ok(text) = serde_json::from_str::<String>(content.get()) {
            return Some(text);
        }
    }
    let calls = msg.tool_calls?;
    // Compact, whatever the upstream's spacing.
    serde_json::from_str::<Value>(calls.get())
        .ok()
        .map(|v| v.to_string())
}

/// `choices[0].message.content` when it is a string, found by walking the reply's
/// structure with the body scanner (`rewrite::completion_content_span`) instead of
/// parsing all of it: the typed parse costs about 20 instructions per byte of the whole
/// reply, on every call. Only the content string itself is decoded (by serde_json).
/// `None` for any other shape (content `null`, a key written with escapes, anything
/// unexpected): the typed parse then decides. What follows the content is not read;
/// capture is best effort, and a reply whose content was found is kept.
fn quick_content(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let (start, end) = crate::rewrite::completion_content_span(text)?;
    serde_json::from_str::<String>(text.get(start..end)?).ok()
}

/// Concatenates `choices[0].delta.content` over the `data:` events of an SSE stream.
fn sse_reply_text(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut saw_event = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        saw_event = true;
        if let Some(Value::String(s)) = v
            .get("choices")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content"))
        {
            out.push_str(s);
        }
    }
    saw_event.then_some(out)
}

/// Truncates to at most `max` bytes on a char boundary, marking a cut with "…".
pub fn cap_text(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn capture(ct: &str, ce: &str, chunks: &[&[u8]]) -> Option<String> {
        let mut c = ReplyCapture::new(ct, ce, 1000);
        for ch in chunks {
            c.feed(ch);
        }
        c.finish()
    }

    #[test]
    fn json_reply() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"Tomorrow."}}]}"#;
        assert_eq!(
            capture("application/json", "", &[&body[..10], &body[10..]]).as_deref(),
            Some("Tomorrow.")
        );
    }

    #[test]
    fn tool_call_reply() {
        let body = br#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"t"}]}}]}"#;
        assert_eq!(
            capture("application/json", "", &[body]).as_deref(),
            Some(r#"[{"id":"t"}]"#)
        );
    }

    #[test]
    fn sse_reassembly_across_chunk_boundaries() {
        let stream = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
                      data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
                      data: [DONE]\n\n";
        let b = stream.as_bytes();
        let got = capture(
            "text/event-stream; charset=utf-8",
            "",
            &[&b[..30], &b[30..77], &b[77..]],
        );
        assert_eq!(got.as_deref(), Some("Hello"));
    }

    #[test]
    fn gzip_json() {
        let body = br#"{"choices":[{"message":{"content":"zipped"}}]}"#;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(
            capture("application/json", "gzip", &[&gz]).as_deref(),
            Some("zipped")
        );
        assert_eq!(
            capture("application/json", "br", &[&gz]),
            None,
            "not brotli"
        );
        assert_eq!(capture("application/json", "compress", &[&gz]), None);
    }

    #[test]
    fn brotli_and_zstd_sse() {
        let sse =
            "data: {\"choices\":[{\"delta\":{\"content\":\"squeezed\"}}]}\n\ndata: [DONE]\n\n";
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(sse.as_bytes()).unwrap();
        }
        assert_eq!(
            capture("text/event-stream", "br", &[&br]).as_deref(),
            Some("squeezed")
        );
        let zs = zstd::stream::encode_all(sse.as_bytes(), 3).unwrap();
        assert_eq!(
            capture("text/event-stream", "zstd", &[&zs]).as_deref(),
            Some("squeezed")
        );
    }

    #[test]
    fn caps_on_char_boundary() {
        assert_eq!(cap_text("héllo".into(), 2), "h…");
        assert_eq!(cap_text("abc".into(), 3), "abc");
        assert_eq!(cap_text("abcd".into(), 0), "…");
    }

    /// The fast path finds what the typed parse finds, on replies shaped as OpenAI and
    /// compatible servers send them, with extra members, nesting and escapes around the
    /// content; it never panics on any prefix or any single-byte change of them, and
    /// whenever the altered reply is still valid JSON it agrees with the typed parse.
    #[test]
    fn quick_content_agrees_with_the_typed_parse() {
        let replies: [&[u8]; 6] = [
            br#"{"choices":[{"message":{"role":"assistant","content":"Tomorrow."}}]}"#,
            br#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4.1-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Line 1\nLine \"2\" \u00e9 \ud83c\udf89","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#,
            b"{ \"usage\" : { \"a\" : [ 1 , 2.5e3 , -0 , true , null , [ ] , { } ] } ,\n \"choices\" : [ { \"finish_reason\" : \"stop\" , \"message\" : { \"tool_calls\" : [ { \"id\" : \"x\" } ] , \"content\" : \"spaced \\\\ out\" } } ] }",
            br#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"t"}]}}]}"#,
            br#"{"choices":[{"message":{"content":""}},{"message":{"content":"second"}}]}"#,
            br#"{"ch\u006fices":[{"message":{"content":"escaped key"}}],"choices":[]}"#,
        ];
        for (n, reply) in replies.iter().enumerate() {
            let typed = typed_reply_text(reply);
            assert_eq!(json_reply_text(reply), typed, "reply {n}");
            if let Some(quick) = quick_content(reply) {
                assert_eq!(Some(quick), typed, "reply {n}");
            }
            for cut in 0..reply.len() {
                let _ = json_reply_text(&reply[..cut]);
            }
            for at in 0..reply.len() {
                for byte in [
                    b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'x', b'0',
                ] {
                    let mut altered = reply.to_vec();
                    altered[at] = byte;
                    let quick = quick_content(&altered);
                    if quick.is_some() && serde_json::from_slice::<Value>(&altered).is_ok() {
                        assert_eq!(quick, typed_reply_text(&altered), "reply {n}, byte {at}");
                    }
                }
            }
        }
        assert_eq!(
            quick_content(replies[3]),
            None,
            "null content: typed parse decides"
        );
        assert_eq!(
            quick_content(replies[5]),
            None,
            "escaped key: typed parse decides"
        );
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(capture("application/json", "", &[b"not json"]), None);
        assert_eq!(capture("text/event-stream", "", &[b"data: nope\n\n"]), None);
    }
}
