//! TLS trust for XenAPI hosts: verified by default, a CA of your own, a pinned certificate, or
//! (explicitly) none.
//!
//! XCP-ng hosts ship self-signed certificates. The robust choice is pinning: take the SHA-256
//! fingerprint of the host certificate once (`host.get_server_certificate` over a trusted
//! channel, or `openssl x509 -fingerprint -sha256`) and pass it as [`Trust::Pinned`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Parses hex with or without `:` separators, any case, optionally prefixed `sha256:`,
    /// `sha-256:` or `SHA256 Fingerprint=` (as `openssl x509 -fingerprint -sha256` prints).
    pub fn parse(text: &str) -> Result<Fingerprint, Error> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        let body = ["sha256 fingerprint=", "sha256:", "sha-256:"]
            .iter()
            .find_map(|prefix| lower.strip_prefix(prefix))
            .unwrap_or(&lower);
        let compact: String = body.chars().filter(|c| *c != ':').collect();
        let bytes =
            hex::decode(&compact).map_err(|_| Error::tls("the fingerprint is not hexadecimal"))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::tls("a SHA-256 fingerprint has 32 bytes (64 hex digits)"))?;
        Ok(Fingerprint(array))
    }

    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The fingerprint of the first certificate in a PEM text (what
    /// `host.get_server_certificate` returns).
    pub fn of_pem(pem: &str) -> Result<Fingerprint, Error> {
        let mut reader = pem.as_bytes();
        let first = rustls_pemfile::certs(&mut reader)
            .next()
            .ok_or_else(|| Error::tls("no certificate in the PEM text"))?
            .map_err(|error| Error::Tls {
                reason: "unreadable PEM certificate".into(),
                source: Some(Box::new(error)),
            })?;
        Ok(Fingerprint::of_der(first.as_ref()))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// `AA:BB:…` upper-case, as xapi's `Certificate.fingerprint_sha256` and openssl print it.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// How the client decides to trust a host's certificate.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Trust {
    /// Verify the chain and name against the Mozilla root set (`webpki-roots`). The default.
    #[default]
    WebPkiRoots,
    /// Verify the chain and name against these CA certificates (PEM). See [`Trust::ca_file`].
    CaPem(Vec<u8>),
    /// Accept exactly the certificate with this SHA-256 fingerprint (names and expiry are not
    /// checked; handshake signatures are). Other pool members get their own pin: the client
    /// learns it through the API (see `Client`).
    Pinned(Fingerprint),
    /// Accept any certificate. Only for labs; say so explicitly.
    InsecureSkipVerification,
}

impl Trust {
    /// Trust the CA certificates in a PEM file.
    pub fn ca_file(path: &Path) -> Result<Trust, Error> {
        let pem = std::fs::read(path)
            .map_err(|source| Error::io(format!("reading CA file {}", path.display()), source))?;
        // Validate now so that a bad file fails at configuration time.
        roots_from_pem(&pem)?;
        Ok(Trust::CaPem(pem))
    }

    /// The operating system's CA bundle (the first of the usual Linux/BSD locations that
    /// exists), or the Mozilla roots when there is none.
    pub fn system_roots() -> Trust {
        const BUNDLES: [&str; 5] = [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/ca-bundle.pem",
            "/etc/ssl/cert.pem",
            "/usr/local/share/certs/ca-root-nss.crt",
        ];
        BUNDLES
            .iter()
            .find_map(|path| Trust::ca_file(Path::new(path)).ok())
            .unwrap_or(Trust::WebPkiRoots)
    }

    /// A pin from its text form (see [`Fingerprint::parse`]).
    pub fn pinned(fingerprint: &str) -> Result<Trust, Error> {
        Fingerprint::parse(fingerprint).map(Trust::Pinned)
    }

    /// Builds the rustls configuration (ring provider, TLS 1.2 and 1.3).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::Tls {
                reason: "no usable TLS versions".into(),
                source: Some(Box::new(error)),
            })?;
        let config = match self {
            Trust::WebPkiRoots => {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::CaPem(pem) => builder
                .with_root_certificates(roots_from_pem(pem)?)
                .with_no_client_auth(),
            Trust::Pinned(fingerprint) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    pin: Some(*fingerprint),
                    provider,
                }))
                .with_no_client_auth(),
            Trust::InsecureSkipVerification => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    pin: None,
                    provider,
                }))
                .with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    let mut reader = pem;
    for certificate in rustls_pemfile::certs(&mut reader) {
        let certificate = certificate.map_err(|error| Error::Tls {
            reason: "unreadable CA certificate".into(),
            source: Some(Box::new(error)),
        })?;
        roots.add(certificate).map_err(|error| Error::Tls {
            reason: "unusable CA certificate".into(),
            source: Some(Box::new(error)),
        })?;
    }
    if roots.is_empty() {
        return Err(Error::tls("no certificate in the CA file"));
    }
    Ok(roots)
}

/// Pinning (`pin: Some`) or no verification (`pin: None`); handshake signatures are always
/// checked, so the peer must hold the certificate's private key.
#[derive(Debug)]
struct Verifier {
    pin: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) => {
                let found = Fingerprint::of_der(end_entity.as_ref());
                if found == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    tracing::warn!(expected = %pin, found = %found, "TLS certificate does not match the pinned fingerprint");
                    Err(rustls::Error::General(format!(
                        "certificate fingerprint {found} does not match the pin {pin}"
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let hex = "3f".repeat(32);
        let colons: Vec<String> = (0..32).map(|_| "3F".to_owned()).collect();
        let colon_form = colons.join(":");
        for text in [
            hex.clone(),
            colon_form.clone(),
            format!("sha256:{hex}"),
            format!("SHA256 Fingerprint={colon_form}"),
        ] {
            assert_eq!(
                Fingerprint::parse(&text).unwrap(),
                Fingerprint([0x3f; 32]),
                "{text}"
            );
        }
        assert_eq!(Fingerprint([0x3f; 32]).to_string(), colon_form);
        assert!(Fingerprint::parse("3f3f").is_err());
        assert!(Fingerprint::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn configs_build() {
        assert!(Trust::default().client_config().is_ok());
        assert!(Trust::system_roots().client_config().is_ok());
        assert!(Trust::InsecureSkipVerification.client_config().is_ok());
        assert!(Trust::Pinned(Fingerprint([1; 32])).client_config().is_ok());
        assert!(Trust::CaPem(b"not pem".to_vec()).client_config().is_err());
    }
}
