//! Server-sent events from a response body, bounded and watched for idleness.
//!
//! `eventsource-stream` parses the fields (CRLF, comments, multi-line `data`). It buffers
//! whatever it has not parsed yet without limit and re-copies that buffer for every line,
//! so it is fed one event at a time: [`Framer`] cuts the bytes at blank lines and refuses
//! an event longer than the bound before it is ever buffered whole. A chunk counts as
//! activity, so keep-alive comments keep an idle stream alive, as they are meant to.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum SseError {
    #[error("no data from the response stream for {0:?}")]
    Idle(Duration),
    #[error("a server-sent event exceeded {0} bytes")]
    TooLarge(usize),
    #[error("the response stream failed: {0}")]
    Transport(String),
    #[error("the response stream is not valid server-sent events: {0}")]
    Malformed(String),
}

/// Cuts a byte stream into whole events (each ending with its blank line).
pub(crate) struct Framer {
    partial: BytesMut,
    /// Where to resume looking for the blank line in `partial`.
    scanned: usize,
    max_event_bytes: usize,
}

impl Framer {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            partial: BytesMut::new(),
            scanned: 0,
            max_event_bytes,
        }
    }

    /// Adds a chunk; whole events go to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut VecDeque<Bytes>) -> Result<(), SseError> {
        self.partial.extend_from_slice(chunk);
        loop {
            match blank_line_end(&self.partial, self.scanned) {
                Some(end) => {
                    out.push_back(self.partial.split_to(end).freeze());
                    self.scanned = 0;
                }
                None => {
                    // Resume one byte early: the blank line may straddle the chunks.
                    self.scanned = self.partial.len().saturating_sub(2);
                    break;
                }
            }
        }
        if self.partial.len() > self.max_event_bytes {
            return Err(SseError::TooLarge(self.max_event_bytes));
        }
        Ok(())
    }

    /// What is left when the body ends: a last event without its blank line.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.partial.is_empty()).then(|| self.partial.split().freeze())
    }
}

/// The end of the first blank line at or after `from`: `\n\n`, `\n\r\n` or `\r\r`.
fn blank_line_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') | (b'\r', b'\r') => return Some(i + 2),
            (b'\n', b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => i += 1,
        }
    }
    None
}

/// Events from `body`, one item per event; ends after an error.
pub(crate) fn events<S, E>(
    body: S,
    max_event_bytes: usize,
    idle: Duration,
) -> impl Stream<Item = Result<Event, SseError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send,
{
    struct State<S> {
        body: S,
        framer: Framer,
        ready: VecDeque<Bytes>,
        done: bool,
    }
    let state = State {
        body,
        framer: Framer::new(max_event_bytes),
        ready: VecDeque::new(),
        done: false,
    };
    let frames = futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(frame) = st.ready.pop_front() {
                return Some((Ok(frame), st));
            }
            if st.done {
                return None;
            }
            match tokio::time::timeout(idle, st.body.next()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(SseError::Idle(idle)), st));
                }
                Ok(Some(Ok(chunk))) => {
                    if let Err(e) = st.framer.push(&chunk, &mut st.ready) {
                        st.done = true;
                        st.ready.clear();
                        return Some((Err(e), st));
                    }
                }
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(SseError::Transport(e.to_string())), st));
                }
                Ok(None) => {
                    st.done = true;
                    st.ready.extend(st.framer.finish());
                }
            }
        }
    });
    // The framer's errors pass through the parser as its transport errors.
    frames
        .eventsource()
        .map(|item| {
            item.map_err(|e| match e {
                eventsource_stream::EventStreamError::Transport(e) => e,
                eventsource_stream::EventStreamError::Utf8(_) => {
                    SseError::Malformed("not UTF-8".into())
                }
                eventsource_stream::EventStreamError::Parser(_) => {
                    SseError::Malformed("unparsable line".into())
                }
            })
        })
        .scan(false, |failed, item| {
            // Nothing after an error: the parser would otherwise go on reading.
            if *failed {
                return futures::future::ready(None);
            }
            *failed = item.is_err();
            futures::future::ready(Some(item))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Result<Vec<String>, SseError> {
        let mut framer = Framer::new(max);
        let mut out = VecDeque::new();
        for c in chunks {
            framer.push(c, &mut out)?;
        }
        out.extend(framer.finish());
        Ok(out
            .into_iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect())
    }

    #[test]
    fn events_are_cut_at_blank_lines_even_across_chunks() {
        let got = frames(
            &[
                b"event: a\ndata: 1\n",
                b"\nevent: b\r\ndata: 2\r",
                b"\n\r\ndata: 3",
            ],
            1024,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "event: a\ndata: 1\n\n",
                "event: b\r\ndata: 2\r\n\r\n",
                "data: 3"
            ]
        );
    }

    #[test]
    fn an_event_over_the_bound_is_refused_before_it_completes() {
        let big = vec![b'x'; 100];
        assert_eq!(frames(&[b"data: ", &big], 64), Err(SseError::TooLarge(64)));
        // Many small events in one chunk are fine.
        let many = "data: 1\n\n".repeat(100);
        assert_eq!(frames(&[many.as_bytes()], 64).unwrap().len(), 100);
    }

    #[tokio::test]
    async fn the_parser_sees_each_event_and_idleness_ends_the_stream() {
        let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
            b": keep-alive\n\nevent: x\ndata: {\"a\":1}\n\n",
        ))])
        .chain(futures::stream::pending());
        let mut s = Box::pin(events(Box::pin(body), 1024, Duration::from_millis(50)));
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(
            (first.event.as_str(), first.data.as_str()),
            ("x", "{\"a\":1}")
        );
        assert_eq!(
            s.next().await.unwrap().unwrap_err(),
            SseError::Idle(Duration::from_millis(50))
        );
        assert!(s.next().await.is_none());
    }
}
