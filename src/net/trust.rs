//! Which certificate authorities every outbound TLS connection trusts: the operating
//! system's store, plus the bundle an enterprise names in `CODEX_CA_CERTIFICATE` (or, when
//! that is unset or empty, `SSL_CERT_FILE`), the names and order Codex reads, so one
//! environment serves both programs.
//!
//! A named bundle that cannot be used stops start-up: trusting less than the operator asked
//! for would only surface later as certificate failures far from their cause.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::NetworkError;

/// The variables naming an extra bundle, in the order they are read.
pub const BUNDLE_VARIABLES: [&str; 2] = ["CODEX_CA_CERTIFICATE", "SSL_CERT_FILE"];

/// The roots in effect and where they came from (for `login status` and the logs). Cheap to
/// clone. The named bundle is read and checked at start-up; the system store, a few hundred
/// certificates, is parsed only when a first connection needs it, so a server that never
/// makes one (or not yet) pays neither the milliseconds nor the memory.
#[derive(Clone)]
pub struct Trust {
    inner: Arc<Inner>,
}

struct Inner {
    system_path: Option<PathBuf>,
    bundle: Option<(&'static str, Source, Vec<CertificateDer<'static>>)>,
    loaded: OnceLock<Loaded>,
}

struct Loaded {
    roots: Arc<RootCertStore>,
    system: usize,
}

/// One file of certificates and how many of them were usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub certificates: usize,
}

impl Trust {
    /// The system store and the bundle the environment names.
    pub fn from_env() -> Result<Self, NetworkError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let bundle = BUNDLE_VARIABLES
            .iter()
            .find_map(|name| var(name).map(|path| (*name, PathBuf::from(path))));
        Self::load(system_bundle().as_deref(), bundle)
    }

    /// The roots of `system` (when the platform keeps them in a file) and of `bundle`, a
    /// file named by the variable given with it, which is read and checked now.
    pub fn load(
        system: Option<&Path>,
        bundle: Option<(&'static str, PathBuf)>,
    ) -> Result<Self, NetworkError> {
        let bundle = match bundle {
            Some((variable, path)) => {
                let refused = |reason| NetworkError::Bundle {
                    variable,
                    path: path.clone(),
                    reason,
                };
                // The system bundle itself (many machines point SSL_CERT_FILE at it) is the
                // platform's, like the system store: its certificates are counted now and
                // decoded only when a first connection needs them (decoding a few hundred
                // took 2-3 ms of start-up and held their copies for nothing).
                let (certs, usable) = if system.is_some_and(|system| same_file(&path, system)) {
                    (Vec::new(), count_pem_certificates(&path).map_err(refused)?)
                } else {
                    let certs = read_pem(&path).map_err(refused)?;
                    let usable = RootCertStore::empty()
                        .add_parsable_certificates(certs.clone())
                        .0;
                    (certs, usable)
                };
                if usable == 0 {
                    return Err(NetworkError::Bundle {
                        variable,
                        path,
                        reason: "it holds no usable certificate".into(),
                    });
                }
                let source = Source {
                    path,
                    certificates: usable,
                };
                Some((variable, source, certs))
            }
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                system_path: system.map(Path::to_owned),
                bundle,
                loaded: OnceLock::new(),
            }),
        })
    }

    /// Every trusted root: parsed on the first call.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.loaded().roots.clone()
    }

    fn loaded(&self) -> &Loaded {
        self.inner.loaded.get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let system = match &self.inner.system_path {
                // A broken system store is the platform's business; what loads is used.
                Some(path) => read_pem(path)
                    .map(|certs| roots.add_parsable_certificates(certs).0)
                    .unwrap_or(0),
                None => native_roots(&mut roots),
            };
            if let Some((_, source, certs)) = &self.inner.bundle {
                // Often the system bundle itself (SSL_CERT_FILE pointing at it): its roots are
                // in already, and holding them twice would only cost memory.
                let same = system > 0
                    && self
                        .inner
                        .system_path
                        .as_deref()
                        .is_some_and(|p| same_file(&source.path, p));
                if !same {
                    roots.add_parsable_certificates(certs.iter().cloned());
                }
            }
            if roots.is_empty() {
                tracing::warn!(
                    "no trusted root certificates: the system has none and no bundle is \
                     named; every TLS connection will fail (set CODEX_CA_CERTIFICATE)"
                );
            }
            Loaded {
                roots: Arc::new(roots),
                system,
            }
        })
    }

    /// The variable that named the extra bundle, and the bundle.
    pub fn bundle(&self) -> Option<(&'static str, &Source)> {
        self.inner.bundle.as_ref().map(|(v, s, _)| (*v, s))
    }

    /// One line for people: which roots are trusted, with the system store counted (which
    /// parses it).
    pub fn describe(&self) -> String {
        let system = self.loaded().system;
        self.describe_with(Some(system))
    }

    /// The same without parsing the system store: for the start-up log.
    pub fn describe_sources(&self) -> String {
        self.describe_with(self.inner.loaded.get().map(|l| l.system))
    }

    fn describe_with(&self, system_count: Option<usize>) -> String {
        let count = |n: usize| match n {
            1 => "1 certificate".to_owned(),
            n => format!("{n} certificates"),
        };
        let mut system = match &self.inner.system_path {
            Some(path) => format!("system store {}", path.display()),
            None => "system store".to_owned(),
        };
        if let Some(n) = system_count {
            system.push_str(&format!(" ({})", count(n)));
        }
        match &self.inner.bundle {
            Some((variable, source, _)) => format!(
                "{system} plus {variable}={} ({})",
                source.path.display(),
                count(source.certificates)
            ),
            None => system,
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// How many certificate sections a PEM file has, without decoding them.
fn count_pem_certificates(path: &Path) -> Result<usize, String> {
    let bytes = read_file(path)?;
    // memchr's substring search: comparing every window of a system bundle (200 KB) was
    // three quarters of the instructions from exec to the `initialize` answer.
    let count = memchr::memmem::find_iter(&bytes, b"-----BEGIN CERTIFICATE-----").count();
    if count == 0 {
        return Err("it holds no certificate".into());
    }
    Ok(count)
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => format!("it cannot be read ({e})"),
    })
}

