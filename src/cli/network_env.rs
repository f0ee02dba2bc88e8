//! The trusted-roots and proxy variables in the environment, as `doctor` lists them beside
//! what `net` made of them: names, the path of a file variable, a proxy URL without its
//! userinfo (a proxy password is a secret). `SSL_CERT_DIR` is listed although authbridge
//! does not read it, so that a user who set it sees it is not the one in effect.

use serde::Serialize;

/// Variables naming a file or directory of trusted roots: the path is shown.
const FILE_VARIABLES: &[&str] = &["CODEX_CA_CERTIFICATE", "SSL_CERT_FILE", "SSL_CERT_DIR"];
/// Proxy variables: shown as a URL without userinfo.
const PROXY_VARIABLES: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// Host lists: shown as they are (they hold no credential).
const LIST_VARIABLES: &[&str] = &["NO_PROXY", "no_proxy"];

/// One variable that is set.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct SetVariable {
    pub name: &'static str,
    pub value: String,
}

/// A proxy URL with any user name and password removed; text that is no URL is not shown.
fn without_userinfo(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "(set, not a URL)".into(),
    }
}

/// The variables of interest that `var` finds set (empty values count as unset).
pub(crate) fn set_variables(var: impl Fn(&str) -> Option<String>) -> Vec<SetVariable> {
    let mut found = Vec::new();
    let mut look = |names: &[&'static str], show: fn(&str) -> String| {
        for &name in names {
            if let Some(value) = var(name).filter(|v| !v.trim().is_empty()) {
                found.push(SetVariable {
                    name,
                    value: show(&value),
                });
            }
        }
    };
    look(FILE_VARIABLES, str::to_owned);
    look(PROXY_VARIABLES, without_userinfo);
    look(LIST_VARIABLES, str::to_owned);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_password_is_never_shown_and_files_show_their_path() {
        let env = |name: &str| match name {
            "HTTPS_PROXY" => Some("http://user:s3cret-pass@proxy.example:3128".into()),
            "SSL_CERT_FILE" => Some("certs/roots.pem".into()),
            "all_proxy" => Some("socks5 nonsense with s3cret".into()),
            "NO_PROXY" => Some("localhost,.internal".into()),
            "HTTP_PROXY" => Some("  ".into()),
            _ => None,
        };
        let found = set_variables(env);
        let shown = format!("{found:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
        let names: Vec<_> = found.iter().map(|v| v.name).collect();
        assert_eq!(
            names,
            ["SSL_CERT_FILE", "HTTPS_PROXY", "all_proxy", "NO_PROXY"]
        );
        assert_eq!(found[0].value, "certs/roots.pem");
        assert_eq!(found[1].value, "http://proxy.example:3128/");
    }
}
