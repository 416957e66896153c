//! `gateway.storage`: where session state lives and how it is written.

use std::path::PathBuf;
use std::time::Duration;

use super::validate::{in_range, usize_in_range};
use super::Problems;
use crate::config::error::Problem;
use crate::config::model::StorageConfig;
use crate::config::model::{
    DEFAULT_RETENTION_DAYS, DEFAULT_ROLLOUTS_IN_MEMORY, DEFAULT_STORAGE_PATH,
    DEFAULT_WRITE_BEHIND_MS,
};
use crate::config::raw::RawStorage;

pub(super) fn resolve(raw: RawStorage, p: &mut Problems) -> Option<StorageConfig> {
    let path = raw.path.as_deref().unwrap_or(DEFAULT_STORAGE_PATH).trim();
    let path = p.take(if path.is_empty() {
        Err(Problem::new("gateway.storage.path", "must not be empty"))
    } else {
        Ok(PathBuf::from(path))
    });
    let backend = p.take(raw.backend.resolve("gateway.storage.backend"));
    let rollouts_in_memory = p.take(usize_in_range(
        "gateway.storage.rollouts_in_memory",
        raw.rollouts_in_memory
            .unwrap_or(DEFAULT_ROLLOUTS_IN_MEMORY as u64),
        1,
        10_000_000,
    ));
    let write_behind_ms = p.take(in_range(
        "gateway.storage.write_behind_ms",
        raw.write_behind_ms.unwrap_or(DEFAULT_WRITE_BEHIND_MS),
        1,
        10_000,
    ));
    Some(StorageConfig {
        backend: backend?.unwrap_or_default(),
        path: path?,
        retention_days: raw.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
        rollouts_in_memory: rollouts_in_memory?,
        write_behind: Duration::from_millis(write_behind_ms?),
    })
}
