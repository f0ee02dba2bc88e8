//! Raw JSON into a typed value, with errors built from structure rather than from serde's
//! message text.
//!
//! serde_json's messages quote the offending value (`invalid type: string "sk-…"`,
//! ``unknown variant `sk-…` ``), and a secret pasted into the wrong field must never come
//! back in an error. The fast path parses with serde_json; only when that fails is the
//! input parsed again into a `serde_value::Value` and deserialized with our own error
//! type, which records what kind of value was found and what was expected, never the
//! value itself.

use std::fmt;

use serde::de::{self, DeserializeOwned};
use serde_value::{Value, ValueDeserializer};

/// Why the input does not fit the type: a structured reason with the place it applies to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParamsError {
    /// Dotted path of the member at fault; empty for the top level.
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    NotObject {
        found: &'static str,
    },
    MissingField(&'static str),
    DuplicateField(&'static str),
    InvalidType {
        found: &'static str,
        expected: String,
    },
    InvalidValue {
        found: &'static str,
        expected: String,
    },
    InvalidLength {
        len: usize,
        expected: String,
    },
    UnknownVariant {
        expected: &'static [&'static str],
    },
    UnknownField {
        expected: &'static [&'static str],
    },
    /// A message written by a type's own `Deserialize` (never serde's quoting of input).
    Other(String),
}

const MAX_OTHER_CHARS: usize = 200;

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotObject { found } => write!(f, "expected an object, found {found}"),
            Problem::MissingField(name) => write!(f, "missing field `{name}`"),
            Problem::DuplicateField(name) => write!(f, "duplicate field `{name}`"),
            Problem::InvalidType { found, expected } => {
                write!(f, "invalid type: {found}, expected {expected}")
            }
            Problem::InvalidValue { found, expected } => {
                write!(f, "invalid value: {found}, expected {expected}")
            }
            Problem::InvalidLength { len, expected } => {
                write!(f, "invalid length {len}, expected {expected}")
            }
            Problem::UnknownVariant { expected } => {
                write!(f, "unknown variant, expected one of {}", list(expected))
            }
            Problem::UnknownField { expected } => {
                write!(f, "unknown field, expected one of {}", list(expected))
            }
            Problem::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Serde reports a missing field at its parent, whose path says nothing useful.
        if self.path.is_empty() || matches!(self.problem, Problem::MissingField(_)) {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.path, self.problem)
        }
    }
}

impl std::error::Error for ParamsError {}

/// The kind of a JSON value, the only thing an error may say about it.
fn kind(unexpected: &de::Unexpected<'_>) -> &'static str {
    use de::Unexpected as U;
    match unexpected {
        U::Bool(_) => "boolean",
        U::Unsigned(_) | U::Signed(_) => "integer",
        U::Float(_) => "number",
        U::Char(_) | U::Str(_) => "string",
        U::Bytes(_) => "bytes",
        U::Unit | U::Option => "null",
        U::Seq => "array",
        U::Map => "object",
        _ => "value",
    }
}

/// The error type the slow path deserializes with; its constructors drop the values.
#[derive(Debug)]
struct Structured(Problem);

impl fmt::Display for Structured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Structured {}

impl de::Error for Structured {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let mut text = msg.to_string();
        if let Some((cut, _)) = text.char_indices().nth(MAX_OTHER_CHARS) {
            text.truncate(cut);
        }
        Structured(Problem::Other(text))
    }
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Structured(Problem::InvalidType {
            found: kind(&unexp),
            expected: exp.to_string(),
        })
    }
    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Structured(Problem::InvalidValue {
            found: kind(&unexp),
            expected: exp.to_string(),
        })
    }
    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Structured(Problem::InvalidLength {
            len,
            expected: exp.to_string(),
        })
    }
    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Structured(Problem::UnknownVariant { expected })
    }
    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        Structured(Problem::UnknownField { expected })
    }
    fn missing_field(field: &'static str) -> Self {
        Structured(Problem::MissingField(field))
    }
    fn duplicate_field(field: &'static str) -> Self {
        Structured(Problem::DuplicateField(field))
    }
}

fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        Some(_) => "number",
        None => "nothing",
    }
}

/// Parses `raw`, which must be a JSON object, into `T`.
pub(crate) fn decode_object<T: DeserializeOwned>(raw: &str) -> Result<T, ParamsError> {
    let found = json_kind(raw);
    if found != "object" {
        return Err(ParamsError {
            path: String::new(),
            problem: Problem::NotObject { found },
        });
    }
    serde_json::from_str::<T>(raw).map_err(|_| explain::<T>(raw))
}

/// The slow path: why `raw` does not fit `T`, from structure.
fn explain<T: DeserializeOwned>(raw: &str) -> ParamsError {
    let unreadable = || ParamsError {
        path: String::new(),
        problem: Problem::Other("not valid JSON".into()),
    };
    let Ok(mut value) = serde_json::from_str::<Value>(raw) else {
        return unreadable();
    };
    let outcome = serde_path_to_error::deserialize::<_, T>(ValueDeserializer::<Structured>::new(
        value.clone(),
    ));
    wipe(&mut value);
    match outcome {
        Err(e) => {
            let path = e.path().to_string();
            ParamsError {
                path: if path == "." { String::new() } else { path },
                problem: e.into_inner().0,
            }
        }
        // The two parsers disagree (a number's range, say): say so without detail.
        Ok(_) => ParamsError {
            path: String::new(),
            problem: Problem::Other("the params do not fit this method".into()),
        },
    }
}

/// Overwrites the strings of a parsed tree: params may carry tokens.
fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Seq(items) => items.iter_mut().for_each(wipe),
        Value::Map(map) => {
            for (_, v) in std::mem::take(map) {
                let mut v = v;
                wipe(&mut v);
            }
        }
        Value::Option(Some(inner)) | Value::Newtype(inner) => wipe(inner),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "camelCase")]
    #[allow(dead_code)]
    enum Tagged {
        One { inner: Inner },
        Two,
    }

    fn message(raw: &str) -> String {
        decode_object::<Tagged>(raw).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_place_and_the_kind_never_the_value() {
        assert_eq!(
            message(r#"{"type":"sk-pasted-secret"}"#),
            "type: unknown variant, expected one of `one`, `two`"
        );
        // Inside an internally tagged enum serde loses the path; the kind is still there.
        assert_eq!(
            message(r#"{"type":"one","inner":{"flag":"sk-pasted-secret"}}"#),
            "invalid type: string, expected a boolean"
        );
        assert_eq!(
            decode_object::<Outer>(r#"{"inner":{"flag":"sk-pasted-secret"}}"#)
                .unwrap_err()
                .to_string(),
            "inner.flag: invalid type: string, expected a boolean"
        );
        assert_eq!(message(r#"{"type":"one"}"#), "missing field `inner`");
        assert_eq!(message(r#"{}"#), "missing field `type`");
        assert_eq!(message(r#"["one"]"#), "expected an object, found array");
        assert_eq!(message(r#""sk-x""#), "expected an object, found string");
        assert!(decode_object::<Tagged>(r#"{"type":"two"}"#).is_ok());
    }

    #[test]
    fn positional_arrays_never_fill_a_struct() {
        assert!(decode_object::<Inner>("[true]").is_err());
        assert!(
            serde_json::from_str::<Inner>("[true]").is_ok(),
            "serde would"
        );
    }
}
