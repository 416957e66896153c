//! Process control as in Pingora: `-d` daemonizes, `-u` takes over a running instance's
//! listener (zero-downtime upgrade, old one sent SIGQUIT).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let d = dir.display();
    let yaml = format!(
        "version: 1\nthreads: 1\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         error_log: {d}/error.log\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n\
         gateway:\n  listen: \"127.0.0.1:{port}\"\n  metrics:\n    listen: \"\"\n  storage:\n    path: \"{d}/gepa.db\"\n  upstream:\n    url: \"http://127.0.0.1:9/v1\"\n"
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
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

async fn healthy(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/healthz");
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
    let port = common::free_port();
    let conf = write_config(dir.path(), port);

    // -d: the command returns at once, the daemon writes its pid and serves.
    let status = Command::new(common::gateway_bin())
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(status.success());
    eventually("daemon pid file", || read_pid(dir.path()).is_some()).await;
    let old = read_pid(dir.path()).unwrap();
    for _ in 0..200 {
        if healthy(port).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy(port).await, "daemon serves");

    // -u: a new process waits for the listener, the old one hands it over on SIGQUIT.
    let mut new = Command::new(common::gateway_bin())
        .arg("-d")
        .arg("-u")
        .arg("-c")
        .arg(&conf)
        .spawn()
        .unwrap();
    // No need to wait for the new process: the old one retries the hand-over until it listens.
    signal(old, "QUIT");
    assert!(new.wait().unwrap().success());
    eventually("new pid", || read_pid(dir.path()).is_some_and(|p| p != old)).await;
    eventually("old process exits", || !alive(old)).await;
    assert!(
        healthy(port).await,
        "the new process serves on the same port"
    );

    let current = read_pid(dir.path()).unwrap();
    signal(current, "TERM");
    eventually("shutdown on SIGTERM", || !alive(current)).await;
}
