//! Byte streams to messages and back. A transport yields one [`Frame`] per message and
//! accepts one line of JSON per message; it knows nothing of JSON-RPC.

pub mod codec;
#[cfg(test)]
mod codec_props;
pub mod stdio;
pub mod ws;

/// One unit of input from a transport.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One message's text, trimmed of surrounding whitespace.
    Text(String),
    /// A message longer than the limit; its bytes were discarded without being buffered.
    Oversized { limit: usize },
    /// Input that cannot be a message (a binary WebSocket frame, invalid UTF-8).
    Unreadable(&'static str),
}
