//! Managed requirements (an administrator's `requirements.toml`) over the real binary: they
//! win over `config.toml` and `-c`, a conflict stops start-up naming the file, and the
//! methods, the command line and the broker all obey them. The file is named with
//! `AUTHBRIDGE_REQUIREMENTS_FILE`, which is read only when the machine has no
//! `/etc/codex/requirements.toml`; on a machine that has one these tests say SKIPPED.

mod kit;

use std::path::{Path, PathBuf};

use kit::client::{api_key_params, code, message, tokens_params};
use kit::home::auth_json;
use kit::jwt::token;
use kit::{MockBackend, Options, Proc, USAGE_PATH};
use serde_json::{Value, json};

/// A requirements file with `text` in a fresh directory, or `None` when the machine's own
/// file would win over it.
fn requirements(text: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if Path::new("/etc/codex/requirements.toml").exists() {
        eprintln!("SKIPPED: /etc/codex/requirements.toml exists and wins over a test's file");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requirements.toml");
    std::fs::write(&path, text).unwrap();
    Some((dir, path))
}

fn under(path: &Path) -> Options {
    Options::default().env("AUTHBRIDGE_REQUIREMENTS_FILE", path.to_str().unwrap())
}

#[tokio::test]
async fn chatgpt_only_refuses_an_api_key_from_every_way_in_and_is_reported() {
    let Some((_dir, path)) = requirements("allowed_login_methods = [\"chatgpt\"]\n") else {
        return;
    };
    let (p, mut c) = Proc::initialized(under(&path), "ide", true).await;
    let e = c
        .err("account/login/start", api_key_params("sk-refused"))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    assert_eq!(
        message(&e),
        "API key login is disabled. Use ChatGPT login instead."
    );
    assert_eq!(auth_json(p.home.path()), None);
    let r = c.ok("configRequirements/read", Value::Null).await;
    assert_eq!(
        r["requirements"]["allowedLoginMethods"],
        json!(["chatgpt"]),
        "{r}"
    );
    let r = c.ok("config/read", json!({})).await;
    assert_eq!(r["config"]["forced_login_method"], "chatgpt");

    // The command line, on the same home.
    let mut login = kit::process::command(p.home.path())
        .env("AUTHBRIDGE_REQUIREMENTS_FILE", &path)
        .args(["login", "--with-api-key"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    login.stdin.take().unwrap().write_all(b"sk-cli\n").unwrap();
    let out = login.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("API key login is disabled"), "{stderr}");
    assert_eq!(auth_json(p.home.path()), None);
}

#[tokio::test]
async fn a_forced_login_method_the_requirements_forbid_stops_start_up_naming_the_file() {
    let Some((_dir, path)) = requirements("allowed_login_methods = [\"chatgpt\"]\n") else {
        return;
    };
    for options in [
        under(&path).config("forced_login_method=\"api\""),
        under(&path).env(
            "AUTHBRIDGE_REQUIREMENTS_FILE",
            "no-such-dir/requirements.toml",
        ),
    ] {
        let mut p = Proc::spawn(&["app-server"], options);
        assert_ne!(p.exit_code().await, 0);
        assert!(p.stderr().contains("requirements.toml"), "{}", p.stderr());
    }
    let Some((_dir, empty)) = requirements("allowed_login_methods = []\n") else {
        return;
    };
    let mut p = Proc::spawn(&["app-server"], under(&empty));
    assert_ne!(p.exit_code().await, 0);
    assert!(
        p.stderr().contains("allows no login method"),
        "{}",
        p.stderr()
    );
}

#[tokio::test]
async fn allowed_workspaces_narrow_the_configured_ones_and_refuse_the_others() {
    let Some((_dir, path)) =
        requirements("[allowed_chatgpt_workspaces]\n\"ws-corp\" = true\n\"ws-old\" = false\n")
    else {
        return;
    };
    let options = under(&path).config("forced_chatgpt_workspace_id=[\"ws-corp\", \"ws-old\"]");
    let (_p, mut c) = Proc::initialized(options, "ide", true).await;
    let old = token("ws-old", "plus", "a@example.com", "old");
    let e = c
        .err("account/login/start", tokens_params(&old, "ws-old"))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    let corp = token("ws-corp", "plus", "a@example.com", "corp");
    c.login_tokens(&corp, "ws-corp", None).await;
    let r = c.ok("config/read", json!({})).await;
    assert_eq!(r["config"]["forced_chatgpt_workspace_id"], "ws-corp");

    // Nothing in common with the configuration: start-up stops.
    let mut p = Proc::spawn(
        &["app-server"],
        under(&path).config("forced_chatgpt_workspace_id=\"ws-elsewhere\""),
    );
    assert_ne!(p.exit_code().await, 0);
    assert!(
        p.stderr().contains("no ChatGPT workspace"),
        "{}",
        p.stderr()
    );
}

#[tokio::test]
async fn the_pinned_backend_and_store_win_over_config_toml_and_dash_c() {
    let pinned = MockBackend::start().await;
    let other = MockBackend::start().await;
    let Some((_dir, path)) = requirements(&format!(
        "chatgpt_base_url = {:?}\ncli_auth_credentials_store = \"ephemeral\"\n",
        pinned.base_url()
    )) else {
        return;
    };
    let access = token("ws-1", "plus", "a@example.com", "pinned");
    pinned.allow(&access);
    other.allow(&access);
    let options = under(&path)
        .backend(&other)
        .config("cli_auth_credentials_store=\"file\"");
    let (p, mut c) = Proc::initialized(options, "ide", true).await;
    c.login_tokens(&access, "ws-1", None).await;
    let r = c.call("account/rateLimits/read", None).await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(pinned.calls(USAGE_PATH), 1);
    assert_eq!(other.calls(USAGE_PATH), 0);
    c.logout().await;
    c.login_api_key("sk-kept-in-memory").await;
    assert_eq!(
        auth_json(p.home.path()),
        None,
        "the ephemeral store writes nothing"
    );
    let r = c.ok("configRequirements/read", Value::Null).await;
    assert_eq!(
        r["requirements"]["cliAuthCredentialsStore"], "ephemeral",
        "{r}"
    );
    assert_eq!(
        r["requirements"]["chatgptBaseUrl"],
        pinned.base_url().trim_end_matches('/')
    );
}
