//! Process control as in Pingora: `-d` daemonizes, `-u` takes over a running instance's
//! listener (zero-downtime upgrade, old one sent SIGQUIT).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The gateway on port 0: it logs (to `error_log`, once a daemon) where it listens.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let d = dir.display();
    let yaml = format!(
        "version: 1\nthreads: 1\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         error_log: {d}/error.log\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n\
         gateway:\n  listen: \"127.0.0.1:0\"\n  metrics:\n    listen: \"\"\n  storage:\n    path: \"{d}/gepa.db\"\n  upstream:\n    url: \"http://127.0.0.1:9/v1\"\n"
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The gateway binary with `args`, logging at least where it listens.
fn gateway(args: &[&str], conf: &Path) -> Command {
    let mut cmd = Command::new(common::gateway_bin());
    cmd.args(args).arg("-c").arg(conf).env(
        "RUST_LOG",
        format!("warn,{}=info", common::LISTEN_LOG_TARGET),
    );
    cmd
}

/// The length of the error log, to read only what comes after.
fn log_len(dir: &Path) -> usize {
    std::fs::metadata(dir.join("error.log")).map_or(0, |m| m.len() as usize)
}

/// Where the proxy listens, as a process said in the error log after byte `from`.
fn reported(dir: &Path, from: usize) -> Option<SocketAddr> {
    let log = std::fs::read(dir.join("error.log")).ok()?;
    String::from_utf8_lossy(log.get(from..)?)
        .lines()
        .find_map(|l| common::reported_address(l, "proxy"))
}

fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("gw.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Running and not a zombie (a daemon's parent is init, which may reap late).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Polls `cond` every 50 ms for up to 10 s (waiting for a process, not synchronising).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn healthy(addr: SocketAddr) -> bool {
    let url = format!("http://{addr}/healthz");
    matches!(reqwest::get(url).await, Ok(r) if r.status() == 200)
}

/// Kills whatever daemon the pid file names when the test ends, pass or fail.
struct Reaper<'a>(&'a Path);
impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(self.0) {
            signal(pid, "KILL");
        }
    }
}

#[tokio::test]
async fn daemon_mode_and_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path());
    let conf = write_config(dir.path());

    // -d: the command returns at once, the daemon writes its pid and serves.
    let status = gateway(&["-d"], &conf).status().unwrap();
    assert!(status.success());
    eventually("daemon pid file", || read_pid(dir.path()).is_some()).await;
    let old = read_pid(dir.path()).unwrap();
    eventually("daemon listens", || reported(dir.path(), 0).is_some()).await;
    let addr = reported(dir.path(), 0).unwrap();
    for _ in 0..200 {
        if healthy(addr).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy(addr).await, "daemon serves");

    // -u: a new process waits for the listener, the old one hands it over on SIGQUIT.
    let mark = log_len(dir.path());
    let mut new = gateway(&["-d", "-u"], &conf).spawn().unwrap();
    // No need to wait for the new process: the old one retries the hand-over until it listens.
    signal(old, "QUIT");
    assert!(new.wait().unwrap().success());
    eventually("new pid", || read_pid(dir.path()).is_some_and(|p| p != old)).await;
    eventually("new process listens", || {
        reported(dir.path(), mark).is_some()
    })
    .await;
    assert_eq!(
        reported(dir.path(), mark),
        Some(addr),
        "the new process listens on the socket it took over"
    );
    eventually("old process exits", || !alive(old)).await;
    assert!(
        healthy(addr).await,
        "the new process serves on the same port"
    );

    let current = read_pid(dir.path()).unwrap();
    signal(current, "TERM");
    eventually("shutdown on SIGTERM", || !alive(current)).await;
}
