//! The credential broker's methods (`credential/read`, `credential/refresh`) over the same
//! JSON-RPC machinery as the app-server. Workers need no `initialize`: the broker has no
//! per-connection state, and the capability token already said who may ask.

use std::sync::Arc;

use super::{ApiError, Table};
use crate::broker::owner::{CredentialOwner, Previous};
use crate::protocol::credential::{
    CredentialReadParams, CredentialRefreshParams, IssuedCredential,
};
use crate::rpc::{Dispatcher, RequestContext};
use crate::vocabulary::CredentialName;

pub(crate) struct BrokerApi {
    pub owner: Arc<dyn CredentialOwner>,
}

async fn read(
    api: &BrokerApi,
    _ctx: &RequestContext,
    p: CredentialReadParams,
) -> Result<IssuedCredential, ApiError> {
    served(&p.credential)?;
    api.owner.read().await.map_err(ApiError::Credential)
}

async fn refresh(
    api: &BrokerApi,
    _ctx: &RequestContext,
    p: CredentialRefreshParams,
) -> Result<IssuedCredential, ApiError> {
    served(&p.credential)?;
    let previous = match (p.previous_access_token, p.previous_access_token_sha256) {
        (Some(token), _) => Previous::Token(token),
        (None, Some(hex)) => Previous::Sha256(
            crate::transport::ws::parse_hex_digest(&hex).ok_or(ApiError::InvalidDigest)?,
        ),
        (None, None) => Previous::Unknown,
    };
    api.owner
        .refresh(previous)
        .await
        .map_err(ApiError::Credential)
}

/// The broker serves one credential, `default`, so far.
fn served(name: &CredentialName) -> Result<(), ApiError> {
    if name.is_default() {
        Ok(())
    } else {
        Err(ApiError::UnknownCredential(name.clone()))
    }
}

pub(crate) fn broker_dispatcher(api: Arc<BrokerApi>) -> Dispatcher {
    use crate::protocol::methods::{CredentialRead, CredentialRefresh};
    let mut t = Table::new(api);
    method!(t, CredentialRead, read);
    method!(t, CredentialRefresh, refresh);
    t.dispatcher
}
