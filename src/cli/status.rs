//! `login status --json`: who is signed in, as one JSON object a script can test, with
//! every member named by the CI contract and never a secret (no token, key or hash of one).

use serde::Serialize;

use crate::auth::{AuthManager, Identity, Mode};

/// The credential as a script sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusReport {
    pub signed_in: bool,
    pub auth_mode: Option<&'static str>,
    pub email: Option<String>,
    pub account_id: Option<String>,
    pub plan_type: Option<String>,
    pub store: String,
    /// RFC 3339.
    pub access_token_expires_at: Option<String>,
    /// RFC 3339.
    pub last_refresh: Option<String>,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl StatusReport {
    /// Signed in with a credential that works (or can be made to work by a refresh).
    pub fn usable(&self) -> bool {
        self.signed_in && self.state == "ok"
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a token expiring at `exp` still has `min` left (no `exp`: nothing says no).
pub(crate) fn lasts(exp: Option<i64>, min: std::time::Duration) -> bool {
    exp.is_none_or(|exp| exp - now() >= min.as_secs() as i64)
}

/// Unix seconds as RFC 3339.
pub(crate) fn rfc3339(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// What `auth` holds now. Reads memory only: no network, no grant.
pub(crate) fn report(auth: &AuthManager) -> StatusReport {
    let (plan, exp) = auth.token_details();
    let login_required = auth.login_required();
    // An access token given alone that expired can only be replaced, never refreshed.
    let given_alone_expired =
        auth.is_access_token_only() && !lasts(exp, std::time::Duration::from_secs(1));
    let identity = auth.identity();
    let (email, account_id) = match &identity {
        Some(Identity::Chatgpt { email, .. }) => (
            email.clone(),
            auth.chatgpt_credentials().ok().and_then(|c| c.account_id),
        ),
        _ => (None, None),
    };
    let auth_mode = auth.mode().map(|mode| match mode {
        Mode::ApiKey => "apiKey",
        Mode::Chatgpt if auth.is_access_token_only() => "chatgptAccessToken",
        Mode::Chatgpt => "chatgpt",
        Mode::ChatgptAuthTokens => "chatgptAuthTokens",
    });
    StatusReport {
        signed_in: identity.is_some(),
        auth_mode,
        email,
        account_id,
        plan_type: plan
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
        store: auth.store().describe(),
        access_token_expires_at: exp.map(rfc3339),
        last_refresh: auth
            .last_refresh()
            .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
        state: match (&identity, login_required) {
            (_, Some(_)) => "loginRequired",
            (Some(_), None) if given_alone_expired => "loginRequired",
            (Some(_), None) => "ok",
            (None, None) => "signedOut",
        },
        auth_error: login_required
            .map(|f| f.kind())
            .or(given_alone_expired.then_some("accessTokenExpired")),
        warning: auth.store().warning(),
    }
}
