//! The commands CI runners and scripts call, against the stand-in issuer: `login status
//! --json`, `login refresh`, `token` (from the home and from a broker), `login export` and
//! `import`, the rotation hook, revocation by choice, and the login log. Each exit code of
//! the contract is produced here at least once.

mod kit;

use kit::MockIssuer;
use kit::cli::{Ran, Run, SignedIn, finish, run, signed_in_home, start};
use kit::home::auth_json;
use serde_json::Value;

fn stored(home: &tempfile::TempDir, key: &str) -> String {
    auth_json(home.path()).unwrap()["tokens"][key]
        .as_str()
        .unwrap()
        .to_owned()
}

fn json_of(ran: &Ran) -> Value {
    serde_json::from_str(ran.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {ran:?}"))
}

fn reasons(issuer: &MockIssuer) -> Vec<String> {
    issuer
        .refreshes()
        .into_iter()
        .map(|(reason, _)| reason)
        .collect()
}

#[tokio::test]
async fn status_json_is_one_object_with_every_member_and_exit_codes_as_the_line() {
    let ci = SignedIn::start().await;
    let empty = tempfile::tempdir().unwrap();
    let out = ci
        .run_in(empty.path(), &["login", "status", "--json"])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    let status = json_of(&out);
    assert_eq!(status["signedIn"], false);
    assert_eq!(status["state"], "signedOut");
    assert_eq!(status["authMode"], Value::Null);

    let out = ci.run(&["login", "status", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let status = json_of(&out);
    let members: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for member in [
        "signedIn",
        "authMode",
        "email",
        "accountId",
        "planType",
        "store",
        "accessTokenExpiresAt",
        "lastRefresh",
        "state",
    ] {
        assert!(members.contains(&member), "{member} missing from {status}");
    }
    assert_eq!(status["authMode"], "chatgpt");
    assert_eq!(status["email"], "user@example.com");
    assert_eq!(status["accountId"], "ws-1");
    assert_eq!(status["planType"], "plus");
    assert_eq!(status["state"], "ok");
    let expires = status["accessTokenExpiresAt"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(expires).is_ok(), "{expires}");
    for key in ["id_token", "access_token", "refresh_token"] {
        assert!(!out.stdout.contains(&stored(&ci.home, key)), "{key} shown");
    }
}

#[tokio::test]
async fn refresh_makes_no_grant_while_fresh_and_one_when_stale_or_asked() {
    let ci = SignedIn::start().await;
    let ran = ci.run(&["login", "refresh", "--if-stale"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.starts_with("No refresh needed"), "{ran:?}");
    assert_eq!(
        ci.issuer.refreshes().len(),
        0,
        "a fresh token costs no grant"
    );

    // The token lives an hour: asking for two makes the grant.
    let before = stored(&ci.home, "refresh_token");
    let ran = ci
        .run(&["login", "refresh", "--min-validity", "2h", "--json"])
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(json_of(&ran)["refreshed"], true, "{ran:?}");
    assert_eq!(reasons(&ci.issuer), ["proactive_expiry"]);
    assert_ne!(
        stored(&ci.home, "refresh_token"),
        before,
        "the rotation is stored"
    );

    // Without a flag: one grant now.
    let ran = ci.run(&["login", "refresh"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.starts_with("Refreshed"), "{ran:?}");
    assert_eq!(reasons(&ci.issuer), ["proactive_expiry", "forced"]);

    // A token inside the proactive window is stale by the usual rules.
    ci.issuer.access_lifetime(60);
    let stale = signed_in_home(&ci.issuer);
    let ran = ci
        .run_in(stale.path(), &["login", "refresh", "--if-stale"])
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(reasons(&ci.issuer).len(), 3);
    assert_eq!(ci.issuer.reuses(), 0);
}

#[tokio::test]
async fn refresh_exit_codes_say_sign_in_again_try_later_or_failed() {
    let ci = SignedIn::start().await;
    let before = std::fs::read(ci.home.path().join("auth.json")).unwrap();

    ci.issuer.fail_next_refresh(503, "temporarily_unavailable");
    let ran = ci.run(&["login", "refresh"]).await;
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(ran.stderr.contains("try again later"), "{ran:?}");
    assert_eq!(
        std::fs::read(ci.home.path().join("auth.json")).unwrap(),
        before,
        "nothing lost"
    );

    ci.issuer.fail_next_refresh(401, "refresh_token_reused");
    let ran = ci.run(&["login", "refresh", "--json"]).await;
    assert_eq!(ran.code, 2, "{ran:?}");
    let status = json_of(&ran);
    assert_eq!(status["state"], "loginRequired");
    assert_eq!(status["authError"], "refreshTokenReused");
    assert_eq!(status["refreshed"], false);

    let empty = tempfile::tempdir().unwrap();
    let ran = ci.run_in(empty.path(), &["login", "refresh"]).await;
    assert_eq!(ran.code, 1, "not signed in: {ran:?}");
    let bad = ["-c", "authbridge.refresh_timeout_ms=0", "login", "refresh"];
    let ran = ci.run_in(empty.path(), &bad).await;
    assert_eq!(ran.code, 1, "a bad configuration: {ran:?}");
    assert!(ran.stderr.contains("refresh_timeout_ms"), "{ran:?}");
}

/// How many of `pids` have `path` open (Linux: their `/proc/PID/fd` links).
#[cfg(target_os = "linux")]
fn holding_open(pids: &[u32], path: &std::path::Path) -> usize {
    pids.iter()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
        })
        .count()
}

/// Eight `args` on one home, all queued on the refresh lock (each has the lock file open)
/// while the first grant is held at the issuer, so none can have loaded the rotated
/// credential at start; each must then find the first one's rotation under the lock.
#[cfg(target_os = "linux")]
async fn eight_at_once(issuer: &MockIssuer, home: &tempfile::TempDir, args: &[&str]) {
    let lock = std::fs::canonicalize(home.path())
        .unwrap()
        .join("auth.json.refresh.lock");
    issuer.hold_refreshes(true);
    let children: Vec<_> = (0..8)
        .map(|_| start(home.path(), issuer, args, &Run::default()))
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id().unwrap()).collect();
    kit::wait::until("all eight to queue on the refresh lock", || {
        holding_open(&pids, &lock) == 8
    })
    .await;
    kit::wait::until("the first grant to arrive", || {
        issuer.refreshes().len() == 1
    })
    .await;
    issuer.hold_refreshes(false);
    for child in children {
        let ran = finish(child, b"").await;
        assert_eq!(ran.code, 0, "{ran:?}");
        assert!(ran.stdout.starts_with("Refreshed"), "{ran:?}");
    }
    assert_eq!(issuer.refreshes().len(), 1, "one grant for eight processes");
    assert_eq!(issuer.reuses(), 0);
}

/// Without flags each asks for a grant now; all but the first adopt its rotation.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn eight_forced_refreshes_started_at_once_on_one_home_make_one_grant() {
    let ci = SignedIn::start().await;
    eight_at_once(&ci.issuer, &ci.home, &["login", "refresh"]).await;
}

/// With `--if-stale` on a token inside the proactive window, the same.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn eight_stale_refreshes_started_at_once_on_one_home_make_one_grant() {
    let issuer = MockIssuer::start().await;
    issuer.access_lifetime(60);
    let home = signed_in_home(&issuer);
    eight_at_once(&issuer, &home, &["login", "refresh", "--if-stale"]).await;
}

