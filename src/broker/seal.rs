//! Sealing the refresh token at rest. Whoever can read the table (a backup, a replica, a
//! misconfigured role) must not be able to spend the credential; only a broker holding the
//! key can.
//!
//! XChaCha20-Poly1305: its 24-byte nonce makes a random nonce per seal safe for any number of
//! seals, so no nonce counter has to be kept consistent across broker instances. The row id
//! is the associated data, so a sealed value copied into another row does not open.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Names the file that holds the key, as 64 hex characters.
pub const KEY_FILE_ENV: &str = "AUTHBRIDGE_STORE_KEY_FILE";

/// Marks the layout of a sealed value, so that a later one can be told apart.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Separates this use of the key from any other, should the same key ever seal something else.
const CONTEXT: &[u8] = b"authbridge credential refresh_token v1:";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{KEY_FILE_ENV} is not set: it must name a file holding the 32-byte store key as 64 hex characters"
    )]
    NotConfigured,
    #[error("cannot read the store key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Says nothing of the content: a near-miss key is still most of a key.
    #[error("the store key {place} is not 32 bytes written as 64 hex characters")]
    Format { place: String },
}

/// Why a sealed value did not open. Deliberately vague: the cipher cannot tell a wrong key
/// from a tampered value, and guessing would mislead the operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "the stored refresh token does not open with this store key (wrong key, or the value was altered or moved from another row)"
    )]
    WrongKeyOrTampered,
    #[error("the stored refresh token is not in a sealed format this version understands")]
    Format,
}

/// The 32-byte store key. Wiped when dropped; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key from the file named by [`KEY_FILE_ENV`].
    pub fn from_env() -> Result<Self, KeyError> {
        let path = std::env::var_os(KEY_FILE_ENV)
            .filter(|p| !p.is_empty())
            .ok_or(KeyError::NotConfigured)?;
        Self::from_file(Path::new(&path))
    }

    /// Surrounding white space (an editor's final newline) is allowed.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })?;
        let text = std::str::from_utf8(&text).map_err(|_| KeyError::Format {
            place: format!("file {}", path.display()),
        })?;
        Self::from_hex(text).map_err(|_| KeyError::Format {
            place: format!("file {}", path.display()),
        })
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let format = || KeyError::Format {
            place: "text".into(),
        };
        let text = text.trim().as_bytes();
        if text.len() != 64 {
            return Err(format());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (byte, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
            let (Some(high), Some(low)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
                return Err(format());
            };
            *byte = high << 4 | low;
        }
        Ok(Self(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// `VERSION || nonce || ciphertext+tag`, bound to `row_id`.
    pub(crate) fn seal(&self, plaintext: &[u8], row_id: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let aad = associated_data(row_id);
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("sealing a short value in memory cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub(crate) fn open(
        &self,
        sealed: &[u8],
        row_id: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Format)?;
        if version != VERSION || rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Format);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = associated_data(row_id);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::WrongKeyOrTampered)
    }
}

fn associated_data(row_id: &str) -> Vec<u8> {
    let mut aad = CONTEXT.to_vec();
    aad.extend_from_slice(row_id.as_bytes());
    aad
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seals_and_opens_bound_to_the_row() {
        let key = SealKey::from_hex(HEX).unwrap();
        let sealed = key.seal(b"rt-secret", "default");
        assert!(!sealed.windows(9).any(|w| w == b"rt-secret"));
        assert_eq!(&key.open(&sealed, "default").unwrap()[..], b"rt-secret");
        assert_eq!(
            key.open(&sealed, "other"),
            Err(SealError::WrongKeyOrTampered)
        );
        let again = key.seal(b"rt-secret", "default");
        assert_ne!(sealed, again, "a fresh nonce per seal");
    }

    #[test]
    fn another_key_or_a_flipped_bit_does_not_open() {
        let key = SealKey::from_hex(HEX).unwrap();
        let other = SealKey::from_bytes([7; 32]);
        let mut sealed = key.seal(b"rt", "id");
        assert_eq!(
            other.open(&sealed, "id"),
            Err(SealError::WrongKeyOrTampered)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(key.open(&sealed, "id"), Err(SealError::WrongKeyOrTampered));
        assert_eq!(key.open(&[9, 1, 2], "id"), Err(SealError::Format));
    }

    #[test]
    fn key_text_is_checked_and_never_shown() {
        assert!(SealKey::from_hex(&format!("  {HEX}\n")).is_ok());
        assert!(SealKey::from_hex(&HEX.to_uppercase()).is_ok());
        let short = SealKey::from_hex(&HEX[2..]).unwrap_err().to_string();
        assert!(!short.contains("0203"), "{short}");
        assert!(SealKey::from_hex(&HEX.replace('0', "g")).is_err());
        let key = SealKey::from_hex(HEX).unwrap();
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
    }
}
