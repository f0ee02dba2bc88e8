//! stdio: one JSON message per line on stdin and stdout. Stdout carries nothing else.
//!
//! When stdin and stdout are pipes (the normal case: a parent spawned us), they are driven
//! as non-blocking pipes on the reactor. `tokio::io::stdin()`/`stdout()` instead hand every
//! read and write to the blocking thread pool, which measured about 30 µs more per round
//! trip. Anything else (a file, a terminal) falls back to those.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::codec::JsonLinesCodec;

pub type Input = Pin<Box<dyn AsyncRead + Send>>;
pub type Output = Pin<Box<dyn AsyncWrite + Send>>;

/// The input and output halves for [`crate::rpc::serve_connection`].
pub fn framed(
    max_message_bytes: usize,
) -> (
    FramedRead<Input, JsonLinesCodec>,
    FramedWrite<Output, JsonLinesCodec>,
) {
    (
        FramedRead::with_capacity(input(), JsonLinesCodec::new(max_message_bytes), 64 * 1024),
        FramedWrite::new(output(), JsonLinesCodec::new(max_message_bytes)),
    )
}

fn input() -> Input {
    #[cfg(unix)]
    if let Some(pipe) = unix::receiver() {
        return Box::pin(pipe);
    }
    Box::pin(tokio::io::stdin())
}

fn output() -> Output {
    #[cfg(unix)]
    if let Some(pipe) = unix::sender() {
        return Box::pin(pipe);
    }
    Box::pin(tokio::io::stdout())
}

#[cfg(unix)]
mod unix {
    use std::os::fd::AsFd;

    use tokio::net::unix::pipe;

    /// A duplicate of fd 0 as a reactor-driven pipe, if fd 0 is a pipe.
    pub fn receiver() -> Option<pipe::Receiver> {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        pipe::Receiver::from_owned_fd(fd).ok()
    }

    /// A duplicate of fd 1 as a reactor-driven pipe, if fd 1 is a pipe.
    pub fn sender() -> Option<pipe::Sender> {
        let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
        pipe::Sender::from_owned_fd(fd).ok()
    }
}
