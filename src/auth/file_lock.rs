//! Advisory locks on files beside the credential store (`flock` on Unix), the one thing
//! that orders processes sharing a `CODEX_HOME`: authbridge's own refresh lock, held
//! across re-read → grant → persist, and Codex's commit locks, held only around a write.
//!
//! Waiting never blocks the runtime: the lock is tried, and retried after short sleeps,
//! up to a deadline. A lock is released when its file is closed, so also when the holder
//! dies.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

/// authbridge's refresh lock, beside the store.
pub(crate) const REFRESH_LOCK: &str = "auth.json.refresh.lock";
/// Codex's commit locks, taken in this order around a write.
pub(crate) const CODEX_COMMIT_LOCKS: [&str; 2] = ["auth.lock", "auth.json.lock"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("timed out after {waited:?} waiting for the lock {path}")]
    Timeout { path: PathBuf, waited: Duration },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A held lock; dropping it releases the lock.
pub(crate) struct FileLock {
    _file: File,
}

fn open(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Takes the exclusive lock on `path` (created if missing), waiting at most `wait`.
pub(crate) async fn acquire(path: &Path, wait: Duration) -> Result<FileLock, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = open(path).map_err(io)?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let waited = start.elapsed();
        if waited >= wait {
            return Err(LockError::Timeout {
                path: path.to_owned(),
                waited,
            });
        }
        tokio::time::sleep(pause.min(wait - waited)).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// Whether another process holds a lock file, as `doctor` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Absent,
    Free,
    Held,
}

impl Probe {
    pub fn as_str(self) -> &'static str {
        match self {
            Probe::Absent => "absent",
            Probe::Free => "free",
            Probe::Held => "held",
        }
    }
}

/// Tries the lock once without waiting and lets it go at once. Never creates the file:
/// looking must not leave traces in the home.
pub(crate) fn probe(path: &Path) -> std::io::Result<Probe> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Absent),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(Probe::Free),
        Err(TryLockError::WouldBlock) => Ok(Probe::Held),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_and_times_out_then_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = acquire(&path, Duration::from_secs(1)).await.unwrap();
        let e = acquire(&path, Duration::from_millis(50)).await;
        assert!(matches!(e, Err(LockError::Timeout { .. })));
        let waiter = tokio::spawn({
            let path = path.clone();
            async move { acquire(&path, Duration::from_secs(5)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_probe_tells_a_held_lock_from_a_free_one_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert_eq!(probe(&path).unwrap(), Probe::Absent);
        assert!(!path.exists());
        let held = acquire(&path, Duration::from_secs(1)).await.unwrap();
        assert_eq!(probe(&path).unwrap(), Probe::Held);
        drop(held);
        assert_eq!(probe(&path).unwrap(), Probe::Free);
        assert!(
            acquire(&path, Duration::ZERO).await.is_ok(),
            "the probe let it go"
        );
    }
}
