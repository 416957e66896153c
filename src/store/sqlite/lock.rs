//! One gateway per database: an exclusive file lock on `<path>.lock`, and waiting for
//! the predecessor's hand-over during a graceful upgrade.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::err;
use super::schema::connect;
use crate::gepa::store::StoreError;

/// Checks that the database at `path` can be created or opened, is not from a newer
/// version and (unless `take_over`) is not in use by another gateway, without keeping a
/// connection or the lock (safe before Pingora forks).
pub fn check(path: &Path, take_over: bool) -> Result<(), StoreError> {
    if take_over {
        // The database is in use by the process this one takes over from: do not migrate
        // it under that process's feet. `open` checks it once the lock is ours.
        return Ok(());
    }
    // The lock first: a gateway already using the database must not see it migrated.
    let _lock = take_lock(path, false)?;
    connect(path).map(|_| ())
}

/// Takes `<path>.lock` (flock; the kernel releases it when the process dies, even by
/// `kill -9`). Held by another process: an error, or with `take_over` a wait until that
/// process hands over or exits.
pub(super) fn take_lock(path: &Path, take_over: bool) -> Result<std::fs::File, StoreError> {
    // The lock file sits beside the database, and is taken before any connection: the
    // database's directory is created here.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(path, "creating the storage directory", e))?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err(&lock_path, "opening the database's lock file", e))?;
    let mut waiting_since: Option<Instant> = None;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if take_over => {
                let since = *waiting_since.get_or_insert_with(|| {
                    log::info!(
                        "store: waiting for the previous gateway process to hand over {}",
                        path.display()
                    );
                    Instant::now()
                });
                if since.elapsed() > Duration::from_secs(600) {
                    return Err(err(path, "taking over the database", "the previous gateway process did not hand it over within 10 minutes"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err(
                    path,
                    "refusing the database",
                    "another gateway process is using it; stop that one, or start this one with -u to take over from it",
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(err(&lock_path, "locking the database", e))
            }
        }
    }
}
