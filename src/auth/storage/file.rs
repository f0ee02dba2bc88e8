//! `$CODEX_HOME/auth.json` as a file: the `file` store, and the file itself, which the
//! keyring stores clean up and `auto` falls back to.
//!
//! A write goes to a temporary file (mode 0600) beside the real one, is synced, renamed over
//! it, and the directory is synced: a reader sees the old file or the new one, never half,
//! and a crash after the call returns cannot bring the old one back. A read that does not
//! parse is tried again a few times, since Codex rewrites the file in place.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::{
    AUTH_FILE, AuthDocument, Backend, Fingerprint, StorageError, TORN_READ_PAUSE, TORN_READ_RETRIES,
};

/// The `file` store.
pub(crate) struct FileStore {
    file: AuthFile,
}

impl FileStore {
    pub fn new(codex_home: &Path) -> Self {
        Self {
            file: AuthFile::in_home(codex_home),
        }
    }
}

impl Backend for FileStore {
    fn load(&self) -> Result<Option<AuthDocument>, StorageError> {
        self.file.load()
    }

    fn save(&self, doc: &AuthDocument) -> Result<(), StorageError> {
        self.file.write(&doc.to_pretty())
    }

    fn delete(&self) -> Result<(), StorageError> {
        self.file.remove()
    }

    fn describe(&self) -> String {
        format!("file {}", self.file.path().display())
    }

    fn place(&self) -> String {
        self.file.path().display().to_string()
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        Some(self.file.fingerprint())
    }
}

/// A credential file at a path.
pub(crate) struct AuthFile {
    path: PathBuf,
}

impl AuthFile {
    pub fn in_home(codex_home: &Path) -> Self {
        Self::new(codex_home.join(AUTH_FILE))
    }

    /// The document in the file, read again while it is torn.
    pub fn load(&self) -> Result<Option<AuthDocument>, StorageError> {
        let mut attempt = 0;
        loop {
            let Some(bytes) = self.read()? else {
                return Ok(None);
            };
            if let Some(doc) = AuthDocument::parse(&bytes) {
                return Ok(Some(doc));
            }
            attempt += 1;
            if attempt > TORN_READ_RETRIES {
                return Err(StorageError::Format {
                    place: self.path.display().to_string(),
                });
            }
            std::thread::sleep(TORN_READ_PAUSE);
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        let meta = std::fs::metadata(&self.path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some((
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            inode,
        ))
    }

    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> StorageError {
        StorageError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }

    pub fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        match crate::regular_file::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(StorageError::NotAFile {
                path: self.path.clone(),
            }),
            Err(e) => Err(self.io("read", e)),
        }
    }

    pub fn write(&self, body: &[u8]) -> Result<(), StorageError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|e| self.io("create the directory of", e))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            file.write_all(body)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io("write", e));
        }
        sync_dir(dir).map_err(|e| self.io("sync the directory of", e))
    }

    pub fn remove(&self) -> Result<(), StorageError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("remove", e)),
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| self.io("sync the directory of", e))
    }
}

/// A missing home is created readable by its owner only; an existing one is left as the
/// user (or Codex) made it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes a rename or unlink durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
