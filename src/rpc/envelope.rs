//! The JSON-RPC envelope in the Codex dialect: `jsonrpc` is optional on input and mirrored
//! on output, ids are strings or signed 64-bit integers.
//!
//! Parsing borrows from the input line and keeps `params`, `result` and `error` as raw JSON,
//! so a message is classified without building a `Value` tree; the method handler parses
//! its own params into its own type. Output is built from serde types, never by pasting
//! strings together.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub(crate) use super::error::ErrorObject;
use super::error::RpcError;

/// A request id as the Codex schema defines it: a string or an int64.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub(crate) enum RequestId {
    Int(i64),
    Str(String),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Int(n) => write!(f, "{n}"),
            RequestId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = RequestId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a 64-bit integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RequestId, E> {
                Ok(RequestId::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RequestId, E> {
                i64::try_from(v)
                    .map(RequestId::Int)
                    .map_err(|_| E::custom("integer id out of int64 range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RequestId, E> {
                Ok(RequestId::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RequestId, E> {
                Ok(RequestId::Str(v))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// Raw JSON that may carry secrets (login params, refresh answers): wiped when dropped.
pub(crate) struct SecretJson(Option<Box<RawValue>>);

impl SecretJson {
    pub fn get(&self) -> &str {
        self.0.as_deref().map_or("null", RawValue::get)
    }
}

impl From<&RawValue> for SecretJson {
    fn from(raw: &RawValue) -> Self {
        Self(Some(raw.to_owned()))
    }
}

impl Drop for SecretJson {
    fn drop(&mut self) {
        if let Some(raw) = self.0.take() {
            let text: Box<str> = raw.into();
            zeroize::Zeroize::zeroize(&mut String::from(text));
        }
    }
}

impl fmt::Debug for SecretJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretJson(..)")
    }
}

/// One incoming message, classified.
#[derive(Debug)]
pub(crate) enum Incoming {
    Request {
        id: RequestId,
        method: String,
        params: Option<SecretJson>,
    },
    Notification {
        method: String,
        /// Kept for the client role, which hands notifications to its handler; the server
        /// role handles only `initialized`, which has none.
        params: Option<SecretJson>,
    },
    Response {
        id: RequestId,
        reply: Reply,
    },
    /// A response with a null id: nothing can be routed, nothing is answered.
    Unattributed {
        code: Option<i64>,
    },
}

/// What the client answered to one of our requests.
pub(crate) type Reply = Result<SecretJson, ReplyError>;

/// Why a response carries no usable result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReplyError {
    /// The client answered with an error object.
    Error(ErrorObject),
    /// The response itself breaks the envelope (both `result` and `error`, a bad `error`).
    Malformed(&'static str),
}

/// Longest error message kept from a client's error object: the text is quoted back in our
/// own errors, and a client must not be able to make them arbitrarily large.
pub(crate) const MAX_CLIENT_MESSAGE_CHARS: usize = 256;

/// Most bytes of an error's `data` kept from a peer. The client role reads its peer's
/// reasons there (the broker's `authError`); anything larger is dropped, not buffered.
pub(crate) const MAX_PEER_DATA_BYTES: usize = 4096;

/// An error object as a peer sent it, before its text and `data` are bounded.
#[derive(Deserialize)]
struct ErrorIn<'a> {
    code: i64,
    message: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

impl ErrorIn<'_> {
    fn bounded(self) -> ErrorObject {
        let mut message = self.message;
        cap_chars(&mut message, MAX_CLIENT_MESSAGE_CHARS);
        let data = self
            .data
            .filter(|raw| raw.get().len() <= MAX_PEER_DATA_BYTES)
            .and_then(|raw| serde_json::from_str(raw.get()).ok());
        ErrorObject {
            code: self.code,
            message,
            data,
        }
    }
}

/// Why a line could not be taken as a message; each maps to an error response.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// The id, whenever one could be read, so the client can correlate the error.
    pub id: Option<RequestId>,
    pub error: RpcError,
    /// Whether the line carried `"jsonrpc":"2.0"` (for the connection's dialect).
    pub jsonrpc: bool,
}

/// A parsed line: the message and whether it carried the `jsonrpc` member.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub message: Incoming,
    pub jsonrpc: bool,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// Keeps an explicit `null` apart from an absent member.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The code of an error object, read without keeping anything else of it.
#[derive(Deserialize)]
struct ErrorCode {
    #[serde(default)]
    code: Option<i64>,
}

/// The id of an object whose other members do not fit the envelope, when it has one.
fn readable_id(line: &str) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(default, borrow)]
        id: Option<&'a RawValue>,
    }
    let raw = serde_json::from_str::<IdOnly<'_>>(line).ok()?.id?;
    serde_json::from_str::<RequestId>(raw.get()).ok()
}

