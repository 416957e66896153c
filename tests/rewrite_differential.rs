//! Differential test of the scanner-based parser (`gepa_gateway::rewrite`)
//! against the serde_json-based one it replaced (`rewrite_oracle`) and
//! against serde_json itself.
//!
//! For every body — generated chat bodies, arbitrary JSON, hand-written edge
//! cases and random mutations of all of these — it checks that:
//!
//! 1. `ParsedChatBody::parse` gives exactly the oracle's result: the same
//!    `BodyError` (for `InvalidJson`, the same message, position included), or
//!    a body whose `rewrite` gives the same bytes, `stream` flag and captured
//!    messages;
//! 2. the body is refused as invalid JSON exactly when it is not UTF-8 or
//!    `serde_json::from_str::<IgnoredAny>` refuses it — with one deliberate
//!    exception inherited from the oracle: a top-level *key* with a lone
//!    surrogate `\u` escape is refused (serde_json decodes those keys
//!    strictly), although `IgnoredAny` accepts it. Those cases are counted
//!    and checked to be exactly that.

mod rewrite_oracle;

use gepa_gateway::rewrite::{encoded_len, BodyError, ParsedChatBody};
use serde::de::IgnoredAny;

const INSTRUCTION: &str = "New \"instruction\"\n✓ \u{2028}";

/// What was seen over a run, for the report and for sanity checks.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    accepted: usize,
    invalid_json: usize,
    not_an_object: usize,
    missing_messages: usize,
    messages_not_array: usize,
    invalid_message: usize,
    surrogate_key: usize,
}

impl Tally {
    /// Compares the parsers on `body`; panics (test failure) on a difference.
    fn check(&mut self, body: &[u8], cap: usize) {
        self.cases += 1;
        let new = ParsedChatBody::parse(body);
        let old = rewrite_oracle::ParsedChatBody::parse(body);
        match (&new, &old) {
            (Ok(new), Ok(old)) => {
                self.accepted += 1;
                assert_eq!(new.stream(), old.stream(), "{}", show(body));
                let new_out = new.rewrite(INSTRUCTION, cap);
                let old_out = old.rewrite(INSTRUCTION, cap);
                assert_eq!(new_out.body, old_out.body, "{}", show(body));
                assert_eq!(new_out.stream, old_out.stream, "{}", show(body));
                assert_eq!(new_out.captured, old_out.captured, "{}", show(body));
                // The output is still JSON.
                assert!(
                    serde_json::from_slice::<IgnoredAny>(&new_out.body).is_ok(),
                    "{}",
                    show(body)
                );
            }
            (Err(new), Err(old)) => {
                assert_eq!(new, old, "{}", show(body));
                *match new {
                    BodyError::InvalidJson(_) => &mut self.invalid_json,
                    BodyError::NotAnObject => &mut self.not_an_object,
                    BodyError::MissingMessages => &mut self.missing_messages,
                    BodyError::MessagesNotArray => &mut self.messages_not_array,
                    BodyError::InvalidMessage { .. } => &mut self.invalid_message,
                } += 1;
            }
            _ => panic!(
                "new {:?} vs old {:?} for {}",
                new.as_ref().map(|_| ()),
                old.as_ref().map(|_| ()),
                show(body)
            ),
        }

        let serde_accepts = std::str::from_utf8(body)
            .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
        let refused_as_json = matches!(new, Err(BodyError::InvalidJson(_)));
        if serde_accepts == refused_as_json {
            // The one deliberate difference: a lone surrogate escape in a
            // top-level key.
            let Err(BodyError::InvalidJson(message)) = &new else {
                panic!("serde_json refuses {} but it was accepted", show(body));
            };
            assert!(
                message.starts_with("lone leading surrogate in hex escape")
                    || message.starts_with("unexpected end of hex escape"),
                "{message} for {}",
                show(body)
            );
            self.surrogate_key += 1;
        }
    }
}

