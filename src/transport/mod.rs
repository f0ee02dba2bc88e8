//! Byte streams to messages and back. A transport yields one [`Frame`] per message and
//! accepts one line of JSON per message; it knows nothing of JSON-RPC. Each transport also
//! says how its peer is to be treated when it stops reading ([`Backpressure`]), so the
//! server cannot forget to pass the right policy along.

pub(crate) mod codec;
#[cfg(test)]
mod codec_props;
pub(crate) mod signed_bearer;
pub(crate) mod stdio;
pub(crate) mod tls;
#[cfg(unix)]
pub(crate) mod unix;
#[cfg(unix)]
pub(crate) mod unix_proxy;
pub(crate) mod ws;

use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Sink, Stream};

/// One unit of input from a transport.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// One message's text, trimmed of surrounding whitespace. The connection wipes it once
    /// handled, since it may carry tokens.
    Text(String),
    /// A message longer than the limit; its bytes were discarded without being buffered.
    Oversized { limit: usize },
    /// Input that cannot be a message (a binary WebSocket frame, invalid UTF-8).
    Unreadable(&'static str),
}

/// What to do with a client whose outgoing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backpressure {
    /// Wait for it: the only client of the process (stdio), and nothing may be lost.
    Wait,
    /// Disconnect it: one of many clients (WebSocket), which must not hold the others up.
    Disconnect,
}

/// How a transport's connections are served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkPolicy {
    pub backpressure: Backpressure,
    /// Most bytes queued for the client before [`Backpressure`] applies.
    pub max_outgoing_bytes: usize,
}

pub(crate) type Incoming = Pin<Box<dyn Stream<Item = std::io::Result<Frame>> + Send>>;
pub(crate) type Outgoing = Pin<Box<dyn Sink<String, Error = std::io::Error> + Send>>;

/// Whom a transport's gate let in (the broker's principal), handed to the handlers through
/// the connection's [`Peer`](crate::rpc::Peer). Opaque here: the transport checks the
/// bearer token, the layer that defined the gate knows what it admitted.
pub(crate) type Admission = Arc<dyn Any + Send + Sync>;

/// Decides at the WebSocket upgrade, from the `Authorization: Bearer` token (if any),
/// whether the connection may go on, and as whom; `None` refuses it (401).
pub(crate) trait BearerGate: Send + Sync + 'static {
    fn admit(&self, bearer: Option<&str>) -> Option<Admission>;
}

/// One connection as a transport hands it over: messages in, lines out, its policy, and
/// whom its gate admitted.
pub(crate) struct Link {
    pub input: Incoming,
    pub output: Outgoing,
    pub policy: LinkPolicy,
    pub admitted: Option<Admission>,
}
