//! The credential broker's methods over the same JSON-RPC machinery as the app-server:
//! `credential/read` and `credential/refresh` for any principal bound to the credential,
//! and the admin methods (list, import, delete, sign-in) for admin principals. Workers need
//! no `initialize`: the bearer token already said who asks, and the connection carries
//! that principal (its [`Admitted`]) from the upgrade to every handler.

use std::sync::Arc;

use super::{ApiError, Table};
use crate::broker::credentials::{Credentials, Entry};
use crate::broker::ops::{BrokerOps, Call};
use crate::broker::owner::Previous;
use crate::broker::principals::{Admitted, Principal, PrincipalGate};
use crate::broker::sign_in::SignIns;
use crate::protocol::account::CancelLoginAccountStatus;
use crate::protocol::credential::*;
use crate::protocol::methods::{
    CredentialDelete, CredentialImport, CredentialList, CredentialLoginCancel,
    CredentialLoginStart, CredentialRead, CredentialRefresh, Method,
};
use crate::rpc::{ConnectionHooks, ConnectionId, Dispatcher, RequestContext};
use crate::vocabulary::CredentialName;

pub(crate) struct BrokerApi {
    pub credentials: Arc<Credentials>,
    pub gate: Arc<PrincipalGate>,
    pub sign_ins: Arc<SignIns>,
    /// Audit and metrics: told of every credential call's end.
    pub ops: Arc<BrokerOps>,
}

/// The stable word of a failure, for the audit log and the metrics.
fn outcome_of(e: &ApiError) -> &'static str {
    match e {
        ApiError::Credential(e) => e.kind(),
        ApiError::UnknownCredential(_) => "unknownCredential",
        ApiError::NotAdmin { .. } => "notAdmin",
        ApiError::PrincipalGone => "principalGone",
        ApiError::Params(_) | ApiError::InvalidDigest | ApiError::NotAuthJson => "invalidParams",
        _ => "failed",
    }
}

impl BrokerApi {
    /// The calling connection's principal's name, for the audit log.
    fn who(&self, ctx: &RequestContext) -> String {
        self.principal(ctx)
            .map(|(_, p)| p.name.clone())
            .unwrap_or_else(|_| "_gone".into())
    }

    /// Tells the audit log and the metrics how a call on `credential` ended.
    fn report<M: Method>(
        &self,
        ctx: &RequestContext,
        credential: &CredentialName,
        outcome: Result<(Option<u64>, Option<i64>), &ApiError>,
    ) {
        let principal = self.who(ctx);
        let (word, served, generation, expires_at) = match outcome {
            Ok((generation, expires_at)) => ("ok", true, generation, expires_at),
            Err(e) => (
                outcome_of(e),
                !matches!(e, ApiError::UnknownCredential(_)),
                None,
                None,
            ),
        };
        self.ops.called(Call {
            principal: &principal,
            credential,
            served,
            method: M::NAME,
            outcome: word,
            generation,
            expires_at,
        });
    }

    /// [`report`](Self::report) of a call answered with a credential.
    fn report_issued<M: Method>(
        &self,
        ctx: &RequestContext,
        credential: &CredentialName,
        answer: &Result<IssuedCredential, ApiError>,
    ) {
        let outcome = answer
            .as_ref()
            .map(|issued| (Some(issued.generation), issued.expires_at));
        self.report::<M>(ctx, credential, outcome);
    }
}

impl ConnectionHooks for BrokerApi {
    fn closed(&self, id: ConnectionId) {
        self.credentials.closed(id);
    }
}

impl BrokerApi {
    /// Whom the calling connection was admitted as, and its principal now.
    fn principal(&self, ctx: &RequestContext) -> Result<(Arc<Admitted>, Arc<Principal>), ApiError> {
        let admitted = ctx
            .peer
            .admission::<Admitted>()
            .ok_or(ApiError::PrincipalGone)?;
        let principal = self
            .gate
            .principal_of(&admitted)
            .ok_or(ApiError::PrincipalGone)?;
        Ok((admitted, principal))
    }

    /// `name`'s owner for a principal bound to it. A name it is not bound to answers as
    /// one that does not exist.
    async fn bound(
        &self,
        ctx: &RequestContext,
        name: &CredentialName,
    ) -> Result<(Arc<Entry>, Arc<Admitted>), ApiError> {
        let (admitted, principal) = self.principal(ctx)?;
        if !principal.may_use(name) {
            return Err(ApiError::UnknownCredential(name.clone()));
        }
        Ok((self.credentials.get(name).await?, admitted))
    }

    /// A read or refresh is over: the connection hears of the credential's changes after
    /// the generation it was handed (any, after a failure).
    fn used(
        ctx: &RequestContext,
        (entry, admitted): (Arc<Entry>, Arc<Admitted>),
        outcome: Result<IssuedCredential, crate::auth::AuthError>,
    ) -> Result<IssuedCredential, ApiError> {
        let generation = outcome.as_ref().map_or(0, |issued| issued.generation);
        entry.subscribe(&ctx.peer, admitted, generation);
        outcome.map_err(ApiError::Credential)
    }

