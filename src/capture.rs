//! Capturing the assistant's reply text from an upstream response, for the rollout record.
//!
//! The response reaches the client untouched and unbuffered; this module only keeps a copy
//! of the bytes (up to [`MAX_RAW_BYTES`]) and extracts the text once the exchange is over,
//! off the latency path. It undoes the content coding and hands the body to [`crate::reply`],
//! which reads a JSON chat completion or an SSE stream of chunks, in any content coding a client may ask for
//! (gzip, deflate, br, zstd, identity): the OpenAI SDKs ask for gzip and often br or zstd.

use flate2::read::{GzDecoder, ZlibDecoder};
use std::io::Read;

use crate::format::truncate_marked;
use crate::reply::{json_reply, sse_reply_text, Reply};

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
        let reply = if self.is_sse {
            sse_reply_text(&decoded).map(Reply::Text)
        } else {
            json_reply(&decoded)
        }?;
        let mut text = match reply {
            Reply::Text(text) | Reply::ToolCalls(text) => text,
        };
        truncate_marked(&mut text, self.max_text_bytes);
        Some(text)
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
    fn garbage_is_none() {
        assert_eq!(capture("application/json", "", &[b"not json"]), None);
        assert_eq!(capture("text/event-stream", "", &[b"data: nope\n\n"]), None);
    }
}
