//! The proxy variables, read as curl reads them (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`, either case) by hyper-util's matcher, the one reqwest uses for the HTTP
//! paths, so the WebSocket path cannot pick another proxy than the HTTP calls do.
//!
//! Each value is checked at start-up: an unusable proxy would otherwise be skipped without
//! a word and the connection go direct, which a company's network refuses later, far from
//! the cause. Values are never shown with their credentials.

use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use url::Url;

use super::NetworkError;

/// The variables, in the order hyper-util reads each pair.
const VARIABLES: [[&str; 2]; 4] = [
    ["HTTPS_PROXY", "https_proxy"],
    ["HTTP_PROXY", "http_proxy"],
    ["ALL_PROXY", "all_proxy"],
    ["NO_PROXY", "no_proxy"],
];

/// The proxies in effect.
pub struct Proxies {
    matcher: Matcher,
    /// Each variable in effect with its value as shown (no credentials).
    shown: Vec<(&'static str, String)>,
}

impl Proxies {
    pub fn from_env() -> Result<Self, NetworkError> {
        Self::read(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var`, and builds the same matcher from the environment
    /// (hyper-util reads only the process environment).
    fn read(var: impl Fn(&str) -> Option<String>) -> Result<Self, NetworkError> {
        let mut shown = Vec::new();
        for pair in VARIABLES {
            let Some((name, value)) = pair
                .iter()
                .find_map(|name| var(name).map(|value| (*name, value)))
            else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            if name.eq_ignore_ascii_case("NO_PROXY") {
                shown.push((name, value.trim().to_owned()));
            } else {
                shown.push((name, check(name, &value)?));
            }
        }
        Ok(Self {
            matcher: Matcher::from_env(),
            shown,
        })
    }

    /// The proxy a connection to `url` goes through, if any. WebSocket URLs follow their
    /// HTTP counterparts, as curl treats them.
    pub fn for_url(&self, url: &Url) -> Option<Intercept> {
        let scheme = match url.scheme() {
            "ws" | "http" => "http",
            "wss" | "https" => "https",
            _ => return None,
        };
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let uri: http::Uri = format!("{scheme}://{host}:{port}/").parse().ok()?;
        self.matcher.intercept(&uri)
    }

    /// One line for people: which proxy variables are in effect.
    pub fn describe(&self) -> String {
        if self.shown.is_empty() {
            return "none (direct connections)".into();
        }
        self.shown
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The value as shown, once it is known to be a proxy this program can use: an `http://`
/// (or `https://`) URL with a host. A bare `host:port` is an `http://` proxy, as for curl.
fn check(name: &'static str, value: &str) -> Result<String, NetworkError> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let error = |reason: &str| NetworkError::Proxy {
        variable: name,
        reason: reason.to_owned(),
    };
    let url = Url::parse(&with_scheme).map_err(|_| error("it is not a URL"))?;
    match url.scheme() {
        "http" | "https" => {}
        "socks4" | "socks4a" | "socks5" | "socks5h" => {
            return Err(error(
                "SOCKS proxies are not supported; name an http:// proxy",
            ));
        }
        _ => return Err(error("its scheme is not http:// or https://")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(error("it names no host"));
    }
    let credentials = !url.username().is_empty() || url.password().is_some();
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let mut shown = shown.as_str().trim_end_matches('/').to_owned();
    if credentials {
        shown.push_str(" (with credentials)");
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_shown_without_its_credentials() {
        let shown = check("HTTPS_PROXY", "http://alice:s3cr3t-pw@proxy.test:3128").unwrap();
        assert_eq!(shown, "http://proxy.test:3128 (with credentials)");
        assert_eq!(
            check("ALL_PROXY", "proxy.test:8080").unwrap(),
            "http://proxy.test:8080"
        );
    }

    #[test]
    fn an_unusable_proxy_is_refused_naming_the_variable_and_never_the_value() {
        for (value, reason) in [
            ("socks5://bob:hunter2@proxy.test:1080", "SOCKS"),
            ("ftp://bob:hunter2@proxy.test", "scheme"),
            ("http://bob:hunter2@", "not a URL"),
        ] {
            let message = check("HTTPS_PROXY", value).unwrap_err().to_string();
            assert!(message.contains("HTTPS_PROXY"), "{message}");
            assert!(message.contains(reason), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}