    fn admin(&self, ctx: &RequestContext, method: &'static str) -> Result<(), ApiError> {
        let (_, principal) = self.principal(ctx)?;
        if principal.admin {
            tracing::info!(principal = %principal.name, method, "admin method");
            Ok(())
        } else {
            tracing::info!(principal = %principal.name, method, "admin method refused");
            Err(ApiError::NotAdmin { method })
        }
    }
}

async fn read(
    api: &BrokerApi,
    ctx: &RequestContext,
    p: CredentialReadParams,
) -> Result<IssuedCredential, ApiError> {
    let answer = async {
        let bound = api.bound(ctx, &p.credential).await?;
        let outcome = bound.0.owner.read().await;
        BrokerApi::used(ctx, bound, outcome)
    }
    .await;
    api.report_issued::<CredentialRead>(ctx, &p.credential, &answer);
    answer
}

async fn refresh(
    api: &BrokerApi,
    ctx: &RequestContext,
    p: CredentialRefreshParams,
) -> Result<IssuedCredential, ApiError> {
    let credential = p.credential.clone();
    let answer = refresh_of(api, ctx, p).await;
    api.report_issued::<CredentialRefresh>(ctx, &credential, &answer);
    answer
}

async fn refresh_of(
    api: &BrokerApi,
    ctx: &RequestContext,
    p: CredentialRefreshParams,
) -> Result<IssuedCredential, ApiError> {
    let previous = match (p.previous_access_token, p.previous_access_token_sha256) {
        (Some(token), _) => Previous::Token(token),
        (None, Some(hex)) => Previous::Sha256(
            crate::transport::ws::parse_hex_digest(&hex).ok_or(ApiError::InvalidDigest)?,
        ),
        (None, None) => Previous::Unknown,
    };
    let bound = api.bound(ctx, &p.credential).await?;
    let outcome = bound.0.owner.refresh(previous).await;
    BrokerApi::used(ctx, bound, outcome)
}

async fn list(
    api: &BrokerApi,
    ctx: &RequestContext,
    _: CredentialListParams,
) -> Result<CredentialListResponse, ApiError> {
    api.admin(ctx, "credential/list")?;
    let mut credentials = Vec::new();
    for name in api.credentials.names().await? {
        let entry = api.credentials.get(&name).await?;
        if let Some(summary) = entry.owner.summary(&name).await? {
            credentials.push(summary);
        }
    }
    Ok(CredentialListResponse { credentials })
}

async fn import(
    api: &BrokerApi,
    ctx: &RequestContext,
    p: CredentialImportParams,
) -> Result<CredentialImportResponse, ApiError> {
    let answer = async {
        api.admin(ctx, "credential/import")?;
        let doc = crate::auth::storage::AuthDocument::parse(p.auth_json.expose().as_bytes())
            .ok_or(ApiError::NotAuthJson)?;
        let entry = api.credentials.get(&p.credential).await?;
        Ok(entry.owner.import(doc).await?)
    }
    .await;
    api.report::<CredentialImport>(
        ctx,
        &p.credential,
        answer.as_ref().map(|g| (Some(*g), None)),
    );
    Ok(CredentialImportResponse {
        generation: answer?,
    })
}

async fn delete(
    api: &BrokerApi,
    ctx: &RequestContext,
    p: CredentialDeleteParams,
) -> Result<CredentialDeleteResponse, ApiError> {
    let answer = async {
        api.admin(ctx, "credential/delete")?;
        let entry = api.credentials.get(&p.credential).await?;
        if entry.owner.delete(p.revoke).await? {
            Ok(())
        } else {
            Err(ApiError::UnknownCredential(p.credential.clone()))
        }
    }
    .await;
    api.report::<CredentialDelete>(ctx, &p.credential, answer.as_ref().map(|()| (None, None)));
    answer.map(|()| CredentialDeleteResponse {})
}

async fn login_start(
    api: &BrokerApi,
    ctx: &RequestContext,
    p: CredentialLoginStartParams,
) -> Result<CredentialLoginStartResponse, ApiError> {
    let answer = async {
        api.admin(ctx, "credential/login/start")?;
        let CredentialLoginType::ChatgptDeviceCode = p.kind;
        let entry = api.credentials.get(&p.credential).await?;
        Ok(api.sign_ins.start(entry, ctx.peer.clone()).await?)
    }
    .await;
    api.report::<CredentialLoginStart>(ctx, &p.credential, answer.as_ref().map(|_| (None, None)));
    answer
}

async fn login_cancel(
    api: &BrokerApi,
    ctx: &RequestContext,
    p: CredentialLoginCancelParams,
) -> Result<CredentialLoginCancelResponse, ApiError> {
    api.admin(ctx, "credential/login/cancel")?;
    let status = if api.sign_ins.cancel(&p.login_id) {
        CancelLoginAccountStatus::Canceled
    } else {
        CancelLoginAccountStatus::NotFound
    };
    Ok(CredentialLoginCancelResponse { status })
}

pub(crate) fn broker_dispatcher(api: Arc<BrokerApi>) -> Dispatcher {
    let mut t = Table::new(api);
    method!(t, CredentialRead, read);
    method!(t, CredentialRefresh, refresh);
    method!(t, CredentialList, list);
    method!(t, CredentialImport, import);
    method!(t, CredentialDelete, delete);
    method!(t, CredentialLoginStart, login_start);
    method!(t, CredentialLoginCancel, login_cancel);
    t.dispatcher
}