fn show(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() > 2000 {
        let head: String = text.chars().take(2000).collect();
        format!("{head:?}… ({} bytes)", body.len())
    } else {
        format!("{text:?}")
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// xorshift64*, deterministic. When `sloppy`, the generators also produce
/// invalid tokens (bad numbers, literals and escapes).
struct Rng(u64, bool);

impl Rng {
    /// `true` rarely, and only when sloppy.
    fn broken(&mut self, n: usize) -> bool {
        self.1 && self.one_in(n)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn ws(rng: &mut Rng) -> &'static str {
    if rng.one_in(2) {
        ""
    } else {
        rng.pick(&["", " ", "\n", "\t", "\r\n  ", "  "])
    }
}

/// A JSON number, valid or (rarely) not.
fn number(rng: &mut Rng) -> String {
    if rng.broken(3) {
        return rng
            .pick(&[
                "01",
                "-01",
                "1.",
                ".5",
                "-",
                "1e",
                "1e+",
                "+1",
                "0x10",
                "00",
                "1.5e",
                "--1",
                "NaN",
                "Infinity",
                "-Infinity",
                "1.e5",
                "0e",
                "9.",
            ])
            .to_owned();
    }
    if rng.one_in(3) {
        return rng
            .pick(&[
                "0",
                "-0",
                "1e400",
                "-1e-400",
                "12345678901234567890123",
                "1.0e10",
                "0.10",
                "1E+2",
                "1e-0",
                "-0.0e-0",
                "0.000001E-0001",
            ])
            .to_owned();
    }
    let mut out = String::new();
    if rng.one_in(3) {
        out.push('-');
    }
    if rng.one_in(4) {
        out.push('0');
    } else {
        out.push(char::from(b'1' + rng.below(9) as u8));
        for _ in 0..rng.below(6) {
            out.push(char::from(b'0' + rng.below(10) as u8));
        }
    }
    if rng.one_in(3) {
        out.push('.');
        for _ in 0..1 + rng.below(4) {
            out.push(char::from(b'0' + rng.below(10) as u8));
        }
    }
    if rng.one_in(4) {
        out.push_str(rng.pick(&["e", "E", "e+", "e-", "E-"]));
        for _ in 0..1 + rng.below(3) {
            out.push(char::from(b'0' + rng.below(10) as u8));
        }
    }
    out
}

/// The inside of a JSON string literal: text, unicode and escapes (including
/// unpaired surrogates and, rarely, invalid escapes).
fn string_body(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(6) {
        out.push_str(rng.pick(&[
            "plain",
            "a b",
            "é",
            "日本語",
            "🦀",
            "\u{7f}",
            "\u{2028}",
            "\\\"",
            "\\\\",
            "\\/",
            "\\b\\f\\n\\r\\t",
            "\\u00e9",
            "\\u00E9",
            "\\u0000",
            "\\ud83e\\udd80",
            "\\uD83E\\uDD80",
            "\\ud800",
            "\\udc00",
            "\\ud800\\u0041",
            "\\ud800\\ud800",
            "\\ud800\\n",
            "\\ud800x",
            "[{\\\"x\\\":1}]",
            "{}",
            ":,",
        ]));
    }
    if rng.broken(10) {
        out.push_str(rng.pick(&["\\x", "\\u12", "\\u12G4", "\\", "\t", "\u{1}", "\\U0041"]));
    }
    out
}

fn string(rng: &mut Rng) -> String {
    format!("\"{}\"", string_body(rng))
}

/// A key: often one the parser looks for, sometimes escaped. Keys that make
/// a message invalid (`role`, `content`, undecodable escapes) or duplicate
/// `messages` only come when sloppy.
fn key(rng: &mut Rng) -> String {
    if rng.broken(4) {
        return string(rng);
    }
    if rng.1 {
        return format!(
            "\"{}\"",
            rng.pick(&[
                "role",
                "content",
                "messages",
                "r\\u006fle",
                "\\u0072ole",
                "c\\u006Fntent",
                "messag\\u0065s",
                "\\ud800role",
                "role\\udc00",
                "\\ud800\\u0041",
                "\\ud800",
            ])
        );
    }
    format!(
        "\"{}\"",
        rng.pick(&[
            "tool_calls",
            "stream",
            "model",
            "type",
            "text",
            "name",
            "x",
            "caf\\u00e9",
            "a\\\"b",
            "🦀",
            "\\ud83e\\udd80",
            "tool\\u005fcalls",
            "str\\u0065am",
            "te\\u0078t",
            "typ\\u0065",
        ])
    )
}

/// Any JSON value, nested up to `depth` levels.
fn value(rng: &mut Rng, depth: usize) -> String {
    let kind = if depth == 0 {
        rng.below(4)
    } else {
        rng.below(7)
    };
    match kind {
        0 => number(rng),
        1 => string(rng),
        2 if rng.broken(4) => rng
            .pick(&["tru", "nul", "nulll", "True", "fals"])
            .to_owned(),
        2 => rng.pick(&["true", "false", "null"]).to_owned(),
        3 => string(rng),
        4 | 5 => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| format!("{}{}{}", ws(rng), value(rng, depth - 1), ws(rng)))
                .collect();
            format!("[{}{}]", items.join(","), ws(rng))
        }
        _ => {
            let members: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    format!(
                        "{}{}{}:{}{}{}",
                        ws(rng),
                        key(rng),
                        ws(rng),
                        ws(rng),
                        value(rng, depth - 1),
                        ws(rng)
                    )
                })
                .collect();
            format!("{{{}{}}}", members.join(","), ws(rng))
        }
    }
}

