//! What the server knows about the user: the auth modes, the tokens (secret, in memory),
//! their claims, the sign-in policy, the stored credential and recovery after a 401.
//! Depends on neither `api` nor `backend`, and speaks its own types, not the wire's.

pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod external;
mod file_lock;
pub(crate) mod grant;
pub(crate) mod jwt;
#[cfg(test)]
mod jwt_props;
mod managed;
pub(crate) mod manager;
pub(crate) mod plan;
pub(crate) mod policy;
mod recovery;
pub(crate) mod storage;

pub(crate) use error::AuthError;
pub(crate) use events::{AuthEvent, AuthStatus, Mode};
pub(crate) use external::{ChannelError, RefreshChannel, SuppliedTokens};
pub(crate) use manager::{
    AuthManager, CallCredentialsError, ChatgptCredentials, Identity, LoginError, NoChatgpt,
};
pub(crate) use policy::{Policy, PolicyError};
