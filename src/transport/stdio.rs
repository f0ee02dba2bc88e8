//! stdio: one JSON message per line on stdin and stdout. Stdout carries nothing else.

use tokio_util::codec::{FramedRead, FramedWrite};

use super::codec::JsonLinesCodec;

/// The input and output halves for [`crate::rpc::serve_connection`].
pub fn framed(
    max_message_bytes: usize,
) -> (
    FramedRead<tokio::io::Stdin, JsonLinesCodec>,
    FramedWrite<tokio::io::Stdout, JsonLinesCodec>,
) {
    (
        FramedRead::with_capacity(
            tokio::io::stdin(),
            JsonLinesCodec::new(max_message_bytes),
            64 * 1024,
        ),
        FramedWrite::new(tokio::io::stdout(), JsonLinesCodec::new(max_message_bytes)),
    )
}
