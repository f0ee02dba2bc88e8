//! JSON-RPC over any transport that moves one message per frame: envelope, per-connection
//! peer (outbox, pending requests, lifecycle), dispatch through a jsonrpsee method table.
//! Knows nothing of accounts. The same engine serves both roles: `serve_connection` is the
//! server, `client::Client` the client (`ws_client` connects one over WebSocket).

pub(crate) mod client;
pub(crate) mod connection;
pub(crate) mod dispatch;
pub(crate) mod envelope;
#[cfg(test)]
mod envelope_props;
pub(crate) mod error;
mod exchange;
pub(crate) mod method_name;
pub(crate) mod outbox;
pub(crate) mod peer;
pub(crate) mod pending;
pub(crate) mod ws_client;

pub(crate) use connection::{ConnectionHooks, ConnectionOptions, serve_connection};
pub(crate) use dispatch::{Dispatcher, RequestContext};
pub(crate) use error::RpcError;
pub(crate) use peer::{ConnectionId, Peer, PeerError, ServerRequest};

#[cfg(test)]
mod tests;
