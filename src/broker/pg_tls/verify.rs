//! How much of the PostgreSQL server's certificate is checked, per libpq's `sslmode`. rustls
//! only knows "chain and name", which is `verify-full`; libpq's weaker modes are deliberate
//! choices an operator makes (a server known by address only, a self-signed certificate),
//! so they are offered here rather than refused, and the start-up warning says what they
//! give up.
//!
//! Every mode still checks the handshake's signatures against the presented certificate:
//! skipping the certificate check must not also skip proof that the server holds its key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// What is checked of the server's certificate.
#[derive(Debug, Clone)]
pub(super) enum Check {
    /// Nothing (`prefer`, and `require` without `sslrootcert`): the link is encrypted, but
    /// anyone on the path can present a certificate of their own.
    Nothing,
    /// That an authority in the roots signed it, whatever host it names (`verify-ca`).
    Chain(Arc<RootCertStore>),
    /// The chain, and that it names the host the URL connects to (`verify-full`).
    ChainAndName(Arc<RootCertStore>),
}

#[derive(Debug)]
pub(super) struct Verifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    pub(super) fn new(check: Check, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { check, algorithms }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let roots = match &self.check {
            Check::Nothing => return Ok(ServerCertVerified::assertion()),
            Check::Chain(roots) | Check::ChainAndName(roots) => roots,
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if let Check::ChainAndName(_) = self.check {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
