//! TLS client configuration (rustls, ring provider).
//!
//! Three ways to trust a server, chosen explicitly:
//! - [`TlsVerification::Pinned`]: xapi style. Trust exactly the PEM certificate returned by
//!   `VDI.get_nbd_info` and check that it is valid for the `subject` returned alongside. The
//!   leaf must be byte-for-byte the pinned certificate, so self-signed host certificates
//!   without CA extensions (what xapi generates) and CA-signed ones both work.
//! - [`TlsVerification::CaRoots`]: ordinary WebPKI verification against a PEM bundle or the
//!   Mozilla roots.
//! - [`TlsVerification::InsecureNoVerify`]: accept any certificate (handshake signatures are
//!   still checked). Only for tests and explicitly insecure setups.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::Error;

/// How the server certificate is verified.
#[derive(Clone)]
pub enum TlsVerification {
    /// Trust exactly this PEM certificate and check it is valid for `subject` (a DNS name or an
    /// IP address), as xapi's own client does with `VDI.get_nbd_info`'s `cert` and `subject`.
    Pinned {
        /// The PEM certificate (the first certificate of the text is pinned).
        certificate_pem: String,
        /// Name the certificate must be valid for; also sent as SNI when it is a DNS name.
        subject: String,
    },
    /// Verify the chain against CA roots: a PEM bundle, or the Mozilla roots when `None`.
    CaRoots {
        /// PEM bundle of trusted roots, or `None` for the built-in Mozilla roots.
        roots_pem: Option<String>,
        /// Name the certificate must be valid for.
        server_name: String,
    },
    /// Accept any certificate. Explicitly insecure: a man in the middle can read everything.
    InsecureNoVerify {
        /// Name sent as SNI.
        server_name: String,
    },
}

impl fmt::Debug for TlsVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pinned { subject, .. } => write!(f, "Pinned {{ subject: {subject:?} }}"),
            Self::CaRoots {
                server_name,
                roots_pem,
            } => write!(
                f,
                "CaRoots {{ server_name: {server_name:?}, custom_roots: {} }}",
                roots_pem.is_some()
            ),
            Self::InsecureNoVerify { server_name } => {
                write!(f, "InsecureNoVerify {{ server_name: {server_name:?} }}")
            }
        }
    }
}

/// TLS settings of a client.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Certificate verification.
    pub verification: TlsVerification,
    /// Offer only TLS 1.2 (xapi-nbd speaks nothing else; 1.3 is offered by default too).
    pub tls12_only: bool,
}

impl TlsOptions {
    /// xapi style: pin `certificate_pem` and check `subject`.
    pub fn pinned(certificate_pem: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            verification: TlsVerification::Pinned {
                certificate_pem: certificate_pem.into(),
                subject: subject.into(),
            },
            tls12_only: false,
        }
    }

    /// Verify against the roots of a PEM bundle.
    pub fn ca_roots(roots_pem: impl Into<String>, server_name: impl Into<String>) -> Self {
        Self {
            verification: TlsVerification::CaRoots {
                roots_pem: Some(roots_pem.into()),
                server_name: server_name.into(),
            },
            tls12_only: false,
        }
    }

    /// Verify against the built-in Mozilla roots.
    pub fn webpki_roots(server_name: impl Into<String>) -> Self {
        Self {
            verification: TlsVerification::CaRoots {
                roots_pem: None,
                server_name: server_name.into(),
            },
            tls12_only: false,
        }
    }

    /// Accept any certificate (explicitly insecure).
    pub fn insecure_no_verify(server_name: impl Into<String>) -> Self {
        Self {
            verification: TlsVerification::InsecureNoVerify {
                server_name: server_name.into(),
            },
            tls12_only: false,
        }
    }

    /// Builds the rustls connector and the server name to present.
    pub(crate) fn connector(
        &self,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| Error::Config {
                reason: format!("TLS versions: {e}"),
            })?;
        let (config, name) = match &self.verification {
            TlsVerification::Pinned {
                certificate_pem,
                subject,
            } => {
                let certificate = parse_pem_certificates(certificate_pem)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Certificate {
                        reason: "no certificate in the pinned PEM".into(),
                    })?;
                let name = server_name(subject)?;
                let verifier = CustomVerifier {
                    pinned: Some(certificate),
                    algorithms: provider.signature_verification_algorithms,
                };
                let config = builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth();
                (config, name)
            }
            TlsVerification::CaRoots {
                roots_pem,
                server_name: host,
            } => {
                let mut roots = RootCertStore::empty();
                match roots_pem {
                    Some(pem) => {
                        for certificate in parse_pem_certificates(pem)? {
                            roots.add(certificate).map_err(|e| Error::Certificate {
                                reason: format!("unusable root: {e}"),
                            })?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| Error::Certificate {
                            reason: format!("cannot build the verifier: {e}"),
                        })?;
                let config = builder.with_webpki_verifier(verifier).with_no_client_auth();
                (config, server_name(host)?)
            }
            TlsVerification::InsecureNoVerify { server_name: host } => {
                let verifier = CustomVerifier {
                    pinned: None,
                    algorithms: provider.signature_verification_algorithms,
                };
                let config = builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth();
                (config, server_name(host)?)
            }
        };
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    }
}

/// Parses every certificate of a PEM text.
pub fn parse_pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut reader = pem.as_bytes();
    let certificates = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate {
            reason: format!("bad PEM: {e}"),
        })?;
    if certificates.is_empty() {
        return Err(Error::Certificate {
            reason: "no CERTIFICATE block in the PEM text".into(),
        });
    }
    Ok(certificates)
}

fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_owned()).map_err(|_| Error::Config {
        reason: format!("{name:?} is neither a DNS name nor an IP address"),
    })
}

/// Pinning (`pinned: Some`: exactly that certificate, valid for the expected name) or no
/// verification (`pinned: None`, the explicit insecure option). Handshake signatures are checked
/// either way, so the peer must hold the certificate's private key.
#[derive(Debug)]
struct CustomVerifier {
    pinned: Option<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CustomVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pinned) = &self.pinned else {
            return Ok(ServerCertVerified::assertion());
        };
        if end_entity.as_ref() != pinned.as_ref() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        // Validity dates are deliberately not checked: the pinned certificate is the one the
        // pool handed out for this host just now, which is the whole trust decision.
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The crypto provider used everywhere in this crate (ring).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
