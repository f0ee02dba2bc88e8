//! The stored document moved whole, in or out (`login export`, `login import`), for an
//! ephemeral runner whose only lasting copy lives in a secret manager.
//!
//! Both hold the refresh lock: an export taken while a grant is in flight would save the
//! token that grant is spending, and an import landing in the middle of one would be
//! overwritten by its commit (or overwrite it). The write itself also takes Codex's commit
//! locks, as a rotation's does.

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::file_lock::{self, CODEX_COMMIT_LOCKS, FileLock, LockError, REFRESH_LOCK};
use super::storage::document::parse_timestamp;
use super::storage::{self, AuthDocument, CredentialStore, StorageError, Stored};

/// How long a Codex commit lock is waited for before the import writes without it.
const COMMIT_LOCK_WAIT: Duration = Duration::from_secs(30);
/// Largest document accepted on standard input (a credential is a few KiB).
pub(crate) const MAX_DOCUMENT: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    #[error("the input is not a credential document authbridge understands (auth.json's format)")]
    NotADocument,
    #[error("the store holds no credential to export")]
    Empty,
    #[error(
        "the stored credential is newer (last refreshed {stored}) than the one given \
         ({given}); nothing was written"
    )]
    Older { stored: String, given: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Takes the refresh lock beside a store other processes share (none for `ephemeral`).
async fn refresh_lock(
    store: &CredentialStore,
    wait: Duration,
) -> Result<Option<FileLock>, LockError> {
    if !store.is_shared() {
        return Ok(None);
    }
    file_lock::acquire(&store.home().join(REFRESH_LOCK), wait)
        .await
        .map(Some)
}

/// The stored document as `auth.json` holds it, read under the refresh lock.
pub(crate) async fn export(
    store: &Arc<CredentialStore>,
    lock_wait: Duration,
) -> Result<Zeroizing<Vec<u8>>, TransferError> {
    let _lock = refresh_lock(store, lock_wait).await?;
    let doc = storage::off_runtime(store, |s| s.load_document())
        .await?
        .ok_or(TransferError::Empty)?;
    Ok(doc.to_pretty())
}

/// Whether `given` was refreshed before what the store holds: a restore of an old copy,
/// which must not overwrite a rotation. A document without `last_refresh` is older than
/// one with it.
fn is_older(given: &AuthDocument, stored: &AuthDocument) -> Option<(String, String)> {
    let at = |d: &AuthDocument| d.last_refresh.as_deref().and_then(parse_timestamp);
    let shown = |d: &AuthDocument| d.last_refresh.clone().unwrap_or_else(|| "never".into());
    match (at(given), at(stored)) {
        (_, None) => None,
        (Some(g), Some(s)) if g >= s => None,
        _ => Some((shown(stored), shown(given))),
    }
}

/// Writes `bytes` (a whole document) into the store under the refresh lock. With
/// `if_newer`, a document older than the stored one is refused and nothing is written.
pub(crate) async fn import(
    store: &Arc<CredentialStore>,
    bytes: &[u8],
    if_newer: bool,
    lock_wait: Duration,
) -> Result<(), TransferError> {
    let doc = AuthDocument::parse(bytes)
        .filter(|d| Stored::from_document(d).is_some())
        .ok_or(TransferError::NotADocument)?;
    let _lock = refresh_lock(store, lock_wait).await?;
    let mut commit_locks = Vec::new();
    if store.is_shared() {
        for name in CODEX_COMMIT_LOCKS {
            match file_lock::acquire(&store.home().join(name), COMMIT_LOCK_WAIT).await {
                Ok(held) => commit_locks.push(held),
                Err(e) => {
                    tracing::warn!("{e}; importing without it");
                    break;
                }
            }
        }
    }
    let written = storage::off_runtime(store, move |s| {
        if if_newer
            && let Some(stored) = s.load_document()?
            && let Some((stored, given)) = is_older(&doc, &stored)
        {
            return Ok(Err(TransferError::Older { stored, given }));
        }
        s.save(&doc).map(Ok)
    })
    .await?;
    drop(commit_locks);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refreshed_at(at: Option<&str>) -> AuthDocument {
        AuthDocument {
            last_refresh: at.map(str::to_owned),
            ..AuthDocument::default()
        }
    }

    #[test]
    fn only_an_older_or_undated_copy_over_a_dated_one_counts_as_older() {
        let early = refreshed_at(Some("2026-01-01T00:00:00Z"));
        let late = refreshed_at(Some("2026-02-01T00:00:00.5Z"));
        let undated = refreshed_at(None);
        assert!(is_older(&early, &late).is_some());
        assert!(is_older(&undated, &late).is_some());
        assert!(is_older(&late, &early).is_none());
        assert!(
            is_older(&late, &late).is_none(),
            "the same copy again is no harm"
        );
        assert!(is_older(&early, &undated).is_none());
    }
}
