//! The owner connection as the auth layer's way back to the parent application.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use serde_json::value::RawValue;

use crate::auth::{ChannelError, RefreshChannel};
use crate::protocol::account::ChatgptAuthTokensRefreshParams;
use crate::protocol::methods::CHATGPT_AUTH_TOKENS_REFRESH;
use crate::rpc::{Peer, PeerError};

pub struct PeerChannel(pub Peer);

impl RefreshChannel for PeerChannel {
    fn id(&self) -> u64 {
        self.0.id().0
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn request_refresh(
        &self,
        params: ChatgptAuthTokensRefreshParams,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Box<RawValue>, ChannelError>> {
        let peer = self.0.clone();
        async move {
            peer.request(CHATGPT_AUTH_TOKENS_REFRESH, &params, timeout)
                .await
                .map_err(|e| match e {
                    PeerError::Timeout(t) => ChannelError::Timeout(t),
                    PeerError::Disconnected => ChannelError::Disconnected,
                    PeerError::Rejected { code, message, .. } => {
                        ChannelError::Rejected { code, message }
                    }
                })
        }
        .boxed()
    }
}
