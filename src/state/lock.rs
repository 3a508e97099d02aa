//! The advisory lock that keeps one process at a time on a state.

use super::{LOCK_FILE, StateError, io_error};
use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::Path;

/// Who holds the lock, as the holder wrote it.
pub(super) fn holder(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(LOCK_FILE))
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "another process".to_string())
}

/// Takes the state's advisory lock, or says who holds it. The lock goes with
/// the process, so a killed run never leaves it behind.
pub(super) fn take_lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(dir, &e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StateError::Locked {
                dir: dir.display().to_string(),
                holder: holder(dir),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(dir, &e)),
    }
    let description = format!(
        "dyngroups (pid {}) since {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(description.as_bytes()))
        .map_err(|e| io_error(dir, &e))?;
    Ok(file)
}
