//! `--ws-auth signed-bearer-token`: the WebSocket upgrade carries a JWT that the client's
//! own issuer signed with a secret shared with this server (HS256), instead of one fixed
//! capability token. Tokens can then be short-lived and minted per client.
//!
//! The check is written here on `hmac` and `sha2` rather than taken from a JWT library:
//! one algorithm is accepted, so the header's `alg` is compared against a constant and no
//! library's algorithm negotiation (the source of `alg: none` and key-confusion bugs) is in
//! the path; the MAC comparison is `hmac`'s constant-time `verify_slice`.
//!
//! Why a token was refused is logged at debug level as a reason only, never the token, and
//! the client always gets the same 401.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The shortest secret accepted: HS256's own output size, as Codex requires.
pub const MIN_SECRET_BYTES: usize = 32;
/// How far the clocks of the token's issuer and this server may disagree by default.
pub const DEFAULT_MAX_CLOCK_SKEW_SECONDS: u64 = 30;
/// A token longer than this is refused before any decoding.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why the shared secret is unusable. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read --ws-shared-secret-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--ws-shared-secret-file {} holds {len} bytes; HS256 needs a secret of at least \
         {MIN_SECRET_BYTES}",
        path.display()
    )]
    TooShort { path: PathBuf, len: usize },
}

/// The verifier: the secret and the claims a token must carry.
pub struct SignedBearer {
    secret: Zeroizing<Vec<u8>>,
    issuer: Option<String>,
    audience: Option<String>,
    max_clock_skew_seconds: u64,
}

impl std::fmt::Debug for SignedBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedBearer")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_clock_skew_seconds", &self.max_clock_skew_seconds)
            .finish()
    }
}

/// Why a token was refused; for the debug log, never shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed,
    Algorithm,
    Signature,
    MissingExpiry,
    Expired,
    NotYetValid,
    IssuedInTheFuture,
    Issuer,
    Audience,
}

impl SignedBearer {
    /// Reads the secret from `path` (surrounding whitespace trimmed, so a trailing newline
    /// does not count as key material).
    pub fn load(
        path: &Path,
        issuer: Option<String>,
        audience: Option<String>,
        max_clock_skew_seconds: Option<u64>,
    ) -> Result<Self, SecretError> {
        let bytes = crate::regular_file::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let secret = Zeroizing::new(bytes.trim_ascii().to_vec());
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                path: path.to_owned(),
                len: secret.len(),
            });
        }
        Ok(Self {
            secret,
            issuer,
            audience,
            max_clock_skew_seconds: max_clock_skew_seconds
                .unwrap_or(DEFAULT_MAX_CLOCK_SKEW_SECONDS),
        })
    }

    /// Checks `token` against the clock now.
    pub(crate) fn verify_now(&self, token: &str) -> Result<(), Refusal> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify(token, now)
    }

    /// Checks `token` at `now` (seconds since the epoch): the signature first, the claims
    /// only once they are known to come from the secret's holder.
    fn verify(&self, token: &str, now: u64) -> Result<(), Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Malformed);
        };
        // What the signature covers: the first two parts and the dot between them.
        let signed_input = &token.as_bytes()[..header.len() + 1 + payload.len()];
        let header = decode_object(header)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(Refusal::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refusal::Malformed)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).map_err(|_| Refusal::Signature)?;
        mac.update(signed_input);
        mac.verify_slice(&signature)
            .map_err(|_| Refusal::Signature)?;
        let claims = decode_object(payload)?;
        self.check_claims(&claims, now)
    }

    fn check_claims(&self, claims: &Value, now: u64) -> Result<(), Refusal> {
        let now = now as f64;
        let skew = self.max_clock_skew_seconds as f64;
        let time = |name: &str| {
            claims
                .get(name)
                .map(|v| v.as_f64().ok_or(Refusal::Malformed))
        };
        let exp = time("exp").ok_or(Refusal::MissingExpiry)??;
        if now > exp + skew {
            return Err(Refusal::Expired);
        }
        if let Some(nbf) = time("nbf").transpose()?
            && now + skew < nbf
        {
            return Err(Refusal::NotYetValid);
        }
        if let Some(iat) = time("iat").transpose()?
            && now + skew < iat
        {
            return Err(Refusal::IssuedInTheFuture);
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(Refusal::Issuer);
        }
        if let Some(audience) = &self.audience {
            let listed = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !listed {
                return Err(Refusal::Audience);
            }
        }
        Ok(())
    }
}

