//! The authorize URL the browser opens: the reference's parameters, in its order, each
//! percent-encoded (spaces as `%20`), so the issuer sees exactly what Codex sends.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::issuer::CLIENT_ID;
use crate::config::IssuerEndpoints;

/// Everything but RFC 3986's unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

const SCOPE: &str = "openid profile email offline_access api.connectors.read api.connectors.invoke";

pub(crate) struct AuthorizeRequest<'a> {
    pub redirect_uri: &'a str,
    pub code_challenge: &'a str,
    pub state: &'a str,
    /// The client's name (`clientInfo.name`), as the reference sends it.
    pub originator: &'a str,
    /// `forced_chatgpt_workspace_id`, when set.
    pub allowed_workspaces: Option<&'a [String]>,
}

pub(crate) fn authorize_url(endpoints: &IssuerEndpoints, r: &AuthorizeRequest<'_>) -> String {
    let workspaces = r.allowed_workspaces.map(|w| w.join(","));
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", r.redirect_uri),
        ("scope", SCOPE),
        ("code_challenge", r.code_challenge),
        ("code_challenge_method", "S256"),
        ("id_token_add_organizations", "true"),
        ("codex_cli_simplified_flow", "true"),
        ("state", r.state),
        ("originator", r.originator),
    ];
    if let Some(w) = &workspaces {
        params.push(("allowed_workspace_id", w));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, COMPONENT)))
        .collect();
    format!("{}?{}", endpoints.authorize_url(), query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_in_the_reference_order_with_the_workspace_last() {
        let endpoints = IssuerEndpoints::new("https://auth.openai.com".into());
        let workspaces = vec!["ws-1".to_owned(), "ws 2".to_owned()];
        let url = authorize_url(
            &endpoints,
            &AuthorizeRequest {
                redirect_uri: "http://127.0.0.1:1455/auth/callback",
                code_challenge: "c",
                state: "s",
                originator: "probe",
                allowed_workspaces: Some(&workspaces),
            },
        );
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "https://auth.openai.com/oauth/authorize");
        let keys: Vec<&str> = query
            .split('&')
            .map(|p| p.split_once('=').unwrap().0)
            .collect();
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
                "originator",
                "allowed_workspace_id"
            ]
        );
        assert!(query.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A1455%2Fauth%2Fcallback"));
        assert!(
            query.contains("scope=openid%20profile%20email%20offline_access%20api.connectors.read")
        );
        assert!(query.ends_with("allowed_workspace_id=ws-1%2Cws%202"));
    }
}