/// Whether a raw member is a JSON object (serde would also fill a struct from an array).
fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// Classifies one line of input.
pub(crate) fn parse(line: &str) -> Result<Parsed, Rejected> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') {
        // Still answer a well-formed batch with one error rather than silence.
        let error = match serde_json::from_str::<de::IgnoredAny>(line) {
            Ok(_) => RpcError::invalid_request("batch requests are not supported"),
            Err(e) => RpcError::parse_error(&e),
        };
        return Err(Rejected {
            id: None,
            error,
            jsonrpc: false,
        });
    }
    let env: RawEnvelope<'_> = match serde_json::from_str(line) {
        Ok(env) => env,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(Rejected {
                id: None,
                error: RpcError::parse_error(&e),
                jsonrpc: false,
            });
        }
        Err(_) => {
            return Err(Rejected {
                id: readable_id(line),
                error: RpcError::invalid_request(
                    "not a JSON-RPC message object (a member has the wrong type, or appears twice)",
                ),
                jsonrpc: false,
            });
        }
    };
    // The id is read first, so that every later rejection can carry it.
    let null_id = env.id.is_some_and(|id| id.get() == "null");
    let id = match env.id {
        None => None,
        Some(_) if null_id => None,
        Some(raw) => match serde_json::from_str::<RequestId>(raw.get()) {
            Ok(id) => Some(id),
            Err(_) => {
                return Err(Rejected {
                    id: None,
                    error: RpcError::invalid_request("`id` must be a string or a 64-bit integer"),
                    jsonrpc: false,
                });
            }
        },
    };
    let jsonrpc = match env.jsonrpc {
        None => false,
        Some(v) if v.get() == "\"2.0\"" => true,
        Some(_) => {
            return Err(Rejected {
                id,
                error: RpcError::invalid_request("unsupported `jsonrpc` version (only \"2.0\")"),
                jsonrpc: false,
            });
        }
    };
    let reject = |id: Option<RequestId>, error: RpcError| Rejected { id, error, jsonrpc };
    // A response with `"id": null` is the peer reporting that it could not read something
    // of ours: answering it could start an error ping-pong, so it is only logged.
    if env.method.is_none() && null_id {
        let code = env
            .error
            .and_then(|e| serde_json::from_str::<ErrorCode>(e.get()).ok())
            .and_then(|e| e.code);
        return Ok(Parsed {
            message: Incoming::Unattributed { code },
            jsonrpc,
        });
    }
    if null_id {
        return Err(reject(
            None,
            RpcError::invalid_request("`id` must be a string or a 64-bit integer"),
        ));
    }
    let message = match (env.method, id, env.result, env.error) {
        (Some(method), id, None, None) => {
            let params = match env.params {
                None => None,
                Some(p) if p.get() == "null" => None,
                Some(p) if is_object(p) => Some(SecretJson::from(p)),
                Some(_) => {
                    return Err(reject(
                        id,
                        RpcError::invalid_params("`params` must be an object"),
                    ));
                }
            };
            match id {
                Some(id) => Incoming::Request { id, method, params },
                None => Incoming::Notification { method, params },
            }
        }
        (None, Some(id), Some(result), None) => Incoming::Response {
            id,
            reply: Ok(SecretJson::from(result)),
        },
        (None, Some(id), None, Some(error)) => {
            let parsed = is_object(error)
                .then(|| serde_json::from_str::<ErrorIn<'_>>(error.get()).ok())
                .flatten();
            let reply = match parsed {
                Some(error) => Err(ReplyError::Error(error.bounded())),
                None => Err(ReplyError::Malformed(
                    "`error` must be an object with an integer `code` and a string `message`",
                )),
            };
            Incoming::Response { id, reply }
        }
        (None, Some(id), Some(_), Some(_)) => Incoming::Response {
            id,
            reply: Err(ReplyError::Malformed(
                "a response carries both `result` and `error`",
            )),
        },
        (_, id, _, _) => {
            return Err(reject(
                id,
                RpcError::invalid_request(
                    "not a request, notification or response (needs `method`, or `id` with `result` or `error`)",
                ),
            ));
        }
    };
    Ok(Parsed { message, jsonrpc })
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub(crate) fn cap_chars(text: &mut String, max: usize) {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        text.truncate(cut);
        text.push('…');
    }
}

