//! Entry points for the fuzz targets in `fuzz/` (see `fuzz/README.md`), which can reach
//! only the public API. Each function runs one parser on arbitrary input and panics when
//! an invariant breaks; a panic is what the fuzzer reports. Not a supported API: nothing
//! else uses it and it may change at any time.

use std::path::Path;

use bytes::BytesMut;
use serde_json::Value;
use tokio_util::codec::Decoder;

use crate::auth::{jwt, storage};
use crate::rpc::envelope::{self, Incoming, Parsed, RequestId};
use crate::rpc::error::{INVALID_REQUEST, PARSE_ERROR};
use crate::transport::Frame;
use crate::transport::codec::JsonLinesCodec;

/// Spliced into inputs: no error may ever show it.
const SECRET: &str = "sk-fuzz-3f9c2a7b1e8d4c60";

/// A place in `bytes` chosen from their content.
fn splice_point(bytes: &[u8]) -> usize {
    let seed = bytes.iter().fold(17usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(*b))
    });
    seed % (bytes.len() + 1)
}

/// `bytes` with [`SECRET`] inserted somewhere.
fn with_secret(bytes: &[u8]) -> Vec<u8> {
    let at = splice_point(bytes);
    [&bytes[..at], SECRET.as_bytes(), &bytes[at..]].concat()
}

/// The same for text, at a character boundary.
fn text_with_secret(text: &str) -> String {
    let mut at = splice_point(text.as_bytes());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}{SECRET}{}", &text[..at], &text[at..])
}

/// Whether serde_json's own parser gives up on `text` for reasons the envelope parser
/// does not share (it keeps `params` and `result` as raw text and never builds them).
fn value_limit(e: &serde_json::Error) -> bool {
    let text = e.to_string();
    text.contains("recursion limit") || text.contains("number out of range")
}

/// Classifies `line` and checks the result against a `serde_json::Value` reading of it.
pub fn envelope(line: &str) {
    for text in [line.to_owned(), text_with_secret(line)] {
        let parsed = envelope::parse(&text);
        if let Err(rejected) = &parsed {
            let e = &rejected.error;
            assert!(e.code == PARSE_ERROR || e.code == INVALID_REQUEST, "{e:?}");
            assert!(e.message.chars().count() <= 1025, "{e:?}");
            assert!(
                !e.message.contains(SECRET),
                "the error shows its input: {e:?}"
            );
            assert!(e.data.is_none(), "{e:?}");
        }
        let value = match serde_json::from_str::<Value>(&text) {
            Ok(v) => v,
            Err(e) if value_limit(&e) => continue,
            Err(_) => continue,
        };
        let id_of = |v: &Value| {
            v.get("id")
                .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok())
        };
        match parsed {
            Ok(Parsed { message, jsonrpc }) => {
                let obj = value.as_object().expect("a message is an object");
                assert_eq!(jsonrpc, obj.get("jsonrpc") == Some(&Value::from("2.0")));
                let method = obj.get("method").and_then(Value::as_str);
                match message {
                    Incoming::Request { id, method: m, .. } => {
                        assert_eq!(Some(m.as_str()), method);
                        assert_eq!(Some(id), id_of(&value));
                    }
                    Incoming::Notification { method: m, .. } => {
                        assert_eq!(Some(m.as_str()), method);
                        assert!(obj.get("id").is_none());
                    }
                    Incoming::Response { id, .. } => {
                        assert_eq!(method, None);
                        assert_eq!(Some(id), id_of(&value));
                    }
                    Incoming::Unattributed { .. } => {
                        assert_eq!(obj.get("id"), Some(&Value::Null));
                    }
                }
            }
            Err(rejected) => {
                assert_eq!(
                    rejected.error.code, INVALID_REQUEST,
                    "valid JSON taken for a parse error: {:?}",
                    rejected.error
                );
                if let Some(id) = rejected.id {
                    assert_eq!(Some(id), id_of(&value), "an id that the line does not hold");
                }
            }
        }
    }
}

/// Decodes `chunks` as successive reads, checks the buffer bound after every read, and
/// compares the frames with those of one read of everything and with a simple model.
pub fn codec(chunks: &[&[u8]], max: usize) {
    let split = decode(chunks, max);
    let whole: Vec<u8> = chunks.concat();
    assert_eq!(split, decode(&[&whole], max), "frames depend on the reads");
    assert_eq!(split, model(&whole, max), "frames differ from the model");
}

