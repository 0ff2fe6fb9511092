//! Interop with qemu-nbd: plain (extended headers), writes checked with qemu-io, a qcow2 with a
//! persistent dirty bitmap read through `qemu:dirty-bitmap:bm0` (spec §6.2), and TLS with
//! x509 credentials generated here (spec §6.3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use common::{PeerProcess, TEST_TIMEOUT, make_pki, run, wait_for_unix};
use nbd_client::proto::{OptionReplyType, ReplyMode, STATE_DIRTY, STATE_HOLE};
use nbd_client::{Address, ByteRange, ClientConfig, Connection, Error, Pool, TlsOptions};

const MIB: u64 = 1 << 20;

struct Tools {
    qemu_img: std::path::PathBuf,
    qemu_io: std::path::PathBuf,
    qemu_nbd: std::path::PathBuf,
}

fn tools() -> Option<Tools> {
    Some(Tools {
        qemu_img: test_peers::require("qemu-img")?,
        qemu_io: test_peers::require("qemu-io")?,
        qemu_nbd: test_peers::require("qemu-nbd")?,
    })
}

fn qemu_nbd(tools: &Tools, socket: &Path, image: &Path, extra: &[&str]) -> PeerProcess {
    let mut command = Command::new(&tools.qemu_nbd);
    command
        .args(["-f", "qcow2", "-t", "-e", "16", "-x", "disk", "-k"])
        .arg(socket)
        .args(extra)
        .arg(image);
    let peer = PeerProcess::spawn(&mut command);
    wait_for_unix(socket);
    peer
}

