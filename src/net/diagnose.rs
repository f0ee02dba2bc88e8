//! Certificate failures told as what they are and how to fix them. A company's inspecting
//! proxy shows up here as "unknown authority"; saying so, with the variable to set, turns
//! a dead end into a one-line fix.

use rustls::{CertificateError, Error as TlsError};

/// What went wrong with TLS, when a rustls error is somewhere in `error`'s chain (reqwest and
/// tokio-rustls wrap it in I/O errors).
pub fn describe_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<TlsError>() {
            return Some(describe(tls));
        }
        // An I/O error's `source` skips the error it wraps: look inside it instead (hyper
        // nests them two deep).
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(error: &TlsError) -> String {
    match error {
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is signed by an unknown authority: if your network \
             inspects TLS, set CODEX_CA_CERTIFICATE to a PEM file holding its root certificate"
                .into()
        }
        TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate is not valid for this host name".into(),
        TlsError::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "the server's certificate has expired or is not valid yet (check the clock)".into(),
        TlsError::InvalidCertificate(other) => {
            format!("the server's certificate was refused ({other:?})")
        }
        other => format!("the TLS handshake failed ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_authority_names_the_variable_that_fixes_it_through_an_io_error() {
        let wrapped = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        let message = describe_failure(&wrapped).unwrap();
        assert!(message.contains("unknown authority"), "{message}");
        assert!(message.contains("CODEX_CA_CERTIFICATE"), "{message}");
        assert_eq!(describe_failure(&std::io::Error::other("refused")), None);
    }
}
