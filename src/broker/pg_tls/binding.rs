//! `tls-server-end-point` channel binding (RFC 5929) for SCRAM: the password exchange then
//! also proves that the server knowing the password is the one holding this TLS session's
//! certificate. With `channel_binding=require` in the URL (the driver's parameter, passed
//! through), a relay presenting a certificate of its own fails authentication even where
//! `sslmode` checks no certificate; without it, a relay can simply not offer the binding.
//!
//! The value is the certificate's hash, by the hash of its signature algorithm (MD5 and
//! SHA-1 count as SHA-256). Only that one field of the certificate is read, with a few
//! lines of DER walking rather than a certificate parser; an algorithm without a single
//! hash (Ed25519, RSASSA-PSS) gives no binding, as PostgreSQL gives none for it either.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// The DER contents of the signature algorithm identifiers that name one hash.
const SHA256_OR_WEAKER: [&[u8]; 5] = [
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04], // md5WithRSAEncryption
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05], // sha1WithRSAEncryption
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b], // sha256WithRSAEncryption
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],             // ecdsa-with-SHA1
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],       // ecdsa-with-SHA256
];
const SHA384: [&[u8]; 2] = [
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],       // ecdsa-with-SHA384
];
const SHA512: [&[u8]; 2] = [
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],       // ecdsa-with-SHA512
];

const SEQUENCE: u8 = 0x30;
const OBJECT_IDENTIFIER: u8 = 0x06;

/// The binding data for the server's certificate `der`, if its algorithm names one hash.
pub(super) fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let algorithm = signature_algorithm(der)?;
    let named = |list: &[&[u8]]| list.contains(&algorithm);
    if named(&SHA256_OR_WEAKER) {
        Some(Sha256::digest(der).to_vec())
    } else if named(&SHA384) {
        Some(Sha384::digest(der).to_vec())
    } else if named(&SHA512) {
        Some(Sha512::digest(der).to_vec())
    } else {
        None
    }
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, … }, … }`:
/// the OID's contents.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = element(der, Some(SEQUENCE))?;
    let (_tbs, after_tbs) = element(certificate, None)?;
    let (algorithm, _) = element(after_tbs, Some(SEQUENCE))?;
    let (oid, _) = element(algorithm, Some(OBJECT_IDENTIFIER))?;
    Some(oid)
}

/// The contents of the DER element at the start of `input` (of tag `tag` when given), and
/// what follows it. `None` for anything malformed or longer than `input`.
fn element(input: &[u8], tag: Option<u8>) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if tag.is_some_and(|tag| tag != found) {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the next `first & 0x7f` bytes, big-endian; a certificate needs at most 4.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let length = bytes.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
        (length, rest)
    };
    rest.split_at_checked(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ecdsa_sha256_certificate_binds_to_its_sha256() {
        let cert = rcgen::generate_simple_self_signed(vec!["db.test".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        assert_eq!(server_end_point(&der), Some(Sha256::digest(&der).to_vec()));
    }

    #[test]
    fn a_truncated_or_foreign_certificate_gives_no_binding() {
        let cert = rcgen::generate_simple_self_signed(vec!["db.test".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        assert_eq!(server_end_point(&der[..der.len() / 2]), None);
        assert_eq!(server_end_point(b""), None);
        let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = rcgen::CertificateParams::new(vec!["db.test".into()]).unwrap();
        let der = params.self_signed(&ed25519).unwrap().der().to_vec();
        assert_eq!(server_end_point(&der), None, "Ed25519 names no hash");
    }
}
