//! What a connection declared in `initialize`. Fixed once the handshake is answered.

use std::collections::HashSet;

#[derive(Debug, Clone)]
pub struct Session {
    pub client_name: String,
    pub client_version: String,
    pub experimental_api: bool,
    pub opt_out: HashSet<String>,
    /// The `userAgent` answered to this connection, reused on its backend calls.
    pub user_agent: String,
}

impl Session {
    pub fn opted_out(&self, method: &str) -> bool {
        !self.opt_out.is_empty() && self.opt_out.contains(method)
    }
}
