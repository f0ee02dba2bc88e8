//! The connections of the process as the application sees them: each one's session (what
//! it declared in `initialize`) and whether it receives broadcasts yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::rpc::{ConnectionHooks, ConnectionId, Peer};

/// What a connection declared in `initialize`. Fixed once the handshake is answered.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub client_name: String,
    pub experimental_api: bool,
    pub opt_out: HashSet<String>,
    /// The `userAgent` answered to this connection, reused on its backend calls.
    pub user_agent: String,
}

impl Session {
    pub fn opted_out(&self, method: &str) -> bool {
        self.opt_out.contains(method)
    }
}

struct Entry {
    peer: Peer,
    session: Arc<Session>,
    /// Receives broadcasts: set once its `initialize` result is on the wire, so no
    /// notification overtakes it.
    joined: bool,
}

#[derive(Default)]
pub(crate) struct Connections {
    entries: Mutex<HashMap<ConnectionId, Entry>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Entry>> {
        crate::unpoisoned::lock(&self.entries)
    }

    /// Records a connection's session; false when it already has one.
    pub fn open(&self, peer: Peer, session: Session) -> bool {
        let mut entries = self.lock();
        if entries.contains_key(&peer.id()) {
            return false;
        }
        entries.insert(
            peer.id(),
            Entry {
                peer,
                session: Arc::new(session),
                joined: false,
            },
        );
        true
    }

    /// From now on the connection receives broadcasts.
    pub fn join(&self, id: ConnectionId) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.joined = true;
        }
    }

    pub fn session(&self, id: ConnectionId) -> Option<Arc<Session>> {
        self.lock().get(&id).map(|e| e.session.clone())
    }

    /// Sends a notification to every joined connection that did not opt out of it.
    /// Params are serialized once; a WebSocket client too slow to take it is disconnected
    /// by its own outbox, so nobody waits for it.
    pub async fn broadcast<P: Serialize + ?Sized>(&self, method: &str, params: &P) {
        let raw = match serde_json::value::to_raw_value(params) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::error!(method, error = %e, "a notification failed to serialize");
                return;
            }
        };
        let peers: Vec<Peer> = self
            .lock()
            .values()
            .filter(|e| e.joined && !e.session.opted_out(method))
            .map(|e| e.peer.clone())
            .collect();
        futures::future::join_all(peers.iter().map(|p| p.notify(method, &*raw))).await;
    }
}

impl ConnectionHooks for Connections {
    fn closed(&self, id: ConnectionId) {
        self.lock().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_out_is_exact() {
        let s = Session {
            client_name: "c".into(),
            experimental_api: false,
            opt_out: ["account/updated".to_owned()].into(),
            user_agent: "ua".into(),
        };
        assert!(s.opted_out("account/updated"));
        assert!(!s.opted_out("account/updated/x"));
        assert!(!s.opted_out("account/login/completed"));
    }
}
