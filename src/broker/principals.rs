//! Who may ask the broker for what: principals, each known by the SHA-256 of its bearer
//! token(s), bound to the credentials it may read and refresh, and maybe an admin.
//!
//! `--principals FILE` is TOML (`[[principal]]` tables); it is looked at again once a second
//! and at every upgrade, and re-read when its fingerprint changed. A file that no longer
//! parses keeps the last good set in effect (with a warning); at start-up it stops the
//! broker. Without the file, `--ws-token-file`/`--ws-token-sha256` (or nothing, on
//! loopback) make one admin principal over `default`.
//!
//! The token's digest is compared with every known digest, all of them every time, in
//! constant time: how long an upgrade takes says nothing about which digests exist.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::transport::{Admission, BearerGate};
use crate::vocabulary::CredentialName;

/// How often the file's fingerprint is looked at besides at each upgrade.
const POLL: Duration = Duration::from_secs(1);
/// A principals file larger than this is refused before parsing.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One principal as the handlers see it. Never holds a token; its digests stay private.
#[derive(Debug)]
pub(crate) struct Principal {
    pub name: String,
    pub credentials: BTreeSet<CredentialName>,
    pub admin: bool,
    digests: Vec<[u8; 32]>,
}

impl Principal {
    /// Whether it may read and refresh `name`.
    pub fn may_use(&self, name: &CredentialName) -> bool {
        self.credentials.contains(name)
    }
}

/// What the gate remembers of an admitted connection: the digest it came in with, so its
/// principal is looked up afresh (bindings may change) and it is closed when the digest is
/// gone. `None`: no token was required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    digest: Option<[u8; 32]>,
}

/// One set of principals, as one reading of the file gave it.
#[derive(Debug)]
pub(crate) struct Principals {
    principals: Vec<Arc<Principal>>,
    /// Without any token configured (loopback only): the principal every connection is.
    open: Option<Arc<Principal>>,
}

/// Why a principals file cannot be used. Never quotes the file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PrincipalsError {
    #[error("cannot read the principals file {}: {why}", path.display())]
    Read { path: PathBuf, why: String },
    #[error("the principals file {} is not valid: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    principal: Vec<PrincipalToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalToml {
    name: String,
    token_sha256: Vec<String>,
    #[serde(default)]
    credentials: Vec<CredentialName>,
    #[serde(default)]
    admin: bool,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Principals {
    /// The one admin principal over `default` of a broker started without `--principals`.
    pub fn single(digest: Option<[u8; 32]>) -> Self {
        let principal = Arc::new(Principal {
            name: crate::broker::ops::DEFAULT_PRINCIPAL.into(),
            credentials: BTreeSet::from([CredentialName::default()]),
            admin: true,
            digests: digest.into_iter().collect(),
        });
        match digest {
            Some(_) => Self {
                principals: vec![principal],
                open: None,
            },
            None => Self {
                principals: Vec::new(),
                open: Some(principal),
            },
        }
    }

    /// Parses the file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PrincipalsError> {
        let invalid = |why: String| PrincipalsError::Invalid {
            path: path.to_owned(),
            why,
        };
        let file: FileToml = toml::from_str(text).map_err(|e| {
            // The message only: toml's rendering quotes the offending line.
            let at = e
                .span()
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default();
            invalid(format!("{}{at}", e.message().trim()))
        })?;
        let mut names = HashSet::new();
        let mut seen = HashSet::new();
        let mut principals = Vec::new();
        for p in file.principal {
            if p.name.trim().is_empty() {
                return Err(invalid("a principal has an empty name".into()));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(format!("principal {:?} appears twice", p.name)));
            }
            if p.token_sha256.is_empty() {
                return Err(invalid(format!(
                    "principal {:?} has no token_sha256",
                    p.name
                )));
            }
            let mut digests = Vec::new();
            for (i, hex) in p.token_sha256.iter().enumerate() {
                let digest = crate::transport::ws::parse_hex_digest(hex).ok_or_else(|| {
                    invalid(format!(
                        "principal {:?}: token_sha256 entry {} is not 64 hex characters",
                        p.name,
                        i + 1
                    ))
                })?;
                if !seen.insert(digest) {
                    return Err(invalid(format!(
                        "principal {:?}: token_sha256 entry {} is already another entry",
                        p.name,
                        i + 1
                    )));
                }
                digests.push(digest);
            }
            principals.push(Arc::new(Principal {
                name: p.name,
                credentials: p.credentials.into_iter().collect(),
                admin: p.admin,
                digests,
            }));
        }
        Ok(Self {
            principals,
            open: None,
        })
    }

    /// The principal whose digest matches `admitted`'s.
    fn resolve(&self, admitted: &Admitted) -> Option<Arc<Principal>> {
        match admitted.digest {
            None => self.open.clone(),
            Some(digest) => self.by_digest(&digest),
        }
    }

    /// Looks at every digest of every principal, whatever matches, without branching on
    /// the comparisons.
    fn by_digest(&self, digest: &[u8; 32]) -> Option<Arc<Principal>> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, p) in self.principals.iter().enumerate() {
            for d in &p.digests {
                let eq = digest.ct_eq(d);
                index = u32::conditional_select(&index, &(i as u32), eq);
                found |= eq;
            }
        }
        bool::from(found).then(|| self.principals[index as usize].clone())
    }

    fn admit(&self, bearer: Option<&str>) -> Option<Admitted> {
        if self.open.is_some() {
            return Some(Admitted { digest: None });
        }
        let digest = crate::transport::ws::token_digest(bearer?);
        self.by_digest(&digest).map(|_| Admitted {
            digest: Some(digest),
        })
    }
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

