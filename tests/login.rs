//! Managed sign-in over the real binary against the stand-in issuer: the browser flow and
//! each of its callback routes, the device code, cancel, supersede, time limits, the busy
//! callback port, the stores, logout's revocation, policy from each config layer, secrets,
//! and the command line.

mod kit;

use std::time::Duration;

use kit::client::{code, message};
use kit::home::auth_json;
use kit::wait::{self, within};
use kit::{Client, MockIssuer, Options, Proc};
use serde_json::{Value, json};

const COMPLETED: &str = "account/login/completed";
const UPDATED: &str = "account/updated";

/// A stdio server pointed at `issuer`, initialized as `probe`.
async fn server(issuer: &MockIssuer, options: Options) -> (Proc, Client) {
    Proc::initialized(options.issuer(issuer), "probe", false).await
}

fn query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn param(url: &str, key: &str) -> Option<String> {
    query(url)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

async fn start_browser(c: &mut Client) -> (String, String) {
    let r = c
        .ok("account/login/start", json!({"type": "chatgpt"}))
        .await;
    assert_eq!(r["type"], "chatgpt", "{r}");
    (
        r["loginId"].as_str().unwrap().to_owned(),
        r["authUrl"].as_str().unwrap().to_owned(),
    )
}

/// The user approves at the issuer and the browser lands on the callback; returns the
/// callback's status, `Location` and body.
async fn approve(issuer: &MockIssuer, auth_url: &str) -> (u16, Option<String>, String) {
    let callback = issuer.approve_link(auth_url).await;
    MockIssuer::get(&callback).await
}

async fn completed(c: &mut Client) -> Value {
    c.notification(COMPLETED).await["params"].clone()
}

fn port_of(url: &str) -> u16 {
    url::Url::parse(url).unwrap().port().unwrap()
}

async fn assert_port_freed(port: u16) {
    wait::until(&format!("port {port} to be free"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
}

#[tokio::test]
async fn browser_sign_in_from_authorize_url_to_stored_credential() {
    let issuer = MockIssuer::start().await;
    let (p, mut c) = server(&issuer, Options::default()).await;
    let (login_id, auth_url) = start_browser(&mut c).await;

    // The reference's parameters, in its order, and no workspace without the policy.
    let keys: Vec<String> = query(&auth_url).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "code_challenge",
            "code_challenge_method",
            "id_token_add_organizations",
            "codex_cli_simplified_flow",
            "state",
            "originator"
        ]
    );
    assert!(auth_url.starts_with(&format!("{}/oauth/authorize?", issuer.url())));
    assert_eq!(
        param(&auth_url, "client_id").unwrap(),
        "app_EMoamEEZ73f0CkXaXp7hrann"
    );
    assert_eq!(param(&auth_url, "originator").unwrap(), "probe");
    assert_eq!(param(&auth_url, "code_challenge").unwrap().len(), 43);
    assert_eq!(param(&auth_url, "state").unwrap().len(), 43);
    let redirect = param(&auth_url, "redirect_uri").unwrap();
    assert!(redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/auth/callback"));
    let port = port_of(&redirect);

    let (status, location, _) = approve(&issuer, &auth_url).await;
    assert_eq!(status, 302);
    assert_eq!(
        location.as_deref(),
        Some("/success"),
        "no token in the redirect"
    );
    let (status, _, page) = MockIssuer::get(&format!("http://127.0.0.1:{port}/success")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Signed in to ChatGPT"), "{page}");

    assert_eq!(
        completed(&mut c).await,
        json!({"loginId": login_id, "success": true, "error": null, "onboardingEntrypoint": null})
    );
    let updated = c.notification(UPDATED).await;
    assert_eq!(
        updated["params"],
        json!({"authMode": "chatgpt", "planType": "plus", "reason": null})
    );
    let account = c.account().await;
    assert_eq!(account["account"]["email"], "user@example.com");
    assert_eq!(account["userId"], "user-ws-1");

    let stored = auth_json(p.home.path()).expect("auth.json written");
    assert_eq!(stored["auth_mode"], "chatgpt");
    assert_eq!(stored["tokens"]["account_id"], "ws-1");
    assert!(
        stored["OPENAI_API_KEY"]
            .as_str()
            .unwrap()
            .starts_with("sk-exchanged-")
    );
    assert!(stored["last_refresh"].as_str().unwrap().ends_with('Z'));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.home.path().join("auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_port_freed(port).await;
    // The code was exchanged once; the API key exchange followed it.
    assert_eq!(issuer.grants("grant_type=authorization_code"), 1);
    assert_eq!(issuer.grants("token-exchange"), 1);
}

#[tokio::test]
async fn a_second_callback_for_the_same_login_does_not_spend_the_code_again() {
    let issuer = MockIssuer::start().await;
    let (_p, mut c) = server(&issuer, Options::default()).await;
    let (_, auth_url) = start_browser(&mut c).await;
    let callback = issuer.approve_link(&auth_url).await;
    // A prefetch and the real navigation at once.
    let (a, b) = tokio::join!(MockIssuer::get(&callback), MockIssuer::get(&callback));
    assert_eq!((a.0, b.0), (302, 302));
    assert!(completed(&mut c).await["success"].as_bool().unwrap());
    assert_eq!(issuer.grants("grant_type=authorization_code"), 1);
}

#[tokio::test]
async fn callback_routes_state_mismatch_errors_missing_code_and_unknown_paths() {
    let issuer = MockIssuer::start().await;
    let (p, mut c) = server(&issuer, Options::default()).await;
    let (login_id, auth_url) = start_browser(&mut c).await;
    let callback = issuer.approve_link(&auth_url).await;
    let port = port_of(&callback);
    let base = format!("http://127.0.0.1:{port}");

    // Not this login's browser: 400, and the login goes on.
    let forged = callback.replace("state=", "state=x");
    let (status, _, body) = MockIssuer::get(&forged).await;
    assert_eq!((status, body.as_str()), (400, "State mismatch"));
    let (status, _, _) = MockIssuer::get(&format!("{base}/elsewhere")).await;
    assert_eq!(status, 404);
    let (_, _, page) = MockIssuer::get(&format!("{base}/success")).await;
    assert!(page.contains("No sign-in has completed"), "{page}");
    c.assert_no_account_notifications().await;

    // The issuer refused: an error page, and the login ends.
    let state = param(&auth_url, "state").unwrap();
    let denied = format!(
        "{base}/auth/callback?error=access_denied&error_description=missing_codex_entitlement&state={state}"
    );
    let (status, _, page) = MockIssuer::get(&denied).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Codex is not enabled for your workspace"),
        "{page}"
    );
    let done = completed(&mut c).await;
    assert_eq!(done["loginId"], login_id.as_str());
    assert_eq!(done["success"], false);
    assert_eq!(
        done["error"],
        "Login server error: Codex is not enabled for your workspace. Contact your workspace administrator to request access to Codex."
    );
    assert_port_freed(port).await;
    assert_eq!(auth_json(p.home.path()), None);

    // No code: its own page and message.
    let (_, auth_url) = start_browser(&mut c).await;
    let port = port_of(&param(&auth_url, "redirect_uri").unwrap());
    let state = param(&auth_url, "state").unwrap();
    let (_, _, page) = MockIssuer::get(&format!(
        "http://127.0.0.1:{port}/auth/callback?state={state}"
    ))
    .await;
    assert!(page.contains("Missing authorization code"), "{page}");
    assert_eq!(
        completed(&mut c).await["error"],
        "Login server error: Missing authorization code. Sign-in could not be completed."
    );

    // Any other issuer error names the issuer's words.
    issuer.deny("server_error", "the <b>issuer</b> is down");
    let (_, auth_url) = start_browser(&mut c).await;
    let (_, _, page) = approve(&issuer, &auth_url).await;
    assert!(
        page.contains("the &lt;b&gt;issuer&lt;/b&gt; is down"),
        "escaped: {page}"
    );
    assert_eq!(
        completed(&mut c).await["error"],
        "Login server error: Sign-in failed: the <b>issuer</b> is down"
    );
}

#[tokio::test]
async fn cancel_by_id_by_the_cancel_route_and_by_a_newer_login() {
    let issuer = MockIssuer::start().await;
    let (_p, mut c) = server(&issuer, Options::default()).await;

    let (login_id, auth_url) = start_browser(&mut c).await;
    let port = port_of(&param(&auth_url, "redirect_uri").unwrap());
    let r = c
        .ok("account/login/cancel", json!({"loginId": login_id}))
        .await;
    assert_eq!(r, json!({"status": "canceled"}));
    let done = completed(&mut c).await;
    assert_eq!(done["loginId"], login_id.as_str());
    assert_eq!(done["error"], "Login server error: Login was not completed");
    assert_port_freed(port).await;
    let again = c
        .ok("account/login/cancel", json!({"loginId": login_id}))
        .await;
    assert_eq!(again, json!({"status": "notFound"}));
    let unknown = json!({"loginId": uuid::Uuid::new_v4().to_string()});
    assert_eq!(
        c.ok("account/login/cancel", unknown).await,
        json!({"status": "notFound"})
    );
    let e = c
        .err("account/login/cancel", json!({"loginId": "nope"}))
        .await;
    assert_eq!(code(&e), -32600);

    // The callback server's own /cancel (an older login being asked to make room).
    let (_, auth_url) = start_browser(&mut c).await;
    let port = port_of(&param(&auth_url, "redirect_uri").unwrap());
    let (status, _, body) = MockIssuer::get(&format!("http://127.0.0.1:{port}/cancel")).await;
    assert_eq!((status, body.as_str()), (200, "Login cancelled"));
    assert_eq!(
        completed(&mut c).await["error"],
        "Login server error: Login cancelled"
    );

    // A newer login ends the pending one.
    let (first, _) = start_browser(&mut c).await;
    let r = c
        .ok("account/login/start", json!({"type": "chatgptDeviceCode"}))
        .await;
    let done = completed(&mut c).await;
    assert_eq!(done["loginId"], first.as_str());
    assert_eq!(done["error"], "Login server error: Login was not completed");
    assert_eq!(
        c.ok("account/login/cancel", json!({"loginId": r["loginId"]}))
            .await,
        json!({"status": "canceled"})
    );
}

#[tokio::test]
async fn a_browser_login_left_alone_times_out_and_frees_its_port() {
    let issuer = MockIssuer::start().await;
    let options = Options::default().config("authbridge.login_timeout_ms=400");
    let (_p, mut c) = server(&issuer, options).await;
    let (login_id, auth_url) = start_browser(&mut c).await;
    let done = completed(&mut c).await;
    assert_eq!(done["loginId"], login_id.as_str());
    assert_eq!(done["error"], "Login server error: Login timed out");
    assert_port_freed(port_of(&param(&auth_url, "redirect_uri").unwrap())).await;
}

/// Holds `port` like an older sign-in would; answers `/cancel` and, when `yields`, lets go.
async fn port_holder(port: u16, yields: bool) -> (u16, tokio::task::JoinHandle<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut cancels = 0;
        loop {
            let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_secs(5), listener.accept()).await
            else {
                return cancels;
            };
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap_or(0);
            if String::from_utf8_lossy(&buf[..n]).starts_with("GET /cancel ") {
                cancels += 1;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nLogin cancelled")
                    .await;
                if yields {
                    return cancels;
                }
            }
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_busy_callback_port_is_asked_to_cancel_and_then_reported_clearly() {
    let issuer = MockIssuer::start().await;
    // An older login that gives the port up when asked.
    let (port, holder) = port_holder(0, true).await;
    let options = Options::default().config(&format!("authbridge.login_callback_port={port}"));
    let (_p, mut c) = server(&issuer, options).await;
    let (_, auth_url) = start_browser(&mut c).await;
    assert_eq!(port_of(&param(&auth_url, "redirect_uri").unwrap()), port);
    assert_eq!(holder.await.unwrap(), 1, "asked to cancel once");

    // One that does not: a clear error that points at the device code.
    let (port, holder) = port_holder(0, false).await;
    let options = Options::default().config(&format!("authbridge.login_callback_port={port}"));
    let (_p, mut c) = server(&issuer, options).await;
    let e = c
        .err("account/login/start", json!({"type": "chatgpt"}))
        .await;
    assert_eq!(code(&e), -32603, "{e}");
    assert!(
        message(&e).starts_with(&format!(
            "failed to start login server: Port 127.0.0.1:{port} is already in use"
        )),
        "{e}"
    );
    assert!(message(&e).contains("device code"), "{e}");
    c.assert_no_account_notifications().await;
    holder.abort();
}

#[tokio::test]
async fn the_default_port_falls_back_to_1457() {
    // Needs the real ports; skipped (and said so) where something else holds them.
    let Ok(busy) = std::net::TcpListener::bind("127.0.0.1:1455") else {
        eprintln!("SKIPPED: 127.0.0.1:1455 is in use on this machine");
        return;
    };
    if std::net::TcpListener::bind("127.0.0.1:1457").is_err() {
        eprintln!("SKIPPED: 127.0.0.1:1457 is in use on this machine");
        return;
    }
    let issuer = MockIssuer::start().await;
    let options = Options::default().config("authbridge.login_callback_port=1455");
    let (_p, mut c) = server(&issuer, options).await;
    let (login_id, auth_url) = start_browser(&mut c).await;
    assert_eq!(
        param(&auth_url, "redirect_uri").unwrap(),
        "http://127.0.0.1:1457/auth/callback"
    );
    c.ok("account/login/cancel", json!({"loginId": login_id}))
        .await;
    drop(busy);
}

#[tokio::test]
async fn device_code_sign_in_polls_until_approved_and_stores_no_api_key() {
    let issuer = MockIssuer::start().await;
    let (p, mut c) = server(&issuer, Options::default()).await;
    let r = c
        .ok("account/login/start", json!({"type": "chatgptDeviceCode"}))
        .await;
    assert_eq!(r["type"], "chatgptDeviceCode");
    assert_eq!(r["userCode"], "ABCD-1234");
    assert_eq!(
        r["verificationUrl"],
        format!("{}/codex/device", issuer.url())
    );
    assert!(
        r.get("verificationUrlComplete").is_none(),
        "absent when the issuer sends none: {r}"
    );
    // Pending while the user has not entered the code (interval "0" is clamped to 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let polls = issuer.count("/api/accounts/deviceauth/token");
    assert!((1..=2).contains(&polls), "{polls} polls in 1.5 s");
    issuer.approve_device();
    let done = completed(&mut c).await;
    assert_eq!(done["loginId"], r["loginId"]);
    assert_eq!(done["success"], true, "{done}");
    assert_eq!(
        c.notification(UPDATED).await["params"],
        json!({"authMode": "chatgpt", "planType": "plus", "reason": null})
    );
    let stored = auth_json(p.home.path()).unwrap();
    assert_eq!(stored["OPENAI_API_KEY"], Value::Null);
    assert_eq!(issuer.grants("token-exchange"), 0);
    // The usercode request carried the client id; the exchange used the device redirect.
    let usercode = issuer
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/accounts/deviceauth/usercode")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&usercode.body).unwrap(),
        json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann"})
    );
}

#[tokio::test]
async fn the_issuer_s_complete_verification_url_is_passed_on_when_it_is_a_web_page() {
    let issuer = MockIssuer::start().await;
    let (_p, mut c) = server(&issuer, Options::default()).await;
    let complete = "https://auth.example.com/codex/device?user_code=ABCD-1234";
    issuer.send_complete_url(complete);
    let r = c
        .ok("account/login/start", json!({"type": "chatgptDeviceCode"}))
        .await;
    assert_eq!(r["verificationUrlComplete"], complete, "{r}");
    c.ok("account/login/cancel", json!({"loginId": r["loginId"]}))
        .await;
    // Anything a client should not open is dropped, not passed on.
    issuer.send_complete_url("javascript:alert(1)");
    let r = c
        .ok("account/login/start", json!({"type": "chatgptDeviceCode"}))
        .await;
    assert!(r.get("verificationUrlComplete").is_none(), "{r}");
}

#[tokio::test]
async fn device_code_disabled_is_an_error_of_login_start_itself() {
    let issuer = MockIssuer::start().await;
    issuer.disable_device_code();
    let (_p, mut c) = server(&issuer, Options::default()).await;
    let e = c
        .err("account/login/start", json!({"type": "chatgptDeviceCode"}))
        .await;
    assert_eq!(code(&e), -32600);
    assert_eq!(
        message(&e),
        "device code login is not enabled for this Codex server. Use the browser login or verify the server URL."
    );
    c.assert_still_signed_out().await;
}

#[tokio::test]
async fn device_code_polling_has_a_time_limit() {
    let issuer = MockIssuer::start().await;
    let options = Options::default().config("authbridge.device_code_timeout_ms=1500");
    let (_p, mut c) = server(&issuer, options).await;
    c.ok("account/login/start", json!({"type": "chatgptDeviceCode"}))
        .await;
    let done = completed(&mut c).await;
    assert_eq!(done["success"], false);
    assert_eq!(done["error"], "device auth timed out after 1.5 seconds");
}

/// A browser sign-in through the mock issuer, to completion.
async fn sign_in(issuer: &MockIssuer, c: &mut Client) {
    let (_, auth_url) = start_browser(c).await;
    let (status, _, _) = approve(issuer, &auth_url).await;
    assert_eq!(status, 302);
    let done = completed(c).await;
    assert_eq!(done["success"], true, "{done}");
    c.notification(UPDATED).await;
}

#[tokio::test]
async fn logout_revokes_the_refresh_token_and_a_new_sign_in_revokes_the_old_one() {
    let issuer = MockIssuer::start().await;
    let options = Options::default().config("authbridge.revoke_replaced=true");
    let (p, mut c) = server(&issuer, options).await;
    sign_in(&issuer, &mut c).await;
    let first = auth_json(p.home.path()).unwrap()["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    sign_in(&issuer, &mut c).await;
    wait::until("the superseded token to be revoked", || {
        issuer.revoked() == [first.clone()]
    })
    .await;
    let second = auth_json(p.home.path()).unwrap()["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = issuer
        .seen()
        .into_iter()
        .find(|s| s.path == "/oauth/revoke")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&revoke.body).unwrap(),
        json!({"token": first, "token_type_hint": "refresh_token", "client_id": "app_EMoamEEZ73f0CkXaXp7hrann"})
    );

    // The issuer failing the revocation does not keep the user signed in.
    issuer.revoke_status(500);
    assert_eq!(
        c.logout().await["params"],
        json!({"authMode": null, "planType": null, "reason": null})
    );
    assert_eq!(issuer.revoked().last(), Some(&second));
    assert_eq!(auth_json(p.home.path()), None);
    c.assert_signed_out().await;
}

#[tokio::test]
async fn a_sign_in_keeps_unknown_fields_and_never_overwrites_a_corrupt_file() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("auth.json"),
        r#"{"OPENAI_API_KEY":"sk-old","written_by_a_newer_codex":{"keep":1}}"#,
    )
    .unwrap();
    let (p, mut c) = server(&issuer, Options::default().home(home)).await;
    sign_in(&issuer, &mut c).await;
    let stored = auth_json(p.home.path()).unwrap();
    assert_eq!(stored["written_by_a_newer_codex"], json!({"keep": 1}));
    assert_eq!(stored["auth_mode"], "chatgpt");

    let torn = b"{\"auth_mode\":\"chatgpt\",\"tokens\":{\"id_tok";
    std::fs::write(p.home.path().join("auth.json"), torn).unwrap();
    let (_, auth_url) = start_browser(&mut c).await;
    approve(&issuer, &auth_url).await;
    let done = completed(&mut c).await;
    assert_eq!(done["success"], false);
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("is not a credential file authbridge understands"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(p.home.path().join("auth.json")).unwrap(),
        torn
    );
}

#[tokio::test]
async fn the_ephemeral_store_writes_nothing() {
    let issuer = MockIssuer::start().await;
    let options = Options::default().config("cli_auth_credentials_store=ephemeral");
    let (p, mut c) = server(&issuer, options).await;
    sign_in(&issuer, &mut c).await;
    assert_eq!(c.account().await["account"]["type"], "chatgpt");
    assert_eq!(std::fs::read_dir(p.home.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn auto_falls_back_to_the_file_with_a_visible_warning() {
    let issuer = MockIssuer::start().await;
    // No keyring daemon can be reached.
    let options = Options::default()
        .config("cli_auth_credentials_store=auto")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/authbridge-test-bus",
        );
    let (p, mut c) = server(&issuer, options).await;
    sign_in(&issuer, &mut c).await;
    let warning = c.notification("warning").await;
    let text = warning["params"]["message"].as_str().unwrap().to_owned();
    assert!(text.contains("keyring is unavailable"), "{text}");
    assert!(
        auth_json(p.home.path()).is_some(),
        "the file took the credential"
    );
    assert_eq!(c.account().await["credentialStoreWarning"], text.as_str());
}

#[tokio::test]
async fn codex_auth_json_seeds_an_empty_store_only() {
    let seed = r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-seeded"}"#;
    let (p, mut c) =
        Proc::initialized(Options::default().env("CODEX_AUTH_JSON", seed), "h", false).await;
    assert_eq!(c.account().await["account"], json!({"type": "apiKey"}));
    assert_eq!(
        auth_json(p.home.path()).unwrap()["OPENAI_API_KEY"],
        "sk-seeded"
    );
    drop(c);

    let home = tempfile::tempdir().unwrap();
    let kept = r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-kept"}"#;
    std::fs::write(home.path().join("auth.json"), kept).unwrap();
    let options = Options::default().home(home).env("CODEX_AUTH_JSON", seed);
    let (p, _c) = Proc::initialized(options, "h", false).await;
    assert_eq!(
        auth_json(p.home.path()).unwrap()["OPENAI_API_KEY"],
        "sk-kept"
    );
}

#[tokio::test]
async fn the_workspace_policy_applies_from_config_toml_and_from_the_command_line() {
    let issuer = MockIssuer::start().await;
    for from_file in [true, false] {
        let home = tempfile::tempdir().unwrap();
        let mut options = Options::default();
        if from_file {
            std::fs::write(
                home.path().join("config.toml"),
                "forced_chatgpt_workspace_id = \"ws-9\"\n",
            )
            .unwrap();
        } else {
            options = options.config("forced_chatgpt_workspace_id=\"ws-9\"");
        }
        let (p, mut c) = server(&issuer, options.home(home)).await;
        let (_, auth_url) = start_browser(&mut c).await;
        assert_eq!(
            param(&auth_url, "allowed_workspace_id").as_deref(),
            Some("ws-9")
        );
        approve(&issuer, &auth_url).await;
        let done = completed(&mut c).await;
        assert_eq!(
            done["error"], "Login server error: Login is restricted to workspace id(s) ws-9.",
            "from_file={from_file}"
        );
        assert_eq!(auth_json(p.home.path()), None, "nothing stored");
    }
}

#[tokio::test]
async fn the_login_method_policy_applies_from_config_toml_and_from_the_command_line() {
    let issuer = MockIssuer::start().await;
    for from_file in [true, false] {
        let home = tempfile::tempdir().unwrap();
        let mut options = Options::default();
        if from_file {
            std::fs::write(
                home.path().join("config.toml"),
                "forced_login_method = \"api\"\n",
            )
            .unwrap();
        } else {
            options = options.config("forced_login_method=api");
        }
        let (_p, mut c) = server(&issuer, options.home(home)).await;
        for kind in ["chatgpt", "chatgptDeviceCode"] {
            let e = c.err("account/login/start", json!({"type": kind})).await;
            assert_eq!(code(&e), -32600);
            assert_eq!(
                message(&e),
                "ChatGPT login is disabled. Use API key login instead."
            );
        }
        assert_eq!(issuer.count("/api/accounts/deviceauth/usercode"), 0);
    }
}

#[tokio::test]
async fn no_secret_reaches_the_log_an_error_or_a_url() {
    let issuer = MockIssuer::start().await;
    let options = Options::default().log("trace");
    let (p, mut c) = server(&issuer, options).await;
    let (_, auth_url) = start_browser(&mut c).await;
    let callback = issuer.approve_link(&auth_url).await;
    let code = param(&callback, "code").unwrap();
    let (_, location, _) = MockIssuer::get(&callback).await;
    completed(&mut c).await;
    let stored = auth_json(p.home.path()).unwrap();
    let mut secrets: Vec<String> = vec![code.clone()];
    for key in ["id_token", "access_token", "refresh_token"] {
        secrets.push(stored["tokens"][key].as_str().unwrap().to_owned());
    }
    secrets.push(stored["OPENAI_API_KEY"].as_str().unwrap().to_owned());
    // The verifier travels only in the exchange's body.
    let exchange = issuer
        .seen()
        .into_iter()
        .find(|s| s.body.contains("grant_type=authorization_code"))
        .unwrap();
    let verifier = url::form_urlencoded::parse(exchange.body.as_bytes())
        .find(|(k, _)| k == "code_verifier")
        .unwrap()
        .1
        .into_owned();
    secrets.push(verifier);
    c.logout().await;

    let log = p.stderr();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG") || log.contains("INFO"),
        "trace logging is on"
    );
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
        assert!(!auth_url.contains(secret.as_str()));
        assert!(!location.as_deref().unwrap_or("").contains(secret.as_str()));
        for seen in issuer.seen() {
            assert!(
                !seen.target.contains(secret.as_str()),
                "a secret in a URL: {}",
                seen.path
            );
        }
    }
    // An issuer error names the issuer's code, never what was sent.
    let e = c
        .err(
            "account/login/start",
            json!({"type": "apiKey", "apiKey": " "}),
        )
        .await;
    assert!(!e.to_string().contains(&secrets[0]));
}

// The command line ------------------------------------------------------------------------

async fn run(
    home: &std::path::Path,
    issuer: &MockIssuer,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::from(kit::process::command(home));
    command
        .args(args)
        .args(kit::process::SAFE_DEFAULTS)
        .args(["-c", &issuer.config_arg()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = within("the command to exit", child.wait_with_output())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_command_line_signs_in_with_a_device_code_shows_status_and_signs_out() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    let (status, out, _) = run(home.path(), &issuer, &["login", "status"], "").await;
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("Not signed in"), "{out}");

    issuer.approve_device();
    let (status, _, err) = run(home.path(), &issuer, &["login", "--device-auth"], "").await;
    assert_eq!(status, 0, "{err}");
    assert!(
        err.contains("ABCD-1234") && err.contains("/codex/device"),
        "{err}"
    );

    let (status, out, _) = run(home.path(), &issuer, &["login", "status"], "").await;
    assert_eq!(status, 0, "{out}");
    assert!(
        out.contains("user@example.com") && out.contains("ws-1") && out.contains("plus"),
        "{out}"
    );
    let stored = auth_json(home.path()).unwrap();
    for key in ["id_token", "access_token", "refresh_token"] {
        assert!(!out.contains(stored["tokens"][key].as_str().unwrap()));
    }

    let (status, _, err) = run(home.path(), &issuer, &["logout"], "").await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(issuer.revoked().len(), 1);
    assert_eq!(auth_json(home.path()), None);
    let (status, _, _) = run(home.path(), &issuer, &["login", "status"], "").await;
    assert_eq!(status, 1);
}

#[tokio::test]
async fn the_command_line_stores_an_api_key_from_stdin_and_obeys_policy() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    let (status, _, err) = run(
        home.path(),
        &issuer,
        &["login", "--with-api-key"],
        "sk-cli\n",
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(auth_json(home.path()).unwrap()["OPENAI_API_KEY"], "sk-cli");
    let (_, out, _) = run(home.path(), &issuer, &["login", "status"], "").await;
    assert!(out.contains("API key") && !out.contains("sk-cli"), "{out}");

    // Policy from config.toml reaches the command line too.
    std::fs::write(
        home.path().join("config.toml"),
        "forced_login_method = \"chatgpt\"\n",
    )
    .unwrap();
    let (status, _, err) = run(
        home.path(),
        &issuer,
        &["login", "--with-api-key"],
        "sk-two\n",
    )
    .await;
    assert_eq!(status, 1);
    assert!(err.contains("API key login is disabled"), "{err}");
    let (status, _, err) = run(
        home.path(),
        &issuer,
        &["-c", "forced_login_method=api", "login", "--device-auth"],
        "",
    )
    .await;
    assert_eq!(status, 1);
    assert!(err.contains("ChatGPT login is disabled"), "{err}");
}
