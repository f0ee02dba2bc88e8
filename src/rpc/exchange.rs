//! One request on a [`Peer`], whichever role sends it: a fresh id from its
//! `PendingRequests`, the line from `encode`, a place in the outbox, the answer (or the
//! connection closing) within the timeout, and the result decoded with
//! `protocol::decode`, whose errors say what was wrong, never the value. On every way out
//! the entry is gone, so a late answer finds nobody and no id is used twice.
//!
//! The client role's `Client::request` is this; `Peer::request` (the server asking its
//! client) does the same steps and can become a call to it.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::envelope::{ErrorObject, ReplyError, encode};
use super::peer::Peer;
use crate::protocol::decode::decode_object;

/// Why an exchange produced no result; each role words it for its own errors.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Failure {
    Timeout(Duration),
    Disconnected,
    /// The peer's error object (message capped, small `data` kept).
    Rejected(ErrorObject),
    Malformed(String),
    /// The params did not serialize: nothing was sent.
    Encode(String),
}

pub(super) async fn exchange<P: Serialize + ?Sized, T: DeserializeOwned>(
    peer: &Peer,
    method: &'static str,
    params: &P,
    timeout: Duration,
) -> Result<T, Failure> {
    let mut waiter = peer
        .pending()
        .register(method)
        .map_err(|_| Failure::Disconnected)?;
    let line = encode::request(peer.jsonrpc(), waiter.id(), method, params)
        .map_err(|e| Failure::Encode(e.to_string()))?;
    let answered = async {
        peer.outbox()
            .push(line)
            .await
            .map_err(|_| Failure::Disconnected)?;
        match waiter.answer().await {
            Ok(Ok(result)) => {
                decode_object::<T>(result.get()).map_err(|e| Failure::Malformed(e.to_string()))
            }
            Ok(Err(ReplyError::Error(e))) => Err(Failure::Rejected(e)),
            Ok(Err(ReplyError::Malformed(why))) => Err(Failure::Malformed(why.to_owned())),
            Err(_) => Err(Failure::Disconnected),
        }
    };
    tokio::time::timeout(timeout, answered)
        .await
        .unwrap_or(Err(Failure::Timeout(timeout)))
}
