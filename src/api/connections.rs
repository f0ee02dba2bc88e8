//! The initialized connections of the process, for account notifications.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::rpc::{ConnectionHooks, ConnectionId, Peer};

#[derive(Default)]
pub struct Connections {
    peers: Mutex<HashMap<ConnectionId, Peer>>,
}

impl Connections {
    pub fn add(&self, peer: Peer) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.id(), peer);
    }

    /// Sends a notification to every initialized connection that did not opt out of it.
    /// Params are serialized once; a WebSocket client too slow to take it is disconnected.
    pub async fn broadcast<P: Serialize + ?Sized>(&self, method: &str, params: &P) {
        let Ok(raw) = serde_json::value::to_raw_value(params) else {
            return;
        };
        let peers: Vec<Peer> = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        futures::future::join_all(peers.iter().map(|p| p.notify_broadcast(method, &raw))).await;
    }
}

impl ConnectionHooks for Connections {
    fn closed(&self, id: ConnectionId) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}