fn decode(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
    let mut codec = JsonLinesCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = vec![];
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).expect("decoding cannot fail") {
            out.push(frame);
        }
        assert!(buf.len() <= max, "{} bytes kept, max {max}", buf.len());
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decoding cannot fail") {
        out.push(frame);
    }
    assert!(buf.is_empty(), "bytes left after the end of input");
    out
}

fn model(input: &[u8], max: usize) -> Vec<Frame> {
    let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let frame = |line: &[u8]| match std::str::from_utf8(line) {
        _ if line.len() > max => Some(Frame::Oversized { limit: max }),
        Ok(t) => Some(t.trim())
            .filter(|t| !t.is_empty())
            .map(|t| Frame::Text(t.into())),
        Err(_) => Some(Frame::Unreadable("message is not valid UTF-8")),
    };
    lines.into_iter().filter_map(frame).collect()
}

/// Reads claims from `token`; errors never show a secret spliced into it, and the claims
/// read from a payload are those read from the same payload re-encoded. (Checking that an
/// error does not contain the whole input is no invariant: the fuzzer soon offers the
/// error's own text as a token.)
pub fn jwt(token: &str) {
    for text in [token.to_owned(), text_with_secret(token)] {
        match jwt::parse(&text) {
            Err(e) => {
                let shown = format!("{e} {e:?}");
                assert!(
                    !shown.contains(SECRET),
                    "the error shows its input: {shown}"
                );
            }
            Ok(claims) => {
                let payload = text.split('.').nth(1).expect("three parts");
                let bytes = base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    payload.trim_end_matches('='),
                )
                .expect("the payload was read");
                let value: Value = serde_json::from_slice(&bytes).expect("the payload was read");
                let again = jwt::parse(&jwt::unsigned_token(&value)).expect("re-encoded");
                assert_eq!(claims, again);
                for s in [
                    &claims.email,
                    &claims.chatgpt_account_id,
                    &claims.chatgpt_user_id,
                ] {
                    assert!(s.as_ref().is_none_or(|s| !s.is_empty()));
                }
            }
        }
    }
}

/// Reads `bytes` as an `auth.json`; errors name the file and nothing else, and neither
/// they nor the result's `Debug` show a secret.
pub fn auth_json(bytes: &[u8]) {
    let path = Path::new(storage::AUTH_FILE);
    for input in [bytes.to_vec(), with_secret(bytes)] {
        match storage::parse(&input, path) {
            Err(e) => {
                assert!(
                    e.to_string()
                        .starts_with("auth.json is not a credential file authbridge understands"),
                    "{e}"
                );
                assert!(!format!("{e:?}").contains(SECRET));
            }
            Ok(stored) => {
                assert!(!format!("{stored:?}").contains(SECRET));
                let Ok(Value::Object(file)) = serde_json::from_slice::<Value>(&input) else {
                    continue;
                };
                if let storage::Stored::ApiKey(_) = &stored {
                    assert!(file.get("OPENAI_API_KEY").is_some_and(Value::is_string));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_points_accept_typical_and_broken_inputs() {
        for line in [
            r#"{"id":1,"method":"initialize","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":"a","result":null}"#,
            r#"{"id":null,"error":{"code":1,"message":"m"}}"#,
            r#"[{"id":1}]"#,
            "{\"id\":1,",
            "",
        ] {
            envelope(line);
        }
        codec(&[b"{}\n{\"a\"", b":1}\r\n\xff\n", b"0123456789abcdef"], 8);
        codec(&[], 0);
        let token = jwt::unsigned_token(&serde_json::json!({"email": "e@example.com"}));
        // The last one is the error's own text, which the fuzzer offered as a token.
        let own_text = "is not a JWT: expected three non-empty dot-separated parts Shape";
        for t in [token.as_str(), "a.b.c", "", "sk-abc.def", own_text] {
            jwt(t);
        }
        for file in [
            &br#"{"OPENAI_API_KEY":"sk-1"}"#[..],
            br#"{"auth_mode":"chatgpt","tokens":{"id_token":"x","access_token":"a","refresh_token":"r"}}"#,
            b"{",
            b"\xff",
        ] {
            auth_json(file);
        }
    }

    #[test]
    fn the_secret_is_spliced_in_whatever_the_input() {
        for text in ["", "é", "abc", "ééé"] {
            assert!(text_with_secret(text).contains(SECRET));
            assert_eq!(text_with_secret(text).len(), text.len() + SECRET.len());
        }
    }
}
