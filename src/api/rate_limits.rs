//! `account/rateLimits/read`, through the backend's 401 recovery loop.

use super::{Api, ApiError, NeedsChatgpt};
use crate::protocol::rate_limits::{GetAccountRateLimitsParams, GetAccountRateLimitsResponse};
use crate::rpc::RequestContext;

pub(super) async fn read(
    api: &Api,
    ctx: &RequestContext,
    _p: GetAccountRateLimitsParams,
) -> Result<GetAccountRateLimitsResponse, ApiError> {
    api.require_chatgpt(NeedsChatgpt {
        signed_out: "codex account authentication required to read rate limits",
        api_key: "chatgpt authentication required to read rate limits",
        failed: "failed to fetch codex rate limits",
    })
    .await?;
    let caller = api.caller(ctx)?;
    api.backend
        .rate_limits(&caller)
        .await
        .map_err(|error| ApiError::Backend {
            what: "failed to fetch codex rate limits",
            error,
        })
}
