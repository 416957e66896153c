//! Throughput of `rewrite_chat_body` on realistic chat-completions bodies, of
//! `ParsedChatBody::parse` alone (validation and scan, before a rollout is
//! assigned), and of a plain copy of the same bytes (the floor any rewrite
//! must pay).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gepa_gateway::rewrite::{rewrite_chat_body, ParsedChatBody};
use serde_json::json;

// The gateway's allocator (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INSTRUCTION: &str = "You are a concise assistant. Answer in at most three sentences, \
cite sources when you can, and say \"I don't know\" when unsure.";
const CAPTURE_MAX_BYTES: usize = 4096;

const USER_TURNS: [&str; 4] = [
    "Can you explain how HTTP/2 multiplexing differs from HTTP/1.1 pipelining? I keep \
     reading that head-of-line blocking is \"solved\" but TCP still blocks, right?",
    "Here is my config:\n```yaml\nlisten: 0.0.0.0:8080\nupstream: https://api.example.com\n\
     timeout_ms: 30000\n```\nWhy does the gateway return 502 after exactly 30 s?",
    "Translate to French: « The quick brown fox jumps over the lazy dog » — and keep the \
     quotes. Also, what's the café's opening time? ☕",
    "Summarize the following paragraph in one line: Large language models are trained on \
     vast corpora and can follow instructions, but their outputs depend heavily on prompts.",
];

const ASSISTANT_TURNS: [&str; 3] = [
    "Multiplexing lets many streams share one TCP connection, so a slow response no longer \
     blocks the others at the HTTP layer. A lost TCP segment still stalls every stream, \
     which is what QUIC/HTTP/3 fixes.",
    "Your `timeout_ms` is 30000, so the proxy gives up after 30 s and answers 502 Bad \
     Gateway. Raise it, or stream the response so the first byte arrives sooner.",
    "« Le renard brun rapide saute par-dessus le chien paresseux ». I don't have live data \
     about the café, sorry!",
];

/// A chat body of at least `target` bytes: a system prompt followed by
/// alternating user/assistant turns, plus the usual top-level fields.
fn chat_body(target: usize) -> Vec<u8> {
    let mut messages = vec![json!({
        "role": "system",
        "content": "You are a helpful assistant for network engineers. Be precise."
    })];
    let mut messages_len = 0;
    let mut turn = 0;
    loop {
        let body = serde_json::to_vec(&json!({
            "model": "gpt-4o-mini",
            "messages": messages,
            "temperature": 0.7,
            "max_tokens": 512,
            "stream": true,
            "user": "bench-user-42"
        }))
        .expect("serializable");
        if body.len() >= target {
            return body;
        }
        // Append turns until the estimate reaches the target, then re-measure.
        let missing = target - body.len();
        let start_len = messages_len;
        while messages_len - start_len < missing {
            for message in [
                json!({"role": "user", "content": USER_TURNS[turn % USER_TURNS.len()]}),
                json!({
                    "role": "assistant",
                    "content": ASSISTANT_TURNS[turn % ASSISTANT_TURNS.len()]
                }),
            ] {
                messages_len += message.to_string().len() + 1;
                messages.push(message);
            }
            turn += 1;
        }
    }
}

fn bench_rewrite(c: &mut Criterion) {
    for (label, size) in [("1KB", 1 << 10), ("100KB", 100 << 10), ("1MB", 1 << 20)] {
        let body = chat_body(size);
        // Sanity check outside the timed loop.
        let out = rewrite_chat_body(&body, INSTRUCTION, CAPTURE_MAX_BYTES).expect("valid body");
        assert!(out.stream);

        let mut group = c.benchmark_group(format!("rewrite/{label}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("rewrite_chat_body", |b| {
            b.iter(|| {
                rewrite_chat_body(black_box(&body), black_box(INSTRUCTION), CAPTURE_MAX_BYTES)
            })
        });
        // Validation and scan alone (what runs before a rollout is assigned).
        group.bench_function("parse", |b| {
            b.iter(|| ParsedChatBody::parse(black_box(&body)))
        });
        group.bench_function("copy_baseline", |b| b.iter(|| black_box(&body).to_vec()));
        group.finish();
    }
}

criterion_group!(benches, bench_rewrite);
criterion_main!(benches);