/// Deeply nested arrays/objects, closed or not.
fn deep(rng: &mut Rng) -> String {
    let depth = *[1usize, 63, 64, 65, 127, 128, 129, 200, 1000, 5000]
        .get(rng.below(10))
        .unwrap_or(&1);
    let mut open = String::new();
    let mut close = Vec::new();
    for _ in 0..depth {
        if rng.one_in(2) {
            open.push('[');
            close.push(']');
        } else {
            open.push_str("{\"k\":");
            close.push('}');
        }
    }
    close.reverse();
    let inner = if rng.one_in(2) {
        "1".to_owned()
    } else {
        string(rng)
    };
    let close: String = close.into_iter().collect();
    format!("{open}{inner}{close}")
}

fn content_value(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=3 => string(rng),
        4 => "null".to_owned(),
        5 => {
            let parts: Vec<String> = (0..rng.below(5))
                .map(|_| match rng.below(5) {
                    0 => format!("{{\"type\":\"text\",{}\"text\":{}}}", ws(rng), string(rng)),
                    1 => format!("{{\"text\":{},\"type\":\"text\"}}", string(rng)),
                    2 => "{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}}".to_owned(),
                    3 => format!("{{{}:{},\"type\":\"text\"}}", key(rng), value(rng, 1)),
                    _ => value(rng, 2),
                })
                .collect();
            format!("[{}]", parts.join(","))
        }
        6 => deep(rng),
        _ => value(rng, 3),
    }
}

fn message(rng: &mut Rng) -> String {
    if rng.broken(25) {
        return value(rng, 2);
    }
    let mut fields = Vec::new();
    let roles = [
        "\"system\"",
        "\"developer\"",
        "\"user\"",
        "\"assistant\"",
        "\"tool\"",
        "\"user\"",
        "\"syst\\u0065m\"",
        "\"us\\u0065r\"",
        "\"System\"",
        "\"\\ud83e\\udd80\"",
    ];
    let bad_roles = ["\"\\ud800\"", "\"a\\udc00\"", "1", "null", "[\"system\"]"];
    if !rng.broken(20) {
        let role = if rng.broken(6) {
            rng.pick(&bad_roles).to_owned()
        } else if rng.one_in(8) {
            format!("\"{}\"", rng.pick(&["x", "caf\\u00e9", "\\n", "日本", ""]))
        } else {
            rng.pick(&roles).to_owned()
        };
        fields.push(format!("{}:{}{}", key_for(rng, "role"), ws(rng), role));
    }
    if !rng.one_in(4) {
        fields.push(format!(
            "{}:{}{}",
            key_for(rng, "content"),
            ws(rng),
            content_value(rng)
        ));
    }
    if rng.one_in(4) {
        fields.push(format!(
            "{}:{}",
            key_for(rng, "tool_calls"),
            rng.pick(&[
                "[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]",
                "[]",
                "null",
                " null ",
                "{\"a\":[1,2]}",
            ])
        ));
    }
    for _ in 0..rng.below(3) {
        fields.push(format!("{}:{}", key(rng), value(rng, 2)));
    }
    if rng.broken(15) {
        // A duplicated field.
        let field = fields.get(rng.below(fields.len().max(1))).cloned();
        fields.extend(field);
    }
    let rotate = rng.below(fields.len().max(1));
    fields.rotate_left(rotate);
    let sep = format!("{},{}", ws(rng), ws(rng));
    format!("{{{}{}{}}}", ws(rng), fields.join(&sep), ws(rng))
}

