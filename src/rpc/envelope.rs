//! The JSON-RPC envelope in the Codex dialect: `jsonrpc` is optional on input and mirrored
//! on output, ids are strings or signed 64-bit integers.
//!
//! Parsing borrows from the input line and keeps `params`, `result` and `error` as raw JSON,
//! so a message is classified without building a `Value` tree; the method handler parses
//! its own params into its own type.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::RpcError;

/// A request id as the Codex schema defines it: a string or an int64.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum RequestId {
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

/// One incoming message, classified.
#[derive(Debug)]
pub enum Incoming {
    Request {
        id: RequestId,
        method: String,
        params: Option<Box<RawValue>>,
    },
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    Response {
        id: RequestId,
        result: Result<Box<RawValue>, ErrorObject>,
    },
    /// A response with a null id: nothing can be routed, nothing is answered.
    Unattributed { error: Option<String> },
}

/// The error member of a response, as received or as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Why a line could not be taken as a message; each maps to an error response.
#[derive(Debug)]
pub struct Rejected {
    /// The id, when one could be read, so the error can be correlated.
    pub id: Option<RequestId>,
    pub error: RpcError,
    /// Whether the line carried `"jsonrpc":"2.0"` (for the connection's dialect).
    pub jsonrpc: bool,
}

/// A parsed line: the message and whether it carried the `jsonrpc` member.
#[derive(Debug)]
pub struct Parsed {
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
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

/// Keeps an explicit `null` apart from an absent member.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Classifies one line of input.
pub fn parse(line: &str) -> Result<Parsed, Rejected> {
    let reject = |id, error, jsonrpc| Rejected { id, error, jsonrpc };
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') {
        // Still answer a well-formed batch with one error rather than silence.
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(line) {
            Ok(_) => reject(
                None,
                RpcError::invalid_request("batch requests are not supported"),
                false,
            ),
            Err(e) => reject(None, RpcError::parse_error(&e), false),
        });
    }
    let env: RawEnvelope<'_> = match serde_json::from_str(line) {
        Ok(env) => env,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(reject(None, RpcError::parse_error(&e), false));
        }
        Err(_) => {
            return Err(reject(
                None,
                RpcError::invalid_request("a message must be a JSON object"),
                false,
            ));
        }
    };
    let jsonrpc = match env.jsonrpc {
        None => false,
        Some(v) if v.get() == "\"2.0\"" => true,
        Some(_) => {
            return Err(reject(
                None,
                RpcError::invalid_request("unsupported `jsonrpc` version (only \"2.0\")"),
                false,
            ));
        }
    };
    // A response with `"id": null` is the peer reporting that it could not read something
    // of ours: answering it could start an error ping-pong, so it is only logged.
    if env.method.is_none() && env.id.is_some_and(|id| id.get() == "null") {
        return Ok(Parsed {
            message: Incoming::Unattributed {
                error: env.error.map(|e| e.get().chars().take(256).collect()),
            },
            jsonrpc,
        });
    }
    let id = match env.id {
        None => None,
        Some(raw) => match serde_json::from_str::<RequestId>(raw.get()) {
            Ok(id) => Some(id),
            Err(_) => {
                return Err(reject(
                    None,
                    RpcError::invalid_request("`id` must be a string or a 64-bit integer"),
                    jsonrpc,
                ));
            }
        },
    };
    let params = env
        .params
        .filter(|p| p.get() != "null")
        .map(|p| p.to_owned());
    let message = match (env.method, id, env.result, env.error) {
        (Some(method), Some(id), None, None) => Incoming::Request { id, method, params },
        (Some(method), None, None, None) => Incoming::Notification { method, params },
        (None, Some(id), Some(result), None) => Incoming::Response {
            id,
            result: Ok(result.to_owned()),
        },
        (None, Some(id), None, Some(error)) => {
            match serde_json::from_str::<ErrorObject>(error.get()) {
                Ok(error) => Incoming::Response {
                    id,
                    result: Err(error),
                },
                Err(_) => {
                    return Err(reject(
                        Some(id),
                        RpcError::invalid_request(
                            "`error` must be an object with `code` and `message`",
                        ),
                        jsonrpc,
                    ));
                }
            }
        }
        (_, id, _, _) => {
            return Err(reject(
                id,
                RpcError::invalid_request(
                    "not a request, notification or response (needs `method`, or `id` with `result` or `error`)",
                ),
                jsonrpc,
            ));
        }
    };
    Ok(Parsed { message, jsonrpc })
}

