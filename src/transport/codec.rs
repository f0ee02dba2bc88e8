//! Newline-delimited JSON with a maximum line length.
//!
//! tokio-util's `LinesCodec` ends the stream on its first error (an oversized line or
//! invalid UTF-8), so one bad line would close the connection. This codec reports such a
//! line as a [`Frame`] and carries on; an oversized line is skipped chunk by chunk, so
//! memory stays bounded by the limit whatever the client sends.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use zeroize::Zeroize;

use super::Frame;

#[derive(Debug)]
pub(crate) struct JsonLinesCodec {
    max_len: usize,
    /// Bytes of the buffer already searched for a newline.
    scanned: usize,
    /// Inside an oversized line: drop bytes until the next newline.
    discarding: bool,
}

impl JsonLinesCodec {
    pub(crate) fn new(max_len: usize) -> Self {
        Self {
            max_len,
            scanned: 0,
            discarding: false,
        }
    }
}

impl Decoder for JsonLinesCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        loop {
            let newline = buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| i + self.scanned);
            if self.discarding {
                match newline {
                    Some(i) => {
                        buf[..=i].zeroize();
                        buf.advance(i + 1);
                        self.scanned = 0;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        wipe(buf);
                        self.scanned = 0;
                        return Ok(None);
                    }
                }
            }
            match newline {
                Some(i) if i > self.max_len => {
                    buf[..=i].zeroize();
                    buf.advance(i + 1);
                    self.scanned = 0;
                    return Ok(Some(Frame::Oversized {
                        limit: self.max_len,
                    }));
                }
                Some(i) => {
                    let mut line = buf.split_to(i + 1);
                    self.scanned = 0;
                    let frame = frame_of(&line[..i]);
                    line.zeroize();
                    match frame {
                        Some(frame) => return Ok(Some(frame)),
                        None => continue, // blank line
                    }
                }
                None if buf.len() > self.max_len => {
                    wipe(buf);
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(Frame::Oversized {
                        limit: self.max_len,
                    }));
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // A last line without its newline still counts.
        if self.discarding || buf.is_empty() {
            wipe(buf);
            return Ok(None);
        }
        let mut rest = buf.split();
        self.scanned = 0;
        let frame = frame_of(&rest);
        rest.zeroize();
        Ok(frame)
    }
}

/// Input may carry tokens: bytes are overwritten before the buffer lets go of them.
fn wipe(buf: &mut BytesMut) {
    buf.zeroize();
    buf.clear();
}

fn frame_of(line: &[u8]) -> Option<Frame> {
    match std::str::from_utf8(line) {
        Ok(text) => {
            let text = text.trim();
            (!text.is_empty()).then(|| Frame::Text(text.to_owned()))
        }
        Err(_) => Some(Frame::Unreadable("message is not valid UTF-8")),
    }
}

impl Encoder<String> for JsonLinesCodec {
    type Error = std::io::Error;

    fn encode(&mut self, line: String, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.reserve(line.len() + 1);
        dst.extend_from_slice(line.as_bytes());
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(codec: &mut JsonLinesCodec, input: &[u8], buf: &mut BytesMut) -> Vec<Frame> {
        buf.extend_from_slice(input);
        let mut out = vec![];
        while let Some(f) = codec.decode(buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn splits_lines_and_tolerates_crlf_and_blank_lines() {
        let mut c = JsonLinesCodec::new(64);
        let mut b = BytesMut::new();
        let got = frames(&mut c, b"{\"a\":1}\r\n\n  {\"b\":2}\n{\"c\"", &mut b);
        assert_eq!(
            got,
            vec![
                Frame::Text("{\"a\":1}".into()),
                Frame::Text("{\"b\":2}".into())
            ]
        );
        let got = frames(&mut c, b":3}\n", &mut b);
        assert_eq!(got, vec![Frame::Text("{\"c\":3}".into())]);
    }

    #[test]
    fn an_oversized_line_is_reported_once_and_skipped_without_buffering() {
        let mut c = JsonLinesCodec::new(8);
        let mut b = BytesMut::new();
        assert_eq!(
            frames(&mut c, b"0123456789", &mut b),
            vec![Frame::Oversized { limit: 8 }]
        );
        assert!(b.is_empty(), "discarded bytes are not kept");
        assert_eq!(frames(&mut c, b"abcdefghijk", &mut b), vec![]);
        assert!(b.is_empty());
        assert_eq!(
            frames(&mut c, b"xyz\n{}\n", &mut b),
            vec![Frame::Text("{}".into())]
        );
        // A long line that arrives whole in one read is reported too.
        assert_eq!(
            frames(&mut c, b"0123456789abc\n[]\n", &mut b),
            vec![Frame::Oversized { limit: 8 }, Frame::Text("[]".into())]
        );
    }

    #[test]
    fn invalid_utf8_is_reported_and_the_stream_goes_on() {
        let mut c = JsonLinesCodec::new(64);
        let mut b = BytesMut::new();
        let got = frames(&mut c, b"\xff\xfe\n{}\n", &mut b);
        assert_eq!(
            got,
            vec![
                Frame::Unreadable("message is not valid UTF-8"),
                Frame::Text("{}".into())
            ]
        );
    }

    #[test]
    fn last_line_without_newline_counts_at_eof() {
        let mut c = JsonLinesCodec::new(64);
        let mut b = BytesMut::from(&b"{}"[..]);
        assert_eq!(c.decode(&mut b).unwrap(), None);
        assert_eq!(
            c.decode_eof(&mut b).unwrap(),
            Some(Frame::Text("{}".into()))
        );
    }
}