/// `"name"`, sometimes spelled with an escape.
fn key_for(rng: &mut Rng, name: &str) -> String {
    if rng.one_in(10) {
        let mut out = String::from("\"");
        for (i, c) in name.chars().enumerate() {
            if i == 1 {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
        out.push('"');
        out
    } else {
        format!("\"{name}\"")
    }
}

/// A chat body, mostly well-formed.
fn chat_body(rng: &mut Rng) -> String {
    if rng.broken(30) {
        return format!("{}{}{}", ws(rng), value(rng, 3), ws(rng));
    }
    let mut members = Vec::new();
    let messages: Vec<String> = (0..rng.below(7)).map(|_| message(rng)).collect();
    let messages_value = if rng.broken(20) {
        value(rng, 2)
    } else {
        let sep = format!("{},{}", ws(rng), ws(rng));
        format!("[{}{}{}]", ws(rng), messages.join(&sep), ws(rng))
    };
    if !rng.broken(20) {
        members.push(format!(
            "{}{}:{}{}",
            key_for(rng, "messages"),
            ws(rng),
            ws(rng),
            messages_value
        ));
    }
    if rng.broken(20) {
        members.push(format!("\"messages\":{}", value(rng, 2)));
    }
    for _ in 0..rng.below(3) {
        members.push(format!(
            "{}:{}",
            key_for(rng, "stream"),
            rng.pick(&["true", "false", "null", "\"true\"", "1", " true ", "[true]"])
        ));
    }
    members.push("\"model\":\"gpt-4o\"".to_owned());
    for _ in 0..rng.below(3) {
        members.push(format!("{}:{}", key(rng), value(rng, 3)));
    }
    if rng.one_in(10) {
        members.push(format!("\"deep\":{}", deep(rng)));
    }
    let rotate = rng.below(members.len());
    members.rotate_left(rotate);
    let sep = format!("{},{}", ws(rng), ws(rng));
    format!(
        "{}{{{}{}{}}}{}",
        ws(rng),
        ws(rng),
        members.join(&sep),
        ws(rng),
        ws(rng)
    )
}

/// Bytes that matter to a JSON parser, plus some that must be refused.
const MUTATION_BYTES: &[u8] =
    b"{}[]\":,\\ \t\n\r0123456789-+.eEtrufalsn/ubx\x00\x01\x0b\x0c\x1f\x7f\xc3\xa9\xff\xed\xa0\x80";

/// One to three random edits: truncation, byte flips, insertions (bytes or
/// whitespace), deletions, duplicated spans.
fn mutate(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 => out.truncate(at),
            1 if at < out.len() => out[at] = MUTATION_BYTES[rng.below(MUTATION_BYTES.len())],
            2 => out.insert(at, MUTATION_BYTES[rng.below(MUTATION_BYTES.len())]),
            3 => {
                let space = rng.pick(&[" ", "\n", "\t", "\r", "\u{a0}", "\u{b}", "\u{c}"]);
                out.splice(at..at, space.bytes());
            }
            4 if at < out.len() => {
                out.remove(at);
            }
            _ => {
                let end = (at + rng.below(16)).min(out.len());
                let span = out[at..end].to_vec();
                out.splice(at..at, span);
            }
        }
    }
    out
}

