//! `account/login/start`, `account/login/cancel`, `account/logout`, `account/read`.
//!
//! Notifications are not sent here: the auth state reports each change as an event, and
//! `events` announces it after this request's response.

use std::sync::Arc;

use super::refresh_channel::PeerChannel;
use super::{Api, ApiError};
use crate::auth::{AuthError, Identity, Look, SuppliedTokens};
use crate::login::Started;
use crate::protocol::account::{
    Account, CancelLoginAccountParams, CancelLoginAccountResponse, CancelLoginAccountStatus,
    ExternalTokens, GetAccountParams, GetAccountResponse, LoginAccountParams, LoginAccountResponse,
    LoginRequired, LogoutAccountParams, LogoutAccountResponse,
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
            // As in the reference, any login ends a pending managed sign-in.
            api.logins.cancel_all();
            Ok(LoginAccountResponse::ChatgptAuthTokens)
        }
        LoginAccountParams::ApiKey { api_key } => {
            api.auth.login_api_key(api_key).await?;
            api.logins.cancel_all();
            Ok(LoginAccountResponse::ApiKey)
        }
        LoginAccountParams::Chatgpt { .. } => {
            let originator = api.session(ctx)?.client_name.clone();
            Ok(started(api.logins.start_browser(&originator).await?))
        }
        LoginAccountParams::ChatgptDeviceCode => Ok(started(api.logins.start_device().await?)),
        LoginAccountParams::AmazonBedrock {} | LoginAccountParams::AmazonBedrockAccessKeys {} => {
            Err(ApiError::Unavailable {
                message: "Amazon Bedrock login is not supported by authbridge; use chatgptAuthTokens or apiKey",
                feature: None,
            })
        }
    }
}

fn started(s: Started) -> LoginAccountResponse {
    match s {
        Started::Browser { login_id, auth_url } => {
            LoginAccountResponse::Chatgpt { login_id, auth_url }
        }
        Started::Device {
            login_id,
            verification_url,
            user_code,
            verification_url_complete,
        } => LoginAccountResponse::ChatgptDeviceCode {
            login_id,
            verification_url,
            user_code,
            verification_url_complete,
        },
    }
}

pub(super) async fn login_cancel(
    api: &Api,
    _ctx: &RequestContext,
    p: CancelLoginAccountParams,
) -> Result<CancelLoginAccountResponse, ApiError> {
    if uuid::Uuid::parse_str(&p.login_id).is_err() {
        return Err(ApiError::InvalidLoginId);
    }
    let status = if api.logins.cancel(&p.login_id) {
        CancelLoginAccountStatus::Canceled
    } else {
        CancelLoginAccountStatus::NotFound
    };
    Ok(CancelLoginAccountResponse { status })
}

/// Ends a pending sign-in, then signs out. A managed credential's refresh token is revoked
/// at the issuer (unless `authbridge.revoke_on_logout = false`), best effort: a failure is
/// logged and the logout completes.
pub(super) async fn logout(
    api: &Api,
    _ctx: &RequestContext,
    _p: LogoutAccountParams,
) -> Result<LogoutAccountResponse, ApiError> {
    api.logins.cancel_all();
    if let Some(refresh_token) = api.auth.logout().await?
        && api.config.revoke_on_logout
        && let Err(e) = api.logins.issuer().revoke(&refresh_token).await
    {
        tracing::warn!("logout: {e}; the stored credential is deleted all the same");
    }
    Ok(LogoutAccountResponse {})
}

/// Answers from memory, except `refreshToken: true` in managed mode, which makes a grant
/// first (`forced`); external mode ignores it, as the reference does. A credential that
/// needs a new sign-in reads as no account, with the reason.
pub(super) async fn read(
    api: &Api,
    _ctx: &RequestContext,
    p: GetAccountParams,
) -> Result<GetAccountResponse, ApiError> {
    // Another process may have signed in, out, or rotated since: read as the store is.
    api.auth.notice_store_change(Look::Recent).await;
    if p.refresh_token == Some(true) {
        // Boxed: this rare path's grant would otherwise size every read's future.
        match Box::pin(api.auth.refresh_forced()).await {
            Ok(()) | Err(AuthError::LoginRequired(_)) => {}
            Err(error) => {
                return Err(ApiError::Backend {
                    what: "account/read could not refresh the tokens",
                    error: error.into(),
                });
            }
        }
    }
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
        // Codex's own rule: the configured provider says whether it needs an OpenAI sign-in.
        requires_openai_auth: api
            .providers
            .requires_openai_auth(&api.config.model_provider),
        credential_store_warning: api.auth.store().warning(),
        login_required: api.auth.login_required().map(|f| LoginRequired {
            auth_error: f.kind().to_owned(),
            message: f.message().to_owned(),
        }),
    })
}
