//! Everything about reaching another host: which roots are trusted, which proxy is used, and
//! the TLS client configuration built from them. Built once at start-up and handed to every
//! client the program makes (the backend's, the issuer's, the WebSocket client's, the
//! PostgreSQL store's), so no path can trust or route differently from the others.

mod diagnose;
mod proxy;
mod stream;
mod trust;
mod tunnel;
mod verifier;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;

pub use diagnose::describe_failure;
pub use proxy::Proxies;
pub use stream::{ConnectError, Io};
pub use trust::{BUNDLE_VARIABLES, Source, Trust, read_pem};

/// Why the network settings cannot be used; start-up stops with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("{variable} names {path}, which cannot be used as a certificate bundle: {reason}")]
    Bundle {
        variable: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{variable} cannot be used as a proxy: {reason}")]
    Proxy {
        variable: &'static str,
        reason: String,
    },
}

/// The trusted roots, the proxies and the TLS client configuration; cheap to clone.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

struct Inner {
    trust: Trust,
    proxies: Arc<Proxies>,
    tls: Arc<ClientConfig>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("roots", &self.inner.trust.describe_sources())
            .field("proxies", &self.inner.proxies.describe())
            .finish()
    }
}

impl Network {
    /// The settings the environment gives.
    pub fn from_env() -> Result<Self, NetworkError> {
        Ok(Self::new(Trust::from_env()?, Proxies::from_env()?))
    }

    pub fn new(trust: Trust, proxies: Proxies) -> Self {
        let tls = Arc::new(client_config(&trust));
        Self {
            inner: Arc::new(Inner {
                trust,
                proxies: Arc::new(proxies),
                tls,
            }),
        }
    }

    pub fn trust(&self) -> &Trust {
        &self.inner.trust
    }

    pub fn proxies(&self) -> &Proxies {
        &self.inner.proxies
    }

    /// The TLS client configuration every connection starts from (ALPN unset: each client
    /// sets its own on a copy).
    pub fn tls(&self) -> Arc<ClientConfig> {
        self.inner.tls.clone()
    }

    /// An HTTP client builder with these roots and these proxies (reqwest's own reading of
    /// the environment is off). Every HTTP client of the program starts here.
    pub fn http(&self) -> reqwest::ClientBuilder {
        let mut tls = (*self.inner.tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .proxy(self.inner.proxies.reqwest())
    }

    /// For `login status` and `doctor`: the roots (the system store counted, so parsed)
    /// and the proxies in effect, no secret.
    pub fn describe(&self) -> (String, String) {
        (self.inner.trust.describe(), self.inner.proxies.describe())
    }

    /// The same for the start-up log, without parsing the system store.
    pub fn describe_sources(&self) -> (String, String) {
        (
            self.inner.trust.describe_sources(),
            self.inner.proxies.describe(),
        )
    }
}

/// The one place a TLS client configuration is made: the roots' usual WebPKI checks, with
/// the roots parsed on the first handshake (see `verifier.rs`).
fn client_config(trust: &Trust) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier::LazyRoots::new(
            trust.clone(),
            provider,
        )))
        .with_no_client_auth()
}
