//! `account/login/start`, `account/login/cancel`, `account/logout`, `account/read`.

use std::sync::Arc;

use jsonrpsee::types::Params;

use super::params::parse;
use super::refresh_channel::PeerChannel;
use super::{Api, errors};
use crate::protocol::account::{
    AccountLoginCompletedNotification, AccountUpdatedNotification, CancelLoginAccountParams,
    CancelLoginAccountResponse, CancelLoginAccountStatus, GetAccountParams, GetAccountResponse,
    LoginAccountParams, LoginAccountResponse, LogoutAccountResponse,
};
use crate::protocol::methods::{ACCOUNT_LOGIN_COMPLETED, ACCOUNT_UPDATED};
use crate::rpc::error::{INTERNAL_ERROR, INVALID_REQUEST};
use crate::rpc::{RequestContext, RpcError};

pub const EXPERIMENTAL_REQUIRED: &str =
    "account/login/start.chatgptAuthTokens requires experimentalApi capability";
pub const MANAGED_UNAVAILABLE: &str = "ChatGPT sign-in managed by authbridge (browser and device code) is not available yet; \
     supply tokens with type chatgptAuthTokens, or use an API key";

/// After a successful login: `login/completed`, then `account/updated`, to every
/// connection, once this request's result is on the wire.
fn announce_login(api: &Arc<Api>, ctx: &RequestContext, updated: AccountUpdatedNotification) {
    let connections = api.connections.clone();
    ctx.after.push(async move {
        let completed = AccountLoginCompletedNotification {
            login_id: None,
            success: true,
            error: None,
            onboarding_entrypoint: None,
        };
        connections
            .broadcast(ACCOUNT_LOGIN_COMPLETED, &completed)
            .await;
        connections.broadcast(ACCOUNT_UPDATED, &updated).await;
    });
}

pub async fn login_start(
    params: Params<'static>,
    api: Arc<Api>,
    ctx: RequestContext,
) -> Result<LoginAccountResponse, RpcError> {
    match parse::<LoginAccountParams>(&params)? {
        LoginAccountParams::ChatgptAuthTokens(tokens) => {
            if !ctx.peer.session().is_some_and(|s| s.experimental_api) {
                return Err(RpcError::new(INVALID_REQUEST, EXPERIMENTAL_REQUIRED));
            }
            let owner = Arc::new(PeerChannel(ctx.peer.clone()));
            let updated = api
                .auth
                .login_external(tokens, owner)
                .map_err(errors::login)?;
            announce_login(&api, &ctx, updated);
            Ok(LoginAccountResponse::ChatgptAuthTokens)
        }
        LoginAccountParams::ApiKey { api_key } => {
            let updated = api.auth.login_api_key(api_key).map_err(errors::login)?;
            announce_login(&api, &ctx, updated);
            Ok(LoginAccountResponse::ApiKey)
        }
        LoginAccountParams::Chatgpt { .. } | LoginAccountParams::ChatgptDeviceCode => {
            api.auth
                .allow_managed_login()
                .map_err(|p| RpcError::new(INVALID_REQUEST, p.to_string()))?;
            Err(RpcError::new(INVALID_REQUEST, MANAGED_UNAVAILABLE)
                .with_data(serde_json::json!({"unavailable": "managedChatgptLogin"})))
        }
        LoginAccountParams::AmazonBedrock {} | LoginAccountParams::AmazonBedrockAccessKeys {} => {
            Err(RpcError::new(
                INVALID_REQUEST,
                "Amazon Bedrock login is not supported by authbridge; use chatgptAuthTokens or apiKey",
            ))
        }
    }
}

pub async fn login_cancel(
    params: Params<'static>,
    _api: Arc<Api>,
    _ctx: RequestContext,
) -> Result<CancelLoginAccountResponse, RpcError> {
    let p: CancelLoginAccountParams = parse(&params)?;
    if uuid::Uuid::parse_str(&p.login_id).is_err() {
        let shown: String = p.login_id.chars().take(64).collect();
        return Err(RpcError::new(
            INVALID_REQUEST,
            format!("invalid login id: {shown}"),
        ));
    }
    // No managed sign-in can be in progress yet, so there is never one to cancel.
    Ok(CancelLoginAccountResponse {
        status: CancelLoginAccountStatus::NotFound,
    })
}

pub async fn logout(
    _params: Params<'static>,
    api: Arc<Api>,
    ctx: RequestContext,
) -> Result<LogoutAccountResponse, RpcError> {
    let updated = api.auth.logout().map_err(|e| {
        RpcError::new(
            INTERNAL_ERROR,
            format!("failed to remove the stored credential: {e}"),
        )
    })?;
    let connections = api.connections.clone();
    ctx.after
        .push(async move { connections.broadcast(ACCOUNT_UPDATED, &updated).await });
    Ok(LogoutAccountResponse {})
}

/// Answers from memory: no network call in any mode (`refreshToken` is accepted and, in
/// external mode, ignored as the reference does).
pub async fn read(
    params: Params<'static>,
    api: Arc<Api>,
    _ctx: RequestContext,
) -> Result<GetAccountResponse, RpcError> {
    let _p: GetAccountParams = parse(&params)?;
    let (account, user_id) = api.auth.account();
    Ok(GetAccountResponse {
        account,
        user_id,
        requires_openai_auth: true,
    })
}