/// Builds outgoing lines. Every function returns one line without the trailing newline.
pub mod encode {
    use super::*;

    fn open(out: &mut String, jsonrpc: bool) {
        out.push('{');
        if jsonrpc {
            out.push_str("\"jsonrpc\":\"2.0\",");
        }
    }

    fn push_id(out: &mut String, id: Option<&RequestId>) {
        out.push_str("\"id\":");
        match id {
            None => out.push_str("null"),
            Some(RequestId::Int(n)) => {
                use std::fmt::Write;
                let _ = write!(out, "{n}");
            }
            Some(RequestId::Str(s)) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        }
    }

    pub fn result(jsonrpc: bool, id: &RequestId, result: &RawValue) -> String {
        let mut out = String::with_capacity(result.get().len() + 32);
        open(&mut out, jsonrpc);
        push_id(&mut out, Some(id));
        out.push_str(",\"result\":");
        out.push_str(result.get());
        out.push('}');
        out
    }

    pub fn error_raw(jsonrpc: bool, id: Option<&RequestId>, error: &RawValue) -> String {
        let mut out = String::with_capacity(error.get().len() + 32);
        open(&mut out, jsonrpc);
        push_id(&mut out, id);
        out.push_str(",\"error\":");
        out.push_str(error.get());
        out.push('}');
        out
    }

    pub fn error(jsonrpc: bool, id: Option<&RequestId>, error: &RpcError) -> String {
        let raw = serde_json::value::to_raw_value(&error.to_object()).unwrap_or_else(|_| {
            RawValue::from_string("{\"code\":-32603,\"message\":\"internal error\"}".into())
                .expect("valid")
        });
        error_raw(jsonrpc, id, &raw)
    }

    pub fn notification(
        jsonrpc: bool,
        method: &str,
        params: &RawValue,
        emitted_at_ms: u64,
    ) -> String {
        let mut out = String::with_capacity(params.get().len() + method.len() + 64);
        open(&mut out, jsonrpc);
        out.push_str("\"method\":");
        out.push_str(&serde_json::to_string(method).unwrap_or_default());
        out.push_str(",\"params\":");
        out.push_str(params.get());
        out.push_str(",\"emittedAtMs\":");
        out.push_str(&emitted_at_ms.to_string());
        out.push('}');
        out
    }

    pub fn request(jsonrpc: bool, id: i64, method: &str, params: &RawValue) -> String {
        let mut out = String::with_capacity(params.get().len() + method.len() + 48);
        open(&mut out, jsonrpc);
        push_id(&mut out, Some(&RequestId::Int(id)));
        out.push_str(",\"method\":");
        out.push_str(&serde_json::to_string(method).unwrap_or_default());
        out.push_str(",\"params\":");
        out.push_str(params.get());
        out.push('}');
        out
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
                message: Incoming::Response { result: Ok(_), .. },
                ..
            }) => "result".into(),
            Ok(Parsed {
                message: Incoming::Response { result: Err(_), .. },
                ..
            }) => "error".into(),
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
            encode::result(false, &id, &RawValue::from_string("1".into()).unwrap()),
            r#"{"id":-9007199254740993,"result":1}"#
        );
        let sid = RequestId::Str("a\"b".into());
        assert_eq!(
            encode::result(true, &sid, &RawValue::from_string("{}".into()).unwrap()),
            r#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#
        );
    }
}
