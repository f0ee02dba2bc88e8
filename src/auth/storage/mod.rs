//! Where a managed credential lives (`cli_auth_credentials_store`): `$CODEX_HOME/auth.json`,
//! the OS keyring, the keyring with the file as a fallback, or memory only. All four hold
//! the same document, in the reference's format, so Codex and authbridge can share a home.
//! External tokens never reach this module.
//!
//! Calls block (file system, keyring daemon): async callers run them on a blocking thread.

pub(crate) mod document;
mod file;
mod keyring;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::jwt::{self, Claims};
pub(crate) use crate::vocabulary::CredentialsStore;
pub(crate) use document::{AuthDocument, DocumentMode, SecretText, TokenData};

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

/// Managed ChatGPT credentials as stored by a ChatGPT sign-in. The refresh token stays in
/// the store: it is read there when it is needed, under the store's lock.
#[derive(Clone)]
pub(crate) struct ManagedTokens {
    pub access_token: SecretString,
    pub account_id: Option<String>,
    /// Claims of the ID token, for `account/read`.
    pub claims: Claims,
    /// `exp` of the access token, when it has one.
    pub access_expires: Option<i64>,
    pub last_refresh: Option<SystemTime>,
}

#[derive(Clone)]
pub(crate) enum Stored {
    /// The key stays in the store: no backend call of authbridge uses it.
    ApiKey,
    Chatgpt(ManagedTokens),
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stored::ApiKey => "Stored::ApiKey",
            Stored::Chatgpt(_) => "Stored::Chatgpt(..)",
        })
    }
}