/// 8 MiB qcow2: 0x11 over the first MiB, 0x5a at 3 MiB + 512 KiB, zeros elsewhere.
fn small_image(tools: &Tools, dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let image = dir.join("small.qcow2");
    let path = image.to_str().unwrap();
    run(
        &tools.qemu_img,
        &["create", "-q", "-f", "qcow2", path, "8M"],
    );
    run(
        &tools.qemu_io,
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x11 0 1M",
            "-c",
            "write -P 0x5a 3M 512K",
            path,
        ],
    );
    let mut expected = vec![0u8; 8 << 20];
    expected[..1 << 20].fill(0x11);
    expected[3 << 20..(3 << 20) + (512 << 10)].fill(0x5a);
    (image, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_reads_with_extended_headers_and_split_requests() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (image, expected) = small_image(&tools, dir.path());
    let socket = dir.path().join("nbd.sock");
    let _peer = qemu_nbd(&tools, &socket, &image, &["-r"]);

    let mut config = ClientConfig::new(Address::unix(&socket), "disk");
    config.connections = 2;
    config.max_request_len = 256 * 1024;
    let pool = tokio::time::timeout(TEST_TIMEOUT, Pool::connect(config))
        .await
        .unwrap()
        .unwrap();
    let info = pool.info().clone();
    assert_eq!(info.size, 8 * MIB);
    assert_eq!(
        info.mode,
        ReplyMode::Extended,
        "qemu-nbd 10 offers extended headers"
    );
    assert!(!info.via_export_name);
    let sizes = info.server_block_size.expect("qemu-nbd sends block sizes");
    assert_eq!(sizes.maximum_payload, 32 << 20);

    // 8 MiB in 256 KiB requests over two connections, landed in one buffer.
    let all = tokio::time::timeout(TEST_TIMEOUT, pool.read(ByteRange::new(0, 8 * MIB).unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), expected.len());
    assert!(
        all == expected[..],
        "content differs from what qemu-io wrote"
    );
    // Unallocated qcow2 ranges come back as OFFSET_HOLE chunks: zeros.
    let hole = pool
        .read(ByteRange::new(6 * MIB, 4096).unwrap())
        .await
        .unwrap();
    assert!(hole.iter().all(|&b| b == 0));
    // Reads past the end are refused before anything is sent.
    let past_end = pool
        .read(ByteRange::new(8 * MIB - 512, 1024).unwrap())
        .await;
    assert!(matches!(past_end, Err(Error::InvalidRange { .. })));
    pool.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_mode_and_writes_checked_by_qemu_io() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (image, mut expected) = small_image(&tools, dir.path());
    let socket = dir.path().join("nbd.sock");
    let peer = qemu_nbd(&tools, &socket, &image, &[]);

    let mut config = ClientConfig::new(Address::unix(&socket), "disk");
    config.extended_headers = false;
    let connection = Connection::connect(&config).await.unwrap();
    assert_eq!(connection.info().mode, ReplyMode::Structured);
    let payload = Bytes::from(vec![0x77u8; 3 << 20]);
    connection.write(2 * MIB, payload).await.unwrap();
    connection
        .write_zeroes(ByteRange::new(0, 64 * 1024).unwrap(), false)
        .await
        .unwrap();
    connection.flush().await.unwrap();
    expected[2 << 20..5 << 20].fill(0x77);
    expected[..64 << 10].fill(0);
    let back = connection
        .read(ByteRange::new(0, 8 * MIB).unwrap())
        .await
        .unwrap();
    assert!(
        back == expected[..],
        "read-back differs from what was written"
    );
    connection.close().await.unwrap();
    drop(peer);

    // The image itself holds what we wrote, as qemu-io sees it.
    let out = run(
        &tools.qemu_io,
        &[
            "-r",
            "-f",
            "qcow2",
            "-c",
            "read -P 0x77 2M 3M",
            "-c",
            "read -P 0x00 0 64K",
            "-c",
            "read -P 0x11 64K 960K",
            image.to_str().unwrap(),
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_bitmap_and_allocation_map() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Spec §6.2, verbatim sizes: a sparse 256 MiB qcow2 (a few MiB on disk).
    let image = dir.path().join("disk.qcow2");
    let path = image.to_str().unwrap();
    run(
        &tools.qemu_img,
        &["create", "-q", "-f", "qcow2", path, "256M"],
    );
    run(
        &tools.qemu_io,
        &["-f", "qcow2", "-c", "write -P 0x11 0 4M", path],
    );
    run(
        &tools.qemu_img,
        &["bitmap", "--add", "-g", "65536", path, "bm0"],
    );
    run(
        &tools.qemu_io,
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x22 1M 64K",
            "-c",
            "write -P 0x33 10M 100K",
            "-c",
            "write -P 0x44 200M 512",
            path,
        ],
    );
    let socket = dir.path().join("nbd.sock");
    let _peer = qemu_nbd(&tools, &socket, &image, &["-r", "-B", "bm0"]);

    let bitmap = "qemu:dirty-bitmap:bm0";
    let mut config = ClientConfig::new(Address::unix(&socket), "disk");
    config.meta_contexts = vec!["base:allocation".into(), bitmap.into()];
    let contexts = nbd_client::list_meta_contexts(&config, vec![])
        .await
        .unwrap();
    assert!(contexts.iter().any(|c| c == bitmap), "{contexts:?}");
    let pool = Pool::connect(config).await.unwrap();
    assert_eq!(pool.info().contexts.len(), 2);
    let whole = ByteRange::new(0, 256 * MIB).unwrap();

    let dirty: Vec<(u64, u64)> = pool
        .extents(bitmap, whole)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.flags & u64::from(STATE_DIRTY) != 0)
        .map(|e| (e.range.offset(), e.range.length()))
        .collect();
    assert_eq!(
        dirty,
        vec![
            (MIB, 64 << 10),
            (10 * MIB, 128 << 10),
            (200 * MIB, 64 << 10)
        ]
    );
    let data: Vec<(u64, u64)> = pool
        .extents("base:allocation", whole)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.flags & u64::from(STATE_HOLE) == 0)
        .map(|e| (e.range.offset(), e.range.length()))
        .collect();
    assert_eq!(
        data,
        vec![(0, 4 * MIB), (10 * MIB, 128 << 10), (200 * MIB, 64 << 10)]
    );
    // The dirty bytes themselves.
    let changed = pool
        .read(ByteRange::new(MIB, 64 << 10).unwrap())
        .await
        .unwrap();
    assert!(changed.iter().all(|&b| b == 0x22));
    let tail = pool
        .read(ByteRange::new(200 * MIB, 4096).unwrap())
        .await
        .unwrap();
    assert!(tail[..512].iter().all(|&b| b == 0x44) && tail[512..].iter().all(|&b| b == 0));
    pool.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_x509_credentials() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (image, expected) = small_image(&tools, dir.path());
    let pki = make_pki(&dir.path().join("pki"));
    let socket = dir.path().join("nbd.sock");
    let creds = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=off",
        pki.dir.display()
    );
    let _peer = qemu_nbd(
        &tools,
        &socket,
        &image,
        &["-r", "--object", &creds, "--tls-creds", "tls0"],
    );

    let mut config = ClientConfig::new(Address::unix(&socket), "disk");
    config.tls = Some(TlsOptions::ca_roots(
        pki.ca_pem.clone(),
        common::SERVER_NAME,
    ));
    config.connections = 2;
    let pool = Pool::connect(config.clone()).await.unwrap();
    assert!(pool.info().tls);
    let all = pool
        .read(ByteRange::new(0, 8 * MIB).unwrap())
        .await
        .unwrap();
    assert!(all == expected[..]);
    pool.close().await.unwrap();

    // The same export through a pinned certificate (xapi style).
    let mut pinned = config.clone();
    pinned.tls = Some(TlsOptions::pinned(
        pki.server_cert_pem.clone(),
        common::SERVER_NAME,
    ));
    let connection = Connection::connect(&pinned).await.unwrap();
    let head = connection
        .read(ByteRange::new(0, 4096).unwrap())
        .await
        .unwrap();
    assert!(head.iter().all(|&b| b == 0x11));
    connection.close().await.unwrap();

    // Plaintext is refused by the server (ERR_TLS_REQD)...
    let mut plain = config.clone();
    plain.tls = None;
    match Connection::connect(&plain).await {
        Err(Error::OptionRefused { reply, .. }) => assert_eq!(reply, OptionReplyType::ERR_TLS_REQD),
        other => panic!("expected ERR_TLS_REQD, got {other:?}"),
    }
    // ...and a wrong name or an unknown CA by the client.
    let mut wrong_name = config.clone();
    wrong_name.tls = Some(TlsOptions::ca_roots(
        pki.ca_pem.clone(),
        "other.example.test",
    ));
    assert!(matches!(
        Connection::connect(&wrong_name).await,
        Err(Error::Tls { .. })
    ));
    let other_pki = make_pki(&dir.path().join("other-pki"));
    let mut wrong_ca = config;
    wrong_ca.tls = Some(TlsOptions::ca_roots(other_pki.ca_pem, common::SERVER_NAME));
    assert!(matches!(
        Connection::connect(&wrong_ca).await,
        Err(Error::Tls { .. })
    ));
}
