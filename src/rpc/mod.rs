//! JSON-RPC over any transport that moves one message per frame: envelope, per-connection
//! peer, dispatch through a jsonrpsee method table. Knows nothing of accounts.

pub mod connection;
pub mod dispatch;
pub mod envelope;
#[cfg(test)]
mod envelope_props;
pub mod error;
pub mod peer;
pub mod session;

pub use connection::{ConnectionHooks, ConnectionOptions, serve_connection};
pub use dispatch::{AfterResponse, RequestContext};
pub use envelope::RequestId;
pub use error::RpcError;
pub use peer::{ConnectionId, Peer, PeerError};
pub use session::Session;