fn decode_object(part: &str) -> Result<Value, Refusal> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Refusal::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(Refusal::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn sign(header: &Value, claims: &Value, secret: &[u8]) -> String {
        let head = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(head.as_bytes());
        format!(
            "{head}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn hs256(claims: Value) -> String {
        sign(&json!({"alg": "HS256", "typ": "JWT"}), &claims, SECRET)
    }

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> SignedBearer {
        SignedBearer {
            secret: Zeroizing::new(SECRET.to_vec()),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            max_clock_skew_seconds: DEFAULT_MAX_CLOCK_SKEW_SECONDS,
        }
    }

    #[test]
    fn times_are_honoured_within_the_skew() {
        let v = verifier(None, None);
        let at = |claims| v.verify(&hs256(claims), NOW);
        assert_eq!(at(json!({"exp": NOW + 60})), Ok(()));
        assert_eq!(
            at(json!({"exp": NOW - 10})),
            Ok(()),
            "expired within the skew"
        );
        assert_eq!(at(json!({"exp": NOW - 31})), Err(Refusal::Expired));
        assert_eq!(at(json!({"sub": "x"})), Err(Refusal::MissingExpiry));
        assert_eq!(at(json!({"exp": "soon"})), Err(Refusal::Malformed));
        let later = NOW + 600;
        assert_eq!(at(json!({"exp": later, "nbf": NOW + 20})), Ok(()));
        assert_eq!(
            at(json!({"exp": later, "nbf": NOW + 31})),
            Err(Refusal::NotYetValid)
        );
        assert_eq!(
            at(json!({"exp": later, "iat": NOW + 31})),
            Err(Refusal::IssuedInTheFuture)
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let v = verifier(Some("me"), Some("app-server"));
        let exp = NOW + 60;
        let at = |claims| v.verify(&hs256(claims), NOW);
        assert_eq!(
            at(json!({"exp": exp, "iss": "me", "aud": "app-server"})),
            Ok(())
        );
        assert_eq!(
            at(json!({"exp": exp, "iss": "me", "aud": ["other", "app-server"]})),
            Ok(())
        );
        assert_eq!(
            at(json!({"exp": exp, "iss": "you", "aud": "app-server"})),
            Err(Refusal::Issuer)
        );
        assert_eq!(
            at(json!({"exp": exp, "iss": "me", "aud": "other"})),
            Err(Refusal::Audience)
        );
        assert_eq!(at(json!({"exp": exp})), Err(Refusal::Issuer));
    }

    #[test]
    fn only_hs256_with_the_shared_secret_passes() {
        let v = verifier(None, None);
        let claims = json!({"exp": NOW + 60});
        let other_secret = sign(
            &json!({"alg": "HS256"}),
            &claims,
            b"another secret of thirty-two b..",
        );
        assert_eq!(v.verify(&other_secret, NOW), Err(Refusal::Signature));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(v.verify(&none, NOW), Err(Refusal::Algorithm));
        let hs512_label = sign(&json!({"alg": "HS512"}), &claims, SECRET);
        assert_eq!(v.verify(&hs512_label, NOW), Err(Refusal::Algorithm));
        let mut tampered = hs256(claims.clone());
        tampered.pop();
        assert!(v.verify(&tampered, NOW).is_err());
        assert_eq!(v.verify("a.b", NOW), Err(Refusal::Malformed));
        assert_eq!(
            v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn a_short_secret_is_refused_naming_the_file_not_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "short-secret-value\n").unwrap();
        let err = SignedBearer::load(&path, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains("short-secret-value"), "{err}");
        std::fs::write(&path, format!("{}\n", String::from_utf8_lossy(SECRET))).unwrap();
        let v = SignedBearer::load(&path, None, None, None).unwrap();
        assert!(!format!("{v:?}").contains("0123456789"));
        assert_eq!(v.verify(&hs256(json!({"exp": NOW})), NOW), Ok(()));
    }
}