/// Hand-written edge cases, each also tried inside a chat body.
const EDGE_CASES: &[&str] = &[
    "",
    " ",
    "{",
    "}",
    "[",
    "{}",
    "[]",
    "\u{feff}{\"messages\":[]}",
    "{\"messages\":[]}",
    "{\"messages\":[]}x",
    "{\"messages\":[]}  \n",
    "{\"messages\":[],}",
    "{,\"messages\":[]}",
    "{\"messages\":[] \"x\":1}",
    "{\"messages\" []}",
    "{\"messages\":}",
    "{\"messages\":",
    "{\"messages\"",
    "{\"messages",
    "{\"messages\":[,]}",
    "{\"messages\":[{},]}",
    "{\"messages\":[{\"role\":\"user\",}]}",
    "{\"messages\":[{,\"role\":\"user\"}]}",
    "{\"messages\":[{\"role\":\"user\" \"content\":1}]}",
    "{\"messages\":[{\"role\" \"user\"}]}",
    "{\"messages\":[{\"role\":}]}",
    "{\"messages\":[{1:2}]}",
    "{\"messages\":[{\"role\":\"user\"}}",
    "{\"messages\":[{\"role\":\"user\"]]}",
    "{\"messages\":[{\"role\":\"user\"}]",
    "{\"messages\":[{\"role\":\"user\"",
    "{\"messages\":[{\"role\":\"us",
    "{\"messages\":[{\"role\":\"us\\",
    "{\"messages\":[{\"role\":\"us\\u00",
    "{\"messages\":[{\"role\":\"user\"}],\"stream\":tru}",
    "{\"messages\":[{\"role\":\"user\"}],\"stream\":nul}",
    "{\"messages\":[{\"role\":\"user\"}],\"stream\":truee}",
    "{\"messages\":[],\"n\":-}",
    "{\"messages\":[],\"n\":-a}",
    "{\"messages\":[],\"n\":1.}",
    "{\"messages\":[],\"n\":1.e}",
    "{\"messages\":[],\"n\":1e}",
    "{\"messages\":[],\"n\":1e+}",
    "{\"messages\":[],\"n\":01}",
    "{\"messages\":[],\"n\":-01}",
    "{\"messages\":[],\"n\":.5}",
    "{\"messages\":[],\"n\":1e400}",
    "{\"messages\":[],\"n\":-0}",
    "{\"messages\":[],\"n\":[1,2,]}",
    "{\"messages\":[],\"n\":{\"a\":1,}}",
    "{\"messages\":[],\"n\":{\"a\" 1}}",
    "{\"messages\":[],\"n\":{\"a\":1 \"b\":2}}",
    "{\"messages\":[],\"n\":[1 2]}",
    "{\"messages\":[],\"n\":\"a\u{1}b\"}",
    "{\"messages\":[],\"n\u{1f}\":1}",
    "{\"messages\":[],\"n\":\"\\x\"}",
    "{\"messages\":[],\"n\":\"\\u12G4\"}",
    "{\"messages\":[],\"n\":\"\\u12",
    "{\"messages\":[],\"n\":\"\\ud800\"}",
    "{\"messages\":[],\"\\ud800\":1}",
    "{\"messages\":[],\"\\udc00\":1}",
    "{\"messages\":[],\"\\ud800\\u0041\":1}",
    "{\"messages\":[],\"\\ud800x\":1}",
    "{\"messages\":[],\"\\ud800\\x\":1}",
    "{\"messages\":[],\"\\ud800\\",
    "{\"messages\":[],\"\\ud800",
    "{\"messages\":[],\"\\ud800\\u12",
    "{\"messages\":[],\"\\ud800\\ud800\":1}",
    "{\"messages\":[],\"\\ud83d\\ude00\":1}",
    "{\"messages\":[],\"a\\u0000\":1}",
    "{\"\\ud800\":1,\"messages\":[] x}",
    "{\"messages\":[{\"\\ud800\":1,\"role\":\"user\"}]}",
    "{\"messages\":[{\"role\":\"\\udc00\"}]}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"\\ud800\"},{\"type\":\"text\",\"text\":\"ok\"}]}]}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"\\ud800\":1,\"type\":\"text\",\"text\":\"a\"}]}]}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\",\"text\":\"b\"}]}]}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\",\"text\":1}]}]}",
    "{\"messages\":[{\"role\":\"user\",\"tool_calls\":1,\"tool_calls\":null}]}",
    "{\"messages\":[{\"role\":\"user\",\"tool_calls\":null,\"tool_calls\":[1]}]}",
    "{\"messages\":[{\"role\":\"system\"}]}",
    "{\"messages\":[{ \n\"name\":1,\"role\":\"developer\"}]}",
    "{\"messages\":[{\"role\":\"developer\",\"content\":\"a\"},{\"role\":\"system\"}]}",
    "{\"messages\":[{\"role\":\"user\"},1,{\"role\":\"system\"}]}",
    "{\"messages\":[1,{\"role\":\"user\"}],\"x\":[}",
    "{\"messages\":\"no\",\"messages\":[]}",
    "{\"messages\":[],\"messages\":\"no\"}",
    "{\"messages\":[],\"stream\":true,\"stream\":false}",
    "{\"messages\":[],\"str\\u0065am\":true}",
    "{\"messages\":[],\"stream\":\ttrue\n}",
    "\"messages\"",
    "[{\"messages\":[]}]",
    "1",
    "-",
    "nul",
    "null x",
    "[1,",
    "[1,]",
    "[,1]",
    "{\"a\":1,}",
    "{\"a\":1,",
];