fn load(path: &Path) -> Result<Principals, PrincipalsError> {
    let read = |why: String| PrincipalsError::Read {
        path: path.to_owned(),
        why,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| read(e.to_string()))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(read(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let bytes = crate::regular_file::read(path).map_err(|e| read(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| read("not UTF-8".into()))?;
    Principals::parse(text, path)
}

struct Source {
    path: PathBuf,
    seen: Mutex<Option<Fingerprint>>,
}

/// The principals in effect, re-read when their file changes; the broker's [`BearerGate`].
pub(crate) struct PrincipalGate {
    current: watch::Sender<Arc<Principals>>,
    source: Option<Source>,
}

impl PrincipalGate {
    /// A set that never changes (no `--principals`).
    pub fn fixed(principals: Principals) -> Arc<Self> {
        Arc::new(Self {
            current: watch::Sender::new(Arc::new(principals)),
            source: None,
        })
    }

    /// Reads `path`; a file that cannot be used stops start-up.
    pub fn from_file(path: &Path) -> Result<Arc<Self>, PrincipalsError> {
        let seen = fingerprint(path);
        let principals = load(path)?;
        tracing::info!(
            path = %path.display(),
            principals = principals.principals.len(),
            "principals loaded"
        );
        Ok(Arc::new(Self {
            current: watch::Sender::new(Arc::new(principals)),
            source: Some(Source {
                path: path.to_owned(),
                seen: Mutex::new(seen),
            }),
        }))
    }

    /// Re-reads the file when its fingerprint moved. A file that no longer parses keeps the
    /// set in effect, with a warning (once per version of the file).
    pub fn reload_if_changed(&self) {
        let Some(source) = &self.source else { return };
        let now = fingerprint(&source.path);
        {
            let mut seen = crate::unpoisoned::lock(&source.seen);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match load(&source.path) {
            Ok(principals) => {
                tracing::info!(
                    path = %source.path.display(),
                    principals = principals.principals.len(),
                    "principals re-read"
                );
                self.current.send_replace(Arc::new(principals));
            }
            Err(e) => tracing::warn!("{e}; the principals read before stay in effect"),
        }
    }

    /// Looks at the file once a second until `shutdown`.
    pub fn watch_file(self: &Arc<Self>, shutdown: CancellationToken) {
        if self.source.is_none() {
            return;
        }
        let gate = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
                let Some(gate) = gate.upgrade() else { return };
                gate.reload_if_changed();
            }
        });
    }

    /// The principal of a connection now; `None` once its token was removed.
    pub fn principal_of(&self, admitted: &Admitted) -> Option<Arc<Principal>> {
        self.current.borrow().resolve(admitted)
    }

    /// Wakes up at every new set, to close connections whose token went away.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Principals>> {
        self.current.subscribe()
    }
}

impl BearerGate for PrincipalGate {
    fn admit(&self, bearer: Option<&str>) -> Option<Admission> {
        self.reload_if_changed();
        let admitted = self.current.borrow().admit(bearer);
        match admitted {
            Some(admitted) => Some(Arc::new(admitted)),
            None => {
                tracing::debug!("WebSocket upgrade refused: no principal has this token");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(token: &str) -> String {
        crate::transport::ws::token_digest(token)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn file(body: &str) -> Result<Principals, PrincipalsError> {
        Principals::parse(body, Path::new("principals.toml"))
    }

    #[test]
    fn a_token_picks_its_principal_and_bindings() {
        let text = format!(
            "[[principal]]\nname = \"ci\"\ntoken_sha256 = [\"{}\", \"{}\"]\ncredentials = [\"team-a\"]\n\n\
             [[principal]]\nname = \"ops\"\ntoken_sha256 = [\"{}\"]\nadmin = true\n",
            hex("old"),
            hex("new"),
            hex("ops")
        );
        let p = file(&text).unwrap();
        for token in ["old", "new"] {
            let a = p.admit(Some(token)).unwrap();
            let ci = p.resolve(&a).unwrap();
            assert_eq!(ci.name, "ci");
            assert!(!ci.admin);
            assert!(ci.may_use(&"team-a".parse().unwrap()));
            assert!(!ci.may_use(&CredentialName::default()));
        }
        assert!(p.resolve(&p.admit(Some("ops")).unwrap()).unwrap().admin);
        assert!(p.admit(Some("other")).is_none());
        assert!(p.admit(None).is_none());
    }

    #[test]
    fn a_broken_file_says_why_without_quoting_it() {
        let e = file("[[principal]]\nname = \"x\"\ntoken_sha256 = [\"sk-SECRET\"]\n").unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("entry 1 is not 64 hex"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
        let e = file("[[principal]]\nname = \"x\"\ntoken_sha256 = sk-SECRET\n").unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("line 3"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
        let twice = format!(
            "[[principal]]\nname = \"a\"\ntoken_sha256 = [\"{0}\"]\n[[principal]]\nname = \"b\"\ntoken_sha256 = [\"{0}\"]\n",
            hex("t")
        );
        assert!(file(&twice).unwrap_err().to_string().contains("already"));
        assert!(file("[[principal]]\nname = \"a\"\ntoken_sha256 = []\n").is_err());
        assert!(file("[[principal]]\nname = \"a\"\ntoken_sha256 = []\ncolour = 1\n").is_err());
    }

    #[test]
    fn without_a_file_one_admin_serves_default() {
        let open = Principals::single(None);
        let a = open.admit(None).unwrap();
        let p = open.resolve(&a).unwrap();
        assert!(p.admin && p.may_use(&CredentialName::default()));
        let d = crate::transport::ws::token_digest("tok");
        let closed = Principals::single(Some(d));
        assert!(closed.admit(None).is_none());
        assert!(closed.admit(Some("tok")).is_some());
    }
}
