//! Serving `wss://`: the certificate and key files an operator names, and the rustls
//! acceptor built on them.
//!
//! The files are re-read when they change, because cert-manager and ACME clients renew
//! certificates by replacing the files in place (often by rename) and expect the server
//! to notice without a restart. Looking costs two `stat` calls, done at most once per
//! [`CHECK_EVERY`] from inside a handshake, so an idle server does nothing and a busy one
//! does not read files per connection. A renewal that cannot be used (a file half
//! written, a key that does not match yet) keeps the last good pair in service and is
//! reported once, since the next write usually completes it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::unpoisoned::lock;

/// How often the files are looked at again, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why the certificate files cannot be served. Never carries key material: each reason is
/// worded here, not taken from a parser that might quote its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("--tls-key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("--tls-key {} does not belong to the certificate in --tls-cert {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// The certificate chain file and the private key file of a `wss://` listener.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

/// What a `wss://` listener needs: the acceptor, presenting the current pair.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Loads the pair once, so that a broken setup stops start-up, and serves it from then
    /// on, following renewals of the files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let resolver = Reloading::new(
            Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            CHECK_EVERY,
        )?;
        Ok(Self::with_resolver(Arc::new(resolver)))
    }

    fn with_resolver(resolver: Arc<dyn ResolvesServerCert>) -> Self {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        // The WebSocket upgrade is HTTP/1.1; a client offering only h2 is refused in the
        // handshake rather than after it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the pair and checks that the key belongs to the first certificate.
fn load(files: &Files) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = crate::net::read_pem(&files.cert).map_err(|reason| TlsError::Certificate {
        path: files.cert.clone(),
        reason,
    })?;
    let key_error = |reason: &str| TlsError::Key {
        path: files.key.clone(),
        reason: reason.to_owned(),
    };
    let bytes = zeroize::Zeroizing::new(std::fs::read(&files.key).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => key_error("no such file"),
        _ => key_error(&format!("it cannot be read ({})", e.kind())),
    })?);
    // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) sections alike.
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| key_error("it holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| key_error("the private key cannot be used (unsupported or damaged)"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(_) => Err(TlsError::Certificate {
            path: files.cert.clone(),
            reason: "its first certificate cannot be parsed".into(),
        }),
    }
}

/// What identifies one version of a file without reading it: a rename changes the inode,
/// a rewrite the modification time or the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl FileStamp {
    /// A file that cannot be looked at gets the empty stamp: it differs from any loaded
    /// one, and loading it then says why.
    fn of(path: &Path) -> Self {
        let Ok(meta) = std::fs::metadata(path) else {
            return Self::default();
        };
        #[cfg(unix)]
        let (inode, device) = {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.dev())
        };
        #[cfg(not(unix))]
        let (inode, device) = (0, 0);
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
            device,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    cert: FileStamp,
    key: FileStamp,
}

impl Stamp {
    fn of(files: &Files) -> Self {
        Self {
            cert: FileStamp::of(&files.cert),
            key: FileStamp::of(&files.key),
        }
    }
}

/// What a look at the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// Too soon since the last look, or the files are as they were.
    Unchanged,
    /// The files changed and the new pair is now served.
    Reloaded,
    /// The files changed into something unusable; the previous pair is still served.
    Refused(TlsError),
    /// The files are as they were when last refused.
    StillRefused,
}

/// A certificate resolver that follows renewals of its files.
struct Reloading {
    files: Files,
    every: Duration,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    /// The files' stamp when `current` was read from them.
    loaded: Stamp,
    /// The version of the files last refused, so it is reported once.
    refused: Option<Stamp>,
    checked: Instant,
}

impl fmt::Debug for Reloading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl Reloading {
    fn new(files: Files, every: Duration) -> Result<Self, TlsError> {
        // Stamped before reading: a write landing in between is then seen as a change.
        let loaded = Stamp::of(&files);
        let current = load(&files)?;
        Ok(Self {
            files,
            every,
            state: Mutex::new(State {
                current,
                loaded,
                refused: None,
                checked: Instant::now(),
            }),
        })
    }

