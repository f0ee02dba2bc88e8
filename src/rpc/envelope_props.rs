//! Properties of the envelope parser: it never panics, classifies any well-formed message
//! with its id and method intact, and keeps the id of what it rejects.

use proptest::prelude::*;

use crate::props::json_value;
use serde_json::Value;

use super::envelope::{ErrorObject, Incoming, Parsed, Rejected, ReplyError, RequestId, parse};
use super::error::{INVALID_REQUEST, PARSE_ERROR};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn json_object() -> impl Strategy<Value = String> {
    prop::collection::btree_map("\\PC{0,8}", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()).to_string())
}

/// A JSON string literal for `s`, some characters written as `\u` escapes.
fn string_literal(s: String) -> impl Strategy<Value = String> {
    let n = s.chars().count();
    prop::collection::vec(any::<bool>(), n).prop_map(move |escape| {
        let mut out = String::from("\"");
        for (c, esc) in s.chars().zip(escape) {
            if esc || c == '"' || c == '\\' || c.is_control() {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
        out
    })
}

fn request_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![
        any::<i64>().prop_map(RequestId::Int),
        "\\PC{0,12}".prop_map(RequestId::Str),
    ]
}

fn id_literal(id: RequestId) -> BoxedStrategy<String> {
    match id {
        RequestId::Int(n) => Just(n.to_string()).boxed(),
        RequestId::Str(s) => string_literal(s).boxed(),
    }
}

/// Members (name, JSON text) that no envelope field uses.
fn extras() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        ("[a-z]{1,8}", json_value().prop_map(|v| v.to_string())),
        0..3,
    )
    .prop_map(|members| {
        members
            .into_iter()
            .filter(|(k, _)| {
                !["jsonrpc", "id", "method", "params", "result", "error"].contains(&k.as_str())
            })
            .collect()
    })
}

/// An object with `members` in a random order with random whitespace.
fn object(members: Vec<(String, String)>) -> impl Strategy<Value = String> {
    let n = members.len();
    (
        Just(members).prop_shuffle(),
        prop::collection::vec("[ \t]{0,2}", 2 * n + 2),
    )
        .prop_map(move |(members, ws)| {
            let mut out = format!("{}{{", ws[0]);
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{}{k:?}:{}{v}", ws[2 * i + 1], ws[2 * i + 2]));
            }
            out.push('}');
            out.push_str(&ws[2 * n + 1]);
            out
        })
}

