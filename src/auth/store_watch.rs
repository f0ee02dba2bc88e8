//! Noticing another process's change to the store cheaply: the file's fingerprint (size,
//! modification time, inode) as this process last read or wrote it. A keyring entry has
//! no such fingerprint, so it is re-read only while its credential is latched as unusable
//! (at most every two seconds): that is the one state a restart would otherwise be needed
//! to leave.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::storage::CredentialStore;
use crate::unpoisoned::lock;

const UNFINGERPRINTED_RECHECK: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Seen {
    fingerprint: Option<Option<(u64, SystemTime, u64)>>,
    checked_at: Option<Instant>,
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
        seen.checked_at = Some(Instant::now());
    }

    /// Whether another process may have changed the store since; `latched` says whether
    /// the credential in effect is latched as unusable.
    pub fn changed(&self, latched: bool) -> bool {
        let now = self.store.file_fingerprint();
        let seen = lock(&self.seen);
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
