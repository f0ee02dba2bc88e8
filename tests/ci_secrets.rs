//! No secret in what the CI commands print or record: every new command runs with
//! `RUST_LOG=trace` over one home through sign-in, refreshes, an export and import, a hook,
//! `doctor` and sign-out, then each stderr, each stdout (but the two whose job is a secret:
//! `token` prints the access token alone, `login export` the document) and the login log
//! are searched for every token and key the home ever held.

mod kit;

use kit::MockIssuer;
use kit::cli::{Ran, Run, run};
use kit::home::auth_json;

const API_KEY: &str = "sk-proj-SECRET-ci-9d3f0a7c2b6e4815";

/// Every secret the home holds now.
fn secrets_in(home: &std::path::Path, into: &mut Vec<String>) {
    let Some(doc) = auth_json(home) else { return };
    for key in ["id_token", "access_token", "refresh_token"] {
        if let Some(t) = doc["tokens"][key].as_str() {
            into.push(t.to_owned());
        }
    }
    if let Some(k) = doc["OPENAI_API_KEY"].as_str() {
        into.push(k.to_owned());
    }
}

#[tokio::test]
async fn no_ci_command_prints_or_logs_a_secret() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    let hook = "authbridge.on_credential_change=[\"sh\", \"-c\", \"cat > /dev/null\"]";
    let trace = |stdin: &'static [u8]| Run {
        stdin,
        log: Some("trace"),
        ..Run::default()
    };
    let mut secrets = vec![API_KEY.to_owned()];
    // (what ran, its output, whether its stdout is a secret by design)
    let mut ran: Vec<(String, Ran, bool)> = vec![];
    let mut step = |args: &[&str], out: Ran, secret_stdout: bool, secrets: &mut Vec<String>| {
        secrets_in(home.path(), secrets);
        ran.push((args.join(" "), out, secret_stdout));
    };

    issuer.approve_device();
    let args = ["login", "--device-auth"];
    step(
        &args,
        run(home.path(), &issuer, &args, trace(b"")).await,
        false,
        &mut secrets,
    );
    for args in [
        &["login", "status"][..],
        &["login", "status", "--json"],
        &["-c", hook, "login", "refresh"],
        &["login", "refresh", "--if-stale", "--json"],
        &["doctor", "--json", "--network"],
        &["doctor"],
    ] {
        step(
            args,
            run(home.path(), &issuer, args, trace(b"")).await,
            false,
            &mut secrets,
        );
    }
    for args in [&["token"][..], &["token", "--min-validity", "2h"]] {
        let out = run(home.path(), &issuer, args, trace(b"")).await;
        let access = auth_json(home.path()).unwrap()["tokens"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            out.stdout,
            format!("{access}\n"),
            "token prints the token alone"
        );
        step(args, out, true, &mut secrets);
    }
    let exported = run(home.path(), &issuer, &["login", "export"], trace(b"")).await;
    let document: &'static [u8] = exported.stdout.clone().leak().as_bytes();
    step(&["login", "export"], exported, true, &mut secrets);
    let args = ["login", "import", "--if-newer"];
    step(
        &args,
        run(home.path(), &issuer, &args, trace(document)).await,
        false,
        &mut secrets,
    );
    let args = ["logout", "--no-revoke"];
    step(
        &args,
        run(home.path(), &issuer, &args, trace(b"")).await,
        false,
        &mut secrets,
    );
    let args = ["login", "--with-api-key"];
    let key_line: &'static [u8] = format!("{API_KEY}\n").leak().as_bytes();
    step(
        &args,
        run(home.path(), &issuer, &args, trace(key_line)).await,
        false,
        &mut secrets,
    );
    for args in [
        &["login", "status", "--json"][..],
        &["token"],
        &["login", "refresh"],
    ] {
        step(
            args,
            run(home.path(), &issuer, args, trace(b"")).await,
            false,
            &mut secrets,
        );
    }
    let args = ["logout"];
    step(
        &args,
        run(home.path(), &issuer, &args, trace(b"")).await,
        false,
        &mut secrets,
    );

    // Every refresh token the issuer ever saw counts too.
    secrets.extend(issuer.refreshes().into_iter().map(|(_, token)| token));
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() >= 8, "the run rotated: {}", secrets.len());
    let log = std::fs::read_to_string(home.path().join("log").join("codex-login.log")).unwrap();
    assert!(log.lines().count() >= 6, "{log}");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the login log holds a secret"
        );
        for (what, out, secret_stdout) in &ran {
            assert!(
                !out.stderr.contains(secret.as_str()),
                "`{what}` printed a secret on stderr"
            );
            if !secret_stdout {
                assert!(
                    !out.stdout.contains(secret.as_str()),
                    "`{what}` printed a secret on stdout"
                );
            }
        }
    }
    // The token command never hands out a refresh token, nor export's reader a key it had
    // not stored.
    for (what, out, _) in &ran {
        if what.starts_with("token") {
            for (_, refresh) in issuer.refreshes() {
                assert!(
                    !out.stdout.contains(&refresh),
                    "`{what}` printed a refresh token"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_access_token_given_alone_shows_in_no_status_refresh_doctor_or_log_line() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = kit::jwt::unsigned(&serde_json::json!({
        "exp": exp, "nonce": uuid::Uuid::new_v4().to_string(),
        "https://api.openai.com/auth": {"chatgpt_account_id": "ws-9"}
    }));
    let line = format!("{token}\n");
    let trace = |stdin: &'static [u8]| Run {
        stdin,
        log: Some("trace"),
        ..Run::default()
    };
    let stdin: &'static [u8] = line.leak().as_bytes();
    let mut outputs = vec![
        run(
            home.path(),
            &issuer,
            &["login", "--with-access-token"],
            trace(stdin),
        )
        .await,
    ];
    for args in [
        &["login", "status"][..],
        &["login", "status", "--json"],
        &["login", "refresh", "--json"],
        &["login", "refresh", "--min-validity", "2h"],
        &["doctor", "--json"],
        &["logout"],
    ] {
        outputs.push(run(home.path(), &issuer, args, trace(b"")).await);
    }
    for out in &outputs {
        assert!(
            !out.stdout.contains(&token) && !out.stderr.contains(&token),
            "{out:?}"
        );
    }
    assert_eq!(
        issuer.revoked().len(),
        0,
        "an empty refresh token is not revoked"
    );
    let log = std::fs::read_to_string(home.path().join("log").join("codex-login.log")).unwrap();
    assert!(log.contains("login --with-access-token"), "{log}");
    assert!(!log.contains(&token));
}
