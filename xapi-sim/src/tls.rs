//! Host certificates: self-signed like a fresh XCP-ng host's (`ocaml/gencert/selfcert.ml`), no
//! CA basic constraints, SANs for the host's address, `127.0.0.1` and `localhost`. Clients pin
//! the PEM ([`HostCertificate::pem`]) as they would pin `host.get_server_certificate`.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// A host's TLS identity.
#[derive(Clone)]
pub struct HostCertificate {
    pem: String,
    subject: String,
    der: Vec<u8>,
    key_der: Vec<u8>,
    key_pem: String,
}

impl fmt::Debug for HostCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HostCertificate")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl HostCertificate {
    /// A new self-signed certificate for `hostname` and `address` (plus `localhost`, `127.0.0.1`).
    ///
    /// # Errors
    /// [`Error::Tls`] if generation fails.
    pub fn generate(hostname: &str, address: IpAddr) -> Result<HostCertificate, Error> {
        let tls = |error: rcgen::Error| Error::Tls {
            reason: error.to_string(),
        };
        let mut names = vec![
            hostname.to_owned(),
            "localhost".to_owned(),
            address.to_string(),
        ];
        if address.to_string() != "127.0.0.1" {
            names.push("127.0.0.1".to_owned());
        }
        let mut params = rcgen::CertificateParams::new(names).map_err(tls)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, hostname);
        let key = rcgen::KeyPair::generate().map_err(tls)?;
        let certificate = params.self_signed(&key).map_err(tls)?;
        let subject = ["localhost".to_owned(), hostname.to_owned()]
            .into_iter()
            .filter(|name| !name.starts_with("*.") && name.parse::<IpAddr>().is_err())
            .min()
            .unwrap_or_else(|| hostname.to_owned());
        Ok(HostCertificate {
            pem: certificate.pem(),
            subject,
            der: certificate.der().to_vec(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The certificate, PEM (what `host.get_server_certificate` returns).
    #[must_use]
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The certificate, DER.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The private key, PKCS#8 PEM (for the NBD server of the same host).
    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The DNS name clients verify (`vdi_nbd_server_info.subject`): the smallest non-wildcard
    /// DNS name of the certificate.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// A rustls server configuration presenting this certificate, with `alpn` protocols.
    ///
    /// # Errors
    /// [`Error::Tls`].
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::Tls {
                reason: error.to_string(),
            })?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .map_err(|error| Error::Tls {
                reason: error.to_string(),
            })?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(config)
    }

    /// A TLS acceptor for HTTPS (HTTP/1.1).
    ///
    /// # Errors
    /// [`Error::Tls`].
    pub fn acceptor(&self) -> Result<TlsAcceptor, Error> {
        Ok(TlsAcceptor::from(Arc::new(
            self.server_config(&[b"http/1.1"])?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_name_the_host_and_loopback() {
        let certificate =
            HostCertificate::generate("sim-host-1", "127.0.0.2".parse().unwrap()).unwrap();
        assert!(certificate.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(certificate.subject(), "localhost");
        assert!(certificate.key_pem().contains("PRIVATE KEY"));
        assert!(certificate.acceptor().is_ok());
        assert!(!format!("{certificate:?}").contains("PRIVATE"));
    }
}
