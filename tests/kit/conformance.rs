//! Every message the server sends in these tests is checked against the official schema in
//! the shared reference (never copied into the project). The location comes from
//! `AUTHBRIDGE_REFERENCE_SCHEMA`, else the reference beside the repository; when neither
//! exists the check is skipped with a note on stderr, and when the variable is set but
//! wrong, the tests fail.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

pub struct Reference {
    message: jsonschema::Validator,
    notification: jsonschema::Validator,
    server_request: jsonschema::Validator,
    error: jsonschema::Validator,
    error_object: jsonschema::Validator,
    responses: HashMap<&'static str, jsonschema::Validator>,
    pub dir: PathBuf,
}

pub fn reference_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AUTHBRIDGE_REFERENCE_SCHEMA") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("JSONRPCMessage.json").exists(),
            "AUTHBRIDGE_REFERENCE_SCHEMA={} holds no schema",
            dir.display()
        );
        return Some(dir);
    }
    let beside =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/codex-0.169-schema");
    beside
        .join("JSONRPCMessage.json")
        .exists()
        .then_some(beside)
}

fn load(dir: &std::path::Path, file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
}

pub fn reference() -> Option<&'static Reference> {
    static REF: OnceLock<Option<Reference>> = OnceLock::new();
    REF.get_or_init(|| {
        let Some(dir) = reference_dir() else {
            eprintln!("note: reference schema not found; conformance checks skipped");
            return None;
        };
        let responses = [
            ("initialize", "v1/InitializeResponse.json"),
            ("account/login/start", "v2/LoginAccountResponse.json"),
            ("account/login/cancel", "v2/CancelLoginAccountResponse.json"),
            ("account/logout", "v2/LogoutAccountResponse.json"),
            ("account/read", "v2/GetAccountResponse.json"),
            (
                "account/rateLimits/read",
                "v2/GetAccountRateLimitsResponse.json",
            ),
            ("thread/start", "v2/ThreadStartResponse.json"),
            ("turn/start", "v2/TurnStartResponse.json"),
            ("turn/interrupt", "v2/TurnInterruptResponse.json"),
        ]
        .into_iter()
        .map(|(m, f)| (m, load(&dir, f)))
        .collect();
        Some(Reference {
            message: load(&dir, "JSONRPCMessage.json"),
            notification: load(&dir, "ServerNotification.json"),
            server_request: load(&dir, "ServerRequest.json"),
            error: load(&dir, "JSONRPCError.json"),
            error_object: load(&dir, "JSONRPCErrorError.json"),
            responses,
            dir,
        })
    })
    .as_ref()
}

fn assert_valid(v: &jsonschema::Validator, what: &str, instance: &Value) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the reference schema: {errors:?}\n{instance}"
    );
}

/// Checks one message from the server. `method` is the method of the request a response
/// answers, when known.
pub fn check(method: Option<&str>, msg: &Value) {
    let Some(r) = reference() else { return };
    if msg.get("id") == Some(&Value::Null) {
        // JSON-RPC 2.0 answers unreadable input with `id: null`; the reference schema has no
        // such message (its server stays silent), so only the error object is compared.
        assert_valid(&r.error_object, "error object", &msg["error"]);
        return;
    }
    assert_valid(&r.message, "message", msg);
    let has_id = msg.get("id").is_some();
    match (msg.get("method"), has_id) {
        (Some(_), false) => {
            // The reference's list is closed: an unknown method fails here.
            assert_valid(&r.notification, "notification", msg);
        }
        (Some(_), true) => assert_valid(&r.server_request, "server request", msg),
        (None, _) if msg.get("error").is_some() => assert_valid(&r.error, "error response", msg),
        (None, _) => {
            if let Some(v) = method.and_then(|m| r.responses.get(m)) {
                assert_valid(v, method.unwrap(), &msg["result"]);
            }
        }
    }
}

/// Validates a request's params against the reference's request list.
pub fn client_request_is_valid(request: &Value) -> bool {
    static CLIENT: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    CLIENT
        .get_or_init(|| reference_dir().map(|d| load(&d, "ClientRequest.json")))
        .as_ref()
        .is_none_or(|v| v.is_valid(request))
}