    /// Looks at the files when the last look is at least `every` old, and loads them when
    /// they changed. The files are read without holding the lock.
    fn check(&self, now: Instant) -> Check {
        {
            let mut state = lock(&self.state);
            if now.saturating_duration_since(state.checked) < self.every {
                return Check::Unchanged;
            }
            state.checked = now;
        }
        let stamp = Stamp::of(&self.files);
        {
            let state = lock(&self.state);
            if stamp == state.loaded {
                return Check::Unchanged;
            }
            if state.refused == Some(stamp) {
                return Check::StillRefused;
            }
        }
        let loaded = load(&self.files);
        let mut state = lock(&self.state);
        match loaded {
            Ok(pair) => {
                state.current = pair;
                state.loaded = stamp;
                state.refused = None;
                Check::Reloaded
            }
            Err(error) => {
                state.refused = Some(stamp);
                Check::Refused(error)
            }
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        lock(&self.state).current.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.check(Instant::now()) {
            Check::Unchanged | Check::StillRefused => {}
            Check::Reloaded => tracing::info!(
                cert = %self.files.cert.display(),
                "renewed TLS certificate loaded; new connections present it"
            ),
            Check::Refused(error) => tracing::warn!(
                error = %error,
                "the TLS files changed but cannot be used; still presenting the previous \
                 certificate"
            ),
        }
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir {
        dir: tempfile::TempDir,
    }

    fn pair(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    impl Dir {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn files(&self) -> Files {
            Files {
                cert: self.dir.path().join("tls.crt"),
                key: self.dir.path().join("tls.key"),
            }
        }

        /// Replaces both files by rename, as cert-manager does.
        fn install(&self, cert: &str, key: &str) {
            let files = self.files();
            for (path, text) in [(&files.cert, cert), (&files.key, key)] {
                let staged = path.with_extension("new");
                std::fs::write(&staged, text).unwrap();
                std::fs::rename(&staged, path).unwrap();
            }
        }
    }

    fn served_cert(resolver: &Reloading) -> Vec<u8> {
        resolver.current().cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn each_unusable_pair_is_refused_naming_the_flag_and_the_file() {
        let dir = Dir::new();
        let files = dir.files();
        let missing = load(&files).unwrap_err().to_string();
        assert!(missing.starts_with("--tls-cert "), "{missing}");
        assert!(missing.contains("tls.crt: no such file"), "{missing}");

        let (cert, key) = pair(&["a.test"]);
        std::fs::write(&files.cert, "no PEM here\n").unwrap();
        let empty = load(&files).unwrap_err().to_string();
        assert!(empty.contains("holds no certificate"), "{empty}");

        std::fs::write(&files.cert, &cert).unwrap();
        let no_key = load(&files).unwrap_err().to_string();
        assert!(no_key.starts_with("--tls-key "), "{no_key}");
        assert!(no_key.contains("tls.key: no such file"), "{no_key}");

        std::fs::write(&files.key, &cert).unwrap();
        let not_a_key = load(&files).unwrap_err().to_string();
        assert!(
            not_a_key.contains("holds no PEM private key"),
            "{not_a_key}"
        );

        let (_, other_key) = pair(&["b.test"]);
        std::fs::write(&files.key, &other_key).unwrap();
        let mismatch = load(&files).unwrap_err();
        assert!(matches!(mismatch, TlsError::Mismatch { .. }), "{mismatch}");
        let shown = mismatch.to_string();
        assert!(
            shown.contains("tls.key") && shown.contains("tls.crt"),
            "{shown}"
        );
        assert!(!shown.contains("PRIVATE"), "{shown}");

        std::fs::write(&files.key, &key).unwrap();
        assert!(load(&files).is_ok());
    }

    #[test]
    fn a_key_in_sec1_form_is_accepted() {
        let dir = Dir::new();
        let files = dir.files();
        // SEC1: what `openssl ecparam -genkey` writes.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let sec1 = sec1_from_pkcs8(pkcs8.secret_pkcs8_der());
        let sec1_pem = pem_section("EC PRIVATE KEY", &sec1);
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, sec1_pem).unwrap();
        assert!(load(&files).is_ok(), "{:?}", load(&files).err());
    }

    /// One DER element: its tag, its contents and what follows it.
    fn element(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = match input[1] {
            short @ 0..0x80 => (short as usize, 2),
            long => {
                let n = (long & 0x7f) as usize;
                let len = input[2..2 + n]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | *b as usize);
                (len, 2 + n)
            }
        };
        (
            input[0],
            &input[header..header + len],
            &input[header + len..],
        )
    }

    /// The ECPrivateKey a PKCS#8 PrivateKeyInfo wraps:
    /// SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING { ECPrivateKey } }.
    fn sec1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        let (_, info, _) = element(pkcs8);
        let (_, _, after_version) = element(info);
        let (_, _, after_algorithm) = element(after_version);
        let (tag, key, _) = element(after_algorithm);
        assert_eq!(tag, 0x04, "an OCTET STRING");
        key.to_vec()
    }

    fn pem_section(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn renewed_files_are_served_and_a_broken_renewal_keeps_the_last_good_pair() {
        let dir = Dir::new();
        let (first_cert, first_key) = pair(&["a.test"]);
        dir.install(&first_cert, &first_key);
        let resolver = Reloading::new(dir.files(), Duration::ZERO).unwrap();
        assert_eq!(resolver.check(Instant::now()), Check::Unchanged);
        assert_eq!(served_cert(&resolver), der(&first_cert));

        let (second_cert, second_key) = pair(&["a.test"]);
        dir.install(&second_cert, &second_key);
        assert_eq!(resolver.check(Instant::now()), Check::Reloaded);
        assert_eq!(served_cert(&resolver), der(&second_cert));

        // Half written: the certificate cut short.
        let (third_cert, third_key) = pair(&["a.test"]);
        dir.install(&third_cert[..third_cert.len() / 2], &third_key);
        assert!(matches!(
            resolver.check(Instant::now()),
            Check::Refused(TlsError::Certificate { .. })
        ));
        assert_eq!(resolver.check(Instant::now()), Check::StillRefused);
        assert_eq!(served_cert(&resolver), der(&second_cert));

        // The write completes.
        dir.install(&third_cert, &third_key);
        assert_eq!(resolver.check(Instant::now()), Check::Reloaded);
        assert_eq!(served_cert(&resolver), der(&third_cert));
    }

    #[test]
    fn the_files_are_looked_at_once_per_interval_at_most() {
        let dir = Dir::new();
        let (cert, key) = pair(&["a.test"]);
        dir.install(&cert, &key);
        let resolver = Reloading::new(dir.files(), Duration::from_secs(3600)).unwrap();
        let (renewed_cert, renewed_key) = pair(&["a.test"]);
        dir.install(&renewed_cert, &renewed_key);
        let start = Instant::now();
        assert_eq!(resolver.check(start), Check::Unchanged);
        assert_eq!(served_cert(&resolver), der(&cert));
        assert_eq!(
            resolver.check(start + Duration::from_secs(3600)),
            Check::Reloaded
        );
        assert_eq!(served_cert(&resolver), der(&renewed_cert));
    }
}
