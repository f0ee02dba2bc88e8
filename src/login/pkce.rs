//! PKCE (RFC 7636, S256) and the `state` parameter, sized as the reference sizes them: a
//! verifier from 64 random bytes, a state from 32, both base64url without padding.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::auth::storage::SecretText;

fn random_urlsafe(bytes: usize) -> String {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; bytes]);
    getrandom::fill(&mut buf).expect("the operating system's random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*buf)
}

pub(crate) struct Pkce {
    pub verifier: SecretText,
    pub challenge: String,
}

impl Pkce {
    pub fn generate() -> Self {
        let verifier = random_urlsafe(64);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier: SecretText::new(verifier),
            challenge,
        }
    }
}

/// The value the callback must bring back, so that only the browser this login sent to
/// the issuer can complete it.
pub(crate) fn state() -> SecretText {
    SecretText::new(random_urlsafe(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_the_s256_challenge() {
        let p = Pkce::generate();
        assert_eq!(p.verifier.expose().len(), 86);
        assert_eq!(p.challenge.len(), 43);
        let again = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(p.verifier.expose().as_bytes()));
        assert_eq!(p.challenge, again);
        assert_eq!(state().expose().len(), 43);
        assert_ne!(state().expose(), state().expose());
        assert_ne!(Pkce::generate().verifier.expose(), p.verifier.expose());
    }
}