/// Reads every certificate of a PEM file; other PEM sections (a key) are skipped.
pub fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("it is not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err("it holds no certificate".into());
    }
    Ok(certs)
}

/// Where this platform keeps its bundle of trusted roots. Read directly rather than through
/// `rustls-native-certs`, which replaces the system store with `SSL_CERT_FILE` when that is
/// set, whereas here the variable adds to it.
#[cfg(all(unix, not(target_os = "macos")))]
fn system_bundle() -> Option<PathBuf> {
    // Debian and Ubuntu, Fedora and RHEL, openSUSE, Alpine and the BSDs, in that order.
    const CANDIDATES: [&str; 6] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
        "/usr/local/share/certs/ca-root-nss.crt",
    ];
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn system_bundle() -> Option<PathBuf> {
    None
}

/// The platform's store where it is not a file (Keychain, the Windows store).
#[cfg(not(all(unix, not(target_os = "macos"))))]
fn native_roots(roots: &mut RootCertStore) -> usize {
    let loaded = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(loaded.certs).0
}

#[cfg(all(unix, not(target_os = "macos")))]
fn native_roots(_: &mut RootCertStore) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_error(contents: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, contents).unwrap();
        match Trust::load(None, Some(("CODEX_CA_CERTIFICATE", path.clone()))) {
            Ok(_) => panic!("a bad bundle was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_bundle_that_cannot_be_used_is_refused_naming_the_variable_and_the_file() {
        let missing = Trust::load(
            None,
            Some(("SSL_CERT_FILE", PathBuf::from("no-such-dir/bundle.pem"))),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(missing.contains("SSL_CERT_FILE"), "{missing}");
        assert!(missing.contains("no-such-dir/bundle.pem"), "{missing}");
        assert!(missing.contains("no such file"), "{missing}");

        let empty = bundle_error(b"just some text\n");
        assert!(empty.contains("CODEX_CA_CERTIFICATE"), "{empty}");
        assert!(empty.contains("holds no certificate"), "{empty}");

        let garbage = bundle_error(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        );
        assert!(garbage.contains("no usable certificate"), "{garbage}");
    }

    #[test]
    fn the_system_store_is_parsed_only_when_a_connection_needs_it() {
        let trust = Trust::load(system_bundle().as_deref(), None).unwrap();
        assert!(
            !trust.describe_sources().contains(" ("),
            "no count before parsing"
        );
        assert!(trust.inner.loaded.get().is_none(), "parsed at start-up");
        let roots = trust.roots();
        assert!(trust.inner.loaded.get().is_some());
        assert!(Arc::ptr_eq(&roots, &trust.roots()), "parsed once");
    }

    #[test]
    fn a_bundle_adds_to_the_system_store() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let system = Trust::load(system_bundle().as_deref(), None).unwrap();
        let both = Trust::load(
            system_bundle().as_deref(),
            Some(("CODEX_CA_CERTIFICATE", path.clone())),
        )
        .unwrap();
        assert_eq!(both.roots().len(), system.roots().len() + 1);
        assert_eq!(both.bundle().unwrap().1.certificates, 1);
        assert!(
            both.describe()
                .contains(&format!("CODEX_CA_CERTIFICATE={}", path.display()))
        );
    }

    #[test]
    fn the_system_bundle_named_by_ssl_cert_file_is_counted_at_start_up_and_decoded_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.pem");
        let pem: String = (0..3)
            .map(|i| {
                rcgen::generate_simple_self_signed(vec![format!("ca{i}.test")])
                    .unwrap()
                    .cert
                    .pem()
            })
            .collect();
        std::fs::write(&path, pem).unwrap();
        let trust = Trust::load(Some(&path), Some(("SSL_CERT_FILE", path.clone()))).unwrap();
        assert_eq!(trust.bundle().unwrap().1.certificates, 3);
        assert!(trust.inner.loaded.get().is_none(), "decoded at start-up");
        assert_eq!(trust.roots().len(), 3, "each root once");

        std::fs::write(&path, "no certificate here").unwrap();
        let refused = Trust::load(Some(&path), Some(("SSL_CERT_FILE", path.clone())));
        let message = refused
            .err()
            .expect("an empty bundle is refused")
            .to_string();
        assert!(message.contains("SSL_CERT_FILE"), "{message}");
    }
}
