//! An access token given alone (`login --with-access-token`, `CODEX_ACCESS_TOKEN`): its
//! claims name the account, it is never refreshed (no grant, whatever is asked), and its
//! expiry is reported: by `login status --json`, and by exit code 2 once it no longer lasts.

mod kit;

use kit::MockIssuer;
use kit::cli::{Run, run};
use kit::home::auth_json;
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An access token for `ws-7` expiring `lifetime` seconds from now.
fn access_token(lifetime: i64, tag: &str) -> String {
    kit::jwt::unsigned(&json!({
        "email": "ci@example.com",
        "exp": now() + lifetime,
        "nonce": tag,
        "https://api.openai.com/auth": {"chatgpt_account_id": "ws-7", "chatgpt_plan_type": "team"}
    }))
}

fn status(ran: &kit::cli::Ran) -> Value {
    serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|_| panic!("{ran:?}"))
}

#[tokio::test]
async fn a_token_given_on_stdin_is_stored_alone_reported_and_never_refreshed() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    let token = access_token(3600, "given");
    let line = format!("{token}\n");
    let how = Run {
        stdin: line.as_bytes(),
        ..Run::default()
    };
    let ran = run(home.path(), &issuer, &["login", "--with-access-token"], how).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains("never refreshed"), "{ran:?}");
    assert!(!ran.stderr.contains(&token));
    let stored = auth_json(home.path()).unwrap();
    assert_eq!(stored["auth_mode"], "chatgptAccessToken");
    assert_eq!(stored["tokens"]["access_token"], token.as_str());
    assert_eq!(stored["tokens"]["refresh_token"], "");

    let ran = run(
        home.path(),
        &issuer,
        &["login", "status", "--json"],
        Run::default(),
    )
    .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let s = status(&ran);
    assert_eq!(s["authMode"], "chatgptAccessToken");
    assert_eq!(s["accountId"], "ws-7");
    assert_eq!(s["planType"], "team");
    assert_eq!(s["state"], "ok");
    let expires = humantime::parse_rfc3339(s["accessTokenExpiresAt"].as_str().unwrap()).unwrap();
    let expires = expires
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - (now() + 3600)).abs() <= 5, "{s}");

    // Nothing to refresh with: a forced refresh makes no grant, and more validity than the
    // token has is a new sign-in.
    let ran = run(home.path(), &issuer, &["login", "refresh"], Run::default()).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let ran = run(home.path(), &issuer, &["token"], Run::default()).await;
    assert_eq!((ran.code, ran.stdout.clone()), (0, format!("{token}\n")));
    for args in [
        &["login", "refresh", "--min-validity", "2h"][..],
        &["token", "--min-validity", "2h"],
    ] {
        let ran = run(home.path(), &issuer, args, Run::default()).await;
        assert_eq!(ran.code, 2, "{args:?}: {ran:?}");
        assert!(ran.stderr.contains("never refreshed"), "{ran:?}");
    }
    assert_eq!(issuer.refreshes().len(), 0, "no grant, ever");

    // Signing out has no refresh token to revoke: the issuer is not asked.
    let ran = run(home.path(), &issuer, &["logout"], Run::default()).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(auth_json(home.path()), None);
    assert_eq!(issuer.count("/oauth/revoke"), 0);
}

#[tokio::test]
async fn an_expired_or_malformed_token_is_refused_before_anything_is_written() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    for (stdin, says) in [
        (format!("{}\n", access_token(-60, "old")), "expired"),
        ("not-a-jwt-SECRET-4c1d\n".to_owned(), "is not a JWT"),
    ] {
        let how = Run {
            stdin: stdin.as_bytes(),
            ..Run::default()
        };
        let ran = run(home.path(), &issuer, &["login", "--with-access-token"], how).await;
        assert_eq!(ran.code, 1, "{ran:?}");
        assert!(ran.stderr.contains(says), "{ran:?}");
        assert!(
            !ran.stderr.contains(stdin.trim()),
            "the token is echoed: {ran:?}"
        );
        assert_eq!(auth_json(home.path()), None);
    }
}

#[tokio::test]
async fn codex_access_token_is_used_from_memory_and_its_expiry_reported() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    let token = access_token(1800, "env");
    let env = [("CODEX_ACCESS_TOKEN", token.as_str())];
    let how = || Run {
        env: &env,
        ..Run::default()
    };
    let ran = run(home.path(), &issuer, &["login", "status", "--json"], how()).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(status(&ran)["authMode"], "chatgptAccessToken");
    let ran = run(home.path(), &issuer, &["token"], how()).await;
    assert_eq!(ran.stdout, format!("{token}\n"), "{ran:?}");
    assert_eq!(auth_json(home.path()), None, "nothing written to the home");

    // The app-server signs in with it the same way.
    let options = kit::Options::default().env("CODEX_ACCESS_TOKEN", &token);
    let (_p, mut c) = kit::Proc::initialized(options, "ci", false).await;
    let account = c.account().await;
    assert_eq!(account["account"]["type"], "chatgpt", "{account}");
    assert_eq!(account["account"]["email"], "ci@example.com", "{account}");

    let expired = access_token(-5, "env-old");
    let env = [("CODEX_ACCESS_TOKEN", expired.as_str())];
    let how = Run {
        env: &env,
        ..Run::default()
    };
    let ran = run(home.path(), &issuer, &["login", "status", "--json"], how).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    let s = status(&ran);
    assert_eq!(
        (s["state"].clone(), s["authError"].clone()),
        (json!("loginRequired"), json!("accessTokenExpired"))
    );
    assert_eq!(issuer.refreshes().len(), 0);
}