#[tokio::test]
async fn token_prints_the_access_token_alone_refreshing_it_first_when_needed() {
    let ci = SignedIn::start().await;
    let ran = ci.run(&["token"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!("{}\n", stored(&ci.home, "access_token"))
    );
    assert_eq!(ci.issuer.refreshes().len(), 0);

    let ran = ci.run(&["token", "--min-validity", "2h"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(ci.issuer.refreshes().len(), 1);
    assert_eq!(
        ran.stdout,
        format!("{}\n", stored(&ci.home, "access_token"))
    );
    assert!(!ran.stdout.contains(&stored(&ci.home, "refresh_token")));

    ci.issuer
        .fail_next_refresh(401, "refresh_token_invalidated");
    let ran = ci.run(&["token", "--min-validity", "2h"]).await;
    assert_eq!((ran.code, ran.stdout.as_str()), (2, ""), "{ran:?}");
    ci.issuer.fail_next_refresh(502, "bad_gateway");
    let ran = ci.run(&["token", "--min-validity", "2h"]).await;
    assert_eq!((ran.code, ran.stdout.as_str()), (3, ""), "{ran:?}");
}

#[tokio::test]
async fn token_from_a_broker_leaves_the_runner_without_any_refresh_token() {
    // The signed-in home is the broker's; the runner's starts empty.
    let ci = SignedIn::start().await;
    let (broker, token_path) =
        kit::broker::start_with_token(&ci.issuer, ci.home.path(), "runner-capability", &[]).await;
    let url = format!("ws://{}", broker.addr);
    let from_broker = [
        "token",
        "--broker",
        &url,
        "--broker-token-file",
        &token_path,
    ];
    let runner = tempfile::tempdir().unwrap();
    let ran = ci.run_in(runner.path(), &from_broker).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!("{}\n", stored(&ci.home, "access_token"))
    );
    assert_eq!(ci.issuer.refreshes().len(), 0);
    assert_eq!(
        std::fs::read_dir(runner.path()).unwrap().count(),
        0,
        "the runner's home holds nothing"
    );

    // Asking for more validity than the token has makes the broker's one grant.
    let ran = ci
        .run_in(
            runner.path(),
            &[&from_broker[..], &["--min-validity", "2h"]].concat(),
        )
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(ci.issuer.refreshes().len(), 1);
    kit::wait::until("the broker to store its rotation", || {
        ran.stdout == format!("{}\n", stored(&ci.home, "access_token"))
    })
    .await;

    let ran = ci
        .run_in(
            runner.path(),
            &[&from_broker[..], &["--credential", "other"]].concat(),
        )
        .await;
    assert_eq!(ran.code, 1, "{ran:?}");
    // Without the capability token the broker refuses the connection: try later.
    let ran = ci.run_in(runner.path(), &["token", "--broker", &url]).await;
    assert_eq!((ran.code, ran.stdout.as_str()), (3, ""), "{ran:?}");
}

#[tokio::test]
async fn an_import_of_an_older_copy_is_refused_and_changes_no_byte() {
    let ci = SignedIn::start().await;
    let home = ci.home.path();
    let exported = ci.run(&["login", "export"]).await;
    assert_eq!(exported.code, 0, "{exported:?}");
    let copy: Value = serde_json::from_str(&exported.stdout).unwrap();
    assert_eq!(Some(copy.clone()), auth_json(home));

    // The runner rotates; the secret manager still holds the copy from before.
    let ran = ci.run(&["login", "refresh"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let rotated = std::fs::read(home.join("auth.json")).unwrap();
    let if_newer = ["login", "import", "--if-newer"];
    let ran = ci
        .run_fed(home, &if_newer, exported.stdout.as_bytes())
        .await;
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(ran.stderr.contains("nothing was written"), "{ran:?}");
    assert_eq!(std::fs::read(home.join("auth.json")).unwrap(), rotated);

    // A fresh runner restores the newest copy; without --if-newer an old one is forced in.
    let newest = ci.run(&["login", "export"]).await;
    let fresh = tempfile::tempdir().unwrap();
    let ran = ci
        .run_fed(fresh.path(), &if_newer, newest.stdout.as_bytes())
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(auth_json(fresh.path()), auth_json(home));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(fresh.path().join("auth.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let import = ["login", "import"];
    let ran = ci.run_fed(home, &import, exported.stdout.as_bytes()).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(auth_json(home), Some(copy));

    let ran = ci
        .run_fed(home, &import, b"{\"not\": \"a credential\"")
        .await;
    assert_eq!(ran.code, 1, "{ran:?}");
    let empty = tempfile::tempdir().unwrap();
    let ran = ci.run_in(empty.path(), &["login", "export"]).await;
    assert_eq!((ran.code, ran.stdout.as_str()), (1, ""), "{ran:?}");
}

#[tokio::test]
async fn the_hook_receives_each_rotated_document_and_its_failure_loses_nothing() {
    let ci = SignedIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("secret-manager.json");
    let hook = format!(
        "authbridge.on_credential_change=[\"sh\", \"-c\", \"cat > '{}'\"]",
        target.display()
    );
    let ran = ci.run(&["-c", &hook, "login", "refresh"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let received: Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(Some(received), auth_json(ci.home.path()));

    // A fresh token is no rotation: the hook does not run.
    std::fs::remove_file(&target).unwrap();
    let ran = ci
        .run(&["-c", &hook, "login", "refresh", "--if-stale"])
        .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(!target.exists());

    let failing = "authbridge.on_credential_change=[\"sh\", \"-c\", \"exit 7\"]";
    let before = stored(&ci.home, "refresh_token");
    let ran = ci.run(&["-c", failing, "login", "refresh"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stderr.contains("on_credential_change failed"),
        "{ran:?}"
    );
    assert_ne!(
        stored(&ci.home, "refresh_token"),
        before,
        "the rotation is kept"
    );
    let empty_hook = [
        "-c",
        "authbridge.on_credential_change=[]",
        "login",
        "status",
    ];
    let ran = ci.run(&empty_hook).await;
    assert_eq!(ran.code, 1, "an empty hook is refused: {ran:?}");
}

#[tokio::test]
async fn revocation_happens_only_where_it_was_chosen() {
    let ci = SignedIn::start().await;
    let issuer = &ci.issuer;
    let ran = ci.run(&["logout", "--no-revoke"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(auth_json(ci.home.path()), None);
    assert_eq!(issuer.revoked().len(), 0);

    let home = signed_in_home(issuer);
    let off = ["-c", "authbridge.revoke_on_logout=false", "logout"];
    let ran = ci.run_in(home.path(), &off).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(issuer.revoked().len(), 0);

    // The app-server's `account/logout` follows the same key.
    let options = kit::Options::default()
        .home(signed_in_home(issuer))
        .issuer(issuer)
        .config("authbridge.revoke_on_logout=false");
    let (p, mut c) = kit::Proc::initialized(options, "ci", false).await;
    c.logout().await;
    assert_eq!(auth_json(p.home.path()), None);
    assert_eq!(issuer.revoked().len(), 0);

    let home = signed_in_home(issuer);
    let spent = stored(&home, "refresh_token");
    let ran = ci.run_in(home.path(), &["logout"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(issuer.revoked(), [spent]);

    // A new sign-in replaces the credential without revoking it, unless asked to.
    let home = signed_in_home(issuer);
    issuer.approve_device();
    let ran = ci.run_in(home.path(), &["login", "--device-auth"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(issuer.revoked().len(), 1, "the replaced token stays valid");
    let replaced = stored(&home, "refresh_token");
    issuer.approve_device();
    let on = [
        "-c",
        "authbridge.revoke_replaced=true",
        "login",
        "--device-auth",
    ];
    let ran = ci.run_in(home.path(), &on).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    kit::wait::until("the replaced token to be revoked", || {
        issuer.revoked().last() == Some(&replaced)
    })
    .await;
}

#[tokio::test]
async fn the_login_log_records_each_sign_in_in_a_private_file() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    issuer.approve_device();
    let ran = run(
        home.path(),
        &issuer,
        &["login", "--device-auth"],
        Run::default(),
    )
    .await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let ran = run(home.path(), &issuer, &["logout"], Run::default()).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let path = home.path().join("log").join("codex-login.log");
    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("login --device-auth: signed in (ChatGPT account ws-1"),
        "{log}"
    );
    assert!(
        lines[1].contains("logout: signed out (refresh token revoked)"),
        "{log}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[tokio::test]
async fn an_app_server_lets_its_last_hook_finish_before_it_exits() {
    let issuer = MockIssuer::start().await;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("secret-manager.json");
    let hook = format!(
        "authbridge.on_credential_change=[\"sh\", \"-c\", \"sleep 0.5; cat > '{}'\"]",
        target.display()
    );
    let options = kit::Options::default()
        .home(signed_in_home(&issuer))
        .issuer(&issuer)
        .config(&hook);
    let (mut p, mut c) = kit::Proc::initialized(options, "ci", false).await;
    c.ok("account/read", serde_json::json!({"refreshToken": true}))
        .await;
    assert_eq!(reasons(&issuer), ["forced"]);
    drop(c);
    assert_eq!(p.exit_code().await, 0, "{}", p.stderr());
    let received: Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(Some(received), auth_json(p.home.path()));
}
