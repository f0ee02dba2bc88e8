//! Every message the server sends in these tests is checked against the official schemas in
//! the shared reference (never copied into the project): Codex 0.169's and 0.171's, each
//! message against both, since clients of either version must read it. The location comes
//! from `AUTHBRIDGE_REFERENCE_SCHEMA` (directories separated as in `PATH`), else the references beside the
//! repository; when none exists the check is skipped with a note on stderr, and when the
//! variable is set but wrong, the tests fail.

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

/// The reference versions, oldest first.
pub const VERSIONS: [&str; 2] = ["codex-0.169-schema", "codex-0.171-schema"];

pub fn reference_dirs() -> Vec<PathBuf> {
    if let Some(dirs) = std::env::var_os("AUTHBRIDGE_REFERENCE_SCHEMA") {
        // One directory, or several separated as in PATH (CI names both versions).
        return std::env::split_paths(&dirs)
            .inspect(|dir| {
                assert!(
                    dir.join("JSONRPCMessage.json").exists(),
                    "AUTHBRIDGE_REFERENCE_SCHEMA names {}, which holds no schema",
                    dir.display()
                );
            })
            .collect();
    }
    VERSIONS
        .iter()
        .map(|v| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/reference")
                .join(v)
        })
        .filter(|dir| dir.join("JSONRPCMessage.json").exists())
        .collect()
}

/// The oldest reference found (the one whose request list clients are held to).
pub fn reference_dir() -> Option<PathBuf> {
    reference_dirs().into_iter().next()
}

fn load(dir: &std::path::Path, file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every reference found, oldest first.
pub fn references() -> &'static [Reference] {
    static REF: OnceLock<Vec<Reference>> = OnceLock::new();
    REF.get_or_init(|| {
        let dirs = reference_dirs();
        if dirs.is_empty() {
            eprintln!("note: reference schema not found; conformance checks skipped");
        }
        dirs.into_iter().map(load_reference).collect()
    })
}

/// The oldest reference, when there is one.
pub fn reference() -> Option<&'static Reference> {
    references().first()
}

fn load_reference(dir: PathBuf) -> Reference {
    let mut responses = vec![
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
    ];
    // 0.171's subset also holds the answers to the reads clients send at start-up.
    for extra in [
        (
            "configRequirements/read",
            "v2/ConfigRequirementsReadResponse.json",
        ),
        ("config/read", "v2/ConfigReadResponse.json"),
        ("model/list", "v2/ModelListResponse.json"),
        ("modelProvider/list", "v2/ModelProviderListResponse.json"),
        (
            "account/securitySetup/read",
            "v2/GetAccountSecuritySetupResponse.json",
        ),
        (
            "account/workspaceMessages/read",
            "v2/GetWorkspaceMessagesResponse.json",
        ),
    ] {
        if dir.join(extra.1).exists() {
            responses.push(extra);
        }
    }
    let responses = responses
        .into_iter()
        .map(|(m, f)| (m, load(&dir, f)))
        .collect();
    Reference {
        message: load(&dir, "JSONRPCMessage.json"),
        notification: load(&dir, "ServerNotification.json"),
        server_request: load(&dir, "ServerRequest.json"),
        error: load(&dir, "JSONRPCError.json"),
        error_object: load(&dir, "JSONRPCErrorError.json"),
        responses,
        dir,
    }
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

/// The broker's own notifications, which no Codex reference knows: their params are checked
/// against the project's generated `schema/` instead.
const BROKER_NOTIFICATIONS: [(&str, &str); 2] = [
    ("credential/changed", "CredentialChangedNotification.json"),
    (
        "credential/login/completed",
        "CredentialLoginCompletedNotification.json",
    ),
];

fn check_broker_notification(file: &str, msg: &Value) {
    static OWN: OnceLock<std::sync::Mutex<HashMap<String, &'static jsonschema::Validator>>> =
        OnceLock::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema");
    let validator = *OWN
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(file.to_owned())
        .or_insert_with(|| Box::leak(Box::new(load(&dir, file))));
    assert_valid(validator, &format!("{file} params"), &msg["params"]);
}

/// Checks one message from the server against every reference. `method` is the method of
/// the request a response answers, when known.
pub fn check(method: Option<&str>, msg: &Value) {
    if msg.get("id").is_none()
        && let Some(name) = msg.get("method").and_then(Value::as_str)
        && let Some((_, file)) = BROKER_NOTIFICATIONS.iter().find(|(m, _)| *m == name)
    {
        check_broker_notification(file, msg);
        return;
    }
    for r in references() {
        check_against(r, method, msg);
    }
}

fn check_against(r: &Reference, method: Option<&str>, msg: &Value) {
    let version = r
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("reference");
    let what = |kind: &str| format!("{kind} ({version})");
    if msg.get("id") == Some(&Value::Null) {
        // JSON-RPC 2.0 answers unreadable input with `id: null`; the reference schema has no
        // such message (its server stays silent), so only the error object is compared.
        assert_valid(&r.error_object, &what("error object"), &msg["error"]);
        return;
    }
    assert_valid(&r.message, &what("message"), msg);
    let has_id = msg.get("id").is_some();
    match (msg.get("method"), has_id) {
        (Some(_), false) => {
            // The reference's list is closed: an unknown method fails here.
            assert_valid(&r.notification, &what("notification"), msg);
        }
        (Some(_), true) => assert_valid(&r.server_request, &what("server request"), msg),
        (None, _) if msg.get("error").is_some() => {
            assert_valid(&r.error, &what("error response"), msg)
        }
        (None, _) => {
            if let Some(v) = method.and_then(|m| r.responses.get(m)) {
                assert_valid(v, &what(method.unwrap()), &msg["result"]);
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