/// Builds outgoing lines from serde types. Every function returns one line without the
/// trailing newline.
pub(crate) mod encode {
    use super::*;

    /// `"jsonrpc":"2.0"`, written only to clients that sent it.
    #[derive(Serialize)]
    enum Version {
        #[serde(rename = "2.0")]
        V2,
    }

    fn version(jsonrpc: bool) -> Option<Version> {
        jsonrpc.then_some(Version::V2)
    }

    #[derive(Serialize)]
    struct ResultOut<'a, T: ?Sized> {
        #[serde(skip_serializing_if = "Option::is_none")]
        jsonrpc: Option<Version>,
        id: &'a RequestId,
        result: &'a T,
    }

    #[derive(Serialize)]
    struct ErrorOut<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        jsonrpc: Option<Version>,
        id: Option<&'a RequestId>,
        error: &'a ErrorObject,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct NotificationOut<'a, P: ?Sized> {
        #[serde(skip_serializing_if = "Option::is_none")]
        jsonrpc: Option<Version>,
        method: &'a str,
        params: &'a P,
        emitted_at_ms: u64,
    }

    /// A client's notification: no `emittedAtMs`, which only the server stamps.
    #[derive(Serialize)]
    struct ClientNotificationOut<'a, P> {
        #[serde(skip_serializing_if = "Option::is_none")]
        jsonrpc: Option<Version>,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a P>,
    }

    #[derive(Serialize)]
    struct RequestOut<'a, P: ?Sized> {
        #[serde(skip_serializing_if = "Option::is_none")]
        jsonrpc: Option<Version>,
        id: &'a RequestId,
        method: &'a str,
        params: &'a P,
    }

    fn line<T: Serialize>(message: &T) -> Result<String, serde_json::Error> {
        serde_json::to_string(message)
    }

    /// A result, serialized straight from the handler's value.
    pub fn result<T: Serialize + ?Sized>(
        jsonrpc: bool,
        id: &RequestId,
        result: &T,
    ) -> Result<String, serde_json::Error> {
        line(&ResultOut {
            jsonrpc: version(jsonrpc),
            id,
            result,
        })
    }

    pub fn error(jsonrpc: bool, id: Option<&RequestId>, error: &RpcError) -> String {
        line(&ErrorOut {
            jsonrpc: version(jsonrpc),
            id,
            error: &error.to_object(),
        })
        .unwrap_or_else(|_| {
            // Only a `data` value that cannot serialize gets here; send the error without it.
            let bare = RpcError::new(error.code, error.message.clone());
            line(&ErrorOut {
                jsonrpc: version(jsonrpc),
                id,
                error: &bare.to_object(),
            })
            .expect("an error without data serializes")
        })
    }

    pub fn notification<P: Serialize + ?Sized>(
        jsonrpc: bool,
        method: &str,
        params: &P,
        emitted_at_ms: u64,
    ) -> Result<String, serde_json::Error> {
        line(&NotificationOut {
            jsonrpc: version(jsonrpc),
            method,
            params,
            emitted_at_ms,
        })
    }

    pub fn client_notification<P: Serialize>(
        jsonrpc: bool,
        method: &str,
        params: Option<&P>,
    ) -> Result<String, serde_json::Error> {
        line(&ClientNotificationOut {
            jsonrpc: version(jsonrpc),
            method,
            params,
        })
    }

    /// A request under an id from [`PendingRequests`](super::super::pending).
    pub fn request<P: Serialize + ?Sized>(
        jsonrpc: bool,
        id: i64,
        method: &str,
        params: &P,
    ) -> Result<String, serde_json::Error> {
        request_with_id(jsonrpc, &RequestId::Int(id), method, params)
    }

    /// A request under an id of the caller's own (the worker's string ids, which cannot
    /// collide with the ids of the parent it forwards).
    pub fn request_with_id<P: Serialize + ?Sized>(
        jsonrpc: bool,
        id: &RequestId,
        method: &str,
        params: &P,
    ) -> Result<String, serde_json::Error> {
        line(&RequestOut {
            jsonrpc: version(jsonrpc),
            id,
            method,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(line: &str) -> String {
        match parse(line) {
            Ok(Parsed {
                message: Incoming::Request { .. },
                ..
            }) => "request".into(),
            Ok(Parsed {
                message: Incoming::Notification { .. },
                ..
            }) => "notification".into(),
            Ok(Parsed {
                message: Incoming::Response { reply: Ok(_), .. },
                ..
            }) => "result".into(),
            Ok(Parsed {
                message:
                    Incoming::Response {
                        reply: Err(ReplyError::Error(_)),
                        ..
                    },
                ..
            }) => "error".into(),
            Ok(Parsed {
                message:
                    Incoming::Response {
                        reply: Err(ReplyError::Malformed(_)),
                        ..
                    },
                ..
            }) => "malformed".into(),
            Ok(Parsed {
                message: Incoming::Unattributed { .. },
                ..
            }) => "unattributed".into(),
            Err(r) => format!("rejected {}", r.error.code),
        }
    }

    #[test]
    fn classifies_the_four_shapes_with_and_without_jsonrpc() {
        assert_eq!(kind(r#"{"id":1,"method":"a"}"#), "request");
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"x","method":"a","params":{}}"#),
            "request"
        );
        assert_eq!(kind(r#"{"method":"initialized"}"#), "notification");
        assert_eq!(kind(r#"{"id":-5,"result":{}}"#), "result");
        assert_eq!(
            kind(r#"{"id":3,"error":{"code":-1,"message":"no"}}"#),
            "error"
        );
    }

    #[test]
    fn a_null_result_is_a_result_and_result_with_error_is_malformed() {
        assert_eq!(kind(r#"{"id":7,"result":null}"#), "result");
        assert_eq!(
            kind(r#"{"id":7,"result":{},"error":{"code":1,"message":"x"}}"#),
            "malformed"
        );
        assert_eq!(kind(r#"{"id":7,"error":"nope"}"#), "malformed");
    }

    #[test]
    fn rejects_what_is_not_a_message() {
        assert_eq!(kind("{not json"), "rejected -32700");
        assert_eq!(kind(r#"[{"id":1,"method":"a"}]"#), "rejected -32600");
        assert_eq!(kind("[1,"), "rejected -32700");
        assert_eq!(kind("42"), "rejected -32600");
        assert_eq!(kind(r#"{"id":1.5,"method":"a"}"#), "rejected -32600");
        assert_eq!(kind(r#"{"id":null,"method":"a"}"#), "rejected -32600");
        assert_eq!(
            kind(r#"{"id":null,"error":{"code":-32700,"message":"x"}}"#),
            "unattributed"
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"1.0","id":1,"method":"a"}"#),
            "rejected -32600"
        );
        assert_eq!(kind(r#"{"id":1}"#), "rejected -32600");
        assert_eq!(
            kind(r#"{"id":1,"method":"a","params":[1]}"#),
            "rejected -32602"
        );
        assert_eq!(
            kind(r#"{"id":1,"method":"a","params":"x"}"#),
            "rejected -32602"
        );
    }

    #[test]
    fn rejections_echo_the_id_whenever_it_was_readable() {
        for line in [
            r#"{"jsonrpc":"1.0","id":9,"method":"a"}"#,
            r#"{"jsonrpc":2.0,"id":9,"method":"a"}"#,
            r#"{"id":9,"method":"a","params":[]}"#,
            r#"{"id":9}"#,
        ] {
            let rejected = parse(line).unwrap_err();
            assert_eq!(rejected.id, Some(RequestId::Int(9)), "{line}");
        }
    }

    #[test]
    fn client_error_text_is_capped_and_unattributed_errors_keep_only_their_code() {
        let long = "x".repeat(10_000);
        let line =
            format!(r#"{{"id":1,"error":{{"code":-1,"message":"{long}","data":"{long}"}}}}"#);
        let Ok(Parsed {
            message:
                Incoming::Response {
                    reply: Err(ReplyError::Error(e)),
                    ..
                },
            ..
        }) = parse(&line)
        else {
            panic!("not an error response")
        };
        assert!(e.message.chars().count() <= MAX_CLIENT_MESSAGE_CHARS + 1);
        assert!(e.data.is_none(), "data over the bound is dropped");
        let Ok(Parsed {
            message:
                Incoming::Response {
                    reply: Err(ReplyError::Error(e)),
                    ..
                },
            ..
        }) = parse(r#"{"id":1,"error":{"code":-32000,"message":"no","data":{"authError":"x"}}}"#)
        else {
            panic!("not an error response")
        };
        assert_eq!(e.data, Some(serde_json::json!({"authError": "x"})));
        let Ok(Parsed {
            message: Incoming::Unattributed { code },
            ..
        }) = parse(r#"{"id":null,"error":{"code":-32700,"message":"sk-secret"}}"#)
        else {
            panic!("not unattributed")
        };
        assert_eq!(code, Some(-32700));
    }

    #[test]
    fn ids_keep_their_type() {
        let Ok(Parsed {
            message: Incoming::Request { id, .. },
            jsonrpc,
        }) = parse(r#"{"id":-9007199254740993,"method":"m"}"#)
        else {
            panic!("not a request")
        };
        assert_eq!(id, RequestId::Int(-9007199254740993));
        assert!(!jsonrpc);
        assert_eq!(
            encode::result(false, &id, &1).unwrap(),
            r#"{"id":-9007199254740993,"result":1}"#
        );
        let sid = RequestId::Str("a\"b".into());
        assert_eq!(
            encode::result(true, &sid, &serde_json::json!({})).unwrap(),
            r#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#
        );
        assert_eq!(
            encode::notification(false, "m", &serde_json::json!({"a":1}), 5).unwrap(),
            r#"{"method":"m","params":{"a":1},"emittedAtMs":5}"#
        );
        assert_eq!(
            encode::request(true, 3, "m", &serde_json::json!({})).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"method":"m","params":{}}"#
        );
        assert_eq!(
            encode::request_with_id(false, &RequestId::Str("w:1".into()), "m", &()).unwrap(),
            r#"{"id":"w:1","method":"m","params":null}"#
        );
        assert_eq!(
            encode::client_notification::<()>(false, "initialized", None).unwrap(),
            r#"{"method":"initialized"}"#
        );
    }
}
