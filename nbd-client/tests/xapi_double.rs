//! Against an xapi-nbd double built on the crate's own server-side encoders (spec §6.8):
//! FORCEDTLS with TLS 1.2 only (ECDHE, AES-GCM, secp384r1), a self-signed certificate without
//! CA extensions pinned with its subject, EXPORT_NAME only with 124 padding bytes, simple
//! replies, one request at a time, 512-byte alignment. Also reconnects and retry exhaustion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{TEST_TIMEOUT, pattern};
use futures::StreamExt;
use nbd_client::proto::ReplyMode;
use nbd_client::server::{MemoryExport, ServerConfig, serve};
use nbd_client::{
    Address, ByteRange, ClientConfig, Connection, Error, Pool, Profile, RetryPolicy, StreamOptions,
    TlsOptions,
};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const SUBJECT: &str = "xcp-host1.example.test";
const EXPORT: &str = "/3f2504e0-4f89-11d3-9a0c-0305e82c3301?session_id=OpaqueRef:6c1f2b1e";
const MIB: u64 = 1 << 20;

/// xapi's host certificate shape: self-signed, SAN DNS + IP, no basicConstraints/keyUsage.
fn host_certificate() -> (String, tokio_rustls::TlsAcceptor) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params =
        CertificateParams::new(vec![SUBJECT.to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, SUBJECT);
    let cert = params.self_signed(&key).unwrap();
    let provider = rustls::crypto::ring::default_provider();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![rustls::crypto::ring::kx_group::SECP384R1],
        ..provider
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (
        cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

/// Serves `export` on a Unix socket until dropped.
struct Double {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn_double(export: Arc<MemoryExport>, config: ServerConfig) -> Double {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xapi-nbd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let config = Arc::new(config);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, export.clone(), config.clone()));
        }
    });
    Double {
        socket,
        task,
        _dir: dir,
    }
}

