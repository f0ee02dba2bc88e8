//! The operating system's keyring, under the entry Codex uses, so that both programs read
//! each other's credential: service `Codex Auth`, account `cli|` and the first 16 hex
//! digits of the SHA-256 of the canonical `CODEX_HOME`, the value being the document as
//! compact JSON.
//!
//! Entries go through `keyring-core`, whose default store is the platform's (with the
//! `keyring` feature) or, in tests, its mock store.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::file::AuthFile;
use super::{AuthDocument, Backend, StorageError};

pub(crate) const SERVICE: &str = "Codex Auth";

/// Some Codex versions split a long value over several entries; the first one then holds
/// this header and the number of parts, stored under `<account>:<i>`.
const CHUNK_HEADER: &str = "CODEX_CHUNKED:";
const MAX_CHUNKS: usize = 64;

/// Why the keyring could not be used. Never carries the stored value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct KeyringError(String);

impl KeyringError {
    pub fn from_static(text: &'static str) -> Self {
        Self(text.to_owned())
    }
}

pub(crate) fn store_key(codex_home: &Path) -> String {
    let canonical = std::fs::canonicalize(codex_home).unwrap_or_else(|_| codex_home.to_owned());
    let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cli|{}", &hex[..16])
}

/// The `keyring` store. A save makes the file copy stale: it is removed, as the reference
/// does.
pub(crate) struct KeyringStore {
    entry: KeyringEntry,
    file: AuthFile,
}

impl KeyringStore {
    pub fn new(codex_home: &Path) -> Self {
        Self {
            entry: KeyringEntry::new(codex_home),
            file: AuthFile::in_home(codex_home),
        }
    }

    /// The document in the entry; an entry that is no document is the keyring's error.
    pub fn load_entry(&self) -> Result<Option<AuthDocument>, KeyringError> {
        match self.entry.read()? {
            None => Ok(None),
            Some(text) => AuthDocument::parse(text.as_bytes())
                .map(Some)
                .ok_or_else(|| {
                    KeyringError::from_static("keyring: the stored entry is not a credential")
                }),
        }
    }

    pub fn save_entry(&self, doc: &AuthDocument) -> Result<(), KeyringError> {
        let text = doc.to_compact();
        let text = std::str::from_utf8(&text).expect("serde_json writes UTF-8");
        self.entry.write(text)?;
        if let Err(e) = self.file.remove() {
            tracing::warn!("failed to remove the file copy of the credential: {e}");
        }
        Ok(())
    }

    pub fn remove_entry(&self) -> Result<(), KeyringError> {
        self.entry.remove()
    }
}

impl Backend for KeyringStore {
    fn load(&self) -> Result<Option<AuthDocument>, StorageError> {
        Ok(self.load_entry()?)
    }

    fn save(&self, doc: &AuthDocument) -> Result<(), StorageError> {
        Ok(self.save_entry(doc)?)
    }

    fn delete(&self) -> Result<(), StorageError> {
        self.remove_entry()?;
        self.file.remove()
    }

    fn describe(&self) -> String {
        "keyring".into()
    }

    fn place(&self) -> String {
        "the keyring entry".into()
    }
}

/// How long one keyring call may take. A Secret Service that never answers (a locked
/// session bus, a daemon stuck on a prompt nobody sees) would otherwise hang the command or
/// the server's store thread for good.
const CALL_LIMIT: Duration = Duration::from_secs(5);

/// Set while a keyring call that overran [`CALL_LIMIT`] is still stuck. Later calls fail
/// at once instead of piling up more stuck threads behind it.
static UNRESPONSIVE: AtomicBool = AtomicBool::new(false);

/// Runs `op` on a thread of its own and waits at most `limit` for it. A call that overruns
/// counts as "the keyring is unavailable"; its thread is left to finish (or not) by itself,
/// and `stuck` stays set until it does.
fn bounded<T: Send + 'static>(
    limit: Duration,
    stuck: &'static AtomicBool,
    op: impl FnOnce() -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    if stuck.load(Ordering::SeqCst) {
        return Err(KeyringError(
            "keyring: an earlier call is still unanswered; the keyring counts as unavailable"
                .into(),
        ));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("keyring-call".into())
        .spawn(move || {
            let result = op();
            let _ = tx.send(result);
            // Whoever gave up on this call may set the flag; its end clears it.
            stuck.store(false, Ordering::SeqCst);
        });
    if spawned.is_err() {
        return Err(KeyringError::from_static(
            "keyring: cannot start a thread for the call",
        ));
    }
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => {
            stuck.store(true, Ordering::SeqCst);
            // The call may have finished between the timeout and the flag.
            if let Ok(result) = rx.try_recv() {
                stuck.store(false, Ordering::SeqCst);
                return result;
            }
            Err(KeyringError(format!(
                "keyring: no answer within {limit:?}; the keyring counts as unavailable"
            )))
        }
    }
}

