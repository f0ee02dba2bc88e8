//! Storage for the credential broker: one managed ChatGPT credential in PostgreSQL, shared
//! by any number of broker instances, its refresh token sealed at rest and spent only under
//! the row lock.
//!
//! The grant itself (the HTTP call to the issuer) is not here: [`PgStore::refresh`] takes
//! it as a closure and learns its result as a [`GrantOutcome`], so this module stays free of
//! HTTP and the grant free of SQL.

pub(crate) mod credentials;
mod error;
mod listen;
pub mod ops;
pub(crate) mod owner;
mod pg_store;
mod pg_tls;
pub(crate) mod principals;
mod refresh;
mod row;
mod seal;
pub(crate) mod sign_in;

pub use crate::auth::grant::PROACTIVE_MARGIN;
pub use crate::vocabulary::PermanentFailure;
pub use error::StoreError;
pub use listen::Subscription;
pub use pg_store::{CHANNEL, PgOptions, PgStore};
pub use pg_tls::TlsSettingError;
pub use row::{
    CredentialRow, CredentialState, GrantOutcome, GrantTokens, ImportedCredential, Refreshed,
};
pub use seal::{KEY_FILE_ENV, KeyError, SealError, SealKey};
