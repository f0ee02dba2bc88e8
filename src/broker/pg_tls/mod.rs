//! PostgreSQL over TLS: libpq's `sslmode` and `sslrootcert` read from the store URL, and the
//! one TLS choice every connection of a store makes with them (the reader, the writer, the
//! change feed, and each of their reconnects), through the program's one rustls stack.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and refuses parameters it
//! does not know, so both are taken out of the URL before it reads it; the checks it cannot
//! make (`verify-ca`, `verify-full`) are made by the certificate verifier instead.
//!
//! Roots: `sslrootcert=FILE` alone when given, as libpq; otherwise the program's own roots
//! (the system store plus `CODEX_CA_CERTIFICATE`), not libpq's `~/.postgresql/root.crt`,
//! so that the one place an operator names a private authority serves PostgreSQL too.

mod binding;
mod connect;
mod verify;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::RootCertStore;
use tokio_postgres::config::{Host, SslMode as DriverMode};

pub(crate) use connect::{MakeRustls, RustlsStream};
use verify::{Check, Verifier};

use super::error::StoreError;
use crate::net::Network;

/// The driver's configuration for the store URL `url`, and the TLS its connections use;
/// warns once when the choice is weak for where the server is. `network` gives the
/// program's roots (`None`: read from the environment, as start-up would).
pub(crate) fn configure(
    url: &str,
    network: Option<&Network>,
) -> Result<(tokio_postgres::Config, PgTls), StoreError> {
    let (url, settings) = TlsSettings::take_from(url)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| StoreError::Url)?;
    let tls = match network {
        Some(network) => settings.resolve(network)?,
        None => settings.resolve(&Network::from_env().map_err(TlsSettingError::from)?)?,
    };
    tls.apply(&mut config);
    if let Some(warning) = tls.warning(&config) {
        tracing::warn!("{warning}");
    }
    Ok((config, tls))
}

/// libpq's `sslmode` values, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SslMode {
    Disable,
    /// Taken as `prefer`: libpq tries plain first and TLS second, tokio-postgres can only
    /// try TLS first; either way the connection may be plain and nothing is checked.
    Allow,
    /// libpq's default.
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<SslMode> {
        Self::ALL.into_iter().find(|mode| mode.name() == text)
    }
}

/// Why the URL's TLS settings cannot be used; start-up stops with it. Values from the URL
/// are not quoted (a misplaced password must not end up in a log), except the root file's
/// path, which the operator needs to see.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingError {
    #[error(
        "the sslmode in the PostgreSQL store URL is not one of disable, allow, prefer, \
         require, verify-ca, verify-full"
    )]
    Mode,
    #[error("the sslrootcert in the PostgreSQL store URL names no file")]
    EmptyRootCert,
    #[error("sslrootcert names {path}, which cannot be used as PostgreSQL's roots: {reason}")]
    RootCert { path: PathBuf, reason: String },
    #[error(
        "sslrootcert=system needs sslmode=verify-full (as libpq), not sslmode={0}: the \
         system's roots vouch for many names, so only a checked host name means anything"
    )]
    SystemNeedsVerifyFull(&'static str),
    #[error("{0} in the PostgreSQL store URL is not supported: client certificates are not")]
    Unsupported(&'static str),
    #[error(transparent)]
    Network(#[from] crate::net::NetworkError),
}

/// libpq parameters this store cannot honour; refused by name rather than left to the
/// driver, whose error would not say which one.
const UNSUPPORTED: [&str; 5] = ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

/// Where the roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    File(PathBuf),
    /// libpq's `sslrootcert=system`: here the program's roots, which include the system's.
    System,
}

/// The TLS parameters of a store URL, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    mode: Option<SslMode>,
    root_cert: Option<RootCert>,
}

