//! A stand-in OAuth issuer on 127.0.0.1 (ephemeral port) that behaves like the real one
//! where authbridge can tell: an authorize page whose link carries a one-use code back to
//! the callback, a token endpoint that checks PKCE and rotates refresh tokens (a refresh
//! token works once; a second use answers `refresh_token_reused`), revocation, and the
//! device-code endpoints. It records every request so tests can assert what was sent,
//! and where.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::jwt;

/// One request the issuer received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The full request target, query included.
    pub target: String,
    pub body: String,
}

/// Who signs in.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: String,
    pub plan: String,
    pub email: String,
}

struct Grant {
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct IssuerState {
    identity: Mutex<Option<Identity>>,
    seen: Mutex<Vec<Seen>>,
    codes: Mutex<HashMap<String, Grant>>,
    /// Refresh tokens that still work; spent ones are remembered to answer "reused".
    live_refresh: Mutex<Vec<String>>,
    spent_refresh: Mutex<Vec<String>>,
    counter: Mutex<u64>,
    device_enabled: Mutex<bool>,
    /// `verification_uri_complete` of the device-code answer, when set.
    complete_url: Mutex<Option<String>>,
    device_approved: Mutex<bool>,
    /// The issuer sends the user back with this `error` (and description) instead of a code.
    deny: Mutex<Option<(String, String)>>,
    api_key_exchange_fails: Mutex<bool>,
    revoke_status: Mutex<u16>,
    revoked: Mutex<Vec<String>>,
    access_lifetime_secs: Mutex<i64>,
    /// Access tokens the backend accepts: those of the newest token set of each account
    /// (each sign-in is a lineage of rotations of its own, as for two teams' credentials).
    valid_access: Mutex<HashMap<String, Vec<String>>>,
    /// Whose sign-in each refresh token continues.
    lineage: Mutex<HashMap<String, Identity>>,
    /// The account of every grant, in the order of `refreshes`.
    refresh_accounts: Mutex<Vec<String>>,
    /// The next refresh grants fail with this status and code.
    refresh_failures: Mutex<Vec<(u16, String)>>,
    refresh_delay: Mutex<std::time::Duration>,
    /// 0: grants pass; 1: held until released; 2: held ones are dropped unanswered
    /// (as if their client died before the issuer acted).
    hold: tokio::sync::watch::Sender<u8>,
    held: std::sync::atomic::AtomicUsize,
    /// Whether grants arriving now are held (while `hold` is 1); off, they pass while the
    /// ones already held stay held.
    hold_new: std::sync::atomic::AtomicBool,
    /// Grants refused because their token was already spent.
    reused_answers: Mutex<usize>,
    /// `(refresh_reason, presented token)` of every grant, in order.
    refreshes: Mutex<Vec<(String, String)>>,
    /// When the last grant that succeeded was answered.
    granted_at: Mutex<Option<std::time::Instant>>,
    /// The issuer's own base URL.
    url: Mutex<String>,
}

pub struct MockIssuer {
    pub addr: SocketAddr,
    state: Arc<IssuerState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl IssuerState {
    fn next(&self) -> u64 {
        let mut c = self.counter.lock().unwrap();
        *c += 1;
        *c
    }

    fn identity(&self) -> Identity {
        self.identity.lock().unwrap().clone().unwrap()
    }

    /// A fresh token set of the current identity; the refresh token becomes live.
    fn tokens(&self) -> Value {
        self.tokens_for(self.identity())
    }

    /// A fresh token set continuing `who`'s lineage: its access token becomes the one
    /// that account's backend calls are accepted with.
    fn tokens_for(&self, who: Identity) -> Value {
        let n = self.next();
        let auth = json!({"chatgpt_account_id": who.account, "chatgpt_plan_type": who.plan,
            "chatgpt_user_id": format!("user-{}", who.account)});
        let id = jwt::unsigned(&json!({"email": who.email, "nonce": format!("id-{n}"),
            "https://api.openai.com/auth": auth}));
        let lifetime = *self.access_lifetime_secs.lock().unwrap();
        let mut claims = json!({"email": who.email, "nonce": format!("access-{n}"),
            "https://api.openai.com/auth": auth});
        if lifetime != 0 {
            claims["exp"] = json!(now() + lifetime);
        }
        let access = jwt::unsigned(&claims);
        self.valid_access
            .lock()
            .unwrap()
            .insert(who.account.clone(), vec![access.clone()]);
        let refresh = format!("rt-{n}-{}", uuid::Uuid::new_v4().simple());
        self.live_refresh.lock().unwrap().push(refresh.clone());
        self.lineage.lock().unwrap().insert(refresh.clone(), who);
        json!({"id_token": id, "access_token": access, "refresh_token": refresh})
    }

    fn record(&self, uri: &Uri, body: &[u8]) {
        self.seen.lock().unwrap().push(Seen {
            path: uri.path().to_owned(),
            target: uri.to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": format!("mock: {code}")}})),
    )
        .into_response()
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn authorize(State(state): State<Arc<IssuerState>>, uri: Uri) -> Response {
    state.record(&uri, b"");
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let (Some(redirect), Some(st), Some(challenge)) = (
        q.get("redirect_uri"),
        q.get("state"),
        q.get("code_challenge"),
    ) else {
        return (StatusCode::BAD_REQUEST, "missing parameters").into_response();
    };
    let back = if let Some((e, d)) = state.deny.lock().unwrap().clone() {
        let mut url = url::Url::parse(redirect).unwrap();
        url.query_pairs_mut()
            .append_pair("error", &e)
            .append_pair("error_description", &d)
            .append_pair("state", st);
        url.to_string()
    } else {
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        state.codes.lock().unwrap().insert(
            code.clone(),
            Grant {
                challenge: challenge.clone(),
                redirect_uri: redirect.clone(),
            },
        );
        let mut url = url::Url::parse(redirect).unwrap();
        url.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", st);
        url.to_string()
    };
    let href = back.replace('&', "&amp;").replace('"', "&quot;");
    Html(format!(
        "<!doctype html><html><head><title>Mock issuer</title></head><body>\
         <h1>Sign in to the mock issuer</h1>\
         <a id=\"approve\" href=\"{href}\">Continue</a></body></html>"
    ))
    .into_response()
}

async fn token(
    State(state): State<Arc<IssuerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record(&uri, &body);
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let fields: HashMap<String, String> = if is_json {
        serde_json::from_slice::<HashMap<String, Value>>(&body)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect()
    } else {
        url::form_urlencoded::parse(&body).into_owned().collect()
    };
    if fields.get("client_id").map(String::as_str) != Some("app_EMoamEEZ73f0CkXaXp7hrann") {
        return error(StatusCode::BAD_REQUEST, "invalid_client");
    }
    match fields.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = fields.get("code").cloned().unwrap_or_default();
            let Some(grant) = state.codes.lock().unwrap().remove(&code) else {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier = fields.get("code_verifier").cloned().unwrap_or_default();
            if s256(&verifier) != grant.challenge
                || fields.get("redirect_uri") != Some(&grant.redirect_uri)
            {
                return error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            axum::Json(state.tokens()).into_response()
        }
        Some("urn:ietf:params:oauth:grant-type:token-exchange") => {
            if *state.api_key_exchange_fails.lock().unwrap() {
                return error(StatusCode::FORBIDDEN, "not_allowed");
            }
            axum::Json(json!({"access_token": format!("sk-exchanged-{}", state.next())}))
                .into_response()
        }
        Some("refresh_token") => {
            let presented = fields.get("refresh_token").cloned().unwrap_or_default();
            let who = state.lineage.lock().unwrap().get(&presented).cloned();
            let who = who.unwrap_or_else(|| state.identity());
            state
                .refresh_accounts
                .lock()
                .unwrap()
                .push(who.account.clone());
            state.refreshes.lock().unwrap().push((
                fields.get("refresh_reason").cloned().unwrap_or_default(),
                presented.clone(),
            ));
            if *state.hold.borrow() == 1 && state.hold_new.load(std::sync::atomic::Ordering::SeqCst)
            {
                // Counted while held; the count also drops if the client goes away and
                // the server abandons this handler.
                struct Held<'a>(&'a std::sync::atomic::AtomicUsize);
                impl Drop for Held<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                state.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _held = Held(&state.held);
                let mut hold = state.hold.subscribe();
                let _ = hold.wait_for(|h| *h != 1).await;
                let dropped = *hold.borrow() == 2;
                if dropped {
                    return (StatusCode::SERVICE_UNAVAILABLE, "dropped").into_response();
                }
            }
            let delay = *state.refresh_delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let failure = {
                let mut failures = state.refresh_failures.lock().unwrap();
                (!failures.is_empty()).then(|| failures.remove(0))
            };
            if let Some((status, code)) = failure {
                return error(StatusCode::from_u16(status).unwrap(), &code);
            }
            let mut live = state.live_refresh.lock().unwrap();
            if let Some(i) = live.iter().position(|t| *t == presented) {
                live.remove(i);
                drop(live);
                state.spent_refresh.lock().unwrap().push(presented);
                let tokens = state.tokens_for(who);
                *state.granted_at.lock().unwrap() = Some(std::time::Instant::now());
                return axum::Json(tokens).into_response();
            }
            drop(live);
            if state.spent_refresh.lock().unwrap().contains(&presented) {
                *state.reused_answers.lock().unwrap() += 1;
                return error(StatusCode::UNAUTHORIZED, "refresh_token_reused");
            }
            error(StatusCode::UNAUTHORIZED, "refresh_token_invalidated")
        }
        _ => error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
}

async fn revoke(State(state): State<Arc<IssuerState>>, uri: Uri, body: Bytes) -> Response {
    state.record(&uri, &body);
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(t) = v["token"].as_str() {
        state.revoked.lock().unwrap().push(t.to_owned());
    }
    let status = *state.revoke_status.lock().unwrap();
    (StatusCode::from_u16(status).unwrap(), "{}").into_response()
}

async fn usercode(State(state): State<Arc<IssuerState>>, uri: Uri, body: Bytes) -> Response {
    state.record(&uri, &body);
    if !*state.device_enabled.lock().unwrap() {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    let mut answer =
        json!({"device_auth_id": "dev-auth-1", "usercode": "ABCD-1234", "interval": "0"});
    if let Some(url) = state.complete_url.lock().unwrap().clone() {
        answer["verification_uri_complete"] = json!(url);
    }
    axum::Json(answer).into_response()
}

async fn device_token(State(state): State<Arc<IssuerState>>, uri: Uri, body: Bytes) -> Response {
    state.record(&uri, &body);
    if !*state.device_approved.lock().unwrap() {
        return (StatusCode::FORBIDDEN, "pending").into_response();
    }
    let verifier = format!("verifier-{}", uuid::Uuid::new_v4().simple());
    let code = format!("devcode-{}", uuid::Uuid::new_v4().simple());
    let redirect_uri = format!("{}/deviceauth/callback", state.url.lock().unwrap());
    state.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: s256(&verifier),
            redirect_uri,
        },
    );
    *state.device_approved.lock().unwrap() = false;
    axum::Json(json!({"authorization_code": code, "code_challenge": s256(&verifier), "code_verifier": verifier}))
        .into_response()
}

impl MockIssuer {
    pub async fn start() -> MockIssuer {
        let state = Arc::new(IssuerState::default());
        *state.identity.lock().unwrap() = Some(Identity {
            account: "ws-1".into(),
            plan: "plus".into(),
            email: "user@example.com".into(),
        });
        *state.device_enabled.lock().unwrap() = true;
        *state.revoke_status.lock().unwrap() = 200;
        *state.access_lifetime_secs.lock().unwrap() = 3600;
        let app = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .route("/oauth/revoke", post(revoke))
            .route("/api/accounts/deviceauth/usercode", post(usercode))
            .route("/api/accounts/deviceauth/token", post(device_token))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *state.url.lock().unwrap() = format!("http://{addr}");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockIssuer {
            addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `-c auth_issuer=…` for this issuer.
    pub fn config_arg(&self) -> String {
        format!("auth_issuer=\"{}\"", self.url())
    }

    pub fn set_identity(&self, account: &str, plan: &str, email: &str) {
        *self.state.identity.lock().unwrap() = Some(Identity {
            account: account.into(),
            plan: plan.into(),
            email: email.into(),
        });
    }

    /// The device-code answer carries `verification_uri_complete = url` from now on.
    pub fn send_complete_url(&self, url: &str) {
        *self.state.complete_url.lock().unwrap() = Some(url.to_owned());
    }

    pub fn disable_device_code(&self) {
        *self.state.device_enabled.lock().unwrap() = false;
    }

    /// The user enters the code: the next poll succeeds.
    pub fn approve_device(&self) {
        *self.state.device_approved.lock().unwrap() = true;
    }

    /// The issuer sends the user back with `error` instead of a code.
    pub fn deny(&self, error: &str, description: &str) {
        *self.state.deny.lock().unwrap() = Some((error.into(), description.into()));
    }

    pub fn fail_api_key_exchange(&self) {
        *self.state.api_key_exchange_fails.lock().unwrap() = true;
    }

    pub fn revoke_status(&self, status: u16) {
        *self.state.revoke_status.lock().unwrap() = status;
    }

    /// Access tokens issued from now on expire this many seconds after issue.
    pub fn access_lifetime(&self, secs: i64) {
        *self.state.access_lifetime_secs.lock().unwrap() = secs;
    }

    /// A signed-in credential as the issuer would have issued it, in `auth.json`'s format
    /// (`last_refresh` now); its refresh token is live.
    pub fn mint_auth_json(&self) -> Value {
        let t = self.state.tokens();
        json!({"auth_mode": "chatgpt", "OPENAI_API_KEY": null,
            "tokens": {"id_token": t["id_token"], "access_token": t["access_token"],
                "refresh_token": t["refresh_token"], "account_id": self.state.identity().account},
            "last_refresh": humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()})
    }

    /// A backend validator that accepts the newest access token (of any account) only.
    pub fn current_access_only(&self) -> super::backend::Validator {
        let state = self.state.clone();
        Arc::new(move |token: &str| {
            state
                .valid_access
                .lock()
                .unwrap()
                .values()
                .flatten()
                .any(|t| t == token)
        })
    }

    /// A backend validator that accepts the newest access token of `account` only: a
    /// worker handed another account's token fails its call.
    pub fn current_access_of(&self, account: &str) -> super::backend::Validator {
        let (state, account) = (self.state.clone(), account.to_owned());
        Arc::new(move |token: &str| {
            state
                .valid_access
                .lock()
                .unwrap()
                .get(&account)
                .is_some_and(|valid| valid.iter().any(|t| t == token))
        })
    }

    /// The backend stops accepting the current access token (as if it expired early).
    pub fn expire_access(&self) {
        self.state.valid_access.lock().unwrap().clear();
    }

    /// [`MockIssuer::expire_access`] for one account's sign-in only.
    pub fn expire_access_of(&self, account: &str) {
        self.state.valid_access.lock().unwrap().remove(account);
    }

    /// Grants made for `account`'s sign-in.
    pub fn refreshes_of(&self, account: &str) -> usize {
        let accounts = self.state.refresh_accounts.lock().unwrap();
        accounts.iter().filter(|a| *a == account).count()
    }

    /// The next grants fail with `status` and `code`, in order.
    pub fn fail_next_refresh(&self, status: u16, code: &str) {
        self.state
            .refresh_failures
            .lock()
            .unwrap()
            .push((status, code.into()));
    }

    /// Holds every grant that arrives from now on until [`MockIssuer::hold_refreshes`]
    /// with `false`.
    pub fn hold_refreshes(&self, on: bool) {
        self.state
            .hold_new
            .store(on, std::sync::atomic::Ordering::SeqCst);
        self.state.hold.send_replace(if on { 1 } else { 0 });
    }

    /// Grants arriving from now on pass; the ones held so far stay held (until
    /// [`MockIssuer::drop_held`] or `hold_refreshes(false)`).
    pub fn stop_holding_new(&self) {
        self.state
            .hold_new
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The held grants end unanswered, without rotating anything.
    pub async fn drop_held(&self) {
        self.state.hold.send_replace(2);
        super::wait::until("held grants to end", || {
            self.state.held.load(std::sync::atomic::Ordering::SeqCst) == 0
        })
        .await;
        self.state.hold.send_replace(0);
    }

    /// Grants take this long to answer.
    pub fn delay_refresh(&self, delay: std::time::Duration) {
        *self.state.refresh_delay.lock().unwrap() = delay;
    }

    /// When the last successful grant was answered: a rotation cannot be stored before it,
    /// so times counted from it include the broker's store.
    pub fn last_grant_at(&self) -> Option<std::time::Instant> {
        *self.state.granted_at.lock().unwrap()
    }

    /// `(refresh_reason, refresh_token)` of every grant received.
    pub fn refreshes(&self) -> Vec<(String, String)> {
        self.state.refreshes.lock().unwrap().clone()
    }

    /// Grants answered `refresh_token_reused` because the token was already spent.
    pub fn reuses(&self) -> usize {
        *self.state.reused_answers.lock().unwrap()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.state.revoked.lock().unwrap().clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests to `path`.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    /// Requests to the token endpoint with `grant_type`.
    pub fn grants(&self, grant_type: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path == "/oauth/token" && s.body.contains(grant_type))
            .count()
    }

    /// A `GET` of `url` as a browser would do it, following nothing; returns the status,
    /// the `Location` header and the body.
    pub async fn get(url: &str) -> (u16, Option<String>, String) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, location, r.text().await.unwrap_or_default())
    }

    /// Follows the authorize page's link the way a user clicking "Continue" would: returns
    /// the callback URL it points to.
    pub async fn approve_link(&self, auth_url: &str) -> String {
        let (status, _, html) = Self::get(auth_url).await;
        assert_eq!(status, 200, "authorize page: {html}");
        let start = html.find("href=\"").expect("a link") + 6;
        let end = start + html[start..].find('"').unwrap();
        html[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
    }
}
