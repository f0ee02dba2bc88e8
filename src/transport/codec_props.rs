//! Properties of [`JsonLinesCodec`]: how the input is cut into reads never changes the
//! frames, an oversized line is reported once and never buffered, memory stays bounded.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use super::Frame;
use super::codec::JsonLinesCodec;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes biased towards what matters to the codec: newlines, CR, spaces, braces, and
/// bytes that make or break UTF-8.
fn stream_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(b'\n'),
        2 => Just(b'\r'),
        3 => Just(b' '),
        4 => prop::sample::select(b"{}[]\":,az09".to_vec()),
        1 => prop::sample::select(vec![0xc3, 0xa9, 0xe2, 0x80, 0xa8, 0xff]),
        2 => any::<u8>(),
    ]
}

fn stream(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(stream_byte(), 0..max_len)
}

/// Cuts `input` at the given points (taken modulo its length, in order).
fn chunks<'a>(input: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.sort_unstable();
    let mut out = vec![];
    let mut start = 0;
    for p in points {
        out.push(&input[start..p]);
        start = p;
    }
    out.push(&input[start..]);
    out
}

/// Feeds `chunks` one read at a time, then signals end of input; checks the buffer bound
/// after every read.
fn decode_all(max: usize, chunks: &[&[u8]]) -> Result<Vec<Frame>, TestCaseError> {
    let mut codec = JsonLinesCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = vec![];
    for chunk in chunks {
        let before = buf.len();
        prop_assert!(
            before <= max,
            "{before} bytes kept between reads (max {max})"
        );
        buf.extend_from_slice(chunk);
        prop_assert!(buf.len() <= max + chunk.len());
        while let Some(frame) = codec.decode(&mut buf).expect("decode is infallible") {
            out.push(frame);
        }
        prop_assert!(
            buf.len() <= max,
            "{} bytes kept after a read (max {max})",
            buf.len()
        );
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode is infallible") {
        out.push(frame);
    }
    prop_assert!(buf.is_empty(), "bytes left after end of input");
    Ok(out)
}

/// What the codec should produce, written independently of it: split on `\n`, a last
/// line without newline counts, blank lines are skipped.
fn model(max: usize, input: &[u8]) -> Vec<Frame> {
    let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    // `split` yields an empty tail after a final newline (or for empty input).
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .filter_map(|line| {
            if line.len() > max {
                return Some(Frame::Oversized { limit: max });
            }
            match std::str::from_utf8(line) {
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => Some(Frame::Text(text.trim().to_owned())),
                Err(_) => Some(Frame::Unreadable("message is not valid UTF-8")),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_chunking_gives_the_frames_of_one_read(
        max in 0usize..40,
        input in stream(200),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let whole = decode_all(max, &[&input])?;
        let split = decode_all(max, &chunks(&input, &cuts))?;
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(whole, model(max, &input));
    }

    #[test]
    fn byte_by_byte_reads_give_the_frames_of_one_read(max in 0usize..24, input in stream(80)) {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(decode_all(max, &bytes)?, model(max, &input));
    }

    #[test]
    fn each_oversized_line_is_reported_exactly_once(
        max in 1usize..32,
        lines in prop::collection::vec((any::<bool>(), "[ -~]{0,8}"), 1..8),
        extra in 1usize..200,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        // A mix of short lines and lines longer than `max`, without newlines inside.
        let mut input = Vec::new();
        let mut expected = 0;
        for (long, text) in &lines {
            if *long {
                input.extend(std::iter::repeat_n(b'x', max + extra));
                expected += 1;
            } else {
                input.extend_from_slice(&text.as_bytes()[..text.len().min(max)]);
            }
            input.push(b'\n');
        }
        let frames = decode_all(max, &chunks(&input, &cuts))?;
        let oversized = frames.iter().filter(|f| matches!(f, Frame::Oversized { .. })).count();
        prop_assert_eq!(oversized, expected);
        prop_assert!(frames.iter().all(|f| !matches!(f, Frame::Text(t) if t.len() > max)));
    }

    #[test]
    fn short_lines_come_back_trimmed_and_intact(
        lines in prop::collection::vec(("[ \t]{0,3}", "\\PC{0,40}", "[ \t\r]{0,3}"), 0..10),
        crlf in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let max = 256;
        let mut input = String::new();
        let mut expected = vec![];
        for (lead, body, tail) in &lines {
            let body = body.replace('\n', "");
            input.push_str(lead);
            input.push_str(&body);
            input.push_str(tail);
            input.push_str(if crlf { "\r\n" } else { "\n" });
            let trimmed = format!("{lead}{body}{tail}").trim().to_owned();
            if !trimmed.is_empty() {
                expected.push(Frame::Text(trimmed));
            }
        }
        prop_assert_eq!(decode_all(max, &chunks(input.as_bytes(), &cuts))?, expected);
    }
}
