//! Reading a file that other programs may have replaced: `auth.json`, `config.toml`, an
//! imported sign-in. Its own module because the configuration and the credential store
//! both need it and neither should depend on the other for it.

use std::path::Path;

use zeroize::Zeroizing;

/// Reads a file that must be a regular file. It is opened without blocking, so a FIFO or a
/// device put in its place is refused (`InvalidInput`) instead of hanging start-up.
pub(crate) fn read(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let mut file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}
