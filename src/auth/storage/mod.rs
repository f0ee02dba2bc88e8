//! Where a managed credential lives (`cli_auth_credentials_store`): `$CODEX_HOME/auth.json`,
//! the OS keyring, the keyring with the file as a fallback, or memory only. All hold the
//! same document, in the reference's format, so Codex and authbridge can share a home.
//! External tokens never reach this module.
//!
//! Each store is one type behind [`Backend`] (load, save, delete, compare-and-swap), in a
//! file of its own; [`CredentialStore::new`] is the one place that picks it. A new store is
//! a file and an arm there.
//!
//! Calls block (file system, keyring daemon): async callers run them through
//! [`off_runtime`].

mod auto;
pub(crate) mod document;
mod ephemeral;
mod file;
mod import;
mod keyring;
mod stored;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub(crate) use crate::vocabulary::CredentialsStore;
pub(crate) use document::{AuthDocument, DocumentMode, SecretText, TokenData};
pub(crate) use import::{read_import, retire_import};
pub(crate) use keyring::probe as probe_keyring;
pub(crate) use stored::{Stored, parse};

pub(crate) const AUTH_FILE: &str = "auth.json";

#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{place} is not a credential file authbridge understands; move it away or sign out to replace it"
    )]
    Format { place: String },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{0}")]
    Keyring(#[from] keyring::KeyringError),
}

/// What the file holding a credential looks like on disk (size, modification time,
/// inode), to notice another process's write cheaply; `None` when there is no file.
pub(crate) type Fingerprint = Option<(u64, SystemTime, u64)>;

/// What a compare-and-swap found.
pub(crate) enum Swap {
    /// The store held what was expected; it holds the new document now.
    Swapped(AuthDocument),
    /// Someone changed the store since; it was left as it is, holding this.
    Moved(Option<AuthDocument>),
}

/// One place a credential document can live. Calls block.
pub(crate) trait Backend: Send + Sync {
    fn load(&self) -> Result<Option<AuthDocument>, StorageError>;

    fn save(&self, doc: &AuthDocument) -> Result<(), StorageError>;

    /// Removes the credential from every place this store may have put it.
    fn delete(&self) -> Result<(), StorageError>;

    /// Writes `new` only if the store still holds the credential `expected` names. The
    /// default reads, compares and writes; a store that can do it under a lock of its
    /// own overrides it.
    fn compare_and_swap(
        &self,
        expected: &Option<AuthDocument>,
        new: AuthDocument,
    ) -> Result<Swap, StorageError> {
        let now = self.load()?;
        if !AuthDocument::same_credential(&now, expected) {
            return Ok(Swap::Moved(now));
        }
        self.save(&new)?;
        Ok(Swap::Swapped(new))
    }

    /// Where the credential is, for `login status` and logs.
    fn describe(&self) -> String;

    /// Names the store in an error about its content.
    fn place(&self) -> String;

    /// The fingerprint of the file holding the credential; `None` when it is not in a file
    /// (keyring, memory), where nothing this cheap exists.
    fn fingerprint(&self) -> Option<Fingerprint> {
        None
    }

    /// Whether other processes sharing the home see this store; the refresh lock then
    /// lives beside it.
    fn is_shared(&self) -> bool {
        true
    }

    /// A warning in effect about where the credential went (`auto`'s fallback).
    fn warning(&self) -> Option<String> {
        None
    }
}

/// How often, and how long apart, a file that does not parse is read again before it is
/// called corrupt: Codex rewrites `auth.json` in place, so a read can see it half written.
const TORN_READ_RETRIES: u32 = 5;
const TORN_READ_PAUSE: Duration = Duration::from_millis(20);

/// Told when the `auto` store falls back to the file, so clients can be warned.
pub(crate) type WarningHook = Arc<dyn Fn(String) + Send + Sync>;

/// The configured store, for the server.
pub(crate) struct CredentialStore {
    backend: Box<dyn Backend>,
    home: PathBuf,
}

impl CredentialStore {
    /// Opens the store `kind` names in `codex_home`: the one registration of every store.
    /// `on_warning` is told when `auto` falls back to the file.
    pub fn new(codex_home: &Path, kind: CredentialsStore, on_warning: Option<WarningHook>) -> Self {
        let backend: Box<dyn Backend> = match kind {
            CredentialsStore::File => Box::new(file::FileStore::new(codex_home)),
            CredentialsStore::Keyring => Box::new(keyring::KeyringStore::new(codex_home)),
            CredentialsStore::Auto => Box::new(auto::AutoStore::new(codex_home, on_warning)),
            CredentialsStore::Ephemeral => Box::new(ephemeral::EphemeralStore::default()),
        };
        Self {
            backend,
            home: codex_home.to_owned(),
        }
    }

    #[cfg(test)]
    pub fn file_path(&self) -> PathBuf {
        self.home.join(AUTH_FILE)
    }

    /// The warning in effect: `auto` is using the file because the keyring failed.
    pub fn warning(&self) -> Option<String> {
        self.backend.warning()
    }

    /// Where the credential is, for `login status` and logs.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The stored document, if any.
    pub fn load_document(&self) -> Result<Option<AuthDocument>, StorageError> {
        self.backend.load()
    }

    /// The stored credential, if any, as the server uses it.
    pub fn load(&self) -> Result<Option<Stored>, StorageError> {
        match self.backend.load()? {
            None => Ok(None),
            Some(doc) => {
                Stored::from_document(&doc)
                    .map(Some)
                    .ok_or_else(|| StorageError::Format {
                        place: self.backend.place(),
                    })
            }
        }
    }

    pub fn save(&self, doc: &AuthDocument) -> Result<(), StorageError> {
        self.backend.save(doc)
    }

    pub fn delete(&self) -> Result<(), StorageError> {
        self.backend.delete()
    }

    /// See [`Backend::compare_and_swap`].
    pub fn compare_and_swap(
        &self,
        expected: &Option<AuthDocument>,
        new: AuthDocument,
    ) -> Result<Swap, StorageError> {
        self.backend.compare_and_swap(expected, new)
    }

    /// See [`Backend::fingerprint`].
    pub fn file_fingerprint(&self) -> Option<Fingerprint> {
        self.backend.fingerprint()
    }

    /// Whether this store lives in the home directory, where processes share it.
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `CODEX_AUTH_JSON` (a whole document) seeds a store that holds no credential; a store
    /// that has one keeps it. Returns whether the seed was written.
    pub fn seed(&self, contents: &[u8]) -> Result<bool, StorageError> {
        let doc = AuthDocument::parse(contents)
            .filter(|d| Stored::from_document(d).is_some())
            .ok_or_else(|| StorageError::Format {
                place: "CODEX_AUTH_JSON".into(),
            })?;
        if self.load_document()?.is_some() {
            return Ok(false);
        }
        self.save(&doc)?;
        Ok(true)
    }
}

/// Runs a store operation on a blocking thread: files are synced and keyrings are daemons,
/// and neither may stall the one thread that serves every connection.
pub(crate) async fn off_runtime<T: Send + 'static>(
    store: &Arc<CredentialStore>,
    op: impl FnOnce(&CredentialStore) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || op(&store)).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests;
