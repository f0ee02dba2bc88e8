//! `account/rateLimits/read`, through the backend's 401 recovery loop.

use super::{Api, ApiError};
use crate::auth::{Mode, NoChatgpt};
use crate::backend::Caller;
use crate::protocol::rate_limits::{GetAccountRateLimitsParams, GetAccountRateLimitsResponse};
use crate::rpc::RequestContext;

pub(super) async fn read(
    api: &Api,
    ctx: &RequestContext,
    _p: GetAccountRateLimitsParams,
) -> Result<GetAccountRateLimitsResponse, ApiError> {
    match api.auth.mode() {
        None => {
            return Err(ApiError::NoChatgpt {
                what: "codex account authentication required to read rate limits",
                why: NoChatgpt::SignedOut,
            });
        }
        Some(Mode::ApiKey) => {
            return Err(ApiError::NoChatgpt {
                what: "chatgpt authentication required to read rate limits",
                why: NoChatgpt::ApiKey,
            });
        }
        Some(Mode::Chatgpt | Mode::ChatgptAuthTokens) => {}
    }
    let session = api.session(ctx)?;
    let caller = Caller {
        user_agent: session.user_agent.clone(),
        originator: session.client_name.clone(),
    };
    api.backend
        .rate_limits(&caller)
        .await
        .map_err(|error| ApiError::Backend {
            what: "failed to fetch codex rate limits",
            error,
        })
}
