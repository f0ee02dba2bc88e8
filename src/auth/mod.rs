//! What the server knows about the user: the auth modes, the tokens (secret, in memory),
//! their claims, the sign-in policy, the stored credential and recovery after a 401.
//! Depends on neither `api` nor `backend`.

pub mod error;
pub mod external;
pub mod jwt;
#[cfg(test)]
mod jwt_props;
pub mod manager;
pub mod policy;
mod recovery;
pub mod storage;

pub use error::AuthError;
pub use external::{ChannelError, RefreshChannel};
pub use manager::{AuthManager, ChatgptCredentials, LoginError, NoChatgpt};
pub use policy::{Policy, PolicyError};
