//! The `auto` store: the keyring, and the file when the keyring fails. The fallback is
//! never silent: it is recorded (for `account/read` and `login status`), and a credential
//! written to the file because of it is announced through the warning hook.

use std::path::Path;
use std::sync::Mutex;

use super::file::AuthFile;
use super::keyring::{KeyringError, KeyringStore};
use super::{AuthDocument, Backend, Fingerprint, StorageError, WarningHook};
use crate::unpoisoned::lock;

pub(crate) struct AutoStore {
    keyring: KeyringStore,
    file: AuthFile,
    /// Set while the file is used because the keyring failed.
    fallback: Mutex<Option<String>>,
    on_warning: Option<WarningHook>,
}

impl AutoStore {
    pub fn new(codex_home: &Path, on_warning: Option<WarningHook>) -> Self {
        Self {
            keyring: KeyringStore::new(codex_home),
            file: AuthFile::in_home(codex_home),
            fallback: Mutex::new(None),
            on_warning,
        }
    }

    /// Records that the file is used. Clients are told whenever a credential is written
    /// there (`announce`); a read only updates what `account/read` shows.
    fn fell_back(&self, e: &KeyringError, announce: bool) {
        let message = format!(
            "The OS keyring is unavailable ({e}); the credential is kept in {} instead.",
            self.file.path().display()
        );
        let mut fallback = lock(&self.fallback);
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
        *lock(&self.fallback) = None;
    }
}

impl Backend for AutoStore {
    fn load(&self) -> Result<Option<AuthDocument>, StorageError> {
        match self.keyring.load_entry() {
            Ok(Some(doc)) => {
                self.keyring_worked();
                Ok(Some(doc))
            }
            Ok(None) => self.file.load(),
            Err(e) => {
                self.fell_back(&e, false);
                self.file.load()
            }
        }
    }

    fn save(&self, doc: &AuthDocument) -> Result<(), StorageError> {
        match self.keyring.save_entry(doc) {
            Ok(()) => {
                self.keyring_worked();
                Ok(())
            }
            Err(e) => {
                self.fell_back(&e, true);
                self.file.write(&doc.to_pretty())
            }
        }
    }

    fn delete(&self) -> Result<(), StorageError> {
        let keyring = self.keyring.remove_entry();
        self.file.remove()?;
        if let Err(e) = keyring {
            self.fell_back(&e, false);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.warning() {
            Some(_) => format!("file {} (keyring unavailable)", self.file.path().display()),
            None => "keyring".into(),
        }
    }

    fn place(&self) -> String {
        self.file.path().display().to_string()
    }

    /// Only while the credential is in the file.
    fn fingerprint(&self) -> Option<Fingerprint> {
        self.warning().map(|_| self.file.fingerprint())
    }

    fn warning(&self) -> Option<String> {
        lock(&self.fallback).clone()
    }
}
