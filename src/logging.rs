//! Log output: one JSON object per line, so a log pipeline parses every line the same way.
//!
//! Ordinary records go through `env_logger` to stderr. Access-log lines (one per request)
//! do not: [`access`] appends them to an in-memory buffer that a background thread writes
//! to stderr every [`ACCESS_FLUSH_EVERY`], so a request costs a buffer append instead of a
//! `write` system call (measured: about a quarter of the gateway's CPU per request).
//! The price: a crash loses the lines of its last [`ACCESS_FLUSH_EVERY`]; a graceful
//! shutdown writes them out before the exit (`server::flush_at_exit`).

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use crate::json_object::JsonObject;

/// How often buffered access-log lines are written out.
pub const ACCESS_FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this large is written out at once, by the request that filled it.
const ACCESS_BUFFER_LIMIT: usize = 1 << 20;

/// Installs the logger. `RUST_LOG` overrides the default level (`info`).
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    // Lines are plain JSON with no colour codes: `Always` writes them through as they are,
    // instead of scanning every line for escape sequences to strip.
    let _ = env_logger::Builder::from_env(env)
        .write_style(env_logger::WriteStyle::Always)
        .format(|buf, record| {
            let line = serde_json::json!({
                "ts": crate::format::rfc3339(time::OffsetDateTime::now_utc()),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        })
        .try_init();
}

/// One access-log record (field order is the line's).
#[derive(Debug)]
pub struct AccessRecord<'a> {
    pub ts: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub session: Option<&'a str>,
    pub rollout: Option<&'a str>,
    pub candidate: Option<&'a str>,
    pub error: Option<&'a str>,
    pub upstream_ttfb_ms: Option<Duration>,
    pub upstream_ms: Option<Duration>,
    pub total_ms: Duration,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

impl AccessRecord<'_> {
    /// Appends the record as one JSON object, without serde's per-field machinery: this
    /// runs once per request, and serde was a third of the logging phase's instructions.
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut line = JsonObject::new(out);
        line.str("ts", Some(self.ts));
        line.str("route", Some(self.route));
        line.str("method", Some(self.method));
        line.int("status", self.status as usize);
        line.str("session", self.session);
        line.str("rollout", self.rollout);
        line.str("candidate", self.candidate);
        line.str("error", self.error);
        line.millis("upstream_ttfb_ms", self.upstream_ttfb_ms);
        line.millis("upstream_ms", self.upstream_ms);
        line.millis("total_ms", Some(self.total_ms));
        line.int("bytes_in", self.bytes_in);
        line.int("bytes_out", self.bytes_out);
        line.end();
    }
}

/// Whether access-log lines are wanted (`RUST_LOG` lets `access` at `info` through).
pub fn access_enabled() -> bool {
    log::log_enabled!(target: "access", log::Level::Info)
}

struct AccessBuffer {
    lines: parking_lot::Mutex<Vec<u8>>,
    /// The writer thread could not start: every line is written at once.
    write_inline: bool,
}

/// The buffer, with its writer thread started on first use: after Pingora's fork (`-d`),
/// since a thread started before it would not exist in the daemon. (The thread's first
/// flush waits for this initialisation to finish, which does not wait for the thread.)
fn buffer() -> &'static AccessBuffer {
    static BUFFER: OnceLock<AccessBuffer> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("gepa-access-log".into())
            .spawn(|| loop {
                std::thread::sleep(ACCESS_FLUSH_EVERY);
                flush_access();
            });
        if let Err(e) = &started {
            log::error!("the access-log writer did not start ({e}); lines are written inline");
        }
        AccessBuffer {
            lines: parking_lot::Mutex::new(Vec::with_capacity(64 * 1024)),
            write_inline: started.is_err(),
        }
    })
}

/// Appends one access-log line.
pub fn access(record: &AccessRecord<'_>) {
    let buffer = buffer();
    let full = {
        let mut lines = buffer.lines.lock();
        record.write_json(&mut lines);
        lines.push(b'\n');
        lines.len() >= ACCESS_BUFFER_LIMIT || buffer.write_inline
    };
    if full {
        flush_access();
    }
}

/// Writes out the buffered access-log lines.
pub fn flush_access() {
    let pending = {
        let mut lines = buffer().lines.lock();
        if lines.is_empty() {
            return;
        }
        // The next lines go into a buffer as large as this one, not one that grows again.
        let capacity = lines.capacity();
        std::mem::replace(&mut *lines, Vec::with_capacity(capacity))
    };
    let _ = std::io::stderr().lock().write_all(&pending);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_are_json_with_durations_in_milliseconds() {
        let full = AccessRecord {
            ts: "2026-11-28T20:00:00.123456789Z",
            route: "proxy",
            method: "POST",
            status: 200,
            session: Some("50b3f96d-0000-4000-8000-000000000000"),
            rollout: Some("ro_0123456789abcdef0123456789abcdef_0_0123456789abcdef"),
            candidate: Some("cand \"quoted\" \\ \n é \u{1}"),
            error: None,
            upstream_ttfb_ms: Some(Duration::from_micros(100)),
            upstream_ms: Some(Duration::from_nanos(999)),
            total_ms: Duration::from_micros(123_456_789),
            bytes_in: 1024,
            bytes_out: 0,
        };
        let bare = AccessRecord {
            session: None,
            rollout: None,
            candidate: None,
            error: Some("upstream_timeout"),
            upstream_ttfb_ms: None,
            upstream_ms: None,
            total_ms: Duration::ZERO,
            status: 504,
            bytes_in: usize::MAX,
            ..full
        };
        let line = |r: &AccessRecord| {
            let mut out = Vec::new();
            r.write_json(&mut out);
            String::from_utf8(out).unwrap()
        };
        let full_line = line(&full);
        assert!(
            full_line
                .contains(r#""upstream_ttfb_ms":0.100,"upstream_ms":0.000,"total_ms":123456.789,"#),
            "{full_line}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&full_line).unwrap(),
            serde_json::json!({
                "ts": full.ts, "route": "proxy", "method": "POST", "status": 200,
                "session": full.session, "rollout": full.rollout, "candidate": full.candidate,
                "error": null, "upstream_ttfb_ms": 0.1, "upstream_ms": 0.0,
                "total_ms": 123456.789, "bytes_in": 1024, "bytes_out": 0
            })
        );
        let bare_line = line(&bare);
        assert!(
            bare_line.contains(r#""upstream_ttfb_ms":null,"upstream_ms":null,"total_ms":0.000,"#),
            "{bare_line}"
        );
        let v: serde_json::Value = serde_json::from_str(&bare_line).unwrap();
        assert_eq!(
            (
                v["error"].as_str(),
                v["bytes_in"].as_u64(),
                v["session"].is_null()
            ),
            (Some("upstream_timeout"), Some(usize::MAX as u64), true)
        );
    }
}
