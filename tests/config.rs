//! Start-up refuses configuration that cannot work, at once and saying why, and accepts
//! the spellings that do work: the real binary with `-c` overrides and odd files in its
//! `CODEX_HOME`.

mod kit;

use std::path::Path;
use std::process::{Output, Stdio};

use kit::jwt::token;
use kit::wait::within;
use kit::{MockBackend, Options, Proc, USAGE_PATH};
use serde_json::json;

/// Asserts `authbridge app-server` exited non-zero and that stderr says `needle`.
fn assert_refused(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started anyway ({}); stderr: {stderr}",
        output.status
    );
    assert!(
        stderr.contains(needle),
        "stderr does not say {needle:?}: {stderr}"
    );
}

#[tokio::test]
async fn a_zero_timeout_is_refused_at_start_up_naming_the_key() {
    for key in [
        "refresh_timeout_ms",
        "backend_timeout_ms",
        "backend_connect_timeout_ms",
    ] {
        let setting = format!("authbridge.{key}=0");
        let output = kit::process::output(&["app-server", "-c", &setting]).await;
        assert_refused(&output, &format!("authbridge.{key}"));
    }
}

/// `authbridge app-server` on `home`, stdin closed; killed if it has not exited within the
/// kit's bound (opening a FIFO for reading blocks until a writer comes, that is forever).
#[cfg(unix)]
async fn run_on(home: &Path) -> Output {
    let mut command = tokio::process::Command::from(kit::process::command(home));
    command
        .arg("app-server")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    within("authbridge to exit", command.output())
        .await
        .expect("run authbridge")
}

/// Makes a FIFO at `path`.
#[cfg(unix)]
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(
        made,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_fifo_in_place_of_auth_json_or_config_toml_is_refused_without_blocking() {
    for file in ["auth.json", "config.toml"] {
        let home = tempfile::tempdir().unwrap();
        mkfifo(&home.path().join(file));
        let output = run_on(home.path()).await;
        assert_refused(&output, "not a regular file");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(file),
            "the message names {file}"
        );
    }
}

/// URL schemes are case-insensitive: `HTTP://127.0.0.1` is plain http to loopback, allowed
/// like its lower-case spelling, and calls reach the backend.
#[tokio::test]
async fn an_upper_case_scheme_in_the_base_url_works() {
    let backend = MockBackend::start().await;
    let url = backend.base_url().replacen("http://", "HTTP://", 1);
    assert!(url.starts_with("HTTP://127.0.0.1:"), "{url}");
    let good = token("ws-1", "plus", "a@example.com", "upper");
    backend.allow(&good);
    let (_p, mut c) = Proc::initialized(Options::default().base_url(&url), "host", true).await;
    c.login_tokens(&good, "ws-1", None).await;
    let r = c.ok("account/rateLimits/read", json!({})).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42, "{r}");
    assert_eq!(backend.calls_with(USAGE_PATH, &good), 1);
}