/// Whether the keyring answers at all, for `doctor`: one bounded read of Codex's entry.
pub(crate) fn probe(codex_home: &Path) -> Result<(), KeyringError> {
    KeyringEntry::new(codex_home).read().map(drop)
}

/// Codex's entry for one home.
struct KeyringEntry {
    account: String,
}

fn describe(e: &keyring_core::Error) -> KeyringError {
    use keyring_core::Error as E;
    // Only variants whose text cannot hold the stored value are shown in full.
    let text = match e {
        E::PlatformFailure(_) | E::NoStorageAccess(_) | E::NoDefaultStore => e.to_string(),
        E::NotSupportedByStore(why) => format!("not supported by the keyring: {why}"),
        E::BadEncoding(_) | E::BadDataFormat(..) => "the keyring entry is malformed".into(),
        E::Ambiguous(_) => "several keyring entries match".into(),
        _ => "the keyring refused the request".into(),
    };
    KeyringError(format!("keyring: {text}"))
}

/// Makes sure entries have a store to live in: the platform's, unless one (the mock, in
/// tests) is already set.
fn ensure_store() -> Result<(), KeyringError> {
    if keyring_core::get_default_store().is_some() {
        return Ok(());
    }
    #[cfg(feature = "keyring")]
    {
        keyring::Entry::store_status().as_ref().map_err(describe)?;
        Ok(())
    }
    #[cfg(not(feature = "keyring"))]
    Err(KeyringError(
        "keyring: this build of authbridge has no keyring support".into(),
    ))
}

impl KeyringEntry {
    fn new(codex_home: &Path) -> Self {
        Self {
            account: store_key(codex_home),
        }
    }

    fn entry(&self, account: &str) -> Result<keyring_core::Entry, KeyringError> {
        ensure_store()?;
        keyring_core::Entry::new(SERVICE, account).map_err(|e| describe(&e))
    }

    fn read(&self) -> Result<Option<Zeroizing<String>>, KeyringError> {
        let account = self.account.clone();
        bounded(CALL_LIMIT, &UNRESPONSIVE, move || {
            KeyringEntry { account }.read_now()
        })
    }

    fn write(&self, value: &str) -> Result<(), KeyringError> {
        let account = self.account.clone();
        let value = Zeroizing::new(value.to_owned());
        bounded(CALL_LIMIT, &UNRESPONSIVE, move || {
            KeyringEntry { account }.write_now(&value)
        })
    }

    fn remove(&self) -> Result<(), KeyringError> {
        let account = self.account.clone();
        bounded(CALL_LIMIT, &UNRESPONSIVE, move || {
            KeyringEntry { account }.remove_now()
        })
    }

    fn read_now(&self) -> Result<Option<Zeroizing<String>>, KeyringError> {
        let value = match self.entry(&self.account)?.get_password() {
            Ok(v) => Zeroizing::new(v),
            Err(keyring_core::Error::NoEntry) => return Ok(None),
            Err(e) => return Err(describe(&e)),
        };
        let Some(rest) = value.strip_prefix(CHUNK_HEADER) else {
            return Ok(Some(value));
        };
        let count: usize = rest
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=MAX_CHUNKS).contains(n))
            .ok_or_else(|| KeyringError("keyring: a chunked entry has a bad header".into()))?;
        let mut whole = Zeroizing::new(String::new());
        for i in 0..count {
            let part = self
                .entry(&format!("{}:{i}", self.account))?
                .get_password()
                .map_err(|e| describe(&e))?;
            whole.push_str(&Zeroizing::new(part));
        }
        Ok(Some(whole))
    }

    fn write_now(&self, value: &str) -> Result<(), KeyringError> {
        self.entry(&self.account)?
            .set_password(value)
            .map_err(|e| describe(&e))
    }

    fn remove_now(&self) -> Result<(), KeyringError> {
        match self.entry(&self.account)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(describe(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_that_never_answers_counts_as_unavailable_and_hangs_nothing() {
        static STUCK: AtomicBool = AtomicBool::new(false);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let e = bounded(Duration::from_millis(50), &STUCK, move || {
            let _ = wait.recv();
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // While that call is stuck, the next fails at once without a thread of its own.
        let e = bounded(Duration::from_secs(30), &STUCK, || Ok(())).unwrap_err();
        assert!(e.to_string().contains("still unanswered"), "{e}");
        drop(release);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while STUCK.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            bounded(Duration::from_secs(5), &STUCK, || Ok(7)).unwrap(),
            7
        );
    }
}
