//! Log output: one JSON object per line, so a log pipeline parses every line the same way.
//! Access-log records (target `access`) are already JSON objects and are written as is.

use std::io::Write;

/// Installs the logger. `RUST_LOG` overrides the default level (`info`).
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    // Lines are plain JSON with no colour codes: `Always` writes them through as they are,
    // instead of scanning every line for escape sequences to strip.
    let _ = env_logger::Builder::from_env(env)
        .write_style(env_logger::WriteStyle::Always)
        .format(|buf, record| {
            if record.target() == "access" {
                return writeln!(buf, "{}", record.args());
            }
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
