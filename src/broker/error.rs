//! The store's errors. PostgreSQL's own error text can quote row values (a constraint's
//! `DETAIL: Failing row contains (…)` would quote tokens), so only its code and primary
//! message are kept, never the driver's error itself.

use super::seal::{KeyError, SealError};
use crate::vocabulary::PermanentFailure;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Says nothing of the URL: it may carry a password.
    #[error("the PostgreSQL store address is not a valid postgres:// URL")]
    Url,
    /// The URL's `sslmode` or `sslrootcert` cannot be used.
    #[error(transparent)]
    TlsSetting(#[from] super::pg_tls::TlsSettingError),
    /// A certificate or handshake failure: the server, its roots or the network are at
    /// fault, never the credential, so it is as transient as any failed connect.
    #[error("PostgreSQL store: connecting over TLS ({setting}): {detail}")]
    Tls { setting: String, detail: String },
    #[error("PostgreSQL store: {what}: {message}{}", code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Database {
        what: &'static str,
        code: Option<String>,
        message: String,
    },
    #[error("PostgreSQL store: {what} took longer than {limit:?}")]
    Timeout {
        what: &'static str,
        limit: std::time::Duration,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the store holds no credential {id:?}: import a sign-in first")]
    NoCredential { id: String },
    #[error("the stored credential row {id:?} is not in a shape this version understands")]
    Corrupt { id: String },
    /// A grant failed permanently, now or earlier: only a new sign-in helps.
    #[error("the credential needs a new sign-in{}", reason.map(|r| format!(" ({})", r.kind())).unwrap_or_default())]
    NeedsRelogin { reason: Option<PermanentFailure> },
    /// The grant's outcome is unknown and nothing was written: the issuer may have rotated
    /// the token anyway, so the caller re-reads rather than repeating the grant.
    #[error("the refresh grant's outcome is uncertain; nothing was stored: {detail}")]
    Uncertain { detail: String },
}

impl StoreError {
    pub(super) fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
        move |e| match e.as_db_error() {
            Some(db) => StoreError::Database {
                what,
                code: Some(db.code().code().to_owned()),
                message: db.message().to_owned(),
            },
            // Not from the server: I/O, a closed connection, a type mismatch. Their text
            // holds no row values; the driver's own text leaves out the cause.
            None => StoreError::Database {
                what,
                code: None,
                message: match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                },
            },
        }
    }

    /// The SQLSTATE, for callers that tell a lock wait that gave up from other failures.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}
