//! JSON-RPC error values: the wire's error object, and the errors this side sends. Typed
//! errors from the inner layers are mapped into this shape at the `api` edge; nothing below
//! `api` builds one by hand. The envelope builds on this file, never the other way round.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) const PARSE_ERROR: i32 = -32700;
pub(crate) const INVALID_REQUEST: i32 = -32600;
pub(crate) const METHOD_NOT_FOUND: i32 = -32601;
pub(crate) const INVALID_PARAMS: i32 = -32602;
pub(crate) const INTERNAL_ERROR: i32 = -32603;

/// The error member of a response, as received or as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Several client libraries give up on lines over 64 KiB; an error message never needs
/// more than this.
const MAX_MESSAGE_CHARS: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub code: i32,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > MAX_MESSAGE_CHARS {
            let mut cut = MAX_MESSAGE_CHARS;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Self {
            code,
            message,
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Says where the JSON broke, never what it said: the text may hold a token.
    pub fn parse_error(e: &serde_json::Error) -> Self {
        Self::new(
            PARSE_ERROR,
            format!(
                "Parse error: not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    }

    pub fn invalid_request(message: impl AsRef<str>) -> Self {
        Self::new(
            INVALID_REQUEST,
            format!("Invalid request: {}", message.as_ref()),
        )
    }

    /// An invalid-request error whose message stands alone ("Not initialized").
    pub fn invalid_request_plain(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    /// Names the method only when it has a method's shape: the name may be a pasted token.
    pub fn method_not_found(method: &str) -> Self {
        let shown = super::method_name::Shown(method);
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {shown}"))
    }

    pub fn invalid_params(message: impl AsRef<str>) -> Self {
        Self::new(
            INVALID_PARAMS,
            format!("Invalid params: {}", message.as_ref()),
        )
    }

    pub fn internal(message: impl AsRef<str>) -> Self {
        Self::new(INTERNAL_ERROR, message.as_ref())
    }

    pub fn to_object(&self) -> ErrorObject {
        ErrorObject {
            code: self.code.into(),
            message: self.message.clone(),
            data: self.data.clone(),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let e = RpcError::internal("é".repeat(2000));
        assert!(e.message.len() <= MAX_MESSAGE_CHARS + '…'.len_utf8());
        assert!(e.message.ends_with('…'));
    }
}