impl Stored {
    pub fn from_document(doc: &AuthDocument) -> Option<Self> {
        match (doc.mode()?, &doc.api_key, &doc.tokens) {
            (DocumentMode::ApiKey, Some(_), _) => Some(Stored::ApiKey),
            (DocumentMode::Chatgpt, _, Some(t)) => {
                let claims = jwt::parse(t.id_token.expose()).unwrap_or_default();
                let access_expires = jwt::parse(t.access_token.expose()).ok().and_then(|c| c.exp);
                let account_id = t
                    .account_id
                    .clone()
                    .or_else(|| claims.chatgpt_account_id.clone());
                Some(Stored::Chatgpt(ManagedTokens {
                    access_token: SecretString::from(t.access_token.expose()),
                    account_id,
                    claims,
                    access_expires,
                    last_refresh: doc
                        .last_refresh
                        .as_deref()
                        .and_then(document::parse_timestamp),
                }))
            }
            _ => None,
        }
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

/// Reads the content of an auth file; `place` only names it in errors.
pub(crate) fn parse(bytes: &[u8], place: &Path) -> Result<Stored, StorageError> {
    AuthDocument::parse(bytes)
        .as_ref()
        .and_then(Stored::from_document)
        .ok_or_else(|| StorageError::Format {
            place: place.display().to_string(),
        })
}

/// A managed ChatGPT sign-in read from any file in `auth.json`'s format, to be moved into
/// the broker's store.
pub(crate) fn read_import(path: &Path) -> Result<AuthDocument, StorageError> {
    let bytes = file::FileStore::new(path.to_owned())
        .read()?
        .ok_or_else(|| StorageError::Io {
            action: "read",
            path: path.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
    AuthDocument::parse(&bytes)
        .filter(|d| matches!(Stored::from_document(d), Some(Stored::Chatgpt(_))))
        .ok_or_else(|| StorageError::Format {
            place: format!("{} (a ChatGPT sign-in is needed)", path.display()),
        })
}

/// What an imported file keeps instead of its refresh token: the token has one owner now,
/// and a program still reading this file must not spend it.
pub(crate) const MOVED_REFRESH_TOKEN: &str = "moved-to-authbridge-broker";

/// Rewrites the imported file without a usable refresh token (atomically, mode 0600).
pub(crate) fn retire_import(path: &Path, mut doc: AuthDocument) -> Result<(), StorageError> {
    if let Some(tokens) = doc.tokens.as_mut() {
        tokens.refresh_token = SecretText::new(MOVED_REFRESH_TOKEN.into());
    }
    file::FileStore::new(path.to_owned()).write(&doc.to_pretty())
}

/// How often, and how long apart, a file that does not parse is read again before it is
/// called corrupt: Codex rewrites `auth.json` in place, so a read can see it half written.
const TORN_READ_RETRIES: u32 = 5;
const TORN_READ_PAUSE: Duration = Duration::from_millis(20);

/// Told when the `auto` store falls back to the file, so clients can be warned.
pub(crate) type WarningHook = Arc<dyn Fn(String) + Send + Sync>;

pub(crate) struct CredentialStore {
    kind: CredentialsStore,
    file: file::FileStore,
    keyring: keyring::KeyringStore,
    memory: Mutex<Option<Zeroizing<Vec<u8>>>>,
    /// Set while `auto` uses the file because the keyring failed.
    fallback: Mutex<Option<String>>,
    on_warning: Option<WarningHook>,
}

impl CredentialStore {
    /// `on_warning` is told when `auto` falls back to the file.
    pub fn new(codex_home: &Path, kind: CredentialsStore, on_warning: Option<WarningHook>) -> Self {
        Self {
            kind,
            file: file::FileStore::new(codex_home.join(AUTH_FILE)),
            keyring: keyring::KeyringStore::new(codex_home),
            memory: Mutex::new(None),
            fallback: Mutex::new(None),
            on_warning,
        }
    }

    #[cfg(test)]
    pub fn file_path(&self) -> &Path {
        self.file.path()
    }

    /// The warning in effect: `auto` is using the file because the keyring failed.
    pub fn warning(&self) -> Option<String> {
        crate::unpoisoned::lock(&self.fallback).clone()
    }

    /// Where the credential is, for `login status` and logs.
    pub fn describe(&self) -> String {
        match self.kind {
            CredentialsStore::File => format!("file {}", self.file.path().display()),
            CredentialsStore::Keyring => "keyring".into(),
            CredentialsStore::Auto => match self.warning() {
                Some(_) => format!("file {} (keyring unavailable)", self.file.path().display()),
                None => "keyring".into(),
            },
            CredentialsStore::Ephemeral => "memory (ephemeral)".into(),
        }
    }

    /// Records that `auto` uses the file. Clients are told whenever a credential is
    /// written there (`announce`); a read only updates what `account/read` shows.
    fn fell_back(&self, e: &keyring::KeyringError, announce: bool) {
        let message = format!(
            "The OS keyring is unavailable ({e}); the credential is kept in {} instead.",
            self.file.path().display()
        );
        let mut fallback = crate::unpoisoned::lock(&self.fallback);
        let new = fallback.as_deref() != Some(message.as_str());
        *fallback = Some(message.clone());
        drop(fallback);
        if new || announce {
            tracing::warn!("{message}");
        }
        if announce && let Some(hook) = &self.on_warning {
            hook(message);
        }
    }

    fn keyring_worked(&self) {
        *crate::unpoisoned::lock(&self.fallback) = None;
    }

    fn read_file_document(&self) -> Result<Option<AuthDocument>, StorageError> {
        let mut attempt = 0;
        loop {
            let Some(bytes) = self.file.read()? else {
                return Ok(None);
            };
            if let Some(doc) = AuthDocument::parse(&bytes) {
                return Ok(Some(doc));
            }
            attempt += 1;
            if attempt > TORN_READ_RETRIES {
                return Err(StorageError::Format {
                    place: self.file.path().display().to_string(),
                });
            }
            std::thread::sleep(TORN_READ_PAUSE);
        }
    }

    fn read_keyring_document(&self) -> Result<Option<AuthDocument>, keyring::KeyringError> {
        match self.keyring.read()? {
            None => Ok(None),
            Some(text) => AuthDocument::parse(text.as_bytes())
                .map(Some)
                .ok_or_else(|| {
                    keyring::KeyringError::from_static(
                        "keyring: the stored entry is not a credential",
                    )
                }),
        }
    }

    /// The stored document, if any.
    pub fn load_document(&self) -> Result<Option<AuthDocument>, StorageError> {
        match self.kind {
            CredentialsStore::File => self.read_file_document(),
            CredentialsStore::Keyring => Ok(self.read_keyring_document()?),
            CredentialsStore::Auto => match self.read_keyring_document() {
                Ok(Some(doc)) => {
                    self.keyring_worked();
                    Ok(Some(doc))
                }
                Ok(None) => self.read_file_document(),
                Err(e) => {
                    self.fell_back(&e, false);
                    self.read_file_document()
                }
            },
            CredentialsStore::Ephemeral => Ok(self
                .memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|b| AuthDocument::parse(b))),
        }
    }

    /// The stored credential, if any, as the server uses it.
    pub fn load(&self) -> Result<Option<Stored>, StorageError> {
        match self.load_document()? {
            None => Ok(None),
            Some(doc) => {
                Stored::from_document(&doc)
                    .map(Some)
                    .ok_or_else(|| StorageError::Format {
                        place: self.place(),
                    })
            }
        }
    }

    fn place(&self) -> String {
        match self.kind {
            CredentialsStore::Keyring => "the keyring entry".into(),
            CredentialsStore::Ephemeral => "the in-memory credential".into(),
            _ => self.file.path().display().to_string(),
        }
    }

    pub fn save(&self, doc: &AuthDocument) -> Result<(), StorageError> {
        match self.kind {
            CredentialsStore::File => self.file.write(&doc.to_pretty()),
            CredentialsStore::Keyring => {
                self.write_keyring(doc)?;
                Ok(())
            }
            CredentialsStore::Auto => match self.write_keyring(doc) {
                Ok(()) => {
                    self.keyring_worked();
                    Ok(())
                }
                Err(e) => {
                    self.fell_back(&e, true);
                    self.file.write(&doc.to_pretty())
                }
            },
            CredentialsStore::Ephemeral => {
                *crate::unpoisoned::lock(&self.memory) = Some(doc.to_compact());
                Ok(())
            }
        }
    }

    /// What the file looks like on disk (size, modification time, inode), for noticing
    /// another process's write cheaply. `None` when the credential is not in the file
    /// (keyring, memory), where nothing this cheap exists.
    pub fn file_fingerprint(&self) -> Option<Option<(u64, SystemTime, u64)>> {
        let in_file = match self.kind {
            CredentialsStore::File => true,
            CredentialsStore::Auto => self.warning().is_some(),
            CredentialsStore::Keyring | CredentialsStore::Ephemeral => false,
        };
        if !in_file {
            return None;
        }
        match std::fs::metadata(self.file.path()) {
            Ok(meta) => {
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&meta);
                #[cfg(not(unix))]
                let inode = 0;
                Some(Some((
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    inode,
                )))
            }
            Err(_) => Some(None),
        }
    }

    /// Whether this store lives in the home directory, where processes share it.
    pub fn is_shared(&self) -> bool {
        self.kind != CredentialsStore::Ephemeral
    }

    pub fn home(&self) -> &Path {
        self.file.path().parent().unwrap_or(Path::new("."))
    }

    /// A keyring save makes the file copy stale: it is removed, as the reference does.
    fn write_keyring(&self, doc: &AuthDocument) -> Result<(), keyring::KeyringError> {
        let text = doc.to_compact();
        let text = std::str::from_utf8(&text).expect("serde_json writes UTF-8");
        self.keyring.write(text)?;
        if let Err(e) = self.file.remove() {
            tracing::warn!("failed to remove the file copy of the credential: {e}");
        }
        Ok(())
    }

    /// Removes the credential from every place this store may have put it.
    pub fn delete(&self) -> Result<(), StorageError> {
        match self.kind {
            CredentialsStore::File => self.file.remove(),
            CredentialsStore::Keyring => {
                self.keyring.remove()?;
                self.file.remove()
            }
            CredentialsStore::Auto => {
                let keyring = self.keyring.remove();
                self.file.remove()?;
                if let Err(e) = keyring {
                    self.fell_back(&e, false);
                }
                Ok(())
            }
            CredentialsStore::Ephemeral => {
                *crate::unpoisoned::lock(&self.memory) = None;
                Ok(())
            }
        }
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

#[cfg(test)]
mod tests;
