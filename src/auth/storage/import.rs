//! Moving a sign-in from another `auth.json` into the broker's store, and leaving that file
//! without a usable refresh token.

use std::path::Path;

use super::document::{AuthDocument, SecretText};
use super::file::AuthFile;
use super::{StorageError, Stored};

/// A managed ChatGPT sign-in read from any file in `auth.json`'s format, to be moved into
/// the broker's store.
pub(crate) fn read_import(path: &Path) -> Result<AuthDocument, StorageError> {
    let bytes = AuthFile::new(path.to_owned())
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
    AuthFile::new(path.to_owned()).write(&doc.to_pretty())
}
