//! `$CODEX_HOME/auth.json` as a file.
//!
//! A write goes to a temporary file (mode 0600) beside the real one, is synced, renamed over
//! it, and the directory is synced: a reader sees the old file or the new one, never half,
//! and a crash after the call returns cannot bring the old one back.

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::StorageError;

pub(crate) struct FileStore {
    path: PathBuf,
}

impl FileStore {
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
