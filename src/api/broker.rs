//! The credential broker's methods (`credential/read`, `credential/refresh`) over the same
//! JSON-RPC machinery as the app-server. Workers need no `initialize`: the broker has no
//! per-connection state, and the capability token already said who may ask.

use std::sync::Arc;

use super::{ApiError, Table};
use crate::broker::ops::{BrokerOps, Call, DEFAULT_PRINCIPAL};
use crate::broker::owner::{CredentialOwner, Previous};
use crate::protocol::credential::{
    CredentialReadParams, CredentialRefreshParams, IssuedCredential,
};
use crate::protocol::methods::{CredentialRead, CredentialRefresh, Method};
use crate::rpc::{Dispatcher, RequestContext};
use crate::vocabulary::CredentialName;

pub(crate) struct BrokerApi {
    pub owner: Arc<dyn CredentialOwner>,
    /// Audit and metrics: told of every call's end.
    pub ops: Arc<BrokerOps>,
}

/// Tells the audit log and the metrics how a call ended.
fn report<M: Method>(
    api: &BrokerApi,
    credential: &CredentialName,
    answer: &Result<IssuedCredential, ApiError>,
) {
    let (outcome, served) = match answer {
        Ok(_) => ("ok", true),
        Err(ApiError::Credential(e)) => (e.kind(), true),
        Err(ApiError::UnknownCredential(_)) => ("unknownCredential", false),
        Err(_) => ("invalidParams", true),
    };
    let issued = answer.as_ref().ok();
    api.ops.called(Call {
        principal: DEFAULT_PRINCIPAL,
        credential,
        served,
        method: M::NAME,
        outcome,
        generation: issued.map(|i| i.generation),
        expires_at: issued.and_then(|i| i.expires_at),
    });
}

async fn read(
    api: &BrokerApi,
    _ctx: &RequestContext,
    p: CredentialReadParams,
) -> Result<IssuedCredential, ApiError> {
    let answer = async {
        served(&p.credential)?;
        api.owner.read().await.map_err(ApiError::Credential)
    }
    .await;
    report::<CredentialRead>(api, &p.credential, &answer);
    answer
}

async fn refresh(
    api: &BrokerApi,
    _ctx: &RequestContext,
    p: CredentialRefreshParams,
) -> Result<IssuedCredential, ApiError> {
    let credential = p.credential.clone();
    let answer = refresh_of(api, p).await;
    report::<CredentialRefresh>(api, &credential, &answer);
    answer
}

async fn refresh_of(
    api: &BrokerApi,
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
    let mut t = Table::new(api);
    method!(t, CredentialRead, read);
    method!(t, CredentialRefresh, refresh);
    t.dispatcher
}
