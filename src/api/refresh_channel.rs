//! The owner connection as the auth layer's way back to the parent application.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};

use crate::auth::{ChannelError, RefreshChannel, SuppliedTokens};
use crate::protocol::account::{
    ChatgptAuthTokensRefreshParams, ChatgptAuthTokensRefreshReason, ExternalTokens,
};
use crate::protocol::methods::CHATGPT_AUTH_TOKENS_REFRESH;
use crate::rpc::{Peer, PeerError, ServerRequest};

/// `account/chatgptAuthTokens/refresh`: the server asks, the parent answers with tokens.
struct RefreshTokens;

impl ServerRequest for RefreshTokens {
    const METHOD: &'static str = CHATGPT_AUTH_TOKENS_REFRESH;
    type Params = ChatgptAuthTokensRefreshParams;
    type Response = ExternalTokens;
}

pub(super) struct PeerChannel(pub Peer);

impl RefreshChannel for PeerChannel {
    fn id(&self) -> u64 {
        self.0.id().0
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn request_refresh(
        &self,
        previous_account_id: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<SuppliedTokens, ChannelError>> {
        let peer = self.0.clone();
        let params = ChatgptAuthTokensRefreshParams {
            reason: ChatgptAuthTokensRefreshReason::Unauthorized,
            previous_account_id,
        };
        async move {
            peer.request::<RefreshTokens>(&params, timeout)
                .await
                .map(SuppliedTokens::from)
                .map_err(|e| match e {
                    PeerError::Timeout(t) => ChannelError::Timeout(t),
                    PeerError::Disconnected => ChannelError::Disconnected,
                    PeerError::Rejected { code, message } => {
                        ChannelError::Rejected { code, message }
                    }
                    PeerError::Invalid(why) => ChannelError::Invalid(why),
                })
        }
        .boxed()
    }
}
