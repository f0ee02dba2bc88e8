//! `--ws-auth signed-bearer-token` against the real binary: the upgrade admitted only with
//! an unexpired HS256 token signed with the shared secret and carrying the configured
//! issuer and audience; every refusal the same 401; a short secret stopping start-up; and
//! neither the secret nor a token in the log, even at trace level.

mod kit;

use std::time::{SystemTime, UNIX_EPOCH};

use kit::jwt::{hs256, unsigned};
use kit::wait::within;
use kit::{Client, Options, Proc, process};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const SECRET: &str = "a-shared-secret-of-forty-bytes-for-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass: the configured issuer and audience, an hour left.
fn good_claims() -> Value {
    json!({"iss": "parent", "aud": "authbridge", "sub": "editor", "exp": now() + 3600})
}

/// A server requiring signed bearer tokens from `parent` for `authbridge`, logging at
/// trace level; returns it and its address.
async fn server() -> (Proc, String) {
    let home = tempfile::tempdir().unwrap();
    let secret = home.path().join("ws-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let secret = secret.to_str().unwrap().to_owned();
    let options = Options::default().home(home).log("trace").extra(&[
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        &secret,
        "--ws-issuer",
        "parent",
        "--ws-audience",
        "authbridge",
    ]);
    let p = Proc::spawn(&["app-server", "--listen", "ws://127.0.0.1:0"], options);
    let addr = p.listening_on().await;
    (p, addr)
}

/// The HTTP status of an upgrade that must be refused.
async fn refused(addr: &str, token: &str) -> u16 {
    let header = format!("Bearer {token}");
    match within(
        "an answer to the upgrade",
        Client::ws(addr, &[("Authorization", &header)]),
    )
    .await
    {
        Ok(_) => panic!("an upgrade with {token:?} was admitted"),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("the upgrade failed without an HTTP status: {e}"),
    }
}

fn with(claims: Value, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = claims;
    change(claims.as_object_mut().unwrap());
    claims
}

#[tokio::test]
async fn only_a_valid_signed_token_opens_a_session_and_none_reaches_the_log() {
    let (p, addr) = server().await;
    let good = hs256(&good_claims(), SECRET.as_bytes());
    let header = format!("Bearer {good}");
    let mut c = Client::connect(&addr, &[("Authorization", &header)]).await;
    c.initialize("signed", false).await;

    let refusals = [
        (
            "expired",
            hs256(
                &with(good_claims(), |c| {
                    c.insert("exp".into(), json!(now() - 600));
                }),
                SECRET.as_bytes(),
            ),
        ),
        (
            "wrong secret",
            hs256(&good_claims(), b"another-secret-of-at-least-32-bytes!!"),
        ),
        (
            "no exp",
            hs256(
                &with(good_claims(), |c| {
                    c.remove("exp");
                }),
                SECRET.as_bytes(),
            ),
        ),
        (
            "wrong issuer",
            hs256(
                &with(good_claims(), |c| {
                    c.insert("iss".into(), json!("stranger"));
                }),
                SECRET.as_bytes(),
            ),
        ),
        (
            "wrong audience",
            hs256(
                &with(good_claims(), |c| {
                    c.insert("aud".into(), json!("someone-else"));
                }),
                SECRET.as_bytes(),
            ),
        ),
        (
            "not yet valid",
            hs256(
                &with(good_claims(), |c| {
                    c.insert("nbf".into(), json!(now() + 600));
                }),
                SECRET.as_bytes(),
            ),
        ),
        ("alg none", unsigned(&good_claims())),
        ("not a JWT", "opaque-capability-token".to_owned()),
    ];
    let mut tokens = vec![good.clone()];
    for (what, token) in refusals {
        assert_eq!(refused(&addr, &token).await, 401, "{what}");
        tokens.push(token);
    }
    // No Authorization at all.
    match within("an answer", Client::ws(&addr, &[])).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("admitted without a token: {:?}", other.is_ok()),
    }
    // The session opened first is still served.
    assert_eq!(c.account().await["account"], Value::Null);

    let log = p.stderr();
    assert!(
        log.contains("signed bearer token"),
        "the refusals were not logged: {log}"
    );
    assert!(!log.contains(SECRET), "the secret is in the log");
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            signature.is_empty() || !log.contains(signature),
            "a token is in the log"
        );
    }
}

#[tokio::test]
async fn a_secret_shorter_than_32_bytes_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("short-secret");
    std::fs::write(&secret, "only-twenty-one-bytes").unwrap();
    let path = secret.to_str().unwrap();
    let out = process::output(&[
        "app-server",
        "--listen",
        "ws://127.0.0.1:0",
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        path,
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(path) && err.contains("at least 32"), "{err}");
    assert!(!err.contains("only-twenty-one-bytes"), "{err}");
}

#[tokio::test]
async fn the_capability_token_stays_the_default_mode() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let out = process::output(&[
        "app-server",
        "--listen",
        "ws://127.0.0.1:0",
        "--ws-shared-secret-file",
        secret.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("applies only to --ws-auth signed-bearer-token"),
        "{err}"
    );
}
