//! What the server knows about the user: the auth modes, the tokens (secret, in memory),
//! their claims, the sign-in policy, the stored credential and recovery after a 401.
//! Depends on neither `api` nor `backend`, and speaks its own types, not the wire's.

pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod external;
pub(crate) mod file_lock;
pub(crate) mod grant;
pub(crate) mod jwt;
#[cfg(test)]
mod jwt_props;
mod managed;
pub(crate) mod manager;
pub(crate) mod policy;
mod recovery;
pub(crate) mod rotation;
pub(crate) mod rotation_hook;
pub(crate) mod single_flight;
mod state;
pub(crate) mod storage;
mod store_watch;
pub(crate) mod transfer;

pub(crate) use error::AuthError;
pub(crate) use events::{AuthEvent, AuthStatus, Events, Mode};
pub(crate) use external::{ChannelError, RefreshChannel, SuppliedTokens};
pub(crate) use manager::{
    AuthManager, AuthSetup, CallCredentialsError, Freshened, Freshness, Identity, LoginError,
};
pub(crate) use policy::{Policy, PolicyError};
pub(crate) use rotation_hook::RotationHook;
pub(crate) use state::{ChatgptCredentials, NoChatgpt};
pub(crate) use store_watch::Look;