fn xapi_config(socket: &Path, cert_pem: &str) -> ClientConfig {
    let mut config = ClientConfig::xapi(Address::unix(socket), EXPORT, cert_pem, SUBJECT);
    config.retry.initial_backoff = Duration::from_millis(10);
    config.connections = 3;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xapi_profile_reads_everything_over_tls12() {
    let content = pattern(6 << 20, 42);
    let (cert_pem, acceptor) = host_certificate();
    let double = spawn_double(
        MemoryExport::new(content.clone()),
        ServerConfig::xapi_like(EXPORT, Some(acceptor)),
    );
    let config = xapi_config(&double.socket, &cert_pem);
    let pool = tokio::time::timeout(TEST_TIMEOUT, Pool::connect(config))
        .await
        .unwrap()
        .unwrap();
    let info = pool.info().clone();
    assert!(info.via_export_name && info.tls);
    assert_eq!(info.mode, ReplyMode::Simple);
    assert_eq!(info.alignment(), 512);
    assert_eq!(info.size, 6 * MIB);

    let all = pool
        .read(ByteRange::new(0, 6 * MIB).unwrap())
        .await
        .unwrap();
    assert!(all == content[..]);

    // The streaming API, ordered, over uneven ranges (CBT runs), one request at a time per
    // connection.
    let ranges = vec![(0, 512), (MIB, 3 * MIB), (5 * MIB, 64 * 1024), (4096, 8192)];
    let input = futures::stream::iter(
        ranges
            .clone()
            .into_iter()
            .map(|(o, l)| ByteRange::new(o, l).unwrap()),
    );
    let collected: Vec<_> = pool
        .read_stream(input, StreamOptions::default())
        .collect::<Vec<_>>()
        .await;
    let mut expected_pieces = Vec::new();
    for (offset, length) in ranges {
        expected_pieces.extend(
            ByteRange::new(offset, length)
                .unwrap()
                .pieces(info.max_request_len()),
        );
    }
    assert_eq!(collected.len(), expected_pieces.len());
    for (item, expected_range) in collected.into_iter().zip(expected_pieces) {
        let (range, data) = item.unwrap();
        assert_eq!(range, expected_range, "ordered stream keeps input order");
        let start = usize::try_from(range.offset()).unwrap();
        assert!(data[..] == content[start..start + data.len()]);
    }

    // Unaligned requests never reach xapi (it would answer EINVAL).
    assert!(matches!(
        pool.read(ByteRange::new(1, 512).unwrap()).await,
        Err(Error::Unaligned { alignment: 512, .. })
    ));
    pool.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_profile_falls_back_from_go_to_export_name() {
    let content = pattern(2 << 20, 5);
    let (cert_pem, acceptor) = host_certificate();
    let double = spawn_double(
        MemoryExport::new(content.clone()),
        ServerConfig::xapi_like(EXPORT, Some(acceptor)),
    );
    let mut config = ClientConfig::new(Address::unix(&double.socket), EXPORT);
    config.tls = Some(TlsOptions::pinned(cert_pem, SUBJECT));
    config.in_flight_per_connection = 4;
    let connection = Connection::connect(&config).await.unwrap();
    // EXTENDED_HEADERS, STRUCTURED_REPLY and GO all got ERR_UNSUP.
    assert_eq!(config.profile, Profile::Auto);
    assert!(connection.info().via_export_name);
    assert_eq!(connection.info().mode, ReplyMode::Simple);
    // Pipelined requests queue in the socket and are answered in order.
    let reads =
        (0..8u64).map(|i| connection.read(ByteRange::new(i * 256 * 1024, 256 * 1024).unwrap()));
    let parts = futures::future::try_join_all(reads).await.unwrap();
    let joined: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
    assert!(joined == content[..]);
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_pinning_and_export_refusal() {
    let (cert_pem, acceptor) = host_certificate();
    let double = spawn_double(
        MemoryExport::new(vec![0; 1 << 20]),
        ServerConfig::xapi_like(EXPORT, Some(acceptor)),
    );
    let (other_pem, _) = host_certificate();
    let mut other_cert = xapi_config(&double.socket, &other_pem);
    other_cert.retry.max_attempts = 1;
    assert!(matches!(
        Connection::connect(&other_cert).await,
        Err(Error::Tls { .. })
    ));

    let mut wrong_subject = xapi_config(&double.socket, &cert_pem);
    wrong_subject.tls = Some(TlsOptions::pinned(
        cert_pem.clone(),
        "xcp-host2.example.test",
    ));
    assert!(matches!(
        Connection::connect(&wrong_subject).await,
        Err(Error::Tls { .. })
    ));

    // The explicit insecure option accepts a certificate nobody pinned, whatever its name.
    let mut insecure = xapi_config(&double.socket, &other_pem);
    insecure.tls = Some(TlsOptions::insecure_no_verify("xcp-host2.example.test"));
    let connection = Connection::connect(&insecure).await.unwrap();
    connection.close().await.unwrap();

    // An expired session or unknown VDI: xapi closes the connection after EXPORT_NAME.
    let mut refused = xapi_config(&double.socket, &cert_pem);
    refused.export_name = nbd_client::ExportName::new("/unknown?session_id=OpaqueRef:dead");
    let error = Connection::connect(&refused).await.unwrap_err();
    assert!(matches!(error, Error::ExportRefused), "{error:?}");
    assert!(
        !format!("{error:?} {error}").contains("OpaqueRef"),
        "no secret in errors"
    );

    // TLS 1.2 only on the server; a client restricted to TLS 1.2 agrees too.
    let mut tls12 = xapi_config(&double.socket, &cert_pem);
    if let Some(tls) = &mut tls12.tls {
        tls.tls12_only = true;
    }
    let connection = Connection::connect(&tls12).await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_reconnected_and_requests_retried() {
    let content = pattern(4 << 20, 9);
    let mut server = ServerConfig::xapi_like(EXPORT, None);
    // Every connection dies on its fourth request, without a reply.
    server.drop_after_requests = Some(3);
    let double = spawn_double(MemoryExport::new(content.clone()), server);
    let mut config = ClientConfig::xapi(Address::unix(&double.socket), EXPORT, "", SUBJECT);
    config.tls = None;
    config.connections = 2;
    config.max_request_len = 128 * 1024;
    config.retry = RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    let pool = Pool::connect(config.clone()).await.unwrap();
    let ranges = futures::stream::iter(
        (0..32u64).map(|i| ByteRange::new(i * 128 * 1024, 128 * 1024).unwrap()),
    );
    let mut results = pool.read_stream(
        ranges,
        StreamOptions {
            ordered: false,
            ..Default::default()
        },
    );
    let mut total = 0;
    while let Some(item) = tokio::time::timeout(TEST_TIMEOUT, results.next())
        .await
        .unwrap()
    {
        let (range, data) = item.unwrap();
        let start = usize::try_from(range.offset()).unwrap();
        assert!(data[..] == content[start..start + data.len()]);
        total += data.len();
    }
    assert_eq!(total, content.len());

    // A server that drops every request: bounded attempts, then a clear error.
    let mut hopeless = ServerConfig::xapi_like(EXPORT, None);
    hopeless.drop_after_requests = Some(0);
    let double = spawn_double(MemoryExport::new(content), hopeless);
    config.address = Address::unix(&double.socket);
    config.retry.max_attempts = 3;
    let pool = Pool::connect(config).await.unwrap();
    match pool.read(ByteRange::new(0, 4096).unwrap()).await {
        Err(Error::RetriesExhausted { attempts, last, .. }) => {
            assert_eq!(attempts, 3);
            assert!(matches!(*last, Error::ConnectionLost { .. }), "{last:?}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}
