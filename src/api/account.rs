//! `account/login/start`, `account/login/cancel`, `account/logout`, `account/read`.
//!
//! Notifications are not sent here: the auth state reports each change as an event, and
//! `events` announces it after this request's response.

use std::sync::Arc;

use super::refresh_channel::PeerChannel;
use super::{Api, ApiError};
use crate::auth::{Identity, SuppliedTokens};
use crate::protocol::account::{
    Account, CancelLoginAccountParams, CancelLoginAccountResponse, CancelLoginAccountStatus,
    ExternalTokens, GetAccountParams, GetAccountResponse, LoginAccountParams, LoginAccountResponse,
    LogoutAccountParams, LogoutAccountResponse,
};
use crate::rpc::RequestContext;

impl From<ExternalTokens> for SuppliedTokens {
    fn from(t: ExternalTokens) -> Self {
        SuppliedTokens {
            access_token: t.access_token,
            account_id: t.chatgpt_account_id,
            plan: t.chatgpt_plan_type,
            id_token: t.id_token,
        }
    }
}

pub(super) async fn login_start(
    api: &Api,
    ctx: &RequestContext,
    p: LoginAccountParams,
) -> Result<LoginAccountResponse, ApiError> {
    match p {
        LoginAccountParams::ChatgptAuthTokens(tokens) => {
            if !api.session(ctx)?.experimental_api {
                return Err(ApiError::ExperimentalRequired);
            }
            let owner = Arc::new(PeerChannel(ctx.peer.clone()));
            api.auth.login_external(tokens.into(), owner)?;
            Ok(LoginAccountResponse::ChatgptAuthTokens)
        }
        LoginAccountParams::ApiKey { api_key } => {
            api.auth.login_api_key(api_key)?;
            Ok(LoginAccountResponse::ApiKey)
        }
        LoginAccountParams::Chatgpt { .. } | LoginAccountParams::ChatgptDeviceCode => {
            api.auth.allow_managed_login()?;
            Err(ApiError::Unavailable {
                message: "ChatGPT sign-in managed by authbridge (browser and device code) is not \
                          available yet; supply tokens with type chatgptAuthTokens, or use an API key",
                feature: Some("managedChatgptLogin"),
            })
        }
        LoginAccountParams::AmazonBedrock {} | LoginAccountParams::AmazonBedrockAccessKeys {} => {
            Err(ApiError::Unavailable {
                message: "Amazon Bedrock login is not supported by authbridge; use chatgptAuthTokens or apiKey",
                feature: None,
            })
        }
    }
}

pub(super) async fn login_cancel(
    _api: &Api,
    _ctx: &RequestContext,
    p: CancelLoginAccountParams,
) -> Result<CancelLoginAccountResponse, ApiError> {
    if uuid::Uuid::parse_str(&p.login_id).is_err() {
        return Err(ApiError::InvalidLoginId);
    }
    // No managed sign-in can be in progress yet, so there is never one to cancel.
    Ok(CancelLoginAccountResponse {
        status: CancelLoginAccountStatus::NotFound,
    })
}

pub(super) async fn logout(
    api: &Api,
    _ctx: &RequestContext,
    _p: LogoutAccountParams,
) -> Result<LogoutAccountResponse, ApiError> {
    api.auth.logout()?;
    Ok(LogoutAccountResponse {})
}

/// Answers from memory: no network call in any mode (`refreshToken` is accepted and, in
/// external mode, ignored as the reference does).
pub(super) async fn read(
    api: &Api,
    _ctx: &RequestContext,
    _p: GetAccountParams,
) -> Result<GetAccountResponse, ApiError> {
    let (account, user_id) = match api.auth.identity() {
        None => (None, None),
        Some(Identity::ApiKey) => (Some(Account::ApiKey), None),
        Some(Identity::Chatgpt {
            email,
            plan,
            user_id,
        }) => (
            Some(Account::Chatgpt {
                email,
                plan_type: plan,
            }),
            user_id,
        ),
    };
    Ok(GetAccountResponse {
        account,
        user_id,
        requires_openai_auth: true,
    })
}
