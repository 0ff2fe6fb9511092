//! Host certificates as a fresh XCP-ng host makes them (`ocaml/gencert/selfcert.ml`): self-signed
//! RSA-2048, CN = host name, a subjectAltName extension and no CA basic constraints or key usage;
//! SANs for the host's name, its address, `localhost` and `127.0.0.1`. Clients pin the PEM
//! ([`HostCertificate::pem`]) as they would pin `host.get_server_certificate`.
//!
//! rcgen with ring cannot generate RSA keys and the pure-Rust `rsa` crate needs a few hundred
//! milliseconds per key, so every host of every pool in a process shares one RSA key (each host
//! still gets its own certificate). The key is cached as PKCS#8 in the user's cache directory
//! (`$XDG_CACHE_HOME` or `~/.cache`, `xapi-sim/host-key-rsa2048.pk8`, mode 0600) so that test
//! processes do not pay for it again; set `XAPI_SIM_KEY_CACHE=off` to keep it in memory only.
//!
//! [`HostCertificate::nbd_server_config`] is xapi-nbd's TLS policy: TLS 1.2 only,
//! `ECDHE-RSA-AES256-GCM-SHA384` and `ECDHE-RSA-AES128-GCM-SHA256` in server preference, curve
//! `secp384r1`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// Size of the host keys, as xapi's `gencert`.
const RSA_BITS: usize = 2048;

/// The process-wide host key, PKCS#8 DER.
static HOST_KEY: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();

fn cache_path() -> Option<PathBuf> {
    if std::env::var_os("XAPI_SIM_KEY_CACHE").is_some_and(|value| value == "off") {
        return None;
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("xapi-sim").join("host-key-rsa2048.pk8"))
}

/// A cached key is used only if it parses as an RSA key of the expected size.
fn valid_rsa_key(der: &[u8]) -> bool {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    rsa::RsaPrivateKey::from_pkcs8_der(der).is_ok_and(|key| key.size() == RSA_BITS / 8)
}

fn generate_rsa_key() -> Result<Vec<u8>, String> {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS)
        .map_err(|error| format!("RSA key generation: {error}"))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|error| format!("RSA key encoding: {error}"))?;
    Ok(der.as_bytes().to_vec())
}

fn store_cached_key(path: &std::path::Path, der: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(directory) = path.parent() {
        std::fs::create_dir_all(directory)?;
    }
    // Written under a unique name, then renamed: concurrent test processes never see half a key.
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(der)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn load_host_key() -> Result<Vec<u8>, String> {
    let path = cache_path();
    if let Some(path) = &path
        && let Ok(der) = std::fs::read(path)
        && valid_rsa_key(&der)
    {
        return Ok(der);
    }
    let der = generate_rsa_key()?;
    if let Some(path) = &path
        && let Err(error) = store_cached_key(path, &der)
    {
        tracing::debug!(%error, "host key not cached");
    }
    Ok(der)
}

/// The shared RSA host key (PKCS#8 DER), generated or loaded once per process.
fn host_key() -> Result<&'static [u8], Error> {
    HOST_KEY
        .get_or_init(load_host_key)
        .as_deref()
        .map_err(|reason| Error::Tls {
            reason: reason.clone(),
        })
}

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
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(host_key()?),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(tls)?;
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

    /// xapi-nbd's TLS server configuration (`ocaml/xapi-consts/tls_policy.ml`): TLS 1.2 only,
    /// `ECDHE-RSA-AES256-GCM-SHA384` then `ECDHE-RSA-AES128-GCM-SHA256` in server preference,
    /// key exchange on `secp384r1` only.
    ///
    /// # Errors
    /// [`Error::Tls`].
    pub fn nbd_server_config(&self) -> Result<rustls::ServerConfig, Error> {
        use rustls::crypto::ring::{cipher_suite, kx_group};
        let tls = |error: rustls::Error| Error::Tls {
            reason: error.to_string(),
        };
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ],
            kx_groups: vec![kx_group::SECP384R1],
            ..rustls::crypto::ring::default_provider()
        };
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(tls)?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .map_err(tls)?;
        config.ignore_client_order = true;
        Ok(config)
    }

    /// A TLS acceptor with [`HostCertificate::nbd_server_config`].
    ///
    /// # Errors
    /// [`Error::Tls`].
    pub fn nbd_acceptor(&self) -> Result<TlsAcceptor, Error> {
        Ok(TlsAcceptor::from(Arc::new(self.nbd_server_config()?)))
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

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    #[test]
    fn certificates_are_rsa_without_ca_constraints_like_xapi_ones() {
        let first = HostCertificate::generate("host-a", "127.0.0.1".parse().unwrap()).unwrap();
        let second = HostCertificate::generate("host-b", "127.0.0.2".parse().unwrap()).unwrap();
        // OID 1.2.840.113549.1.1.1 (rsaEncryption) and 1.2.840.113549.1.1.11 (sha256WithRSA).
        let rsa_encryption = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
        ];
        let sha256_with_rsa = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
        ];
        // OIDs 2.5.29.19 (basicConstraints) and 2.5.29.15 (keyUsage) must be absent.
        let basic_constraints = [0x06, 0x03, 0x55, 0x1d, 0x13];
        let key_usage = [0x06, 0x03, 0x55, 0x1d, 0x0f];
        for certificate in [&first, &second] {
            assert!(contains(certificate.der(), &rsa_encryption));
            assert!(contains(certificate.der(), &sha256_with_rsa));
            assert!(!contains(certificate.der(), &basic_constraints));
            assert!(!contains(certificate.der(), &key_usage));
            assert!(certificate.nbd_acceptor().is_ok());
        }
        assert_ne!(first.der(), second.der(), "one certificate per host");
        let config = first.nbd_server_config().unwrap();
        assert!(config.ignore_client_order);
    }
}