fn member(k: &str, v: String) -> (String, String) {
    (k.to_owned(), v)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_input_never_panics_and_errors_stay_small(
        line in "\\PC{0,120}|[\\[\\]{}\":,0-9a-z .eE+-]{0,120}",
    ) {
        if let Err(Rejected { error, .. }) = parse(&line) {
            prop_assert!(error.code == PARSE_ERROR || error.code == INVALID_REQUEST);
            prop_assert!(error.message.chars().count() <= 1025);
        }
    }

    #[test]
    fn a_well_formed_request_is_a_request_with_its_id_and_method(
        (line, id, method, params, jsonrpc) in (
            request_id(),
            "\\PC{0,24}",
            prop::option::of(json_object()),
            any::<bool>(),
            extras(),
        ).prop_flat_map(|(id, method, params, jsonrpc, extras)| {
            let expected_params = params.clone();
            let members = (id_literal(id.clone()), string_literal(method.clone())).prop_map(
                move |(id_text, method_text)| {
                    let mut members = extras.clone();
                    members.push(member("id", id_text));
                    members.push(member("method", method_text));
                    if let Some(p) = &params {
                        members.push(member("params", p.clone()));
                    }
                    if jsonrpc {
                        members.push(member("jsonrpc", "\"2.0\"".into()));
                    }
                    members
                },
            );
            (members.prop_flat_map(object), Just(id), Just(method), Just(expected_params), Just(jsonrpc))
        }),
    ) {
        match parse(&line) {
            Ok(Parsed { message: Incoming::Request { id: got, method: m, params: p }, jsonrpc: j }) => {
                prop_assert_eq!(got, id);
                prop_assert_eq!(m, method);
                prop_assert_eq!(p.map(|p| p.get().to_owned()), params);
                prop_assert_eq!(j, jsonrpc);
            }
            other => prop_assert!(false, "{line} parsed as {other:?}"),
        }
    }

    #[test]
    fn a_response_with_an_int_id_routes_as_a_response(
        (line, id, outcome) in (
            any::<i64>(),
            prop_oneof![
                json_value().prop_filter("null results are a separate case", |v| !v.is_null()).prop_map(Ok),
                (any::<i64>(), "\\PC{0,16}", prop::option::of(json_value()))
                    .prop_filter("a null `data` reads as absent", |(_, _, d)| d.as_ref().is_none_or(|d| !d.is_null()))
                    .prop_map(|(code, message, data)| Err(ErrorObject { code, message, data })),
            ],
            extras(),
        ).prop_flat_map(|(id, outcome, extras)| {
            let mut members = extras;
            members.push(member("id", id.to_string()));
            match &outcome {
                Ok(result) => members.push(member("result", result.to_string())),
                Err(error) => members.push(member("error", serde_json::to_string(error).unwrap())),
            }
            (object(members), Just(id), Just(outcome))
        }),
    ) {
        match parse(&line) {
            Ok(Parsed { message: Incoming::Response { id: got, reply }, .. }) => {
                prop_assert_eq!(got, RequestId::Int(id));
                match (reply, outcome) {
                    (Ok(raw), Ok(value)) => prop_assert_eq!(raw.get(), value.to_string()),
                    // Code, message and (small) `data` are kept as sent.
                    (Err(ReplyError::Error(e)), Err(expected)) => prop_assert_eq!(e, expected),
                    (got, want) => prop_assert!(false, "{got:?} for {want:?}"),
                }
            }
            other => prop_assert!(false, "{line} parsed as {other:?}"),
        }
    }

    /// Rejections of objects whose members all have the expected types keep the id.
    #[test]
    fn a_rejected_message_with_a_valid_id_keeps_it(
        (line, id) in (request_id(), prop::sample::select(vec![
            &["id"][..],
            &["id", "method", "result"],
            &["id", "method", "error"],
            &["id", "result", "error"],
            &["id", "bad-error"],
        ]), extras()).prop_flat_map(|(id, shape, extras)| {
            (id_literal(id.clone()), json_value(), "\\PC{0,10}", Just(shape), Just(extras))
                .prop_flat_map(|(id_text, value, method, shape, extras)| {
                    let mut members = extras;
                    for name in shape {
                        let v = match *name {
                            "id" => id_text.clone(),
                            "method" => serde_json::to_string(&method).unwrap(),
                            "result" => if value.is_null() { "{}".into() } else { value.to_string() },
                            "error" => r#"{"code":1,"message":"m"}"#.into(),
                            // Anything but an error object: `null` reads as absent, and
                            // an array is a separate case (see the tests below).
                            _ => match &value {
                                Value::Null | Value::Array(_) => "\"oops\"".into(),
                                v => v.to_string(),
                            },
                        };
                        members.push(member(if *name == "bad-error" { "error" } else { name }, v));
                    }
                    object(members)
                })
                .prop_map(move |line| (line, id.clone()))
        }),
    ) {
        // A response that breaks the envelope (both members, a bad `error`) is routed to
        // its waiter as malformed rather than rejected; either way the id is kept.
        match parse(&line) {
            Err(r) => prop_assert_eq!(r.id, Some(id), "{}", line),
            Ok(Parsed { message: Incoming::Response { id: got, .. }, .. }) => {
                prop_assert_eq!(got, id, "{}", line)
            }
            Ok(other) => prop_assert!(false, "{line} parsed as {other:?}"),
        }
    }

    /// Any rejection of an object with a valid id keeps it, whatever the other members
    /// hold: a `jsonrpc` other than `"2.0"`, a member of the wrong type.
    #[test]
    fn any_rejected_object_with_a_valid_id_keeps_it(
        (line, id) in (
            request_id(),
            prop::option::of(prop_oneof![
                Just("\"1.0\"".to_owned()),
                Just("\"2.0\"".to_owned()),
                Just("2".to_owned()),
                json_value().prop_map(|v| v.to_string()),
            ]),
            prop::option::of(json_value().prop_map(|v| v.to_string())),
            prop::option::of(json_value().prop_map(|v| v.to_string())),
            prop::option::of(json_value().prop_map(|v| v.to_string())),
            extras(),
        ).prop_flat_map(|(id, jsonrpc, method, result, error, extras)| {
            let mut members = extras;
            for (k, v) in [("jsonrpc", jsonrpc), ("method", method), ("result", result), ("error", error)] {
                if let Some(v) = v {
                    members.push(member(k, v));
                }
            }
            (id_literal(id.clone()), Just(members))
                .prop_flat_map(|(id_text, mut members)| {
                    members.push(member("id", id_text));
                    object(members)
                })
                .prop_map(move |line| (line, id.clone()))
        }),
    ) {
        if let Err(r) = parse(&line) {
            prop_assert_eq!(r.id, Some(id), "{}", line);
        }
    }
}

// Found by the properties above.

#[test]
fn a_null_result_is_a_response() {
    // JSON-RPC allows `"result": null` (a method with nothing to return).
    let parsed = parse(r#"{"id":7,"result":null}"#);
    assert!(
        matches!(
            parsed,
            Ok(Parsed {
                message: Incoming::Response {
                    id: RequestId::Int(7),
                    reply: Ok(_)
                },
                ..
            })
        ),
        "{parsed:?}"
    );
}

#[test]
fn an_error_member_must_be_an_object() {
    // serde reads a struct from a sequence too, so `[code, message]` would pass as an error.
    let parsed = parse(r#"{"id":7,"error":[1,"m"]}"#);
    assert!(
        matches!(
            &parsed,
            Ok(Parsed {
                message: Incoming::Response {
                    id: RequestId::Int(7),
                    reply: Err(ReplyError::Malformed(_))
                },
                ..
            })
        ),
        "{parsed:?}"
    );
}
