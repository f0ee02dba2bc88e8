//! `authbridge doctor` and the keyring's time bound: where each setting came from, a lock
//! another process holds, the CA and proxy variables without a password, the network checks,
//! and a Secret Service that accepts connections but never answers, which must count as
//! unavailable without hanging any command.

mod kit;

use std::time::{Duration, Instant};

use kit::MockIssuer;
use kit::cli::{Run, run, signed_in_home};
use serde_json::{Value, json};

#[tokio::test]
async fn doctor_says_where_settings_came_from_what_is_locked_and_which_variables_are_set() {
    let issuer = MockIssuer::start().await;
    let home = signed_in_home(&issuer);
    std::fs::write(
        home.path().join("config.toml"),
        "model = \"from-file\"\n[authbridge]\nrevoke_replaced = true\n",
    )
    .unwrap();
    // Another process holds the refresh lock (a grant in flight).
    let lock = std::fs::File::create(home.path().join("auth.json.refresh.lock")).unwrap();
    lock.lock().unwrap();
    let roots = kit::pki::Authority::new("CI Root").write(home.path(), "ci-roots.pem");
    let roots = roots.to_str().unwrap();
    let env = [
        (
            "HTTPS_PROXY",
            "http://ci-user:proxy-s3cret@proxy.internal:3128",
        ),
        ("SSL_CERT_FILE", roots),
        ("CODEX_AUTH_JSON", ""),
    ];
    let args = [
        "-c",
        "authbridge.revoke_replaced=false",
        "doctor",
        "--json",
        "--network",
    ];
    let how = Run {
        env: &env,
        ..Run::default()
    };
    let ran = run(home.path(), &issuer, &args, how).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(!ran.stdout.contains("s3cret") && !ran.stdout.contains("ci-user"));
    let d: Value = serde_json::from_str(ran.stdout.trim()).unwrap();

    let source = |key: &str| {
        d["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(source("model")["source"], "config.toml");
    assert_eq!(
        source("authbridge.revoke_replaced"),
        json!({"key": "authbridge.revoke_replaced", "source": "-c", "overridden": ["config.toml"]})
    );
    assert_eq!(source("auth_issuer")["source"], "-c");
    assert_eq!(d["credential"]["state"], "ok");
    assert_eq!(d["store"]["kind"], "file");
    let lock_state = |file: &str| {
        d["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["file"] == file)
            .map(|l| l["state"].clone())
    };
    assert_eq!(lock_state("auth.json.refresh.lock"), Some(json!("held")));
    assert_eq!(lock_state("auth.lock"), Some(json!("absent")));
    let variables = &d["network"]["variables"];
    assert!(
        variables
            .as_array()
            .unwrap()
            .contains(&json!({"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128/"})),
        "{variables}"
    );
    assert!(
        variables
            .as_array()
            .unwrap()
            .contains(&json!({"name": "SSL_CERT_FILE", "value": roots})),
        "{variables}"
    );
    // What the network module made of them: the bundle added, the proxy without its password.
    let described = d["network"]["roots"].as_str().unwrap();
    assert!(
        described.contains(&format!("SSL_CERT_FILE={roots} (1 certificate)")),
        "{described}"
    );
    assert_eq!(
        d["network"]["proxies"],
        "HTTPS_PROXY=http://proxy.internal:3128 (with credentials)"
    );
    let checks = d["checks"].as_array().unwrap();
    assert_eq!(checks[0]["name"], "issuer");
    assert_eq!(checks[0]["answered"], true, "{checks:?}");
    assert_eq!(checks[1]["name"], "backend");
    drop(lock);

    // Without --json: the same, as lines; not signed in is exit code 1.
    let empty = tempfile::tempdir().unwrap();
    let ran = run(empty.path(), &issuer, &["doctor"], Run::default()).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stdout.contains("credential: signedOut"), "{ran:?}");
    assert!(
        ran.stdout.contains("lock auth.json.refresh.lock: absent"),
        "{ran:?}"
    );
}

/// A session bus that takes connections and never says a word.
fn silent_bus(dir: &std::path::Path) -> (std::os::unix::net::UnixListener, String) {
    let path = dir.join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let held = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut connections = Vec::new();
        for stream in held.incoming() {
            match stream {
                Ok(s) => connections.push(s),
                Err(_) => break,
            }
        }
    });
    (listener, format!("unix:path={}", path.display()))
}

#[tokio::test]
async fn a_secret_service_that_never_answers_hangs_no_command() {
    let issuer = MockIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_bus, address) = silent_bus(dir.path());
    let env = [("DBUS_SESSION_BUS_ADDRESS", address.as_str())];
    let how = || Run {
        env: &env,
        ..Run::default()
    };

    // `auto`: the keyring counts as unavailable and the file serves.
    let home = signed_in_home(&issuer);
    let started = Instant::now();
    let args = ["-c", "cli_auth_credentials_store=auto", "doctor", "--json"];
    let ran = run(home.path(), &issuer, &args, how()).await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    let d: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(d["keyring"]["available"], false, "{d}");
    assert_eq!(d["credential"]["state"], "ok", "{d}");
    assert!(d["store"]["fallback"].is_string(), "{d}");

    // `keyring`: the store cannot be read, and the command says so in time.
    let started = Instant::now();
    let args = [
        "-c",
        "cli_auth_credentials_store=keyring",
        "login",
        "status",
        "--json",
    ];
    let ran = run(home.path(), &issuer, &args, how()).await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("no answer within"), "{ran:?}");
}