impl TlsSettings {
    /// Takes `sslmode` and `sslrootcert` out of `url`; returns the rest for tokio-postgres.
    pub(crate) fn take_from(url: &str) -> Result<(String, TlsSettings), TlsSettingError> {
        // tokio-postgres reads the credentials up to the first `@`; the query starts at
        // the first `?` after them (a password may hold a `?`).
        let host_start = url.find('@').map_or(0, |at| at + 1);
        let Some(mark) = url[host_start..].find('?').map(|i| host_start + i) else {
            return Ok((url.to_owned(), TlsSettings::default()));
        };
        let mut settings = TlsSettings::default();
        let mut kept = Vec::new();
        for pair in url[mark + 1..].split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || percent_decode_str(value).decode_utf8_lossy();
            match &*percent_decode_str(key).decode_utf8_lossy() {
                "sslmode" => {
                    settings.mode = Some(SslMode::parse(&value()).ok_or(TlsSettingError::Mode)?)
                }
                "sslrootcert" => {
                    settings.root_cert = Some(match &*value() {
                        "" => return Err(TlsSettingError::EmptyRootCert),
                        "system" => RootCert::System,
                        path => RootCert::File(PathBuf::from(path)),
                    })
                }
                other => {
                    if let Some(name) = UNSUPPORTED.into_iter().find(|name| *name == other) {
                        return Err(TlsSettingError::Unsupported(name));
                    }
                    kept.push(pair);
                }
            }
        }
        let mut rest = url[..mark].to_owned();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        Ok((rest, settings))
    }

    /// Reads the roots and makes the TLS configuration; `network` gives the program's roots.
    pub(crate) fn resolve(&self, network: &Network) -> Result<PgTls, TlsSettingError> {
        let system = self.root_cert == Some(RootCert::System);
        let mode = match self.mode {
            None if system => SslMode::VerifyFull,
            Some(mode) if system && mode != SslMode::VerifyFull => {
                return Err(TlsSettingError::SystemNeedsVerifyFull(mode.name()));
            }
            mode => mode.unwrap_or(SslMode::Prefer),
        };
        let file = match &self.root_cert {
            Some(RootCert::File(path)) => Some((path.clone(), read_roots(path)?)),
            _ => None,
        };
        let (roots, trusting) = match &file {
            Some((path, roots)) => (
                roots.clone(),
                format!(
                    "trusting only sslrootcert {}, not the program's roots",
                    path.display()
                ),
            ),
            None => (
                network.trust().roots(),
                format!("trusting {}", network.trust().describe()),
            ),
        };
        let check = match mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => Check::Nothing,
            // libpq: `require` with a root file checks the chain, as `verify-ca`.
            SslMode::Require if file.is_none() => Check::Nothing,
            SslMode::Require | SslMode::VerifyCa => Check::Chain(roots),
            SslMode::VerifyFull => Check::ChainAndName(roots),
        };
        let checks_chain = !matches!(check, Check::Nothing);
        let setting = match checks_chain {
            false => format!("sslmode={}, no certificate check", mode.name()),
            true => format!("sslmode={}, {trusting}", mode.name()),
        };
        let mut config = (*network.tls()).clone();
        let algorithms = config.crypto_provider().signature_verification_algorithms;
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(Verifier::new(check, algorithms)));
        // What libpq offers; a server that checks ALPN (PostgreSQL 17) expects it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgTls {
            mode,
            written: self.mode,
            checks_chain,
            setting,
            connector: MakeRustls::new(Arc::new(config)),
        })
    }
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsSettingError> {
    let refuse = |reason: String| TlsSettingError::RootCert {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(crate::net::read_pem(path).map_err(refuse)?);
    if added == 0 {
        return Err(refuse("it holds no usable certificate".into()));
    }
    Ok(Arc::new(roots))
}

/// The TLS one store uses on every connection it makes.
#[derive(Clone)]
pub(crate) struct PgTls {
    mode: SslMode,
    /// As the URL says, for the warning: `None` is libpq's default.
    written: Option<SslMode>,
    checks_chain: bool,
    /// The mode and the roots, for error messages.
    setting: String,
    connector: MakeRustls,
}

impl PgTls {
    /// Sets the driver's half of the choice: whether TLS is tried or required.
    pub(crate) fn apply(&self, config: &mut tokio_postgres::Config) {
        let unix_only = !config.get_hosts().is_empty()
            && config.get_hostaddrs().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| !matches!(h, Host::Tcp(_)));
        config.ssl_mode(match self.mode {
            // PostgreSQL offers no TLS on a Unix socket and libpq does not ask for it there.
            _ if unix_only => DriverMode::Disable,
            SslMode::Disable => DriverMode::Disable,
            SslMode::Allow | SslMode::Prefer => DriverMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
        });
    }

    pub(crate) fn connector(&self) -> MakeRustls {
        self.connector.clone()
    }

    /// A failed connect as the store tells it: a certificate or handshake failure in
    /// `net::describe_failure`'s words, with the mode and the roots that decided it.
    pub(crate) fn connect_error(&self, error: tokio_postgres::Error) -> StoreError {
        match crate::net::describe_failure(&error) {
            Some(detail) => StoreError::Tls {
                setting: self.setting.clone(),
                detail,
            },
            None => StoreError::db("connecting")(error),
        }
    }

    /// The start-up warning when the server is not on this machine and a mode below
    /// `verify-full` lets someone on the path read or impersonate it.
    pub(crate) fn warning(&self, config: &tokio_postgres::Config) -> Option<String> {
        if self.mode == SslMode::VerifyFull {
            return None;
        }
        let host = remote_host(config)?;
        let mode = match self.written {
            Some(mode) => format!("sslmode={}", mode.name()),
            None => "no sslmode (libpq's default, prefer)".to_owned(),
        };
        let gap = match self.mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => {
                "may travel in clear and the server's certificate is not checked"
            }
            SslMode::Require if !self.checks_chain => {
                "is encrypted but the server's certificate is not checked"
            }
            _ => "is encrypted but the certificate is not checked to name this host",
        };
        Some(format!(
            "the PostgreSQL store at {host} is not on this machine and, with {mode}, the \
             connection {gap}: set sslmode=verify-full in the store URL (with \
             sslrootcert=FILE when the server's authority is private)"
        ))
    }
}

/// The first host of `config` that is not this machine, as the URL names it.
fn remote_host(config: &tokio_postgres::Config) -> Option<String> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    (0..hosts.len().max(addrs.len())).find_map(|i| {
        // The address, when given, is where the connection goes; the name is only checked.
        let local = match (addrs.get(i), hosts.get(i)) {
            (Some(addr), _) => addr.is_loopback(),
            (None, Some(Host::Tcp(name))) => is_local_name(name),
            (None, Some(Host::Unix(_))) => true,
            (None, None) => true,
        };
        (!local).then(|| match (hosts.get(i), addrs.get(i)) {
            (Some(Host::Tcp(name)), _) => name.clone(),
            (_, Some(addr)) => addr.to_string(),
            _ => String::new(),
        })
    })
}

fn is_local_name(name: &str) -> bool {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

#[cfg(test)]
mod tests;
