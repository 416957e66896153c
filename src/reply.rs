//! The assistant's reply in an OpenAI chat-completions answer: read the same way by the
//! proxy's capture (the rollout's output, for reflection) and by the proposer (its new
//! instruction).

use serde_json::Value;

/// What a completion's first choice said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `message.content`: a string, or the `text` of its parts concatenated.
    Text(String),
    /// No text, but tool calls: their JSON, compact.
    ToolCalls(String),
}

/// `choices[0].message` of a JSON completion: its text, else its tool calls; `None` if
/// the body is not a completion or the message holds neither.
pub fn json_reply(body: &[u8]) -> Option<Reply> {
    quick_content(body)
        .map(Reply::Text)
        .or_else(|| typed_reply(body))
}

/// The part of a chat completion the reply is read from. Typed, so that everything else
/// is skipped rather than built into a `Value` (the capture runs on every call).
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

/// One part of a content array (`{"type": "text", "text": …}`); other parts have no text.
#[derive(serde::Deserialize)]
struct ContentPart {
    text: Option<String>,
}

/// [`json_reply`] by a typed parse of the whole reply.
fn typed_reply(body: &[u8]) -> Option<Reply> {
    let completion: Completion<'_> = serde_json::from_slice(body).ok()?;
    let msg = completion.choices.into_iter().next()?.message?;
    if let Some(text) = msg.content.and_then(|c| content_text(c.get())) {
        return Some(Reply::Text(text));
    }
    let calls = msg.tool_calls?;
    // Compact, whatever the upstream's spacing.
    serde_json::from_str::<Value>(calls.get())
        .ok()
        .map(|v| Reply::ToolCalls(v.to_string()))
}

/// A content string, or the texts of a content array joined; `None` for anything else
/// (`null`, an array without text parts).
fn content_text(raw: &str) -> Option<String> {
    if let Ok(text) = serde_json::from_str::<String>(raw) {
        return Some(text);
    }
    let parts: Vec<ContentPart> = serde_json::from_str(raw).ok()?;
    let texts: Vec<String> = parts.into_iter().filter_map(|p| p.text).collect();
    (!texts.is_empty()).then(|| texts.concat())
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
pub fn sse_reply_text(body: &[u8]) -> Option<String> {
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

/// The tokens a completion's `usage` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// `usage` of a JSON completion, when it has one.
pub fn usage(body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the capture kept before the two readers became one: the text, else the tool
    /// calls.
    fn json_reply_text(body: &[u8]) -> Option<String> {
        json_reply(body).map(|r| match r {
            Reply::Text(t) | Reply::ToolCalls(t) => t,
        })
    }

    fn typed_reply_text(body: &[u8]) -> Option<String> {
        typed_reply(body).map(|r| match r {
            Reply::Text(t) | Reply::ToolCalls(t) => t,
        })
    }

    /// What the proposer reads: the text only.
    fn completion_text(body: &[u8]) -> Option<String> {
        match json_reply(body)? {
            Reply::Text(t) => Some(t),
            Reply::ToolCalls(_) => None,
        }
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
    fn completion_text_reads_real_shaped_response() {
        let body = br#"{
          "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
          "object": "chat.completion",
          "created": 1741569952,
          "model": "gpt-4.1-2025-04-14",
          "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Here:\n```\nBe brief.\n```", "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
          }],
          "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}
        }"#;
        assert_eq!(
            completion_text(body).as_deref(),
            Some("Here:\n```\nBe brief.\n```")
        );
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#;
        assert_eq!(completion_text(parts).as_deref(), Some("ab"));
    }
    #[test]
    fn completion_text_none_on_garbage() {
        assert_eq!(completion_text(b"not json"), None);
        assert_eq!(completion_text(b""), None);
        assert_eq!(completion_text(b"\xff\xfe"), None);
        assert_eq!(completion_text(br#"{"choices":[]}"#), None);
        assert_eq!(
            completion_text(br#"{"choices":[{"message":{"content":null}}]}"#),
            None
        );
        assert_eq!(
            completion_text(br#"{"error":{"message":"rate limited"}}"#),
            None
        );
        assert_eq!(completion_text(br#"[1,2]"#), None);
    }

    #[test]
    fn tool_calls_are_read_when_there_is_no_text() {
        let body = br#"{"choices":[{"message":{"content":null,"tool_calls":[ {"id":"t"} ]}}]}"#;
        assert_eq!(
            json_reply(body),
            Some(Reply::ToolCalls(r#"[{"id":"t"}]"#.into()))
        );
        assert_eq!(completion_text(body), None, "the proposer wants text");
    }

    #[test]
    fn usage_is_read_when_the_reply_has_it() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#;
        assert_eq!(
            usage(body),
            Some(Usage {
                prompt_tokens: 19,
                completion_tokens: 10
            })
        );
        assert_eq!(usage(br#"{"choices":[]}"#), None);
        assert_eq!(usage(b"not json"), None);
    }
}
