//! `account/rateLimits/read`, through the backend's 401 recovery loop.

use std::sync::Arc;

use jsonrpsee::types::Params;

use super::params::parse;
use super::{Api, errors};
use crate::backend::Caller;
use crate::protocol::account::AuthMode;
use crate::protocol::rate_limits::{GetAccountRateLimitsParams, GetAccountRateLimitsResponse};
use crate::rpc::error::INVALID_REQUEST;
use crate::rpc::{RequestContext, RpcError};

pub async fn read(
    params: Params<'static>,
    api: Arc<Api>,
    ctx: RequestContext,
) -> Result<GetAccountRateLimitsResponse, RpcError> {
    let _p: GetAccountRateLimitsParams = parse(&params)?;
    match api.auth.mode() {
        None => {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "codex account authentication required to read rate limits",
            ));
        }
        Some(AuthMode::ApiKey) => {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "chatgpt authentication required to read rate limits",
            ));
        }
        Some(AuthMode::Chatgpt | AuthMode::ChatgptAuthTokens) => {}
    }
    let session = ctx
        .peer
        .session()
        .ok_or_else(|| RpcError::invalid_request_plain("Not initialized"))?;
    let caller = Caller {
        user_agent: session.user_agent.clone(),
        originator: session.client_name.clone(),
    };
    api.backend
        .rate_limits(&caller)
        .await
        .map_err(|e| errors::backend("failed to fetch codex rate limits", e))
}