#[test]
fn scanner_matches_serde_parser() {
    let mut tally = Tally::default();
    // A longer or different campaign: REWRITE_DIFF_ROUNDS=1000000
    // REWRITE_DIFF_SEED=7 cargo test --release --test rewrite_differential
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env("REWRITE_DIFF_ROUNDS").unwrap_or(20_000) as usize;
    let mut rng = Rng(
        env("REWRITE_DIFF_SEED").unwrap_or(0x5eed_0fd1_ff00_beef) | 1,
        true,
    );

    for case in EDGE_CASES {
        tally.check(case.as_bytes(), 4);
        for _ in 0..50 {
            let mutated = mutate(&mut rng, case.as_bytes());
            tally.check(&mutated, 4);
        }
        // Inside a larger body, before and after the messages.
        let wrapped = format!("{{\"model\":\"m\",\"x\":{case},\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}");
        tally.check(wrapped.as_bytes(), 4);
        let wrapped =
            format!("{{\"messages\":[{{\"role\":\"user\",\"content\":{case}}}],\"x\":1}}");
        tally.check(wrapped.as_bytes(), 4);
    }

    for round in 0..rounds {
        rng.1 = round % 2 == 0;
        let body = chat_body(&mut rng);
        let cap = [0, 1, 3, 8, 64, 4096][round % 6];
        tally.check(body.as_bytes(), cap);
        // The same body as serde_json writes it, compact and pretty (sorted
        // keys, duplicates dropped, numbers and escapes normalized).
        if round % 8 == 1 {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&body) {
                let compact = serde_json::to_vec(&value).expect("serialize");
                tally.check(&compact, cap);
                let pretty = serde_json::to_vec_pretty(&value).expect("serialize");
                tally.check(&pretty, cap);
            }
        }
        for _ in 0..3 {
            let mutated = mutate(&mut rng, body.as_bytes());
            tally.check(&mutated, cap);
        }
        // Every prefix of a few bodies.
        if round % 500 == 0 && body.len() < 4096 {
            for end in 0..body.len() {
                tally.check(&body.as_bytes()[..end], cap);
            }
        }
    }

    eprintln!("differential: {tally:?}");
    // The generators must reach every outcome, often.
    assert!(tally.cases > 4 * rounds, "{tally:?}");
    assert!(tally.accepted > rounds / 2, "{tally:?}");
    assert!(tally.invalid_json > rounds / 2, "{tally:?}");
    assert!(tally.not_an_object > rounds / 100, "{tally:?}");
    assert!(tally.missing_messages > rounds / 100, "{tally:?}");
    assert!(tally.messages_not_array > rounds / 100, "{tally:?}");
    assert!(tally.invalid_message > rounds / 20, "{tally:?}");
    assert!(tally.surrogate_key > rounds / 2000, "{tally:?}");
}

/// The output buffer is sized from `encoded_len`: it must be exact.
#[test]
fn encoded_len_is_exact() {
    let mut all_bytes = String::new();
    for c in 0u8..0x80 {
        all_bytes.push(char::from(c));
    }
    for instruction in [
        "",
        "plain",
        INSTRUCTION,
        "Say \"hi\"\nthen \\stop\\\t</script> é 日本 🦀 \u{0} \u{1f} \u{7f} \u{2028}",
        &all_bytes,
    ] {
        let encoded = serde_json::to_string(instruction).expect("encode");
        assert_eq!(encoded_len(instruction), encoded.len(), "{instruction:?}");
    }
}
