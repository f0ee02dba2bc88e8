//! The browser sign-in in a real browser: headless Chromium, driven through ChromeDriver,
//! goes from `authUrl` through the stand-in issuer's authorize page to authbridge's
//! callback server and the page it ends on. Browsers keep connections alive and
//! prefetch; these tests check that the sign-in completes all the same, that the page the
//! user is left on carries no secret in its URL, and that the callback port is freed while
//! Chromium is still running.
//!
//! Without Chromium or ChromeDriver (Debian's `chromium` and `chromium-driver`, or the
//! binaries named by `CHROMIUM` and `CHROMEDRIVER`) each test prints `SKIPPED: ...` and
//! passes.

mod kit;

use std::io::Write;

use kit::home::auth_json;
use kit::wait;
use kit::webdriver::{self, Browser, Tools};
use kit::{Client, MockIssuer, Options, Proc};
use serde_json::{Value, json};

const ENTITLEMENT: &str = "Codex is not enabled for your workspace. Contact your workspace administrator to request access to Codex.";

/// The browser and its driver, or `None` after saying why the test is skipped.
fn chromium_or_skip(test: &str) -> Option<Tools> {
    match webdriver::tools() {
        Ok(tools) => Some(tools),
        Err(why) => {
            // Straight to stderr: the harness would hide a print of a passing test.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
            None
        }
    }
}

/// `account/login/start {type: "chatgpt"}`; returns the login id and the authorize URL.
async fn start_browser_login(c: &mut Client) -> (String, String) {
    let r = c
        .ok("account/login/start", json!({"type": "chatgpt"}))
        .await;
    assert_eq!(r["type"], "chatgpt", "{r}");
    (
        r["loginId"].as_str().unwrap().to_owned(),
        r["authUrl"].as_str().unwrap().to_owned(),
    )
}

/// The callback server's port, from the authorize URL's `redirect_uri`.
fn callback_port(auth_url: &str) -> u16 {
    let url = url::Url::parse(auth_url).unwrap();
    let (_, redirect) = url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .expect("a redirect_uri");
    url::Url::parse(&redirect).unwrap().port().unwrap()
}

/// Nothing listens on `port` any more (bounded by the kit's wait).
async fn assert_port_freed(port: u16) {
    wait::until(&format!("port {port} to be free"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
}

/// On the stand-in issuer's authorize page, the user clicks "Continue".
async fn approve_in_browser(browser: &Browser, auth_url: &str) {
    browser.goto(auth_url).await;
    assert_eq!(
        browser.text_of("h1").await,
        "Sign in to the mock issuer",
        "the issuer's authorize page"
    );
    let approve = browser.find("#approve").await;
    browser.click(&approve).await;
}

#[tokio::test]
async fn chromium_signs_in_and_is_left_on_a_success_page_with_no_secret_in_its_url() {
    let Some(tools) = chromium_or_skip(
        "chromium_signs_in_and_is_left_on_a_success_page_with_no_secret_in_its_url",
    ) else {
        return;
    };
    let issuer = MockIssuer::start().await;
    let (p, mut c) =
        Proc::initialized(Options::default().issuer(&issuer), "browser_test", false).await;
    let browser = Browser::start(&tools).await;

    let (login_id, auth_url) = start_browser_login(&mut c).await;
    let port = callback_port(&auth_url);
    approve_in_browser(&browser, &auth_url).await;

    // The callback answers with a redirect to a bare /success: no code, no token in the
    // URL the browser keeps in its history.
    let landed = browser
        .wait_for_url("the success page", |u| u.path() == "/success")
        .await;
    let landed = url::Url::parse(&landed).unwrap();
    assert_eq!(landed.host_str(), Some("127.0.0.1"));
    assert_eq!(landed.port(), Some(port));
    assert_eq!(landed.query(), None, "no query string on {landed}");
    assert_eq!(landed.fragment(), None, "no fragment on {landed}");
    assert_eq!(browser.text_of("#heading").await, "Signed in to ChatGPT");
    assert_eq!(
        browser.text_of("#message").await,
        "You can close this window and return to your application."
    );

    let completed = c.notification("account/login/completed").await;
    assert_eq!(
        completed["params"],
        json!({"loginId": login_id, "success": true, "error": null, "onboardingEntrypoint": null})
    );
    let updated = c.notification("account/updated").await;
    assert_eq!(
        updated["params"],
        json!({"authMode": "chatgpt", "planType": "plus", "reason": null})
    );

    let stored = auth_json(p.home.path()).expect("auth.json written");
    assert_eq!(stored["auth_mode"], "chatgpt");
    assert_eq!(stored["tokens"]["account_id"], "ws-1");
    let tokens: Vec<String> = ["id_token", "access_token", "refresh_token"]
        .iter()
        .map(|k| {
            stored["tokens"][k]
                .as_str()
                .unwrap_or_else(|| panic!("{k} stored"))
                .to_owned()
        })
        .collect();
    assert!(tokens.iter().all(|t| !t.is_empty()));
    // Nothing the browser shows holds a credential.
    let source = browser.source().await;
    for secret in tokens
        .iter()
        .chain(stored["OPENAI_API_KEY"].as_str().map(str::to_owned).iter())
    {
        assert!(
            !source.contains(secret.as_str()),
            "a credential in the page"
        );
        assert!(!landed.as_str().contains(secret.as_str()));
    }
    assert_eq!(issuer.grants("grant_type=authorization_code"), 1);

    // Chromium is still running and may hold connections to the callback server: the
    // sign-in is over, so the port is free all the same.
    assert_port_freed(port).await;
    let account = c.account().await;
    assert_eq!(account["account"]["email"], "user@example.com");

    browser.quit().await;
}

#[tokio::test]
async fn chromium_shows_the_issuers_refusal_and_the_login_fails() {
    let Some(tools) = chromium_or_skip("chromium_shows_the_issuers_refusal_and_the_login_fails")
    else {
        return;
    };
    let issuer = MockIssuer::start().await;
    issuer.deny("access_denied", "missing_codex_entitlement");
    let (p, mut c) =
        Proc::initialized(Options::default().issuer(&issuer), "browser_test", false).await;
    let browser = Browser::start(&tools).await;

    let (login_id, auth_url) = start_browser_login(&mut c).await;
    let port = callback_port(&auth_url);
    approve_in_browser(&browser, &auth_url).await;

    // The browser stays on the callback, which shows why the sign-in failed.
    browser
        .wait_for_url("the callback page", |u| u.path() == "/auth/callback")
        .await;
    assert_eq!(browser.text_of("#heading").await, "Sign-in failed");
    assert_eq!(browser.text_of("#message").await, ENTITLEMENT);

    let completed: Value = c.notification("account/login/completed").await;
    assert_eq!(
        completed["params"],
        json!({
            "loginId": login_id,
            "success": false,
            "error": format!("Login server error: {ENTITLEMENT}"),
            "onboardingEntrypoint": null
        })
    );
    assert_port_freed(port).await;
    assert_eq!(auth_json(p.home.path()), None, "nothing stored");
    assert_eq!(issuer.grants("grant_type=authorization_code"), 0);
    c.assert_still_signed_out().await;

    browser.quit().await;
}
