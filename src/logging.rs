//! Log output: one JSON object per line, so a log pipeline parses every line the same way.
//!
//! Ordinary records go through `env_logger` to stderr. Access-log lines (one per request)
//! do not: [`access`] appends them to an in-memory buffer that a background thread writes
//! to stderr every [`ACCESS_FLUSH_EVERY`], so a request costs a buffer append instead of a
//! `write` system call (measured: about a quarter of the gateway's CPU per request).
//! The price: the lines of the last [`ACCESS_FLUSH_EVERY`] before the process exits (a
//! crash, or the end of a graceful shutdown) can be lost.

use serde::Serialize;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

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
                "ts": crate::sessions::rfc3339(time::OffsetDateTime::now_utc()),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        })
        .try_init();
}

/// One access-log record (field order is the line's).
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub ts: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub session: Option<&'a str>,
    pub rollout: Option<&'a str>,
    pub candidate: Option<&'a str>,
    pub error: Option<&'a str>,
    pub upstream_ttfb_ms: Option<f64>,
    pub upstream_ms: Option<f64>,
    pub total_ms: f64,
    pub bytes_in: usize,
    pub bytes_out: usize,
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
        if serde_json::to_writer(&mut *lines, record).is_err() {
            return;
        }
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
