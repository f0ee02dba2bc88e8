//! Noticing another process's change to the store cheaply: the file's fingerprint (size,
//! modification time, inode) as this process last read or wrote it. A keyring entry has
//! no such fingerprint, so it is re-read only while its credential is latched as unusable
//! (at most every two seconds): that is the one state a restart would otherwise be needed
//! to leave.
//!
//! Looking costs a `stat(2)`, which on the sandboxed machines this runs on costs more than
//! the rest of an `account/read` (about 3 µs against 4). A call that is about to spend the
//! credential on the backend always looks; an answer from memory looks at most every
//! [`READ_RECHECK`], which is shorter than any two processes can order their steps by
//! (start a command, wait for it, send a request).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::storage::CredentialStore;
use crate::unpoisoned::lock;

const UNFINGERPRINTED_RECHECK: Duration = Duration::from_secs(2);
/// How long an answer from memory may go without looking at the store's file again.
pub(crate) const READ_RECHECK: Duration = Duration::from_millis(20);

/// How fresh a caller needs the view of the store to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Look {
    /// Look now: the credential is about to be used or changed.
    Now,
    /// An answer from memory: a look within [`READ_RECHECK`] will do.
    Recent,
}

#[derive(Default)]
struct Seen {
    fingerprint: Option<Option<(u64, SystemTime, u64)>>,
    checked_at: Option<Instant>,
    /// When the file was last looked at, whatever it showed.
    looked_at: Option<Instant>,
}

pub(crate) struct StoreWatch {
    store: Arc<CredentialStore>,
    seen: Mutex<Seen>,
}

impl StoreWatch {
    /// Starts from the store as it is now.
    pub fn new(store: Arc<CredentialStore>) -> Self {
        let watch = Self {
            store,
            seen: Mutex::new(Seen::default()),
        };
        watch.remember();
        watch
    }

    /// Records the store as it is now, after this process read or wrote it.
    pub fn remember(&self) {
        let mut seen = lock(&self.seen);
        seen.fingerprint = self.store.file_fingerprint();
        let now = Instant::now();
        seen.checked_at = Some(now);
        seen.looked_at = Some(now);
    }

    /// Whether another process may have changed the store since; `latched` says whether
    /// the credential in effect is latched as unusable.
    pub fn changed(&self, latched: bool, look: Look) -> bool {
        if look == Look::Recent
            && lock(&self.seen)
                .looked_at
                .is_some_and(|at| at.elapsed() < READ_RECHECK)
        {
            return false;
        }
        let now = self.store.file_fingerprint();
        let mut seen = lock(&self.seen);
        if now.is_some() {
            seen.looked_at = Some(Instant::now());
        }
        match now {
            Some(_) => now != seen.fingerprint,
            None => {
                latched
                    && self.store.is_shared()
                    && seen
                        .checked_at
                        .is_none_or(|at| at.elapsed() >= UNFINGERPRINTED_RECHECK)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::storage::CredentialsStore;

    fn watched() -> (tempfile::TempDir, StoreWatch) {
        let home = tempfile::tempdir().unwrap();
        let store = Arc::new(CredentialStore::new(
            home.path(),
            CredentialsStore::File,
            None,
        ));
        (home, StoreWatch::new(store))
    }

    #[test]
    fn a_call_about_to_use_the_credential_sees_another_process_write_at_once() {
        let (home, watch) = watched();
        std::fs::write(home.path().join("auth.json"), "{}").unwrap();
        assert!(watch.changed(false, Look::Now));
    }

    #[test]
    fn an_answer_from_memory_sees_it_within_the_recheck_interval() {
        let (home, watch) = watched();
        assert!(!watch.changed(false, Look::Recent));
        std::fs::write(home.path().join("auth.json"), "{}").unwrap();
        // Looked a moment ago: a read may answer from memory.
        assert!(!watch.changed(false, Look::Recent));
        std::thread::sleep(READ_RECHECK);
        assert!(watch.changed(false, Look::Recent));
        // Until it is read and remembered, every look says so.
        assert!(watch.changed(false, Look::Now));
        watch.remember();
        assert!(!watch.changed(false, Look::Now));
    }
}
