//! The proxy variables, read as curl reads them (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`, either case; `NO_PROXY` with domains and CIDR blocks through hyper-util's
//! matcher). Read once: reqwest is handed the same choice instead of reading the variables
//! itself, so the WebSocket path cannot pick another proxy than the HTTP calls do.
//!
//! Each value is checked at start-up: an unusable proxy would otherwise be skipped without
//! a word and the connection go direct, which a company's network refuses later, far from
//! the cause. Values are never shown with their credentials.

use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use secrecy::{ExposeSecret, SecretString};
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
    /// The proxy URLs as given (credentials included), for reqwest, which takes the
    /// credentials from the URL: by scheme of the destination.
    http: Option<SecretString>,
    https: Option<SecretString>,
    /// Each variable in effect with its value as shown (no credentials).
    shown: Vec<(&'static str, String)>,
}

impl Proxies {
    pub fn from_env() -> Result<Self, NetworkError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var` (the environment, or a test's own values).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, NetworkError> {
        let mut shown = Vec::new();
        let mut values: [Option<String>; 4] = Default::default();
        for (slot, pair) in values.iter_mut().zip(VARIABLES) {
            let Some((name, value)) = pair.iter().find_map(|name| {
                var(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|value| (*name, value.trim().to_owned()))
            }) else {
                continue;
            };
            if name.eq_ignore_ascii_case("NO_PROXY") {
                shown.push((name, value.clone()));
                *slot = Some(value);
            } else {
                let (url, show) = check(name, &value)?;
                shown.push((name, show));
                *slot = Some(url);
            }
        }
        let [https, http, all, no] = values;
        let http = http.or_else(|| all.clone());
        let https = https.or(all);
        let mut builder = Matcher::builder();
        if let Some(url) = &http {
            builder = builder.http(url.clone());
        }
        if let Some(url) = &https {
            builder = builder.https(url.clone());
        }
        if let Some(no) = no {
            builder = builder.no(no);
        }
        Ok(Self {
            matcher: builder.build(),
            http: http.map(SecretString::from),
            https: https.map(SecretString::from),
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

    /// The same choice for reqwest, which is told the proxy URL with its credentials (it
    /// sends them as `Proxy-Authorization`, and never shows them).
    pub(super) fn reqwest(self: &std::sync::Arc<Self>) -> reqwest::Proxy {
        let proxies = self.clone();
        reqwest::Proxy::custom(move |url| {
            proxies.for_url(url)?;
            let raw = match url.scheme() {
                "https" => proxies.https.as_ref(),
                _ => proxies.http.as_ref(),
            }?;
            Url::parse(raw.expose_secret()).ok()
        })
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
fn check(name: &'static str, value: &str) -> Result<(String, String), NetworkError> {
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
    Ok((url.into(), shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_shown_without_its_credentials() {
        let (url, shown) = check("HTTPS_PROXY", "http://alice:s3cr3t-pw@proxy.test:3128").unwrap();
        assert_eq!(shown, "http://proxy.test:3128 (with credentials)");
        assert!(url.contains("alice:s3cr3t-pw@"), "reqwest needs them");
        assert_eq!(
            check("ALL_PROXY", "proxy.test:8080").unwrap().1,
            "http://proxy.test:8080"
        );
        let p = proxies(&[("HTTPS_PROXY", "http://alice:s3cr3t-pw@proxy.test:3128")]);
        assert!(!p.describe().contains("s3cr3t"), "{}", p.describe());
    }

    fn proxies(vars: &[(&str, &str)]) -> Proxies {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Proxies::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .unwrap()
    }

    fn via(p: &Proxies, url: &str) -> Option<String> {
        p.for_url(&Url::parse(url).unwrap())
            .map(|i| i.uri().to_string())
    }

    #[test]
    fn each_destination_takes_its_scheme_s_proxy_and_no_proxy_wins() {
        let p = proxies(&[
            ("https_proxy", "http://secure.test:3128"),
            ("HTTP_PROXY", "http://plain.test:8080"),
            ("NO_PROXY", "internal.test,10.0.0.0/8"),
        ]);
        let secure = Some("http://secure.test:3128/");
        assert_eq!(via(&p, "https://chatgpt.com/x").as_deref(), secure);
        assert_eq!(via(&p, "wss://broker.example:443").as_deref(), secure);
        assert_eq!(
            via(&p, "ws://broker.example:80").as_deref(),
            Some("http://plain.test:8080/")
        );
        assert_eq!(via(&p, "https://api.internal.test/"), None);
        assert_eq!(via(&p, "wss://10.1.2.3:9000/"), None);
        let all = proxies(&[("ALL_PROXY", "http://every.test:1")]);
        assert_eq!(
            via(&all, "ws://x.test/").as_deref(),
            Some("http://every.test:1/")
        );
        assert!(proxies(&[]).describe().contains("direct"));
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
